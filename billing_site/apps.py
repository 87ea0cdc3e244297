from django.apps import AppConfig


class BillingSiteConfig(AppConfig):
    name = "billing_site"
    verbose_name = "Operations"
    default_auto_field = "django.db.models.BigAutoField"
