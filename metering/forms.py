"""Admin forms of the metering app."""

from django import forms

from common.key_value import KeyValueField

from .meter_rules import validate_meter
from .models import ApiToken, Meter
from .selectors.events import recent_data_keys
from .services.meters import MeterValidationError, meter_update_check
from .windows import WindowError, time_zone


class ApiTokenCreateForm(forms.ModelForm):
    scopes = forms.MultipleChoiceField(
        choices=ApiToken.Scope.choices, widget=forms.CheckboxSelectMultiple, initial=[ApiToken.Scope.INGEST],
        help_text="A gateway needs only ingest. Scripts that read usage need read.",
    )

    class Meta:
        model = ApiToken
        fields = ("name",)


class MeterForm(forms.ModelForm):
    """Admin form for meters: validation comes from metering.meter_rules, saving from the meter services."""

    group_by = KeyValueField(
        key_label="group-by name", value_label="JSONPath",
        help_text="One row per group-by: a name and the JSONPath of its value, e.g. model → $.model. The "
                  "suggestions are the keys of recent events' data.",
    )

    class Meta:
        model = Meter
        fields = ("slug", "name", "description", "event_type", "aggregation", "value_property", "value_absent",
                  "group_by")
        help_texts = {
            "slug": "Lowercase words joined by underscores, e.g. llm_tokens. Cannot change later.",
            "event_type": "The CloudEvent type to count, e.g. kong.llm_request.",
            "value_property": "JSONPath of the number to aggregate (not for COUNT): $.a, $.a.b, $.a[0].",
            "value_absent": "An event whose data lacks the value property (or has null there): an event problem "
                            "(not counted, shown in the event explorer as \"value at $.x is missing\"), or zero, "
                            "for a field the gateway sends only when it has something to count (e.g. "
                            "$.cache_read_tokens). Zero is for SUM, AVG, MIN, MAX and LATEST; a value that is "
                            "there but not a number is an event problem either way.",
        }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        event_type = self.instance.event_type if self.instance.pk else None
        if "value_absent" in self.fields:  # (a read-only view has none)
            self.fields["value_absent"].required = False  # not posted: the default (an event problem)
        self.fields["group_by"].widget.suggestions = lambda: self._suggestions(event_type)

    @staticmethod
    def _suggestions(event_type: str | None) -> tuple[list[str], list[str]]:
        keys = recent_data_keys(event_type=event_type)
        return keys, [f"$.{key}" for key in keys]

    def clean_value_absent(self) -> str:
        return self.cleaned_data.get("value_absent") or Meter.ValueAbsent.INVALID

    def clean(self):
        super().clean()
        data = self.cleaned_data
        slug = self.instance.slug if self.instance.pk else data.get("slug", "")
        errors = validate_meter(
            slug=slug or "", name=data.get("name") or "", event_type=data.get("event_type") or "",
            aggregation=data.get("aggregation") or "", value_property=data.get("value_property") or "",
            group_by=data.get("group_by") if data.get("group_by") is not None else {},
            value_absent=data.get("value_absent") or Meter.ValueAbsent.INVALID,
        )
        if not errors and self.instance.pk and not self.errors:
            errors = self._refusals(data)
        for field, message in errors.items():
            if field in self.fields and field not in self.errors:
                self.add_error(field, message)
            elif field not in self.fields:
                self.add_error(None, message)
        return data

    def _refusals(self, data) -> dict[str, str]:
        """What :func:`metering.services.meters.meter_update` would refuse (a meter frozen by published
        plans, a group-by a feature filters on), as form errors rather than a failed save."""
        stored = Meter.objects.get(pk=self.instance.pk)
        changes = {name: data.get(name) for name in ("event_type", "aggregation", "value_property", "value_absent",
                                                     "group_by")}
        changes["group_by"] = changes["group_by"] if changes["group_by"] is not None else {}
        try:
            meter_update_check(meter=stored, **changes)
        except MeterValidationError as exc:
            return exc.errors
        return {}


class UsageExplorerForm(forms.Form):
    WINDOWS = [("", "Whole range"), ("MINUTE", "Minute"), ("HOUR", "Hour"), ("DAY", "Day"), ("MONTH", "Month")]

    meter = forms.ModelChoiceField(queryset=Meter.objects.order_by("slug"))
    subjects = forms.CharField(required=False, help_text="Comma-separated subjects; empty for all.")
    start = forms.DateTimeField(label="From", widget=forms.DateTimeInput(attrs={"type": "datetime-local"}))
    end = forms.DateTimeField(label="To", widget=forms.DateTimeInput(attrs={"type": "datetime-local"}))
    window_size = forms.ChoiceField(choices=WINDOWS, required=False, initial="DAY")
    time_zone = forms.CharField(initial="UTC", help_text="IANA time zone for the windows, e.g. Europe/Berlin.")
    group_by = forms.CharField(required=False, help_text="Comma-separated group-by names, and/or subject.")

    def clean_subjects(self) -> list[str]:
        return [s.strip() for s in self.cleaned_data["subjects"].split(",") if s.strip()]

    def clean_group_by(self) -> list[str]:
        return [s.strip() for s in self.cleaned_data["group_by"].split(",") if s.strip()]

    def clean_time_zone(self):
        try:
            return time_zone(self.cleaned_data["time_zone"]).key
        except WindowError as exc:
            raise forms.ValidationError(str(exc)) from None


class ConnectGatewayForm(forms.Form):
    name = forms.CharField(initial="kong-gateway", max_length=100, help_text="What the token is for.")
    public_url = forms.URLField(label="This server's URL, as the gateway reaches it", assume_scheme="https",
                                help_text="e.g. https://billing.example.com")
    meter_ai_token_usage = forms.BooleanField(required=False, initial=True,
                                              label="Meter AI tokens (enables the llm_tokens meter)")
    meter_api_requests = forms.BooleanField(required=False, initial=True,
                                            label="Meter API requests (enables the api_requests meter)")
