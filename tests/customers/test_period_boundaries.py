"""Period boundaries are calendar arithmetic on the anchor's own clock, cached without mixing up zones."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from customers.periods import boundary

PARIS = ZoneInfo("Europe/Paris")


def test_equal_instants_in_other_zones_keep_their_own_month_ends():
    utc_anchor = dt.datetime(2026, 10, 1, tzinfo=dt.UTC)
    paris_anchor = utc_anchor.astimezone(PARIS)  # the same instant, 02:00 in Paris (summer time)
    assert utc_anchor == paris_anchor
    assert boundary(utc_anchor, "P1M", 1) == dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    # a month later on Paris's wall clock is 02:00 in winter time: 01:00 UTC, not midnight
    assert boundary(paris_anchor, "P1M", 1) == dt.datetime(2026, 11, 1, 1, tzinfo=dt.UTC)
    assert boundary(utc_anchor, "P1M", 1) == dt.datetime(2026, 11, 1, tzinfo=dt.UTC)  # asked again: from the cache


def test_boundaries_step_by_the_cadence_from_the_anchor():
    anchor = dt.datetime(2026, 1, 31, 12, tzinfo=dt.UTC)
    assert [boundary(anchor, "P1M", k).date().isoformat() for k in range(4)] == [
        "2026-01-31", "2026-02-28", "2026-03-31", "2026-04-30"]
    assert boundary(anchor, "P1W", 2) == anchor + dt.timedelta(weeks=2)
