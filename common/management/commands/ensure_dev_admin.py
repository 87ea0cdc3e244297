"""Create (or update) the development admin user from ADMIN_USER / ADMIN_PASSWORD."""

import os
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

DEFAULT_ADMIN_USER = "admin"
DEFAULT_ADMIN_PASSWORD = "admin"  # noqa: S105 - development default, printed on start


class Command(BaseCommand):
    help = "Create the development superuser (ADMIN_USER, ADMIN_PASSWORD; defaults admin/admin)."

    def handle(self, *args: Any, **options: Any) -> None:
        from django.conf import settings

        if not settings.DEBUG and not os.environ.get("ADMIN_PASSWORD"):
            raise CommandError("Refusing to create a default admin/admin user with DEBUG off: set ADMIN_PASSWORD.")
        username = os.environ.get("ADMIN_USER") or DEFAULT_ADMIN_USER
        password = os.environ.get("ADMIN_PASSWORD") or DEFAULT_ADMIN_PASSWORD
        user_model = get_user_model()
        user, created = user_model.objects.get_or_create(
            username=username, defaults={"is_staff": True, "is_superuser": True, "email": ""}
        )
        if created or os.environ.get("ADMIN_PASSWORD"):
            user.set_password(password)
        user.is_staff = True
        user.is_superuser = True
        user.is_active = True
        user.save()
        verb = "Created" if created else "Using"
        shown = password if (created or os.environ.get("ADMIN_PASSWORD")) else "(unchanged)"
        self.stdout.write(f"{verb} admin user: {username} / password: {shown}")
