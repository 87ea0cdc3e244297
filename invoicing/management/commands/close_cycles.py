"""``python manage.py close_cycles [--now ISO8601]``: what the beat job does, on demand."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from common.jobs import tracked_job
from common.models import JobRun
from common.problems import Problem
from invoicing.services.close import close_cycles
from metering.api.params import parse_rfc3339


class Command(BaseCommand):
    help = "Close every billing cycle that is due (end + grace period passed): invoices, numbers, issue."

    def add_arguments(self, parser):
        parser.add_argument("--now", help="Close as if it were this RFC 3339 time (default: now).")

    def handle(self, *args, now: str | None = None, **options):
        try:
            moment = parse_rfc3339("--now", now) if now else timezone.now()
        except Problem as exc:
            raise CommandError(str(exc.detail)) from exc
        with tracked_job(kind="close_cycles", trigger=JobRun.Trigger.CLI, params={"now": moment.isoformat()}) as run:
            report = close_cycles(now=moment, job_run=run)
            run.message = report.summary()
        self.stdout.write(report.summary())
        if report.errors:
            raise CommandError(f"{len(report.errors)} cycle(s) failed; rerun to retry them.")
