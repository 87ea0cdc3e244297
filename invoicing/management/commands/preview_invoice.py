"""``python manage.py preview_invoice CUSTOMER_KEY [--at ISO8601] [--json]``."""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from common.problems import Problem
from customers.models import Customer
from invoicing.selectors.invoices import preview_json
from invoicing.selectors.previews import invoice_preview
from metering.api.params import parse_rfc3339


class Command(BaseCommand):
    help = "Show the invoice a customer would get for the current period (computed now, not saved)."

    def add_arguments(self, parser):
        parser.add_argument("customer_key")
        parser.add_argument("--at", help="Preview as of this RFC 3339 time (default: now).")
        parser.add_argument("--json", action="store_true", help="Print JSON instead of a table.")

    def handle(self, *args, customer_key: str, at: str | None = None, **options):
        customer = Customer.objects.filter(key=customer_key).first()
        if customer is None:
            raise CommandError(f"No customer with key {customer_key!r}.")
        try:
            moment = parse_rfc3339("--at", at) if at else timezone.now()
        except Problem as exc:
            raise CommandError(str(exc.detail)) from exc
        body = preview_json(invoice_preview(customer=customer, at=moment))
        if options["json"]:
            self.stdout.write(_json_dumps(body))
            return
        self.stdout.write(
            f"Preview for {customer.name} ({customer.key}), {body['currency']}, "
            f"period {body['period_start']} – {body['period_end']}"
        )
        if not body["lines"]:
            self.stdout.write("No lines: no active subscription with anything to bill.")
        for line in body["lines"]:
            self.stdout.write(f"  {line['kind']:<14} {line['description']:<80} {line['amount']:>14}")
        self.stdout.write(f"  {'total':<95} {body['total']:>14}")


def _json_dumps(value) -> str:
    return json.dumps(value, indent=2)
