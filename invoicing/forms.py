"""Admin forms of the invoicing app: the forms of its confirmed actions."""

from __future__ import annotations

from decimal import Decimal

from django import forms

from catalog.money import minor_unit_exponent, to_major, to_minor
from common.forms import DecimalTextField

from .models import Invoice


class CreditNoteForm(forms.Form):
    """A manual credit note against an issued invoice: the amount (in minor units once cleaned) and why."""

    amount = DecimalTextField(max_digits=20, decimal_places=3, min_value=Decimal("0.001"),
                              help_text="In the invoice's currency, e.g. 12.50")
    reason = forms.CharField(max_length=2000, help_text="Why the customer is credited (shown on the credit note).")
    description = forms.CharField(max_length=500, required=False, help_text="The line's text (default: the reason).")

    def __init__(self, *args, invoice: Invoice, **kwargs):
        super().__init__(*args, **kwargs)
        self.invoice = invoice

    def clean_amount(self):
        amount = self.cleaned_data["amount"]
        try:
            minor = to_minor(amount, self.invoice.currency)
        except (ValueError, ArithmeticError) as exc:
            raise forms.ValidationError(str(exc)) from exc
        if to_major(minor, self.invoice.currency) != amount:
            raise forms.ValidationError(f"{self.invoice.currency} has {minor_unit_exponent(self.invoice.currency)} "
                                        "decimal places")
        return minor


class VoidReasonForm(forms.Form):
    reason = forms.CharField(max_length=2000, required=False, widget=forms.TextInput(attrs={"size": 60}),
                             help_text="Optional; kept in the log.")
