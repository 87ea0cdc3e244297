"""Request hygiene before any view runs, and 503 for outages in views outside DRF.

- :class:`RequestHygieneMiddleware`: on API paths (``/api/``, ``/v3/``, ``/stripe/``), a NUL character (raw or
  percent-encoded) or invalid UTF-8 in the path or in any query parameter's name or value is answered
  400 problem+json naming the parameter. PostgreSQL cannot store or compare a NUL, and Django would decode
  broken UTF-8 into U+FFFD and look up something else than what was sent.
- :class:`ChunkedBodyMiddleware`: a body sent with ``Transfer-Encoding: chunked`` (no ``Content-Length``) is
  read here, up to ``DATA_UPLOAD_MAX_MEMORY_SIZE`` (413 problem+json beyond), and handed on as an ordinary
  body with its length. Django reads ``CONTENT_LENGTH`` bytes, so without this such a body reads as empty.
- :class:`OutageMiddleware`: a database or broker outage in a view outside DRF (e.g. the Stripe webhook) is
  503 problem+json with ``Retry-After``; DRF views get the same from :func:`common.problems.problem_exception_handler`.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote_to_bytes

from django.conf import settings
from django.core.handlers.wsgi import LimitedStream
from django.http import HttpRequest, HttpResponse

from .problems import is_outage, outage_response, problem_json_response
from .views import API_PREFIXES

__all__ = ["ChunkedBodyMiddleware", "OutageMiddleware", "RequestHygieneMiddleware", "read_chunked_body"]


# Django re-escapes the bytes of a path that are not UTF-8 as %XX (80 to FF) before any middleware runs.
_REESCAPED = re.compile(r"%[89A-F][0-9A-F]")


def _path_problem(path_info: str) -> str | None:
    if "\x00" in path_info:
        return "the path must not contain NUL characters"
    if _REESCAPED.search(path_info):
        return "the path is not UTF-8"
    return None


def _query_problem(raw_query: bytes) -> tuple[str, str] | None:
    """``(parameter, message)`` for the first bad parameter of a raw query string; None when all are fine."""
    for pair in raw_query.split(b"&"):
        if not pair:
            continue
        raw_name, _, raw_value = pair.partition(b"=")
        name = unquote_to_bytes(raw_name.replace(b"+", b" "))
        value = unquote_to_bytes(raw_value.replace(b"+", b" "))
        shown = name.decode("utf-8", errors="replace").replace("\x00", "\\x00")[:100] or "(empty name)"
        for part in (name, value):
            if b"\x00" in part:
                return shown, "must not contain NUL characters"
            try:
                part.decode("utf-8")
            except UnicodeDecodeError as exc:
                return shown, f"is not UTF-8 (byte {exc.start} of the decoded {'name' if part is name else 'value'})"
    return None


class RequestHygieneMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path.startswith(API_PREFIXES) or request.path_info.startswith(API_PREFIXES):
            problem = self.problem(request)
            if problem is not None:
                return problem
        return self.get_response(request)

    @staticmethod
    def problem(request: HttpRequest) -> HttpResponse | None:
        environ = request.META
        # The path as Django decoded it; the query string raw, as WSGI's latin-1 text of the bytes sent.
        message = _path_problem(request.path_info)
        if message is not None:
            return problem_json_response(400, "Invalid path", message, errors=[{"field": "path", "message": message}])
        found = _query_problem(environ.get("QUERY_STRING", "").encode("latin-1", errors="replace"))
        if found is not None:
            name, message = found
            return problem_json_response(400, "Invalid query parameter", f"{name}: {message}",
                                         errors=[{"field": name, "message": message}])
        return None


# --- chunked request bodies -------------------------------------------------------------------------------


class ChunkedBodyError(ValueError):
    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(message)


def _read_to_end(stream: Any, limit: int) -> bytes:
    """A de-chunked body from a server that ends ``wsgi.input`` where the body ends (gunicorn, or Django's test
    client whose input knows its length); at most ``limit`` + 1 bytes."""
    if hasattr(stream, "__len__"):  # the test client's FakePayload refuses to read past its end
        return stream.read(min(len(stream), limit + 1))
    parts: list[bytes] = []
    size = 0
    while size <= limit:
        part = stream.read(min(64 * 1024, limit + 1 - size))
        if not part:
            break
        parts.append(part)
        size += len(part)
    return b"".join(parts)


def _decode_chunks(read: Callable[[int], bytes], readline: Callable[[int], bytes], limit: int) -> bytes:
    """RFC 9112 chunked framing, from a server that passes it through (Django's development server)."""
    body = io.BytesIO()
    while True:
        line = readline(1024)
        if not line.endswith(b"\n"):
            raise ChunkedBodyError(400, "malformed chunked body: truncated chunk size line")
        size_text = line.split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise ChunkedBodyError(400, "malformed chunked body: bad chunk size") from None
        if size < 0:
            raise ChunkedBodyError(400, "malformed chunked body: bad chunk size")
        if size == 0:
            break
        if body.tell() + size > limit:
            raise ChunkedBodyError(413, f"the body is larger than {limit:,} bytes")
        remaining = size
        while remaining:
            data = read(remaining)
            if not data:
                raise ChunkedBodyError(400, "malformed chunked body: truncated chunk")
            body.write(data)
            remaining -= len(data)
        if read(2) not in (b"\r\n", b"\n"):
            raise ChunkedBodyError(400, "malformed chunked body: chunk not followed by CRLF")
    for _ in range(100):  # trailer fields, up to the empty line
        line = readline(8192)
        if line in (b"\r\n", b"\n", b""):
            break
    return body.getvalue()


def read_chunked_body(environ: dict, limit: int) -> bytes:
    """The whole body of a chunked request, at most ``limit`` bytes (:class:`ChunkedBodyError` otherwise).

    Three kinds of server: those that decode the framing and end the input with the body (gunicorn, which
    says so with ``wsgi.input_terminated``; Django's test client), Django's development server that passes
    the framing through (its input is a ``LimitedStream`` of length 0 over the socket: the framing is read
    from the socket underneath), and others, whose input cannot safely be read past a length (411)."""
    stream = environ["wsgi.input"]
    if isinstance(stream, LimitedStream) and not environ.get("wsgi.input_terminated"):
        # the socket under Django's development server, which its LimitedStream reads with these two
        body = _decode_chunks(getattr(stream, "_read"), getattr(stream, "_readline"), limit)  # noqa: B009
    elif environ.get("wsgi.input_terminated") or hasattr(stream, "__len__"):
        body = _read_to_end(stream, limit)
    else:
        raise ChunkedBodyError(411, "this server cannot read a chunked body: send Content-Length")
    if len(body) > limit:
        raise ChunkedBodyError(413, f"the body is larger than {limit:,} bytes")
    return body


class ChunkedBodyMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        environ = request.META
        if "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower() and not environ.get("CONTENT_LENGTH"):
            limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE or 2_621_440
            try:
                body = read_chunked_body(environ, limit)
            except ChunkedBodyError as exc:
                titles = {400: "Bad Request", 411: "Length Required", 413: "Content Too Large"}
                return problem_json_response(exc.status, titles[exc.status], str(exc))
            # From here on an ordinary request whose body has a length: Django, DRF and the ingest view read it.
            environ["CONTENT_LENGTH"] = str(len(body))
            request._stream = LimitedStream(io.BytesIO(body), len(body))  # type: ignore[assignment]
            request._read_started = False  # type: ignore[attr-defined]
        return self.get_response(request)


# --- outages ------------------------------------------------------------------------------------------------


class OutageMiddleware:
    """503 + ``Retry-After`` for a database or broker outage raised by a view outside DRF, on API paths."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if request.path.startswith(API_PREFIXES) and is_outage(exception):
            return outage_response(exception)
        return None
