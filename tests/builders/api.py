"""Talking to the API as a client does."""

from __future__ import annotations

__all__ = ["bearer"]


def bearer(token: str) -> dict:
    """Client keyword arguments that send ``token`` as a Bearer token."""
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}
