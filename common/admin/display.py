"""Decimals in the admin read as people write them: ``0.00001``, ``1,000,000``, never ``0.000010000000000``.

Django shows a read-only ``DecimalField`` (published rate cards, list columns) with all of the column's decimal
places (``number_format(value, 15)``). The one place that changes it is here: :func:`install` (run by
``CommonConfig.ready``) wraps ``display_for_field`` where the admin calls it (read-only fields, change lists), so
every ``PreciseDecimalField`` — prices, quantities, limits, tiers — shows :func:`common.forms.plain_number`; other
fields keep Django's display. Form inputs already show the same text (``DecimalTextInput``).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.contrib.admin import helpers, utils
from django.contrib.admin.templatetags import admin_list

from ..fields import PreciseDecimalField
from ..forms import plain_number

_django_display_for_field = utils.display_for_field


def display_for_field(value: Any, field: Any, empty_value_display: str, avoid_link: bool = False) -> Any:
    if (isinstance(field, PreciseDecimalField) and isinstance(value, Decimal) and value.is_finite()
            and not getattr(field, "flatchoices", None)):
        return plain_number(value)
    return _django_display_for_field(value, field, empty_value_display, avoid_link)


def install() -> None:
    """Idempotent: point the admin's read-only fields and change lists at :func:`display_for_field`."""
    for module in (utils, helpers, admin_list):
        module.display_for_field = display_for_field  # type: ignore[attr-defined]
