from django.apps import AppConfig
from django.contrib.admin import apps as admin_apps


class BillingSiteConfig(AppConfig):
    name = "billing_site"
    verbose_name = "Operations"
    default_auto_field = "django.db.models.BigAutoField"
    default = True


class BillingAdminConfig(admin_apps.AdminConfig):
    """``django.contrib.admin`` with the billing admin site as the default site."""

    default = False
    default_site = "billing_site.admin_site.BillingAdminSite"
