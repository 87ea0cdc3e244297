"""django-celery-beat's solar schedules, with text boxes for their decimals (latitude, longitude)."""

from django.contrib import admin
from django_celery_beat import admin as beat_admin
from django_celery_beat.models import SolarSchedule

from .utils import DecimalTextInputsMixin

admin.site.unregister(SolarSchedule)  # beat's own admin, replaced (a third-party registration, not one of ours)


@admin.register(SolarSchedule)
class SolarScheduleAdmin(DecimalTextInputsMixin, beat_admin.SolarScheduleAdmin):
    pass
