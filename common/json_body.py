"""Decoding JSON from outside (request bodies, JSON in query parameters, webhooks) without trusting it.

RFC 8259 JSON in UTF-8, nested at most :data:`MAX_DEPTH` levels (the outermost array or object is level 1),
no NUL character in any string (PostgreSQL cannot store one), ``NaN``/``Infinity`` refused. Anything else is
a :class:`JsonBodyError` whose message says what and where, never a ``RecursionError`` or a
``UnicodeDecodeError`` escaping as a 500.

The checks are cheap on the common, well-formed input: UTF-8 is only decoded when the bytes are not ASCII,
and the depth is only measured when the text holds more opening brackets than the limit (a text with at most
``limit`` of them cannot nest deeper).
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

__all__ = [
    "MAX_DEPTH",
    "JsonBodyError",
    "contains_nul",
    "decode_json",
    "deeper_than",
    "first_too_deep",
    "utf8_error",
]

MAX_DEPTH = 64

_decoder = msgspec.json.Decoder()
# A JSON string (its escapes included); what is left once they are removed is structure only.
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKETS = bytes(sorted(set(range(256)) - set(b"[]{}")))
# ``text.translate(None, NOT_OPENERS)`` keeps the opening brackets only (one pass, faster than two counts).
NOT_OPENERS = bytes(sorted(set(range(256)) - set(b"[{")))
_STRUCTURE = re.compile(rb"[\[\]{},]")
_SQUARE = bytes.maketrans(b"{}", b"[]")


class JsonBodyError(ValueError):
    """The text is not acceptable JSON; ``position`` is the byte offset of the problem when known."""

    def __init__(self, message: str, *, position: int | None = None) -> None:
        self.position = position
        super().__init__(message)


def utf8_error(data: bytes) -> str | None:
    """None when ``data`` is valid UTF-8, else what is wrong and at which byte."""
    if data.isascii():
        return None
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"invalid UTF-8 at byte {exc.start} ({exc.reason})"
    return None


def deeper_than(text: bytes, limit: int = MAX_DEPTH) -> bool:
    """Whether the JSON ``text`` nests arrays/objects more than ``limit`` levels deep.

    For well-formed JSON (or JSON whose strings are well-formed); brackets inside strings do not count."""
    if len(text.translate(None, NOT_OPENERS)) <= limit:  # n opening brackets nest at most n deep
        return False
    # Structure only, one kind of bracket: "[{}]" and "[[]]" nest alike.
    brackets = _STRING.sub(b"", text).translate(_SQUARE, _NOT_BRACKETS)
    if b"[" * (limit + 1) in brackets:
        return True
    # Each pass removes the innermost pairs, so a text nested n levels deep is empty after n passes.
    for _ in range(limit):
        if not brackets:
            return False
        shorter = brackets.replace(b"[]", b"")
        if len(shorter) == len(brackets):  # unbalanced (not JSON): let the decoder say so
            return False
        brackets = shorter
    return bool(brackets)


def first_too_deep(text: bytes, limit: int = MAX_DEPTH) -> tuple[int, int | None] | None:
    """Where ``text`` first nests deeper than ``limit``: ``(byte offset, index of the top-level array item)``
    (the index is None when the outermost value is not an array); None when it does not.

    A scan token by token, for error messages: slower than :func:`deeper_than`, and stops at the first
    place too deep."""
    depth = 0
    index: int | None = None
    top_is_array = False
    # Strings are replaced by "" of the same length, so offsets stay those of the original text.
    stripped = _STRING.sub(lambda m: b'"' + b" " * (len(m.group()) - 2) + b'"', text)
    for match in _STRUCTURE.finditer(stripped):
        token = match.group()
        if token in (b"[", b"{"):
            depth += 1
            if depth == 1:
                top_is_array = token == b"["
                index = 0 if top_is_array else None
            if depth > limit:
                return match.start(), index
        elif token in (b"]", b"}"):
            depth -= 1
        elif depth == 1 and top_is_array and index is not None:
            index += 1
    return None


def contains_nul(value: Any) -> bool:
    """Whether a decoded JSON value holds a NUL character in any string (object keys included)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def decode_json(data: bytes | str, *, max_depth: int = MAX_DEPTH, allow_nul: bool = False) -> Any:
    """Decode untrusted JSON, or raise :class:`JsonBodyError`."""
    if isinstance(data, str):
        try:
            data = data.encode("utf-8")
        except UnicodeEncodeError as exc:  # a lone surrogate in a query parameter
            raise JsonBodyError(f"invalid character at {exc.start}: {exc.reason}", position=exc.start) from None
    problem = utf8_error(data)
    if problem is not None:
        raise JsonBodyError(problem)
    if deeper_than(data, max_depth):
        found = first_too_deep(data, max_depth)
        raise JsonBodyError(f"JSON nested deeper than {max_depth} levels" + (f" (at byte {found[0]})" if found else ""),
                            position=found[0] if found else None)
    try:
        value = _decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise JsonBodyError(f"malformed JSON: {exc}") from None
    except RecursionError:  # deeper_than measured a text whose strings were malformed
        raise JsonBodyError(f"JSON nested deeper than {max_depth} levels") from None
    if not allow_nul and b"\\u0000" in data and contains_nul(value):
        raise JsonBodyError("strings must not contain NUL characters (\\u0000)")
    return value
