"""Admin forms of the credits app: a grant, an adjustment, a void."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django import forms

from catalog.money import minor_unit_exponent, to_major, to_minor
from common.forms import DecimalTextField
from customers.models import Customer

from .models import AutoTopUp, CreditGrant, LowBalanceAlert
from .services.grants import grant_problems

MAX_MAJOR = Decimal(10) ** 15


def minor_of(amount: Decimal, currency: str) -> int:
    """``amount`` (major units) in minor units; a :class:`forms.ValidationError` when it is too large or has more
    decimals than the currency (the sign is each form's rule)."""
    if abs(amount) >= MAX_MAJOR:
        raise forms.ValidationError("the amount is too large")
    try:
        minor = to_minor(amount, currency)
    except (ValueError, ArithmeticError) as exc:
        raise forms.ValidationError(str(exc)) from exc
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
        try:
            data["amount"] = minor_of(amount, customer.currency)
        except forms.ValidationError as exc:
            self.add_error("amount_major", exc.messages[0])
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
        return minor_of(amount, self.grant.currency)

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


class CustomerMoneyForm(forms.ModelForm):
    """A per-customer credit setting whose amounts staff type in major units of the customer's currency (``50.00``);
    the model keeps minor units. ``MONEY`` maps each model field to its help text; ``POSITIVE`` names those that
    must be more than zero (the others may be zero)."""

    MONEY: dict[str, str] = {}
    POSITIVE: frozenset[str] = frozenset()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        currency = self.instance.customer.currency if self.instance.customer_id else None
        for name, help_text in self.MONEY.items():
            self.fields[name] = DecimalTextField(label=name.replace("_", " "), max_digits=20, decimal_places=3,
                                                 help_text=help_text)
            if currency is not None and getattr(self.instance, name) is not None:
                self.initial[name] = to_major(getattr(self.instance, name), currency)

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        customer: Customer | None = data.get("customer") or (self.instance.customer
                                                             if self.instance.customer_id else None)
        for name in self.MONEY:
            amount = data.get(name)
            if amount is None or customer is None:
                continue
            if amount < 0 or (name in self.POSITIVE and amount == 0):
                self.add_error(name, "must be more than zero" if name in self.POSITIVE else "must not be negative")
            else:
                try:
                    data[name] = minor_of(amount, customer.currency)
                except forms.ValidationError as exc:
                    self.add_error(name, exc.messages[0])
        return data


class AutoTopUpForm(CustomerMoneyForm):
    MONEY = {"threshold": "In the customer's currency, e.g. 10.00: buy when the available credits fall below it.",
             "amount": "In the customer's currency, e.g. 50.00: what each auto top-up buys."}
    POSITIVE = frozenset({"amount"})

    class Meta:
        model = AutoTopUp
        fields = ("customer", "enabled", "threshold", "amount", "max_per_period", "priority", "available_immediately")


class LowBalanceAlertForm(CustomerMoneyForm):
    MONEY = {"threshold": "In the customer's currency, e.g. 50.00: credits.low is announced when the available "
                          "credits fall below it."}

    class Meta:
        model = LowBalanceAlert
        fields = ("customer", "enabled", "threshold")
