"""Admin forms of the credits app: a grant, an adjustment, a void."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django import forms

from catalog.money import minor_unit_exponent, to_major, to_minor
from common.forms import DecimalTextField
from customers.models import Customer

from .models import CreditGrant
from .services.grants import grant_problems

MAX_MAJOR = Decimal(10) ** 15


def minor_of(amount: Decimal, currency: str) -> int:
    """``amount`` (major units) in minor units, refused when it has more decimals than the currency."""
    minor = to_minor(amount, currency)
    if to_major(minor, currency) != amount:
        raise forms.ValidationError(f"{currency} has {minor_unit_exponent(currency)} decimal places")
    return minor


class GrantForm(forms.ModelForm):
    """A grant typed by staff: the amount in major units of the customer's currency, features as keys."""

    amount_major = DecimalTextField(label="amount", max_digits=20, decimal_places=3,
                                    help_text="In the customer's currency, e.g. 20.00")
    features = forms.CharField(required=False, max_length=2000,
                               help_text="Feature keys it pays for, separated by commas; empty: every charge.")

    class Meta:
        model = CreditGrant
        fields = ("customer", "priority", "effective_at", "expires_at", "source", "description")

    def clean_features(self) -> list[str]:
        text = self.cleaned_data.get("features") or ""
        if "\x00" in text:
            raise forms.ValidationError("no NUL characters")
        return [key.strip() for key in text.split(",") if key.strip()]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        customer: Customer | None = data.get("customer")
        amount = data.get("amount_major")
        if customer is None or amount is None or self.errors:
            return data
        if amount <= 0:
            self.add_error("amount_major", "the amount must be more than zero")
            return data
        if amount >= MAX_MAJOR:
            self.add_error("amount_major", "the amount is too large")
            return data
        try:
            data["amount"] = minor_of(amount, customer.currency)
        except (forms.ValidationError, ValueError, ArithmeticError) as exc:
            self.add_error("amount_major", str(exc.messages[0] if isinstance(exc, forms.ValidationError) else exc))
            return data
        if data.get("source") == CreditGrant.Source.RECURRING:
            self.add_error("source", "recurring grants come from rate cards")
            return data
        effective_at = data.get("effective_at")
        if effective_at is None:
            self.add_error("effective_at", "required")
            return data
        problems = grant_problems(customer=customer, amount=data["amount"], currency=None,
                                  effective_at=effective_at, expires_at=data.get("expires_at"),
                                  applies_to=data.get("features") or [], source=data.get("source") or "manual")
        for name, message in problems.items():
            field = {"amount": "amount_major", "applies_to": "features", "currency": None}.get(name, name)
            self.add_error(field if field in self.fields else None, message)
        return data


class AdjustForm(forms.Form):
    amount = DecimalTextField(max_digits=20, decimal_places=3,
                              help_text="Added to what is left of the grant (negative to take away), e.g. -5.00")
    reason = forms.CharField(max_length=500, help_text="Required: why the grant is adjusted (kept in the ledger).")

    def __init__(self, *args, grant: CreditGrant, **kwargs):
        super().__init__(*args, **kwargs)
        self.grant = grant

    def clean_amount(self) -> int:
        amount = self.cleaned_data["amount"]
        if amount == 0:
            raise forms.ValidationError("the adjustment is a non-zero amount")
        if abs(amount) >= MAX_MAJOR:
            raise forms.ValidationError("the amount is too large")
        try:
            return minor_of(amount, self.grant.currency)
        except (ValueError, ArithmeticError) as exc:
            raise forms.ValidationError(str(exc)) from exc

    def clean_reason(self) -> str:
        reason = self.cleaned_data["reason"]
        if "\x00" in reason or not reason.strip():
            raise forms.ValidationError("a reason is required (text, no NUL characters)")
        return reason.strip()


class GrantVoidForm(forms.Form):
    reason = forms.CharField(max_length=500, required=False, widget=forms.TextInput(attrs={"size": 60}),
                             help_text="Optional; kept in the ledger.")

    def clean_reason(self) -> str:
        reason = self.cleaned_data["reason"]
        if "\x00" in reason:
            raise forms.ValidationError("no NUL characters")
        return reason
