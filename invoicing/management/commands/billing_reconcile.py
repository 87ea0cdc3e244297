"""``python manage.py billing_reconcile [--customer KEY] [--since DATE] [--all] [--now ISO8601]``.

Per subscription, rate card and closed period: rated now vs billed, the difference and why. Exits 1 when any
difference is unexplained (the re-rating rule is broken), 0 otherwise.
"""

from __future__ import annotations

import datetime as dt

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from catalog.money import format_major
from common.problems import Problem
from customers.models import Customer
from invoicing.selectors.reconcile import reconcile
from metering.api.params import parse_rfc3339


def _since(value: str) -> dt.datetime:
    """A date (the day's start, UTC) or an RFC 3339 time."""
    try:
        day = dt.date.fromisoformat(value)
    except ValueError:
        return parse_rfc3339("--since", value)
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)


class Command(BaseCommand):
    help = "Compare what every closed period rates to now with what was billed for it; exit 1 on a difference " \
           "nothing explains."

    def add_arguments(self, parser):
        parser.add_argument("--customer", help="Only this customer's key.")
        parser.add_argument("--since", help="Only periods ending after this date (YYYY-MM-DD) or RFC 3339 time.")
        parser.add_argument("--now", help="Reconcile as of this RFC 3339 time (default: now).")
        parser.add_argument("--all", action="store_true", help="List every period, not only the differences.")

    def handle(self, *args, customer: str | None = None, since: str | None = None, now: str | None = None,
               **options):
        for name, value in (("--customer", customer), ("--since", since), ("--now", now)):
            if value is not None and "\x00" in value:
                raise CommandError(f"{name} must not contain NUL characters")
        if customer is not None and not Customer.objects.filter(key=customer).exists():
            raise CommandError(f"No customer with key {customer!r}.")
        try:
            moment = parse_rfc3339("--now", now) if now else timezone.now()
            start = _since(since) if since else None
        except Problem as exc:
            raise CommandError(str(exc.detail)) from exc
        except (ValueError, OverflowError) as exc:
            raise CommandError(f"--since: {exc}") from exc
        periods = differences = unexplained = unpriced = 0
        for row in reconcile(now=moment, customer_key=customer, since=start):
            periods += 1
            for label in row.unpriced:  # never billed: shown whatever the difference
                unpriced += 1
                self.stdout.write(f"{row.customer:<20} sub {row.subscription_id:<6} {row.plan:<16} {row.rate_card:<20} "
                                  f"{row.period_start:%Y-%m-%d %H:%M} – {row.period_end:%Y-%m-%d %H:%M}  "
                                  f"UNPRICED {label}")
            if not row.difference and not options["all"]:
                continue
            differences += bool(row.difference)
            unexplained += not row.explained
            period = f"{row.period_start:%Y-%m-%d %H:%M} – {row.period_end:%Y-%m-%d %H:%M}"
            rated, billed, difference = (format_major(v, row.currency) for v in (row.rated, row.billed,
                                                                                  row.difference))
            self.stdout.write(
                f"{row.customer:<20} sub {row.subscription_id:<6} {row.plan:<16} {row.rate_card:<20} {period}  "
                f"rated {rated:>12}  billed {billed:>12}  difference {difference:>12} {row.currency}"
                + (f"  ({row.reason})" if row.difference else "")
            )
        self.stdout.write(f"{periods:,} closed periods, {differences:,} with a difference, "
                          f"{unexplained:,} unexplained, {unpriced:,} unpriced usage group(s) (not billed).")
        if unexplained:
            raise CommandError(f"{unexplained} difference(s) nothing explains: the re-rating rule is broken.")
