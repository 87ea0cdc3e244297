"""Parsing and validating CloudEvents request bodies, fast, without a serializer per event.

Limits (answered before anything is stored):

- body at most ``MAX_BODY_BYTES`` (5 MiB) → 413
- batch at most ``MAX_BATCH_EVENTS`` (10,000 events) → 413
- one event at most ``MAX_EVENT_BYTES`` (64 KiB of JSON) → 400 naming the event

Validation of each event: ``id``, ``source``, ``specversion`` (``"1.0"``), ``type`` and ``subject`` are
required non-empty strings of at most 255 characters; ``time`` is RFC 3339 with a UTC offset whose UTC
instant lies between 0001-01-01T00:00:00Z and 9999-12-31T23:59:59.999Z (:func:`common.time.parse_rfc3339`;
missing → the time of receipt; stored in UTC); ``data`` is a JSON object, null or absent. No string may
contain a NUL character (PostgreSQL cannot store it). The body is UTF-8 and nests at most 64 levels
(:data:`common.json_body.MAX_DEPTH`; the batch's array is level 1). One invalid event rejects the whole
batch, and every problem of every bad event is reported as ``{index, field, message}``.

The fast path (:func:`parse_batch`) decodes the whole body at once into msgspec Structs whose string fields carry
the limits (length, ``specversion``) and whose ``data`` stays raw JSON bytes, and builds PostgreSQL's COPY text
rows straight from them: no Python object per field beyond what the decoder makes, ``data`` never re-encoded. A
body it cannot vouch for (any failure, or anything unusual: NUL escapes, nesting outside ``data``, an offset
other than UTC at the edges of time) goes through the per-event path, which stores the same values or explains
every problem.
"""

from __future__ import annotations

import datetime as dt
import operator
from dataclasses import dataclass
from typing import Annotated, Any, Literal, NamedTuple

import msgspec

from common.json_body import MAX_DEPTH, NOT_OPENERS, contains_nul, deeper_than, first_too_deep, utf8_error
from common.time import LATEST_INSTANT, TimeValueError
from common.time import parse_rfc3339 as parse_time
from common.type_names import json_type_name

MAX_BODY_BYTES = 5 * 1024 * 1024
MAX_BATCH_EVENTS = 10_000
MAX_EVENT_BYTES = 64 * 1024
MAX_STRING_LENGTH = 255
REQUIRED_STRING_FIELDS = ("id", "source", "specversion", "type", "subject")

MEDIA_SINGLE = "application/cloudevents+json"
MEDIA_BATCH = "application/cloudevents-batch+json"
MEDIA_JSON = "application/json"
SUPPORTED_MEDIA_TYPES = (MEDIA_SINGLE, MEDIA_BATCH, MEDIA_JSON)

_NULL = msgspec.Raw(b"null")


class _WireEvent(msgspec.Struct):
    id: str
    source: str
    specversion: str
    type: str
    subject: str
    time: dt.datetime | None = None
    data: msgspec.Raw = _NULL


_CheckedString = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_STRING_LENGTH)]


class _CheckedEvent(msgspec.Struct, forbid_unknown_fields=True):
    """The fast path's event: the decoder itself checks the required strings' presence, type and length. Other
    members than CloudEvents' optional string attributes send the event to the per-event path (which ignores
    them), so that ``data`` is the only place that can nest."""

    id: _CheckedString
    source: _CheckedString
    specversion: Literal["1.0"]
    type: _CheckedString
    subject: _CheckedString
    time: dt.datetime | None = None
    data: msgspec.Raw = _NULL
    datacontenttype: str | None = None
    dataschema: str | None = None


_event_decoder = msgspec.json.Decoder(_WireEvent)
_batch_decoder = msgspec.json.Decoder(list[msgspec.Raw])
_any_decoder = msgspec.json.Decoder()
_checked_event_decoder = msgspec.json.Decoder(_CheckedEvent)
_checked_batch_decoder = msgspec.json.Decoder(list[_CheckedEvent])
_time_encoder = msgspec.json.Encoder()


class EventRow(NamedTuple):
    """A validated event, ready to store. ``data`` is the raw JSON text of an object, or None."""

    source: str
    event_id: str
    type: str
    subject: str
    time: dt.datetime
    data: str | None


@dataclass(frozen=True)
class FieldError:
    index: int | None
    field: str | None
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "field": self.field, "message": self.message}


class CloudEventsError(ValueError):
    """The body is not acceptable. ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, title: str, errors: list[FieldError]) -> None:
        self.status = status
        self.title = title
        self.errors = errors
        super().__init__(title + ": " + "; ".join(e.message for e in errors[:5]))


def media_type_of(content_type: str | None) -> str | None:
    """The media type without parameters (``; charset=utf-8``), lower-cased; None when unsupported."""
    if not content_type:
        return None
    media = content_type.split(";", 1)[0].strip().lower()
    return media if media in SUPPORTED_MEDIA_TYPES else None


# --- COPY text -------------------------------------------------------------------------------------------------

def _copy_escape(text: bytes) -> bytes:
    """A value for PostgreSQL's COPY text format: backslash, tab, newline and carriage return escaped."""
    if b"\\" in text or b"\t" in text or b"\n" in text or b"\r" in text:
        text = text.replace(b"\\", b"\\\\").replace(b"\t", b"\\t").replace(b"\n", b"\\n").replace(b"\r", b"\\r")
    return text


def copy_line(row: EventRow) -> bytes:
    """The COPY text of (source, event_id, type, subject, time, data) of a row, without the line end."""
    return b"\t".join([
        _copy_escape(row.source.encode()), _copy_escape(row.event_id.encode()), _copy_escape(row.type.encode()),
        _copy_escape(row.subject.encode()), row.time.isoformat().encode(),
        b"\\N" if row.data is None else _copy_escape(row.data.encode()),
    ])


class EventBatch:
    """The validated events of one body, deduplicated on (source, id) (the first of a repeated id wins), in their
    order, in two forms, each built once on demand: :attr:`rows` (:class:`EventRow`, for SQL parameters) and
    :attr:`lines` (COPY text of source, event_id, type, subject, time, data, without line ends)."""

    __slots__ = ("_lines", "_rows", "received")

    def __init__(self, *, received: int, rows: list[EventRow] | None = None,
                 lines: list[bytes] | None = None) -> None:
        self.received = received
        self._rows = rows
        self._lines = lines

    @classmethod
    def of_rows(cls, rows: list[EventRow]) -> EventBatch:
        unique: dict[tuple[str, str], EventRow] = {}
        for row in rows:
            unique.setdefault((row.source, row.event_id), row)
        return cls(received=len(rows), rows=list(unique.values()))

    def __len__(self) -> int:
        """Events to store (repeats of a (source, id) within the body counted once)."""
        return len(self._lines) if self._lines is not None else len(self.rows)

    @property
    def rows(self) -> list[EventRow]:
        if self._rows is None:
            self._rows = [_row_of_line(line) for line in self.lines]
        return self._rows

    @property
    def lines(self) -> list[bytes]:
        if self._lines is None:
            self._lines = list(map(copy_line, self.rows))
        return self._lines


def _unescape(text: bytes) -> str:
    if b"\\" not in text:
        return text.decode()
    out, i = bytearray(), 0
    while i < len(text):
        char = text[i]
        if char == 92:  # backslash
            i += 1
            out += {ord("t"): b"\t", ord("n"): b"\n", ord("r"): b"\r"}.get(text[i], bytes([text[i]]))
        else:
            out.append(char)
        i += 1
    return out.decode()


def _row_of_line(line: bytes) -> EventRow:
    """Back from COPY text to a row (the rare caller of both forms of a fast-parsed batch: SQLite, small batches
    on PostgreSQL, the explanation of a refused batch)."""
    source, event_id, type_, subject, time, data = line.split(b"\t")
    return EventRow(_unescape(source), _unescape(event_id), _unescape(type_), _unescape(subject),
                    dt.datetime.fromisoformat(time.decode()), None if data == b"\\N" else _unescape(data))


def parse_batch(body: bytes, media_type: str, *, now: dt.datetime) -> EventBatch:
    """Validate a whole body; return its events, or raise :class:`CloudEventsError`."""
    batch = _fast_batch(body, media_type, now)
    if batch is None:
        batch = EventBatch.of_rows(parse_events(body, media_type, now=now))
    return batch


_event_id = operator.attrgetter("id")


def _fast_batch(body: bytes, media_type: str, now: dt.datetime) -> EventBatch | None:
    """The usual body, straight to COPY lines, in one decode of the whole body; None: "let the per-event path
    look" (the body may still be valid)."""
    if len(body) > MAX_BODY_BYTES or utf8_error(body) is not None:
        return None
    first = body.lstrip()[:1]
    events: list[_CheckedEvent]
    try:
        if first == b"[" and media_type != MEDIA_SINGLE:
            if len(body) > MAX_EVENT_BYTES:  # some event may be over the limit: measure each
                sizes = _batch_decoder.decode(body)
                if len(sizes) > MAX_BATCH_EVENTS or max(map(len, sizes), default=0) > MAX_EVENT_BYTES:
                    return None
            events = _checked_batch_decoder.decode(body)
            if len(events) > MAX_BATCH_EVENTS:
                return None
            outer = 1  # the batch's array
        elif first == b"{" and media_type != MEDIA_BATCH and len(body) <= MAX_EVENT_BYTES:
            events = [_checked_event_decoder.decode(body)]
            outer = 0
        else:
            return None
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        return None
    # Nesting: ``data`` is the only member that can nest (no unknown members), and a data value with k opening
    # brackets nests at most k deep.
    data_limit = MAX_DEPTH - outer - 1
    clean = not (b"\\" in body or b"\t" in body or b"\n" in body or b"\r" in body)
    times: list[dt.datetime] = []
    datas: list[bytes] = []
    for event in events:
        data = bytes(event.data)
        if data == b"null":
            data = b"\\N"
        elif data[:1] != b"{":
            return None
        else:
            if (data.find(b"{", 1) != -1 or b"[" in data) and data.count(b"{") + data.count(b"[") > data_limit:
                return None
            if not clean:
                if b"\\u0000" in data:
                    return None
                data = _copy_escape(data)
        datas.append(data)
        time = event.time
        if time is None:
            time = now
        elif time.tzinfo is not dt.UTC:
            if time.tzinfo is None:
                return None
            try:
                time = time.astimezone(dt.UTC)
            except OverflowError:
                return None
        if time > LATEST_INSTANT:
            return None
        times.append(time)
    # One C call formats every time (RFC 3339, UTC "Z"), instead of one isoformat() per event.
    time_texts = _time_encoder.encode(times)[2:-2].split(b'","') if times else []
    if len(set(map(_event_id, events))) != len(events) and len({(e.source, e.id) for e in events}) != len(events):
        # repeats within the body: the first wins
        firsts: dict[tuple[str, str], int] = {}
        for index, event in enumerate(events):
            firsts.setdefault((event.source, event.id), index)
        chosen: list[int] | range = sorted(firsts.values())
    else:
        chosen = range(len(events))
    lines: list[bytes] = []
    for index in chosen:
        event = events[index]
        if clean:
            head = f"{event.source}\t{event.id}\t{event.type}\t{event.subject}\t".encode()
        else:
            strings = (event.source, event.id, event.type, event.subject)
            if any("\x00" in value for value in strings):
                return None
            head = b"\t".join(_copy_escape(value.encode()) for value in strings) + b"\t"
        lines.append(head + time_texts[index] + b"\t" + datas[index])
    return EventBatch(received=len(events), lines=lines)


def parse_events(body: bytes, media_type: str, *, now: dt.datetime) -> list[EventRow]:
    """Validate a whole body; return its events in order, or raise :class:`CloudEventsError`."""
    if len(body) > MAX_BODY_BYTES:
        raise CloudEventsError(413, "Request body too large", [
            FieldError(None, None, f"the body is {len(body):,} bytes; the limit is {MAX_BODY_BYTES:,} bytes")
        ])
    first = body.lstrip()[:1]
    body_is_utf8 = utf8_error(body) is None
    raw_events: list[msgspec.Raw] | list[bytes]
    if media_type == MEDIA_SINGLE or (media_type == MEDIA_JSON and first == b"{"):
        raw_events = [body]
        depth = MAX_DEPTH
    elif first == b"[":
        try:
            raw_events = _batch_decoder.decode(body)
        except msgspec.DecodeError as exc:
            raise _malformed(exc) from exc
        except RecursionError:  # nested far deeper than the limit: say where
            raise _too_deep(body) from None
        depth = MAX_DEPTH - 1  # the batch's array is the first level
    else:
        expected = "a JSON object" if media_type == MEDIA_SINGLE else (
            "a JSON array" if media_type == MEDIA_BATCH else "a JSON object or array"
        )
        raise CloudEventsError(400, "Malformed request body", [
            FieldError(None, None, f"the body must be {expected} of CloudEvents ({media_type})")
        ])
    if media_type == MEDIA_BATCH and first != b"[":
        raise CloudEventsError(400, "Malformed request body", [
            FieldError(None, None, f"{MEDIA_BATCH} needs a JSON array of events")
        ])
    if len(raw_events) > MAX_BATCH_EVENTS:
        raise CloudEventsError(413, "Batch too large", [
            FieldError(None, None, f"the batch has {len(raw_events):,} events; the limit is {MAX_BATCH_EVENTS:,}")
        ])

    rows: list[EventRow] = []
    errors: list[FieldError] = []
    for index, raw in enumerate(raw_events):
        event_bytes = raw if isinstance(raw, bytes) else bytes(raw)
        row = _fast_event(event_bytes, now, depth) if body_is_utf8 else None
        if row is None:
            problems = _explain_event(index, event_bytes, depth)
            if problems:
                errors.extend(problems)
                continue
            # the fast path was only cautious (e.g. an escaped backslash before "u0000" inside a string)
            row = _slow_event(event_bytes, now)
        rows.append(row)
    if not errors and not body_is_utf8:  # invalid bytes outside every event (between them)
        errors.append(FieldError(None, None, f"the body is not UTF-8: {utf8_error(body)}"))
    if errors:
        raise CloudEventsError(400, "Invalid events", errors)
    return rows


def _malformed(exc: msgspec.DecodeError) -> CloudEventsError:
    return CloudEventsError(400, "Malformed JSON", [FieldError(None, None, f"malformed JSON: {exc}")])


def _too_deep(body: bytes) -> CloudEventsError:
    found = first_too_deep(body, MAX_DEPTH)
    index = found[1] if found else None
    where = f" (at byte {found[0]})" if found else ""
    return CloudEventsError(400, "Invalid events", [
        FieldError(index, None, f"the body nests deeper than {MAX_DEPTH} levels{where}")
    ])


def _fast_event(raw: bytes, now: dt.datetime, depth: int) -> EventRow | None:
    """The common case in ~1 µs; None means "let the slow path look" (it may still be valid)."""
    if len(raw) > MAX_EVENT_BYTES or (len(raw.translate(None, NOT_OPENERS)) > depth and deeper_than(raw, depth)):
        return None
    try:
        event = _event_decoder.decode(raw)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None
    if event.specversion != "1.0":
        return None
    for value in (event.id, event.source, event.type, event.subject):
        if not value or len(value) > MAX_STRING_LENGTH or "\x00" in value:
            return None
    if event.time is None:
        time = now
    elif event.time.tzinfo is None:
        return None
    else:
        try:
            time = event.time.astimezone(dt.UTC)
        except OverflowError:  # year 0 or 10000 in UTC: the slow path names the field
            return None
        if time > LATEST_INSTANT:
            return None
    data_bytes = bytes(event.data)
    if data_bytes == b"null":
        data = None
    elif data_bytes[:1] == b"{" and b"\\u0000" not in data_bytes:
        data = data_bytes.decode()
    else:
        return None
    return EventRow(event.source, event.id, event.type, event.subject, time, data)


def _slow_event(raw: bytes, now: dt.datetime) -> EventRow:
    """Build the row of an event that :func:`_explain_event` found valid."""
    obj = _any_decoder.decode(raw)
    time_value = obj.get("time")
    time = now if time_value is None else _parse_time(time_value)
    assert time is not None
    data = obj.get("data")
    return EventRow(
        obj["source"], obj["id"], obj["type"], obj["subject"], time,
        None if data is None else msgspec.json.encode(data).decode(),
    )


def _parse_time(value: Any) -> dt.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return parse_time(value)
    except TimeValueError:
        return None


def _explain_event(index: int, raw: bytes, depth: int = MAX_DEPTH) -> list[FieldError]:
    """Every problem of one event, in field order."""
    if len(raw) > MAX_EVENT_BYTES:
        return [FieldError(index, None, f"the event is {len(raw):,} bytes; the limit is {MAX_EVENT_BYTES:,} bytes")]
    problem = utf8_error(raw)
    if problem is not None:
        return [FieldError(index, None, f"the event has {problem}")]
    if deeper_than(raw, depth):
        return [FieldError(index, None, f"the body nests deeper than {MAX_DEPTH} levels")]
    try:
        obj = _any_decoder.decode(raw)
    except msgspec.DecodeError as exc:
        return [FieldError(index, None, f"malformed JSON: {exc}")]
    except RecursionError:  # malformed strings hid brackets from the depth check
        return [FieldError(index, None, f"the body nests deeper than {MAX_DEPTH} levels")]
    if not isinstance(obj, dict):
        return [FieldError(index, None, f"an event must be a JSON object, not {json_type_name(obj)}")]
    errors: list[FieldError] = []
    for field in REQUIRED_STRING_FIELDS:
        value = obj.get(field)
        if field not in obj or value is None:
            errors.append(FieldError(index, field, f"{field} is required"))
        elif not isinstance(value, str):
            errors.append(FieldError(index, field, f"{field} must be a string, not {json_type_name(value)}"))
        elif not value:
            errors.append(FieldError(index, field, f"{field} must not be empty"))
        elif len(value) > MAX_STRING_LENGTH:
            errors.append(FieldError(index, field, f"{field} must be at most {MAX_STRING_LENGTH} characters"))
        elif "\x00" in value:
            errors.append(FieldError(index, field, f"{field} must not contain NUL characters"))
        elif field == "specversion" and value != "1.0":
            errors.append(FieldError(index, field, f'specversion must be "1.0", not "{value}"'))
    if obj.get("time") is not None:
        value = obj["time"]
        if not isinstance(value, str):
            errors.append(FieldError(index, "time", f"time must be an RFC 3339 string, not {json_type_name(value)}"))
        else:
            try:
                parse_time(value)
            except TimeValueError as exc:
                errors.append(FieldError(index, "time", f"time {exc}"))
    data = obj.get("data")
    if data is not None:
        if not isinstance(data, dict):
            errors.append(FieldError(index, "data", f"data must be a JSON object or null, not {json_type_name(data)}"))
        elif contains_nul(data):
            errors.append(FieldError(index, "data", "data must not contain NUL characters (\\u0000)"))
    return errors


def unstorable_data(rows: list[EventRow]) -> CloudEventsError:
    """The 400 for a batch the database refused to store (PostgreSQL's jsonb holds numbers up to about
    10^131072 and down to 10^-16383: ``1e400000`` is valid JSON it cannot hold), naming the events whose data
    holds a number no number type can (found by decoding strictly), or the batch when none is found."""
    errors = []
    for index, row in enumerate(rows):
        if row.data is None:
            continue
        try:
            _any_decoder.decode(row.data)
        except msgspec.DecodeError as exc:
            errors.append(FieldError(index, "data", f"data holds a number out of range: {exc}"))
    if not errors:
        errors = [FieldError(None, "data", "a number in the events' data is out of range for the database")]
    return CloudEventsError(400, "Invalid events", errors)

