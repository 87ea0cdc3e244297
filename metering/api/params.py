"""Query-parameter and body parsing shared by every API: bad values become 400 problem+json naming the parameter."""

from __future__ import annotations

import datetime as dt
from typing import Any

from common.json_body import JsonBodyError, decode_json
from common.problems import Problem
from common.time import TimeValueError
from common.time import parse_rfc3339 as parse_time

# A meter query's windows reach up to a month (and a time zone's offset, less than a day) beyond its bounds, on
# either side; bounds inside this range keep every window within the years 1 to 9999 that datetime can hold,
# whatever the windowSize and windowTimeZone.
QUERY_EARLIEST = dt.datetime(1, 3, 1, tzinfo=dt.UTC)
QUERY_LATEST = dt.datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=dt.UTC)


def bad_parameter(name: str, message: str) -> Problem:
    return Problem(400, "Invalid query parameter", f"{name}: {message}",
                   errors=[{"field": name, "message": message}])


def parse_rfc3339(name: str, value: str) -> dt.datetime:
    """The parameter ``name`` as an aware UTC datetime (:func:`common.time.parse_rfc3339`), or a 400 naming it."""
    if not isinstance(value, str):
        raise bad_parameter(name, "must be an RFC 3339 date-time string")
    try:
        return parse_time(value)
    except TimeValueError as exc:
        raise bad_parameter(name, str(exc)) from None


def query_bound(name: str, instant: dt.datetime) -> dt.datetime:
    """A meter query's ``from`` or ``to``, refused (400 naming it) where its windows could leave the calendar."""
    if not QUERY_EARLIEST <= instant <= QUERY_LATEST:
        raise bad_parameter(name, "a meter query must stay between 0001-03-01T00:00:00Z and 9999-12-31T23:59:59.999Z "
                                  "(its windows, in any time zone, must fall within the years 1 to 9999)")
    return instant


def json_parameter(name: str, text: str) -> Any:
    """A query parameter holding JSON (e.g. ``advancedMeterGroupByFilters``), decoded under the request-body
    rules (:func:`common.json_body.decode_json`: nested at most 64 levels, no NUL), or a 400 naming it."""
    try:
        return decode_json(text)
    except JsonBodyError as exc:
        raise bad_parameter(name, str(exc)) from None


def datetime_param(params, name: str) -> dt.datetime | None:
    value = params.get(name)
    if value is None or value == "":
        return None
    return parse_rfc3339(name, value)


def int_param(params, name: str, *, default: int, minimum: int, maximum: int) -> int:
    value = params.get(name)
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise bad_parameter(name, f'"{value}" is not an integer') from None
    if not minimum <= number <= maximum:
        raise bad_parameter(name, f"must be between {minimum} and {maximum}")
    return number


def json_object_body(request, example: str = "") -> dict[str, Any]:
    """The request's JSON body, which must be an object (400 otherwise); ``example`` shows one in the message."""
    if not isinstance(request.data, dict):
        raise Problem(400, "Invalid body", f"send a JSON object{' such as ' + example if example else ''}")
    return request.data
