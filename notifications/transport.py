"""The one module that calls receivers: URL checks (SSRF), Standard Webhooks signing and the HTTP POST.

Webhook URLs are typed by staff, so they are treated as hostile: only ``https://`` (``http://`` too when
``WEBHOOKS_ALLOW_HTTP``), no credentials in the URL, and the host must resolve only to public addresses — loopback,
private, link-local, multicast, reserved and unspecified addresses are refused unless
``WEBHOOKS_ALLOW_PRIVATE_NETWORKS``. The check runs when the endpoint is saved and again at every send, and the
connection goes to the address that was checked (no second DNS lookup a rebinding attack could answer differently).
Redirects are not followed.

Tests swap :data:`post` for a fake (``tests/fakes``) or run a real receiver on loopback with the private-network
setting on.
"""

from __future__ import annotations

import base64
import datetime as dt
import http.client
import ipaddress
import secrets
import socket
import ssl
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from standardwebhooks.webhooks import Webhook

SECRET_PREFIX = "whsec_"  # noqa: S105 - the prefix, not a secret
RESPONSE_EXCERPT = 2000
USER_AGENT = "billing-back-office-webhooks/1"


class UnsafeUrl(ValueError):
    """The URL may not be called (scheme, host, or the addresses it resolves to)."""


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(24)).decode()


def sign(*, secrets_: list[str], msg_id: str, timestamp: dt.datetime, body: str) -> str:
    """The ``webhook-signature`` header: one ``v1,…`` signature per active secret, space-separated."""
    return " ".join(Webhook(secret).sign(msg_id=msg_id, timestamp=timestamp, data=body) for secret in secrets_)


def _address_allowed(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if settings.WEBHOOKS_ALLOW_PRIVATE_NETWORKS:
        return not (ip.is_multicast or ip.is_unspecified)
    return ip.is_global and not (ip.is_multicast or ip.is_reserved or ip.is_unspecified)


def check_url_shape(url: str) -> tuple[str, str, int]:
    """Scheme, host and port of an acceptable URL (no DNS lookup); :class:`UnsafeUrl` says why not."""
    if not isinstance(url, str) or not url or len(url) > 1000 or any(ord(c) < 33 or ord(c) == 127 for c in url):
        raise UnsafeUrl("Enter a URL of at most 1,000 characters without spaces or control characters.")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UnsafeUrl(f"Not a valid URL: {exc}.") from exc
    scheme = parts.scheme.lower()
    allowed = ("https", "http") if settings.WEBHOOKS_ALLOW_HTTP else ("https",)
    if scheme not in allowed:
        raise UnsafeUrl("Webhook URLs must use https://" + (" or http://." if settings.WEBHOOKS_ALLOW_HTTP else
                                                               " (http:// needs WEBHOOKS_ALLOW_HTTP)."))
    if parts.username or parts.password:
        raise UnsafeUrl("Credentials in the URL are not allowed; use the signature to authenticate deliveries.")
    host = parts.hostname or ""
    if not host:
        raise UnsafeUrl("The URL has no host.")
    return scheme, host, port or (443 if scheme == "https" else 80)


def resolve(url: str) -> tuple[str, str, int, str]:
    """Scheme, host, port and the one checked address to connect to; :class:`UnsafeUrl` when the host does not
    resolve or resolves to any address that is not allowed."""
    scheme, host, port = check_url_shape(url)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise UnsafeUrl(f"The host {host!r} does not resolve.") from exc
    addresses = sorted({str(info[4][0]) for info in infos})
    if not addresses:
        raise UnsafeUrl(f"The host {host!r} does not resolve.")
    refused = [address for address in addresses if not _address_allowed(address)]
    if refused:
        raise UnsafeUrl(f"The host {host!r} resolves to a loopback, private or reserved address ({refused[0]}); "
                        "set WEBHOOKS_ALLOW_PRIVATE_NETWORKS to allow it.")
    return scheme, host, port, addresses[0]


@dataclass
class Response:
    status: int | None  # None: no answer (connection refused, timeout, unsafe URL)
    body: str
    error: str
    duration_ms: int


class _PinnedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, host: str, port: int, address: str, **kwargs: Any) -> None:
        super().__init__(host, port, **kwargs)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, host: str, port: int, address: str, **kwargs: Any) -> None:
        super().__init__(host, port, context=ssl.create_default_context(), **kwargs)
        self._address = address

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)  # type: ignore[attr-defined]


def http_post(url: str, headers: dict[str, str], body: str, timeout: float) -> Response:
    """POST ``body`` to ``url``; never raises for network trouble (it is in the answer)."""
    started = time.monotonic()

    def done(status: int | None, text: str = "", error: str = "") -> Response:
        return Response(status, text[:RESPONSE_EXCERPT], error[:RESPONSE_EXCERPT],
                        int((time.monotonic() - started) * 1000))

    try:
        scheme, host, port, address = resolve(url)
    except UnsafeUrl as exc:
        return done(None, error=str(exc))
    parts = urlsplit(url)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    connection_class = _PinnedHTTPSConnection if scheme == "https" else _PinnedHTTPConnection
    connection = connection_class(host, port, address, timeout=timeout)
    try:
        connection.request("POST", target, body=body.encode(), headers={
            **headers, "Content-Type": "application/json", "User-Agent": USER_AGENT})
        answer = connection.getresponse()
        text = answer.read(RESPONSE_EXCERPT * 4).decode("utf-8", "replace")
        return done(answer.status, text)
    except TimeoutError:
        return done(None, error=f"No answer within {timeout:g} s.")
    except (OSError, http.client.HTTPException) as exc:
        return done(None, error=f"{type(exc).__name__}: {exc}")
    finally:
        connection.close()


# Swapped by tests for an in-process fake: ``post(url, headers, body, timeout) -> Response``.
post = http_post
