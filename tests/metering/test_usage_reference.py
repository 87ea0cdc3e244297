"""Every aggregation, window, group-by and filter against a brute-force Python reference (hypothesis).

Events are stored through the real ingest service; part of them is folded into rollups by the real
aggregator and the rest stays in the raw tail, so both paths are compared with the reference, and the
answer must not change once everything is rolled up.
"""

from __future__ import annotations

import datetime as dt
import itertools
import uuid
from collections import defaultdict
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metering import jsonpath
from metering.models import Event, HourlyUsage
from metering.selectors.usage import GroupFilter, meter_query, usage_total_for_periods
from metering.windows import floor_to_window, time_zone, windows
from tests.builders import ingest, iso, make_meter, roll_up, utc

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

BASE = utc(2026, 3, 27, 20, 0)  # spans the Europe/Berlin spring-forward night
MISSING = object()
AGGREGATIONS = ["SUM", "COUNT", "UNIQUE_COUNT", "AVG", "MIN", "MAX", "LATEST"]
_ids = itertools.count()

numbers = st.integers(0, 1000)
values = st.one_of(  # mostly valid numbers, some numeric strings, a few invalid or out-of-range values
    numbers, numbers, numbers, numbers.map(str), st.sampled_from(["1.5", " 2.25 ", "-3", "1e2", 0.5, 2.75]),
    st.sampled_from(["abc", None, MISSING, True, [1], {"n": 1}]),
    st.sampled_from([10**18, "1e18", 10**18 + 1, "1e19", 1e30, -1e30, "1e400000", "NaN", "-Infinity", "1" * 101,
                     "1e-1000", "\u0663"]),
)
event_spec = st.fixed_dictionaries({
    "subject": st.sampled_from(["kong-air", "acme", "consumer:8f3c"]),
    "minutes": st.integers(0, 4 * 24 * 60 - 1),
    "seconds": st.integers(0, 59),
    "model": st.sampled_from(["gpt-4o", "gpt-4o", "llama", None, MISSING, 7]),
    "type": st.sampled_from(["request", "response"]),
    "tokens": values,
})
events_strategy = st.lists(event_spec, max_size=40)
busy_events = st.lists(event_spec, min_size=8, max_size=40)


def build_events(specs, event_type):
    events = []
    for spec in specs:
        data = {"type": spec["type"]}
        if spec["model"] is not MISSING:
            data["model"] = spec["model"]
        if spec["tokens"] is not MISSING:
            data["tokens"] = spec["tokens"]
        time = BASE + dt.timedelta(minutes=spec["minutes"], seconds=spec["seconds"])
        events.append({"specversion": "1.0", "id": f"e{next(_ids)}", "source": "test", "type": event_type,
                       "subject": spec["subject"], "time": iso(time), "data": data})
    return events


def _calendar_key(instant, size, tz):
    """What a window of ``size`` in ``tz`` is, read off the local clock: the windows of a range are its runs of
    minutes with one key. Hours and minutes carry the UTC offset, so the repeated hour of a DST change is two."""
    local = instant.astimezone(tz)
    if size == "MONTH":
        return local.year, local.month
    if size == "DAY":
        return local.year, local.month, local.day
    if size == "HOUR":
        return local.year, local.month, local.day, local.hour, local.utcoffset()
    return local.year, local.month, local.day, local.hour, local.minute, local.utcoffset()


def reference_windows(start, end, size, tz_name):
    """The windows of ``[start, end)`` (minute-aligned bounds), minute by minute: the calendar windows of
    ``size`` in the zone, the first and last clipped to ``[start, end)`` — independent of metering.windows."""
    if size is None:
        return [(start, end)]
    tz = time_zone(tz_name)
    bounds, window_start = [], start
    minute = start + dt.timedelta(minutes=1)
    while minute < end:
        if _calendar_key(minute, size, tz) != _calendar_key(minute - dt.timedelta(minutes=1), size, tz):
            bounds.append((window_start, minute))
            window_start = minute
        minute += dt.timedelta(minutes=1)
    return [*bounds, (window_start, end)]


def reference(meter, stored, start, end, size, tz_name, group_by, subjects, filters):
    """The answer computed the slow, obvious way from the stored events, keyed by window bounds."""
    bounds = reference_windows(start, end, size, tz_name)
    value_path = jsonpath.parse(meter.value_property) if meter.value_property else None
    group_paths = {k: jsonpath.parse(v) for k, v in meter.group_by.items()}
    by_subject = "subject" in group_by or bool(subjects)
    keys = [k for k in group_by if k != "subject"]
    buckets = defaultdict(list)
    for event in stored:
        if not start <= event.time < end or (subjects and event.subject not in subjects):
            continue
        groups = {k: jsonpath.group_value(p, event.data) for k, p in group_paths.items()}
        if not all(_passes(groups[f.key], f) for f in filters):
            continue
        index = next(i for i, (a, b) in enumerate(bounds) if a <= event.time < b)
        key = (index, event.subject if by_subject else None, tuple(groups[k] for k in keys))
        value: Any  # text for UNIQUE_COUNT, a Decimal for the other aggregations, None for COUNT
        if meter.aggregation == "COUNT":
            value = None
        elif meter.aggregation == "UNIQUE_COUNT":
            assert value_path is not None
            value = jsonpath.group_value(value_path, event.data)
        else:
            assert value_path is not None
            value = jsonpath.numeric_value(value_path, event.data)[0]
        buckets[key].append((event, value))
    expected = {}
    for key, items in buckets.items():
        valid = [(e, v) for e, v in items if v is not None]
        aggregation = meter.aggregation
        if aggregation == "COUNT":
            result = Decimal(len(items))
        elif aggregation == "SUM":
            result = sum((v for _, v in valid), Decimal(0))
        elif not valid:
            continue
        elif aggregation == "UNIQUE_COUNT":
            result = Decimal(len({v for _, v in valid}))
        elif aggregation == "AVG":
            result = sum(v for _, v in valid) / Decimal(len(valid))
        elif aggregation == "MIN":
            result = min(v for _, v in valid)
        elif aggregation == "MAX":
            result = max(v for _, v in valid)
        else:
            result = max(valid, key=lambda item: (item[0].time, item[0].pk))[1]
        expected[(bounds[key[0]], key[1], key[2])] = result
    return expected


def _passes(value, group_filter):
    if group_filter.operator == "$eq":
        return value == group_filter.values[0]
    if group_filter.operator == "$ne":
        return value != group_filter.values[0]
    if group_filter.operator == "$in":
        return value in group_filter.values
    return value not in group_filter.values


def actual(rows, keys):
    return {((r.window_start, r.window_end), r.subject, tuple(r.group_by.get(k) for k in keys)): r.value
            for r in rows}


def assert_same(got, expected):
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert abs(got[key] - value) <= abs(value) * Decimal("1e-12") + Decimal("1e-12"), (key, got[key], value)


queries = st.fixed_dictionaries({
    "size": st.sampled_from([None, "MINUTE", "HOUR", "DAY", "DAY", "MONTH"]),
    "tz": st.sampled_from(["UTC", "Europe/Berlin", "Asia/Kolkata"]),
    "start_hours": st.integers(-6, 50),
    "span_hours": st.integers(1, 100),
    "group_by": st.lists(st.sampled_from(["model", "type", "subject"]), unique=True, max_size=3),
    "subjects": st.sampled_from([[], ["kong-air"], ["acme", "consumer:8f3c"]]),
    "filters": st.sampled_from([
        [], [GroupFilter("type", "$eq", ("request",))], [GroupFilter("model", "$ne", ("gpt-4o",))],
        [GroupFilter("model", "$in", ("gpt-4o", "7"))], [GroupFilter("model", "$nin", ("llama",))],
    ]),
    "minutes_offset": st.sampled_from([0, 0, 17]),
    "aligned": st.booleans(),  # unaligned: from/to anywhere, the first and last windows clipped
})


def query_range(q):
    tz = time_zone(q["tz"])
    start = BASE + dt.timedelta(hours=q["start_hours"], minutes=q["minutes_offset"])
    end = start + dt.timedelta(hours=q["span_hours"], minutes=q["minutes_offset"])
    if q["size"] and q["aligned"]:
        start = floor_to_window(start, q["size"], tz)
        end = floor_to_window(end, q["size"], tz)
        if end <= start:
            from metering.windows import next_window_start

            end = next_window_start(start, q["size"], tz)
    return start, end


@settings(max_examples=60)
@given(first=busy_events, second=events_strategy, aggregation=st.sampled_from(AGGREGATIONS), q=queries)
def test_every_aggregation_matches_the_reference(first, second, aggregation, q):
    event_type = f"t.{uuid.uuid4().hex[:10]}"
    meter = make_meter(
        slug=f"m_{uuid.uuid4().hex[:10]}", event_type=event_type, aggregation=aggregation,
        value_property="" if aggregation == "COUNT" else "$.tokens",
        group_by={"model": "$.model", "type": "$.type"},
    )
    ingest(build_events(first, event_type))
    roll_up(meter, max_events=7)  # several chunks
    if first:
        assert HourlyUsage.objects.filter(series__meter=meter).exists()
    ingest(build_events(second, event_type))  # stays in the raw tail
    stored = list(Event.objects.filter(type=event_type))
    start, end = query_range(q)
    keys = [k for k in q["group_by"] if k != "subject"]
    kwargs = {"meter": meter, "start": start, "end": end, "window_size": q["size"], "window_time_zone": q["tz"],
              "subjects": q["subjects"] or None, "group_by": q["group_by"], "filters": q["filters"]}
    expected = reference(meter, stored, start, end, q["size"], q["tz"], q["group_by"], q["subjects"], q["filters"])
    assert windows(start, end, q["size"], time_zone(q["tz"])) == reference_windows(start, end, q["size"], q["tz"])
    with_tail = actual(meter_query(**kwargs), keys)
    assert_same(with_tail, expected)
    roll_up(meter)
    meter.refresh_from_db()
    assert_same(actual(meter_query(**kwargs), keys), expected)


@settings(max_examples=25)
@given(specs=busy_events, aggregation=st.sampled_from(AGGREGATIONS),
       cut=st.lists(st.tuples(st.sampled_from(["kong-air", "acme"]), st.integers(0, 95), st.integers(1, 96)),
                    min_size=1, max_size=3, unique_by=lambda t: t[0]))
def test_subject_periods_count_each_subject_only_inside_its_own_window(specs, aggregation, cut):
    event_type = f"t.{uuid.uuid4().hex[:10]}"
    meter = make_meter(slug=f"m_{uuid.uuid4().hex[:10]}", event_type=event_type, aggregation=aggregation,
                       value_property="" if aggregation == "COUNT" else "$.tokens", group_by={"type": "$.type"})
    ingest(build_events(specs, event_type))
    roll_up(meter)
    periods = [(s, BASE + dt.timedelta(hours=a, minutes=13), BASE + dt.timedelta(hours=a + b, minutes=41))
               for s, a, b in cut]
    stored = [e for e in Event.objects.filter(type=event_type)
              if any(s == e.subject and a <= e.time < b for s, a, b in periods)]
    everything = (min(a for _, a, _ in periods), max(b for _, _, b in periods))
    expected = reference(meter, stored, *everything, None, "UTC", [], [], [GroupFilter("type", "$eq", ("request",))])
    total = usage_total_for_periods(meter=meter, subject_periods=periods, filters={"type": "request"})
    assert_same({"x": total}, {"x": expected.get((everything, None, ()), Decimal(0))})
