"""Model fields shared by the apps."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Context, Decimal
from typing import Any

from django import forms
from django.db import models
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models.expressions import Expression

from .forms import DecimalTextField, DecimalTextInput


class PreciseDecimalField(models.DecimalField):
    """A Decimal that is exact on every database.

    PostgreSQL stores ``numeric(max_digits, decimal_places)``. SQLite's NUMERIC affinity would turn the value
    into a float (15 significant digits, so ``123456789.000000000001`` would change), so there the decimal's
    text is stored and parsed back. Used for prices, quantities and limits; never compared in SQL.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("max_digits", 38)
        kwargs.setdefault("decimal_places", 15)
        super().__init__(*args, **kwargs)

    def formfield(self, **kwargs: Any) -> forms.Field | None:
        """A text box read by ``DecimalTextField`` (digits and one dot), never ``<input type="number">``: the
        one place where every model form and admin inline of the project gets its decimal input."""
        return super().formfield(**{"form_class": DecimalTextField, "widget": DecimalTextInput, **kwargs})

    def get_internal_type(self) -> str:
        return "PreciseDecimalField"

    def db_type(self, connection: BaseDatabaseWrapper) -> str:
        if connection.vendor == "sqlite":
            return "text"
        return f"numeric({self.max_digits}, {self.decimal_places})"

    def get_db_prep_value(self, value: Any, connection: BaseDatabaseWrapper, prepared: bool = False) -> Any:
        value = super().get_db_prep_value(value, connection, prepared)
        if connection.vendor == "sqlite" and isinstance(value, Decimal):
            # Same scale as PostgreSQL's numeric(max_digits, decimal_places), so both store the same value.
            quantized = value.quantize(Decimal(1).scaleb(-self.decimal_places), rounding=ROUND_HALF_UP,
                                       context=Context(prec=self.max_digits + 2))
            return format(quantized, "f")
        return value

    def from_db_value(self, value: Any, expression: Expression, connection: BaseDatabaseWrapper) -> Decimal | None:
        if value is None or isinstance(value, Decimal):
            return value
        return Decimal(str(value))
