"""The forms of Settings → Company and Settings → Stripe: every value checked before it is stored."""

from __future__ import annotations

import io
import re

from django import forms
from django.core.exceptions import ValidationError

from common.formatting import UnknownLocale, country_codes, normalize_locale

from .models import LOGO_MAX_BYTES, CompanyProfile

LOGO_MAX_PIXELS = 4096
# Magic numbers: the logo is what its bytes say, whatever its name or the browser's content type.
_SIGNATURES = {b"\x89PNG\r\n\x1a\n": ("PNG", "image/png"), b"\xff\xd8\xff": ("JPEG", "image/jpeg")}
_KEY = re.compile(r"^(sk|rk)_(test|live)_[A-Za-z0-9_]{8,240}$")
_WEBHOOK_SECRET = re.compile(r"^whsec_[A-Za-z0-9+/=_-]{8,240}$")


def read_logo(upload) -> tuple[bytes, str]:
    """The logo's bytes and content type, or :class:`ValidationError`: PNG or JPEG (by content), at most
    :data:`LOGO_MAX_BYTES`, a picture Pillow can read of at most :data:`LOGO_MAX_PIXELS` on a side."""
    if upload.size is not None and upload.size > LOGO_MAX_BYTES:
        raise ValidationError(f"The logo is too large: at most {LOGO_MAX_BYTES // 1024} KB.", code="too_large")
    data = upload.read(LOGO_MAX_BYTES + 1)
    if len(data) > LOGO_MAX_BYTES:
        raise ValidationError(f"The logo is too large: at most {LOGO_MAX_BYTES // 1024} KB.", code="too_large")
    kind = next((value for signature, value in _SIGNATURES.items() if data.startswith(signature)), None)
    if kind is None:
        raise ValidationError("The logo must be a PNG or JPEG image.", code="not_an_image")
    from PIL import Image, UnidentifiedImageError  # noqa: PLC0415 - Pillow comes with WeasyPrint

    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.format != kind[0]:
                raise ValidationError("The logo must be a PNG or JPEG image.", code="not_an_image")
            width, height = image.size
            if width > LOGO_MAX_PIXELS or height > LOGO_MAX_PIXELS:
                raise ValidationError(f"The logo is too large: at most {LOGO_MAX_PIXELS} pixels on a side.",
                                      code="too_large")
            image.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        raise ValidationError("The logo is not a readable PNG or JPEG image.", code="not_an_image") from None
    return data, kind[1]


class CompanyProfileForm(forms.ModelForm):
    logo_upload = forms.FileField(label="Logo", required=False,
                                  help_text=f"PNG or JPEG, at most {LOGO_MAX_BYTES // 1024} KB.")
    remove_logo = forms.BooleanField(required=False, help_text="Remove the current logo.")

    class Meta:
        model = CompanyProfile
        fields = ("legal_name", "street_line1", "street_line2", "postal_code", "city", "region", "country", "tax_id",
                  "email", "payment_instructions", "invoice_footer", "locale")
        widgets = {"payment_instructions": forms.Textarea(attrs={"rows": 4}),
                   "invoice_footer": forms.Textarea(attrs={"rows": 3})}

    def clean_locale(self) -> str:
        try:
            return normalize_locale(self.cleaned_data.get("locale") or "")
        except UnknownLocale as exc:
            raise ValidationError(str(exc), code="locale") from None

    def clean_country(self) -> str:
        value = (self.cleaned_data.get("country") or "").strip().upper()
        if value and value not in country_codes():
            raise ValidationError(f"{value[:8]!r} is not an ISO 3166-1 alpha-2 country code (e.g. US, DE, JP).",
                                  code="country")
        return value

    def clean_logo_upload(self):
        upload = self.cleaned_data.get("logo_upload")
        return read_logo(upload) if upload else None


class StripeKeysForm(forms.Form):
    """Keys entered here are stored encrypted and never shown again (only their last four characters)."""

    api_key = forms.CharField(label="Secret API key", required=False, max_length=255, strip=True,
                              widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
                              help_text="sk_test_…, sk_live_… or a restricted key rk_…; leave empty to keep the "
                                        "stored one.")
    webhook_secret = forms.CharField(label="Webhook signing secret", required=False, max_length=255, strip=True,
                                     widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
                                     help_text="whsec_… from the webhook endpoint in Stripe; leave empty to keep it.")
    clear_api_key = forms.BooleanField(label="Remove the stored API key", required=False)
    clear_webhook_secret = forms.BooleanField(label="Remove the stored webhook secret", required=False)

    def clean_api_key(self) -> str:
        value = self.cleaned_data.get("api_key") or ""
        if value and not _KEY.match(value):
            raise ValidationError("Not a Stripe secret key: it starts with sk_test_, sk_live_, rk_test_ or rk_live_.",
                                  code="key")
        if value.startswith("pk_"):
            raise ValidationError("That is a publishable key; enter the secret key.", code="key")
        return value

    def clean_webhook_secret(self) -> str:
        value = self.cleaned_data.get("webhook_secret") or ""
        if value and not _WEBHOOK_SECRET.match(value):
            raise ValidationError("Not a webhook signing secret: it starts with whsec_.", code="secret")
        return value
