from django.apps import AppConfig


class InvoicingConfig(AppConfig):
    name = "invoicing"
    verbose_name = "Billing — invoices"
    default_auto_field = "django.db.models.BigAutoField"
