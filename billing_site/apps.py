from django.apps import AppConfig, apps
from django.contrib.admin import apps as admin_apps
from django.db.models.signals import post_migrate

from .roles import sync_roles


def _sync_roles(sender, **kwargs) -> None:
    sync_roles(kwargs.get("apps") or apps)


class BillingSiteConfig(AppConfig):
    """Project configuration: the staff roles are kept in sync with the permissions after every migrate."""

    name = "billing_site"
    verbose_name = "Configuration"
    default = True

    def ready(self) -> None:
        # Sent once per migrate for each app with models; this app has none, so hook onto auth's.
        post_migrate.connect(_sync_roles, sender=apps.get_app_config("auth"), dispatch_uid="billing_site.sync_roles")


class BillingAdminConfig(admin_apps.AdminConfig):
    """``django.contrib.admin`` with the billing admin site as the default site."""

    default = False
    default_site = "billing_site.admin_site.BillingAdminSite"
