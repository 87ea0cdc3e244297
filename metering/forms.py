"""Admin forms of the metering app."""

from django import forms

from .models import ApiToken


class ApiTokenCreateForm(forms.ModelForm):
    scopes = forms.MultipleChoiceField(
        choices=ApiToken.Scope.choices, widget=forms.CheckboxSelectMultiple, initial=[ApiToken.Scope.INGEST],
        help_text="A gateway needs only ingest. Scripts that read usage need read.",
    )

    class Meta:
        model = ApiToken
        fields = ("name",)
