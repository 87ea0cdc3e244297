"""``python manage.py billing_dump [--output FILE]``: the current state in billing_apply's YAML format."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from customers.apply import billing_dump_text


class Command(BaseCommand):
    help = (
        "Write meters, features, the latest published or draft version of each plan, customers with their "
        "subjects and running subscriptions as billing_apply YAML; applying the output changes nothing."
    )

    def add_arguments(self, parser):
        parser.add_argument("--output", "-o", help="Write to this file instead of standard output.")

    def handle(self, *args, output: str | None = None, **options):
        text = billing_dump_text()
        if not output:
            self.stdout.write(text, ending="")
            return
        try:
            with open(output, "w", encoding="utf-8") as handle:
                handle.write(text)
        except OSError as exc:
            raise CommandError(f"{output}: cannot write the file: {exc}") from exc
        self.stdout.write(f"Wrote {output}.")
