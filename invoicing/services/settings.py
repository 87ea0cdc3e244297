"""Writes of Settings → Company and Settings → Stripe (one row each, pk 1)."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.utils import timezone

from common.crypto import encrypt, last4

from ..models import CompanyProfile, StripeSettings
from ..selectors.settings import SINGLETON, forget_stored_stripe_keys
from ..stripe_gateway import StripeAccount, StripeConfig, StripeGateway, StripeGatewayError

COMPANY_FIELDS = ("legal_name", "street_line1", "street_line2", "postal_code", "city", "region", "country", "tax_id",
                  "email", "payment_instructions", "invoice_footer", "locale")
UNCHANGED: Any = object()


@transaction.atomic
def company_profile_update(*, values: dict[str, Any], logo: tuple[bytes, str] | None = UNCHANGED) -> CompanyProfile:
    """Store the company's fields (already validated by the form); ``logo`` is (bytes, content type), ``None`` to
    remove it, or left out to keep it."""
    company, _ = CompanyProfile.objects.select_for_update().get_or_create(pk=SINGLETON)
    for name in COMPANY_FIELDS:
        if name in values:
            setattr(company, name, values[name])
    if logo is None:
        company.logo, company.logo_content_type = None, ""
    elif logo is not UNCHANGED:
        company.logo, company.logo_content_type = logo
    company.save()
    return company


@transaction.atomic
def stripe_keys_update(*, api_key: str | None = None, webhook_secret: str | None = None, clear_api_key: bool = False,
                       clear_webhook_secret: bool = False, actor: str = "") -> StripeSettings:
    """Store keys entered in the admin, encrypted; ``None`` keeps the stored one, ``clear_*`` removes it. The
    environment's keys still win (:meth:`StripeConfig.from_settings`)."""
    row, _ = StripeSettings.objects.select_for_update().get_or_create(pk=SINGLETON)
    if clear_api_key:
        row.api_key_encrypted, row.api_key_last4 = "", ""
    elif api_key:
        row.api_key_encrypted, row.api_key_last4 = encrypt(api_key), last4(api_key)
    if clear_webhook_secret:
        row.webhook_secret_encrypted, row.webhook_secret_last4 = "", ""
    elif webhook_secret:
        row.webhook_secret_encrypted, row.webhook_secret_last4 = encrypt(webhook_secret), last4(webhook_secret)
    row.updated_by = actor[:150]
    row.save()
    transaction.on_commit(forget_stored_stripe_keys)
    forget_stored_stripe_keys()
    return row


def stripe_connection_test(*, actor: str = "") -> tuple[bool, str, StripeAccount | None]:
    """Ask Stripe which account the active key belongs to; the verdict is stored on Settings → Stripe."""
    forget_stored_stripe_keys()
    config = StripeConfig.from_settings()
    account: StripeAccount | None = None
    if config.sandbox:
        ok, message = False, "No API key: sandbox mode, nothing to test. Enter a key or set STRIPE_API_KEY."
    else:
        try:
            account = StripeGateway(StripeConfig(api_key=config.api_key, api_base=config.api_base,
                                                 timeout_seconds=10, max_attempts=1)).retrieve_account()
        except StripeGatewayError as exc:
            ok, message = False, f"Stripe refused: {exc}"[:1000]
        else:
            ok = True
            message = f"Connected to {account.name or account.id} ({account.id}"
            message += f", {account.country})" if account.country else ")"
            if not account.charges_enabled:
                message += "; charges are not enabled on this account yet"
    with transaction.atomic():
        row, _ = StripeSettings.objects.select_for_update().get_or_create(pk=SINGLETON)
        row.tested_at, row.test_result = timezone.now(), ("OK: " if ok else "Failed: ") + message
        row.updated_by = actor[:150] or row.updated_by
        row.save(update_fields=["tested_at", "test_result", "updated_by", "updated_at"])
    return ok, message, account
