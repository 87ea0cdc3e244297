"""``python manage.py billing_apply FILE.yaml [--dry-run]``: catalog as code (see customers.services.apply)."""

from __future__ import annotations

import sys
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from customers.services.apply import ApplyError, billing_apply


class Command(BaseCommand):
    help = (
        "Create or update meters, features, plans (a changed published plan becomes a new version), customers and "
        "subscriptions from one YAML file, all or nothing. Applying the same file twice changes nothing."
    )

    def add_arguments(self, parser):
        parser.add_argument("file", help="The YAML file (billing_dump writes one); - reads standard input.")
        parser.add_argument("--dry-run", action="store_true", help="Print the changes and apply nothing.")

    def handle(self, *args, file: str, dry_run: bool = False, **options):
        try:
            text = sys.stdin.read() if file == "-" else Path(file).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise CommandError(f"{file}: no such file") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise CommandError(f"{file}: cannot read the file: {exc}") from exc
        try:
            result = billing_apply(text=text, filename="<stdin>" if file == "-" else file, dry_run=dry_run)
        except ApplyError as exc:
            count = len(exc.problems)
            raise CommandError(
                f"Nothing applied: {count} problem{'s' if count != 1 else ''}:\n" + "\n".join(exc.problems)
            ) from exc
        for line in result.changes:
            self.stdout.write(line)
        if not result.changes:
            self.stdout.write("No changes.")
        elif dry_run:
            self.stdout.write("Dry run: nothing applied.")
        else:
            count = len(result.changes)
            self.stdout.write(self.style.SUCCESS(f"Applied {count} change{'s' if count != 1 else ''}."))
