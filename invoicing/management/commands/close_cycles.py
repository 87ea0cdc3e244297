"""``python manage.py close_cycles [--now ISO8601] [--shard I/N]``: what the beat job does, on demand — all of it,
or one shard of it (e.g. from several machines' cron: ``--shard 1/2`` on one, ``--shard 2/2`` on the other)."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from common.jobs import tracked_job
from common.models import JobRun
from common.problems import Problem
from invoicing.services.close import Shard, close_cycles
from metering.api.params import parse_rfc3339


class Command(BaseCommand):
    help = "Close every billing cycle that is due (end + grace period passed): invoices, numbers, issue."

    def add_arguments(self, parser):
        parser.add_argument("--now", help="Close as if it were this RFC 3339 time (default: now).")
        parser.add_argument("--shard", metavar="I/N",
                            help="Close only shard I of N (1 ≤ I ≤ N ≤ 256): the subscriptions whose id modulo N is "
                                 "I − 1 (default: all of them).")

    def handle(self, *args, now: str | None = None, shard: str | None = None, **options):
        try:
            moment = parse_rfc3339("--now", now) if now else timezone.now()
        except Problem as exc:
            raise CommandError(str(exc.detail)) from exc
        part = parse_shard(shard) if shard is not None else Shard()
        params = {"now": moment.isoformat(), **({"shard": str(part)} if part.count > 1 else {})}
        with tracked_job(kind="close_cycles", trigger=JobRun.Trigger.CLI, params=params) as run:
            report = close_cycles(now=moment, job_run=run, shard=part)
            run.message = report.summary()
        self.stdout.write(report.summary())
        if report.errors:
            raise CommandError(f"{len(report.errors)} cycle(s) failed; rerun to retry them.")


def parse_shard(text: str) -> Shard:
    """``"2/4"`` → the second of four shards; anything else is a :class:`CommandError`."""
    index, slash, count = text.partition("/")
    if not (slash and index.isascii() and index.isdigit() and count.isascii() and count.isdigit()
            and len(index) <= 3 and len(count) <= 3 and 1 <= int(index) <= int(count) <= 256):
        raise CommandError(f"--shard must be I/N with 1 ≤ I ≤ N ≤ 256, such as 1/2, not {text[:40]!r}")
    return Shard(int(index) - 1, int(count))
