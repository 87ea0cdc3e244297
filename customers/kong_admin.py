"""A small client for Kong's Admin API: every consumer, following ``next`` pages. No database access."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field

PAGE_SIZE = 1000
MAX_PAGES = 10_000
TIMEOUT_SECONDS = 15


class KongAdminError(Exception):
    """The Admin API could not be read; the message says why, for an operator."""


@dataclass(frozen=True)
class KongConsumerData:
    id: str
    username: str | None
    custom_id: str | None = None
    tags: list[str] = field(default_factory=list)


def _get_json(url: str, token: str | None) -> dict:
    headers = {"Accept": "application/json"}
    if token:
        headers["Kong-Admin-Token"] = token
    request = urllib.request.Request(url, headers=headers)  # noqa: S310 - operator-given admin URL
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:  # noqa: S310
            body = response.read()
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            raise KongAdminError(f"the Kong Admin API refused access ({exc.code}) at {url}: check --token") from exc
        raise KongAdminError(f"the Kong Admin API answered {exc.code} for {url}") from exc
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise KongAdminError(f"cannot reach the Kong Admin API at {url}: {reason}") from exc
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise KongAdminError(f"the Kong Admin API at {url} did not return JSON") from exc
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise KongAdminError(f'unexpected answer from {url}: expected {{"data": [...], "next": ...}}')
    return data


def fetch_consumers(admin_url: str, token: str | None = None) -> list[KongConsumerData]:
    """All consumers of a Kong node or Konnect control plane admin URL (pages joined via ``next``)."""
    parsed = urllib.parse.urlparse(admin_url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise KongAdminError(f"{admin_url!r} is not an http(s) URL of a Kong Admin API")
    base = admin_url.rstrip("/")
    url: str | None = f"{base}/consumers?size={PAGE_SIZE}"
    consumers: list[KongConsumerData] = []
    for _ in range(MAX_PAGES):
        if url is None:
            return consumers
        page = _get_json(url, token)
        for item in page["data"]:
            if not isinstance(item, dict) or not item.get("id"):
                raise KongAdminError(f"a consumer without an id in the answer of {url}")
            consumers.append(
                KongConsumerData(
                    id=str(item["id"]),
                    username=item.get("username") or None,
                    custom_id=item.get("custom_id") or None,
                    tags=item.get("tags") or [],
                )
            )
        url = _next_page(base, page.get("next"))
    raise KongAdminError(f"more than {MAX_PAGES} pages of consumers: stopping")


def _next_page(base: str, following: object) -> str | None:
    """Kong's ``next`` is a path from the host root (``/consumers?offset=…``, or with Konnect's prefix
    ``/v2/control-planes/<id>/core-entities/consumers?offset=…``). Like decK, follow its ``offset`` from our
    own base URL, so a prefix is never applied twice."""
    if not following:
        return None
    if not isinstance(following, str):
        raise KongAdminError(f"unexpected 'next' in the answer of {base}/consumers: {following!r}")
    offset = urllib.parse.parse_qs(urllib.parse.urlparse(following).query).get("offset")
    if offset:
        return f"{base}/consumers?size={PAGE_SIZE}&offset={urllib.parse.quote(offset[0], safe='')}"
    return urllib.parse.urljoin(base, following)
