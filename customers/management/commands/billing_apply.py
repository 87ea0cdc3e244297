"""``python manage.py billing_apply FILE.yaml [--dry-run]``: catalog as code (see customers.apply)."""

from __future__ import annotations

import sys

from django.core.management.base import BaseCommand, CommandError

from common.yaml_reader import FileError, read_source
from customers.apply import billing_apply


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
            text, filename = read_source(file, sys.stdin)
        except FileError as exc:
            raise CommandError(str(exc)) from exc
        try:
            result = billing_apply(text=text, filename=filename, dry_run=dry_run)
        except FileError as exc:
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
