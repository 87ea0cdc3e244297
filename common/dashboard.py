"""The admin home's dashboard, from a registry: an app higher up registers the function that builds it, so the
admin site (configuration) never imports an app to draw its home page."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from django.contrib.auth.base_user import AbstractBaseUser
    from django.contrib.auth.models import AnonymousUser

DashboardBuilder = Callable[[Any], dict[str, Any]]
_builders: list[DashboardBuilder] = []


def register_dashboard(builder: DashboardBuilder) -> DashboardBuilder:
    """Register ``builder(user) -> dict`` (usable as a decorator); later registrations add or override keys."""
    if builder not in _builders:
        _builders.append(builder)
    return builder


def dashboard_for(user: AbstractBaseUser | AnonymousUser) -> dict[str, Any]:
    context: dict[str, Any] = {}
    for builder in _builders:
        context.update(builder(user))
    return context
