"""Small admin building blocks shared by every app: a capped paginator, JSON display, view-only admins, fields of
unsaved objects, decimal text boxes for third-party models, list filters from a table of conditions."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any, TypeVar, cast

from django.contrib import admin
from django.core.paginator import Paginator
from django.db import models
from django.db.models import Q
from django.http import HttpRequest
from django.utils.functional import cached_property
from django.utils.html import format_html

from ..forms import DecimalTextField, DecimalTextInput

M = TypeVar("M", bound=models.Model)


class CappedCountPaginator(Paginator):
    """Counts at most ``cap`` rows, so admin lists over millions of events stay fast.

    Beyond the cap the last page number is an estimate; the list shows "10,000+" style counts.
    """

    cap = 10_000

    @cached_property
    def count(self) -> int:
        try:
            return cast(Any, self.object_list)[: self.cap + 1].count()
        except (AttributeError, TypeError):
            return min(len(self.object_list), self.cap + 1)


def pretty_json(value: object) -> str:
    if value is None:
        return "—"
    return format_html('<pre style="white-space:pre-wrap;margin:0">{}</pre>',
                       json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False))


def saved_only(render: Callable[[M], str]) -> Callable[[M], str]:
    """For a read-only field: on an object not saved yet (the add page) it shows "—" instead of running ``render``."""

    @functools.wraps(render)
    def field(obj: M) -> str:
        return render(obj) if obj.pk else "—"

    return field


def short_json(value: object, length: int = 80) -> str:
    if value is None:
        return ""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return text if len(text) <= length else text[: length - 1] + "…"


class NoAddOrChangeAdminMixin:
    """For records nobody adds or edits by hand but staff may delete (delivery logs, portal links): the change form
    is shown read-only, even to superusers; delete as Django decides it."""

    def has_add_permission(self, request: HttpRequest, obj: models.Model | None = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: models.Model | None = None) -> bool:
        return False


class ViewOnlyAdminMixin:
    """For records nobody edits by hand (events, issued invoices, credit notes, cycle closes, webhook deliveries,
    derived lists): the change form is shown read-only to whoever may view (``has_change_permission`` false,
    ``has_view_permission`` as Django decides it), even to superusers. What changes them are the services behind
    the admin's confirmed actions (:mod:`common.admin.confirm`) and the jobs."""

    def has_add_permission(self, request: HttpRequest, obj: models.Model | None = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: models.Model | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: models.Model | None = None) -> bool:
        return False


class DecimalTextInputsMixin:
    """For an admin of a model with plain ``models.DecimalField`` columns (a third-party model): its decimals
    become text boxes read by ``DecimalTextField``, as ``PreciseDecimalField`` does by itself for our models."""

    formfield_overrides = {models.DecimalField: {"form_class": DecimalTextField, "widget": DecimalTextInput}}


class ConditionFilter(admin.SimpleListFilter):
    """A list filter given as a table: each choice's value → (its label, the condition the rows it keeps meet)."""

    conditions: dict[str, tuple[str, Q]] = {}

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(value, label) for value, (label, _) in self.conditions.items()]

    def queryset(self, request: HttpRequest, queryset: models.QuerySet[Any]) -> models.QuerySet[Any]:
        chosen = self.conditions.get(self.value() or "")
        return queryset.filter(chosen[1]) if chosen else queryset
