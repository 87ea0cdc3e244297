"""Deleting a row other rows still need (``on_delete=PROTECT``): refused with the app's own error."""

from __future__ import annotations

from collections.abc import Callable

from django.db.models import Model, ProtectedError


def delete_unless_protected(row: Model, refusal: Callable[[ProtectedError], Exception]) -> None:
    """Delete ``row``; when protected rows point at it nothing is deleted and ``refusal(error)`` is raised."""
    try:
        row.delete()
    except ProtectedError as exc:
        raise refusal(exc) from exc
