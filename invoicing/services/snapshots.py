"""The dashboard's "unbilled so far this period": preview totals of every active subscription, recorded by beat as a
job run (previewing every customer is too slow for a page view)."""

from __future__ import annotations

from catalog.money import format_major
from common.jobs import tracked_job
from common.models import JobRun
from common.money import format_money

from ..selectors.dashboard import preview_snapshot


def record_unbilled_snapshot(*, trigger: str = JobRun.Trigger.BEAT) -> JobRun:
    with tracked_job(kind="unbilled_snapshot", trigger=trigger) as run:
        minor, unpriced = preview_snapshot()
        run.result = {"totals": {currency: format_major(total, currency) for currency, total in minor.items()},
                      "minor": minor, "unpriced": unpriced}
        run.message = ", ".join(format_money(total, currency) for currency, total in minor.items())
        run.message = run.message or "nothing unbilled"
        if unpriced["groups"]:
            run.message += f"; {unpriced['groups']} unpriced usage group(s)"
    run.refresh_from_db()
    return run
