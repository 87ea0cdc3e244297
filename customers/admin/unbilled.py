"""Subjects that sent usage nobody is billed for (no customer includes them), to include in a customer."""

from __future__ import annotations

from django.contrib import admin

from common.admin.confirm import ConfirmActionMixin, confirm_bulk_action
from common.admin.utils import ViewOnlyAdminMixin

from ..models import UnbilledSubject
from ..selectors import unattributed_subjects
from ..services.attributions import attribution_add
from .include import include_action

INCLUDE = include_action(lambda customer, item: attribution_add(customer=customer, subject=item.subject))


@admin.register(UnbilledSubject)
class UnbilledSubjectAdmin(ConfirmActionMixin, ViewOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("subject", "event_count", "first_seen", "last_seen")
    search_fields = ("^subject",)
    confirm_actions = (INCLUDE,)
    include_in_customer = confirm_bulk_action("include", "Include usage of selected subjects in a customer…")
    actions = ["include_in_customer"]

    def get_queryset(self, request):
        return unattributed_subjects()
