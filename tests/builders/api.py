"""Talking to the API as a client does."""

from __future__ import annotations

from metering import throttles

__all__ = ["bearer", "stopped_throttle_clock"]


def bearer(token: str) -> dict:
    """Client keyword arguments that send ``token`` as a Bearer token."""
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}


def stopped_throttle_clock(monkeypatch, at: float):
    """The API throttles' clock (``metering.throttles``) stopped at ``at`` seconds since the epoch; the returned
    object's ``now`` moves it."""

    class Clock:
        now = at

    monkeypatch.setattr(throttles, "_now", lambda: Clock.now)
    return Clock
