"""Admin forms of the customers app."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlparse

from django import forms
from django.db import connection
from django.forms.models import BaseInlineFormSet
from django.utils import timezone

from catalog.models import Plan
from catalog.rules import clean_currency
from common.forms import DateTimePickerField
from common.key_value import KeyValueField

from .models import Customer, KongConsumer, SubjectAttribution
from .selectors import kong_consumer_of, metadata_seen, unattributed_subjects
from .services.attributions import AttributionChange, attribution_changes_problems
from .services.customers import CUSTOMER_FIELDS, customer_problems

PICKER_OPTIONS_MAX = 200  # subjects, and Kong consumers, offered in the dropdown at most


class SubjectPickerWidget(forms.TextInput):
    """A text box with a dropdown of subjects nobody includes yet and of imported Kong consumers."""

    template_name = "admin/customers/widgets/subject_picker.html"

    def get_context(self, name, value, attrs):
        context = super().get_context(name, value, attrs)
        options = [
            (s.subject, f"{s.event_count:,} events, last {s.last_seen:%Y-%m-%d %H:%M}")
            for s in unattributed_subjects()[:PICKER_OPTIONS_MAX]
        ]
        for consumer in KongConsumer.objects.filter(attributions__isnull=True)[:PICKER_OPTIONS_MAX]:
            for subject in consumer.subjects:
                options.append((subject, f"Kong consumer {consumer}"))
        context["widget"]["options"] = options
        context["widget"]["list_id"] = "subject-options"
        return context


class CustomerForm(forms.ModelForm):
    metadata = KeyValueField(
        key_label="key", value_label="value",
        help_text="Your own notes as key → value (e.g. crm_id → 4711); the suggestions are other customers' keys "
                  "and values.")

    class Meta:
        model = Customer
        fields = ("key", *CUSTOMER_FIELDS)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if "metadata" in self.fields:
            self.fields["metadata"].widget.suggestions = metadata_seen

    def clean_currency(self):
        return clean_currency(self.cleaned_data.get("currency"))  # usd → USD; unknown codes: clean() names them

    def clean_metadata(self):
        """Rows hold text; a value stored as a number, list or object (through the API) shows as its JSON and is
        kept as it was when that text comes back unchanged."""
        value = self.cleaned_data.get("metadata") or {}
        stored = self.instance.metadata if self.instance.pk and isinstance(self.instance.metadata, dict) else {}
        return {
            key: stored[key] if key in stored and not isinstance(stored[key], str)
            and text == json.dumps(stored[key]) else text
            for key, text in value.items()
        }

    def clean(self):
        super().clean()
        data = self.cleaned_data
        values = dict(data)
        if self.instance.pk:
            values.pop("key", None)
        for field, message in customer_problems(values).items():
            if field in self.fields and field not in self.errors:
                self.add_error(field, message)
        return data


class AttributionForm(forms.ModelForm):
    class Meta:
        model = SubjectAttribution
        fields = ("subject", "start", "end")
        widgets = {"subject": SubjectPickerWidget(attrs={"size": 48})}
        help_texts = {
            "start": "Empty: all its usage (or from where the subject's previous mapping ends). "
                     "Editable until an issued invoice billed usage the change would move.",
            "end": "Set to stop including this subject.",
        }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["start"].required = False
        if self.instance.pk:
            self.fields["subject"].disabled = True

    def _get_validation_exclusions(self):
        """The windows of a subject are checked together by the formset (the service's rules, with clearer
        messages than the database constraints'); the model's constraints are not validated row by row here
        (the form fields still validate the values)."""
        # ignore: a private ModelForm method (stable since Django 4.1) that django-stubs leave out
        return {*super()._get_validation_exclusions(), "subject", "start", "end"}  # type: ignore[misc]


class AttributionFormSet(BaseInlineFormSet):
    """ "Include usage from" rows: validated as one batch by the attribution service, so a save with a refused
    row shows form errors and saves nothing. Inside the admin's transaction the subjects stay locked from this
    check to the save."""

    def clean(self):
        super().clean()
        self.attribution_changes: list[tuple[forms.ModelForm[Any], AttributionChange]] = []
        for form in self.forms:
            if not form.has_changed() or form.errors:
                continue
            data = form.cleaned_data
            if form.instance.pk:
                change = AttributionChange(form.instance.subject, data.get("start"), data.get("end"),
                                           attribution=form.instance)
            elif data.get("subject"):
                subject = data["subject"]
                change = AttributionChange(subject, data.get("start"), data.get("end"),
                                           default_start=data.get("start") is None,
                                           kong_consumer=kong_consumer_of(subject.strip()))
            else:
                continue
            self.attribution_changes.append((form, change))
        problems = attribution_changes_problems(customer=self.instance,
                                                changes=[change for _, change in self.attribution_changes],
                                                lock=connection.in_atomic_block)
        for (form, _), errors in zip(self.attribution_changes, problems, strict=True):
            for field, message in errors.items():
                form.add_error(field if field in form.fields else None, message)


class SubscriptionCreateForm(forms.Form):
    ANCHORS = [
        ("start", "The start (periods begin on the start date)"),
        ("calendar", "Calendar: the 1st of the month"),
        ("custom", "Custom anchor"),
    ]

    customer = forms.ModelChoiceField(queryset=Customer.objects.order_by("name"))
    plan = forms.ModelChoiceField(
        queryset=Plan.objects.filter(status=Plan.Status.PUBLISHED).order_by("key"),
        help_text="Published plan versions only.",
    )
    start = DateTimePickerField(
        initial=timezone.now, help_text="UTC. May be in the future; usage before it is never billed."
    )
    anchor = forms.ChoiceField(choices=ANCHORS, initial="start", widget=forms.RadioSelect)
    custom_anchor = DateTimePickerField(required=False, help_text="UTC, with 'Custom anchor'.")

    def clean(self):
        super().clean()
        data = self.cleaned_data
        if data.get("anchor") == "custom" and not data.get("custom_anchor"):
            self.add_error("custom_anchor", "give the anchor date-time")
        customer, plan = data.get("customer"), data.get("plan")
        if customer and plan and customer.currency != plan.currency:
            self.add_error("plan", f"{plan} bills in {plan.currency}; {customer} is invoiced in {customer.currency}")
        return data

    def anchor_value(self):
        return self.anchor_of(self.cleaned_data)

    @staticmethod
    def anchor_of(data: dict):
        """The ``billing_anchor`` of ``subscription_create`` from the form's cleaned data."""
        return {"start": None, "calendar": "calendar"}.get(data["anchor"], data.get("custom_anchor"))


class SubscriptionCancelForm(forms.Form):
    when = forms.ChoiceField(
        choices=[("period_end", "At the end of the current period"), ("now", "Now")],
        widget=forms.RadioSelect,
        initial="period_end",
    )


class SubscriptionChangeForm(forms.Form):
    plan = forms.ModelChoiceField(queryset=Plan.objects.filter(status=Plan.Status.PUBLISHED).order_by("key"))
    when = forms.ChoiceField(
        choices=[("now", "Now (prorated)"), ("period_end", "At the end of the current period")],
        widget=forms.RadioSelect,
        initial="now",
    )


class KongImportForm(forms.Form):
    admin_url = forms.CharField(label="Kong Admin API URL", max_length=500, help_text="e.g. http://kong:8001")
    token = forms.CharField(required=False, widget=forms.PasswordInput, help_text="Kong-Admin-Token, when RBAC is on.")

    def clean_admin_url(self):
        # Scheme and host only: service names like http://kong:8001 are fine.
        value = self.cleaned_data["admin_url"].strip()
        parsed = urlparse(value)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise forms.ValidationError("Enter an http:// or https:// URL, e.g. http://kong:8001")
        return value


class IncludeForm(forms.Form):
    """Which customer the usage of the selected subjects or Kong consumers goes to."""

    customer = forms.ModelChoiceField(queryset=Customer.objects.order_by("name"))
