"""``python manage.py import_kong_consumers --admin-url URL [--token T]``."""

from django.core.management.base import BaseCommand, CommandError

from customers.kong_admin import KongAdminError
from customers.services.kong import kong_consumers_import


class Command(BaseCommand):
    help = "Import (or refresh) every consumer of a Kong Admin API, all pages; nothing is stored on error."

    def add_arguments(self, parser):
        parser.add_argument("--admin-url", required=True, help="e.g. http://kong:8001")
        parser.add_argument("--token", help="Kong-Admin-Token header, when RBAC is enabled.")

    def handle(self, *args, admin_url: str, token: str | None = None, **options):
        try:
            result = kong_consumers_import(admin_url=admin_url, token=token)
        except KongAdminError as exc:
            raise CommandError(f"Nothing imported: {exc}") from exc
        self.stdout.write(
            self.style.SUCCESS(
                f"Imported {result.total} consumers from {admin_url}: {result.created} new, {result.updated} updated, "
                f"{result.unchanged} unchanged."
            )
        )
