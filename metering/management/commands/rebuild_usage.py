"""``python manage.py rebuild_usage [--meter SLUG]``: rebuild rollups from raw events, with a progress bar."""

from __future__ import annotations

import functools
import sys
import time

from django.core.management.base import BaseCommand, CommandError

from metering.models import Meter
from metering.services.rollups import usage_rebuild

BAR_WIDTH = 30


class Command(BaseCommand):
    help = "Rebuild usage rollups of one meter (--meter SLUG) or of every meter from the raw events."

    def add_arguments(self, parser):
        parser.add_argument("--meter", help="Slug of the meter to rebuild (default: all meters).")

    def handle(self, *args, meter: str | None = None, **options):
        meters = Meter.objects.order_by("slug")
        if meter:
            meters = meters.filter(slug=meter)
            if not meters.exists():
                known = ", ".join(Meter.objects.order_by("slug").values_list("slug", flat=True)) or "none"
                raise CommandError(f"No meter with slug {meter!r}. Known meters: {known}.")
        failed = []
        for item in meters:
            started = time.monotonic()
            try:
                done = usage_rebuild(meter=item, progress=functools.partial(self._bar, item.slug))
            except Exception as exc:  # recorded on the meter by usage_rebuild; go on with the next meter
                self.stdout.write("")
                self.stderr.write(self.style.ERROR(f"{item.slug}: rebuild failed: {type(exc).__name__}: {exc}"))
                failed.append(item.slug)
                continue
            self.stdout.write("")
            self.stdout.write(self.style.SUCCESS(
                f"{item.slug}: rebuilt from {done:,} events in {time.monotonic() - started:.1f}s"))
        if failed:
            raise CommandError(f"Rebuild failed for {len(failed)} meter(s): {', '.join(failed)} "
                               "(the error is recorded on each meter; the others were rebuilt).")

    def _bar(self, slug: str, done: int, total: int) -> None:
        fraction = 1.0 if not total else min(1.0, done / total)
        filled = int(fraction * BAR_WIDTH)
        line = f"\r{slug}: [{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {fraction:6.1%} {done:,}/{total:,} events"
        self.stdout.write(line, ending="")
        if hasattr(sys.stdout, "flush"):
            self.stdout.flush()
