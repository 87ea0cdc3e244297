"""The JSON request-body parser of every DRF view (``REST_FRAMEWORK["DEFAULT_PARSER_CLASSES"]``).

It decodes with :func:`common.json_body.decode_json`: UTF-8 only, nested at most 64 levels, no NUL in
strings, at most :data:`MAX_JSON_BODY_BYTES`. A body it refuses is a 400 (413 when too large, 415 for another
charset) problem+json, never a 500. The ingest endpoints read their bodies themselves
(:mod:`metering.cloudevents`), under the same rules.

It raises DRF's own exceptions (rendered as problem+json by :mod:`common.problems`), not ``Problem``: DRF imports
this module while ``rest_framework.views`` is being imported, which ``common.problems`` itself imports.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import IO, Any

from django.utils.http import parse_header_parameters
from rest_framework import exceptions
from rest_framework.parsers import BaseParser
from rest_framework.renderers import JSONRenderer

from .json_body import JsonBodyError, decode_json

MAX_JSON_BODY_BYTES = 1024 * 1024


class ContentTooLarge(exceptions.APIException):
    status_code = 413
    default_detail = "The request body is too large."
    default_code = "content_too_large"


class JsonBodyParser(BaseParser):
    media_type = "application/json"
    renderer_class = JSONRenderer

    def parse(self, stream: IO[Any] | None, media_type: str | None = None,
              parser_context: Mapping[str, Any] | None = None) -> Any:
        media_type = media_type or self.media_type
        charset = parse_header_parameters(media_type)[1].get("charset", "utf-8").lower()
        if charset not in ("utf-8", "utf8"):
            raise exceptions.UnsupportedMediaType(
                media_type, f"JSON bodies are UTF-8; charset={charset} is not supported.")
        body = stream.read(MAX_JSON_BODY_BYTES + 1) if stream is not None else b""
        if len(body) > MAX_JSON_BODY_BYTES:
            raise ContentTooLarge(f"A JSON body may hold at most {MAX_JSON_BODY_BYTES:,} bytes.")
        try:
            return decode_json(body)
        except JsonBodyError as exc:
            raise exceptions.ParseError(f"Malformed request body: {exc}") from None
