"""Query windows against hand-computed answers: unaligned from/to clipped like OpenMeter, DST days, MONTH
windows, 30-minute offsets, and the edges of the calendar."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest

from metering.windows import MAX_WINDOWS, WindowError, decompose, time_zone, time_zone_names, windows
from tests.builders import utc


def z(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def spans(start: str, end: str, size: str | None, tz: str) -> list[tuple[str, str]]:
    fmt = "%Y-%m-%dT%H:%MZ"
    return [(a.strftime(fmt), b.strftime(fmt)) for a, b in windows(z(start), z(end), size, time_zone(tz))]


@pytest.mark.parametrize("size, tz, edges", [
    # 2026-03-27T00:00Z is 01:00 in Berlin: the first window is the rest of that Berlin day. The third is 29 March:
    # clocks go forward, a 23-hour day. The last is clipped to `to`.
    pytest.param("DAY", "Europe/Berlin", [
        "2026-03-27T00:00Z", "2026-03-27T23:00Z", "2026-03-28T23:00Z", "2026-03-29T22:00Z", "2026-03-30T12:00Z",
    ], id="unaligned day in Berlin is clipped and the DST day has 23 hours"),
    # The first window is 25 October: 25 hours.
    pytest.param("DAY", "Europe/Berlin", [
        "2026-10-24T22:00Z", "2026-10-25T23:00Z", "2026-10-26T23:00Z",
    ], id="fall-back day has 25 hours"),
    pytest.param("MONTH", "UTC", [
        "2026-01-15T12:00Z", "2026-02-01T00:00Z", "2026-03-01T00:00Z", "2026-03-10T00:00Z",
    ], id="unaligned month windows in UTC"),
    # The windows change at 1 March 00:00 CET and 1 April 00:00 CEST.
    pytest.param("MONTH", "Europe/Berlin", [
        "2026-02-15T00:00Z", "2026-02-28T23:00Z", "2026-03-31T22:00Z", "2026-04-02T00:00Z",
    ], id="unaligned month windows in Berlin across DST"),
    pytest.param("MONTH", "America/New_York", [
        "2026-02-03T04:05Z", "2026-02-20T00:00Z",
    ], id="month inside one month is one window"),
    # Kolkata is UTC+05:30: its hours start at :30 UTC.
    pytest.param("HOUR", "Asia/Kolkata", [
        "2026-03-27T10:00Z", "2026-03-27T10:30Z", "2026-03-27T11:30Z", "2026-03-27T12:10Z",
    ], id="hours in a half-hour zone"),
    # 02:15–03:00 CEST, then 02:00–03:00 CET.
    pytest.param("HOUR", "Europe/Berlin", [
        "2026-10-25T00:15Z", "2026-10-25T01:00Z", "2026-10-25T02:00Z",
    ], id="repeated hour of fall-back is two windows"),
])
def test_windows_against_hand_computed_spans(size, tz, edges):
    """``edges``: ``from``, where each window ends and the next begins, then ``to``."""
    assert spans(edges[0], edges[-1], size, tz) == list(itertools.pairwise(edges))


def test_minutes_and_no_window_size():
    assert spans("2026-03-27T10:00Z", "2026-03-27T10:02Z", "MINUTE", "UTC") == [
        ("2026-03-27T10:00Z", "2026-03-27T10:01Z"), ("2026-03-27T10:01Z", "2026-03-27T10:02Z")]
    start, end = utc(2026, 3, 27, 10, 7), utc(2026, 3, 28, 1, 13)
    assert windows(start, end, None, time_zone("Europe/Berlin")) == [(start, end)]
    assert windows(start + dt.timedelta(seconds=30), end, "MINUTE", time_zone("UTC"))[0][0] == start + dt.timedelta(
        seconds=30)


def test_edges_of_the_calendar():
    last = windows(z("9999-12-30T00:00Z"), z("9999-12-31T23:59Z"), "MONTH", time_zone("UTC"))
    assert last == [(z("9999-12-30T00:00Z"), z("9999-12-31T23:59Z"))]
    assert windows(z("9999-12-31T22:00Z"), z("9999-12-31T23:59Z"), "DAY", time_zone("America/New_York"))[-1][1] == z(
        "9999-12-31T23:59Z")
    with pytest.raises(WindowError) as excinfo:  # New York's day of 0001-01-01T01:00Z started in year 0
        windows(z("0001-01-01T01:00Z"), z("0001-01-03T00:00Z"), "DAY", time_zone("America/New_York"))
    assert excinfo.value.field == "from"
    # pieces of a window in the last hour of year 9999
    assert [p.kind for p in decompose(0, z("9999-12-31T23:10Z"), z("9999-12-31T23:50Z"))] == ["R"]


def test_too_many_windows_and_bad_ranges_are_refused():
    with pytest.raises(WindowError) as excinfo:
        windows(z("2000-01-01T00:00Z"), z("2026-01-01T00:00Z"), "MINUTE", time_zone("UTC"))
    assert excinfo.value.field == "windowSize" and f"{MAX_WINDOWS:,}" in str(excinfo.value)
    with pytest.raises(WindowError) as excinfo:
        windows(z("2026-01-02T00:00Z"), z("2026-01-01T00:00Z"), "DAY", time_zone("UTC"))
    assert excinfo.value.field == "to"


@pytest.mark.parametrize("name", ["Mars/Olympus", "europe/berlin", "posixrules", "right/UTC", "../etc/passwd", 5])
def test_only_iana_names_are_time_zones(name):
    with pytest.raises(WindowError) as excinfo:
        time_zone(name)
    assert excinfo.value.field == "windowTimeZone"


def test_time_zone_names():
    names = time_zone_names()
    assert {"UTC", "Europe/Berlin", "Asia/Kolkata"} <= set(names) and list(names) == sorted(names)
    assert time_zone(None).key == time_zone("").key == "UTC"
