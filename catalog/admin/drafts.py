"""What the plan and rate card pages share: only drafts change, and a rate card's price as a sentence."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.contrib import admin
from django.db.models import Model
from django.http import HttpRequest

from ..display import price_summary
from ..models import Plan, RateCard

if TYPE_CHECKING:
    from django.contrib.admin.options import BaseModelAdmin

    _AdminBase = BaseModelAdmin[Any]
else:
    _AdminBase = object


class PlanDraftOnly(_AdminBase):
    """Published and archived versions are shown read-only (their object-level change, add and delete
    permissions are false); editing one is "Edit (new version)", a confirmed action."""

    def _plan_of(self, obj: Any) -> Plan:
        raise NotImplementedError

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        if obj is not None and not self._plan_of(obj).is_editable:
            return False
        return super().has_change_permission(request, obj)

    def has_add_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        if obj is not None and not self._plan_of(obj).is_editable:
            return False
        if isinstance(self, admin.options.InlineModelAdmin):  # inlines take the parent object, model admins don't
            return super().has_add_permission(request, obj)  # type: ignore[call-arg]  # an inline's takes the parent
        return super().has_add_permission(request)

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        if obj is not None and not self._plan_of(obj).is_editable:
            return False
        return super().has_delete_permission(request, obj)


def rate_card_price_text(rate_card: RateCard | None) -> str:
    """The saved rate card's price sentence (the form's live preview replaces it while someone types)."""
    if rate_card is None or not rate_card.pk:
        return "—"
    return price_summary(rate_card, rate_card.plan.currency)
