"""Security rules the settings enforce, and the client address the admin login lockout counts by.

Plain functions, importable before Django is set up (the production settings call the checks while loading).
"""

from __future__ import annotations

import ipaddress
from typing import Any

# Django's own deploy check (security.W009) asks for at least this length and this many distinct characters.
SECRET_KEY_MIN_LENGTH = 50
SECRET_KEY_MIN_UNIQUE_CHARACTERS = 5
# hstspreload.org asks for a max-age of at least a year (and includeSubDomains) before it lists a site.
HSTS_PRELOAD_MIN_SECONDS = 365 * 24 * 60 * 60
# A command, not a secret.
HOW_TO_GENERATE_A_KEY = "python -c 'from django.core.management.utils import get_random_secret_key; " \
    "print(get_random_secret_key())'"


def secret_key_problems(key: str, *, development_key: str) -> list[str]:
    """Why ``key`` is not fit for production (empty when it is)."""
    problems = []
    if key == development_key:
        problems.append("it is the development default")
    if key.startswith("django-insecure-"):
        problems.append("it starts with 'django-insecure-' (a key made by startproject for development)")
    if len(key) < SECRET_KEY_MIN_LENGTH:
        problems.append(f"it has {len(key)} characters, fewer than {SECRET_KEY_MIN_LENGTH}")
    if len(set(key)) < SECRET_KEY_MIN_UNIQUE_CHARACTERS:
        problems.append(f"it has {len(set(key))} distinct characters, fewer than {SECRET_KEY_MIN_UNIQUE_CHARACTERS}")
    return problems


def hsts_problems(*, seconds: int, preload: bool, include_subdomains: bool) -> list[str]:
    """Why this HSTS configuration must not be sent (empty when it may)."""
    problems = []
    if preload and seconds < HSTS_PRELOAD_MIN_SECONDS:
        problems.append(
            f"SECURE_HSTS_PRELOAD needs SECURE_HSTS_SECONDS of at least {HSTS_PRELOAD_MIN_SECONDS} (a year); "
            f"it is {seconds}"
        )
    if preload and not include_subdomains:
        problems.append("SECURE_HSTS_PRELOAD needs SECURE_HSTS_INCLUDE_SUBDOMAINS=true")
    return problems


def client_ip(request: Any) -> str | None:
    """The address the request came from, as the login lockout counts it.

    With ``TRUSTED_PROXY_COUNT = 0`` it is ``REMOTE_ADDR`` and a client's own X-Forwarded-For is ignored (it
    could name any address). Behind N proxies that each append the address they saw, it is the N-th address from
    the right of X-Forwarded-For: the one the outermost trusted proxy saw; what a client wrote to the left of it
    is ignored. With fewer addresses than proxies, or not an address there, ``REMOTE_ADDR``.
    """
    from django.conf import settings

    remote = request.META.get("REMOTE_ADDR")
    count = getattr(settings, "TRUSTED_PROXY_COUNT", 0)
    if count <= 0:
        return remote
    forwarded = [part.strip() for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if part.strip()]
    if len(forwarded) < count:
        return remote
    try:
        return str(ipaddress.ip_address(forwarded[-count]))
    except ValueError:
        return remote
