"""The one door to Stripe.

This is the only module of the project that imports ``stripe``. It knows nothing about our Django
models: callers pass plain values (ids, minor-unit amounts, metadata) and get frozen dataclasses back,
so the invoicing service decides *what* to push and this module only decides *how* to talk to Stripe.

Guarantees, in order of importance:

* Every write that creates or changes state in Stripe carries an idempotency key chosen by the caller
  (``idempotency_key("invoice-line", line.pk)``), so the same logical call made twice -- by an in-process
  retry, a Celery retry or a rerun after a crash -- is executed by Stripe once. Stripe keeps keys for at
  least 24 hours; a rerun later than that must find what exists through the ids we stored and
  :meth:`StripeGateway.list_invoice_items`, never by trusting the key alone.
* Transient failures (network errors, timeouts, HTTP 409/429/5xx) are retried here a bounded number of
  times with exponential backoff and jitter, reusing the same idempotency key, and then surface as
  :class:`StripeRetryableError` so the Celery task can retry later. Everything else is a
  :class:`StripePermanentError` carrying Stripe's own message: retrying it cannot help.
* Invoices are never auto-advanced: Stripe must not finalize, email or charge anything we have not
  decided to, and pending invoice items of the customer never leak into our invoices. Credit notes are
  created with ``email_type=none`` for the same reason.

Without an API key the system runs in sandbox mode (:func:`is_sandbox`); constructing a gateway then
is an error, so no code path can reach Stripe by accident.
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import stripe
from stripe.params import (
    CreditNoteCreateParams,
    CreditNoteCreateParamsLine,
    CreditNoteListParams,
    CreditNoteVoidCreditNoteParams,
    CustomerCreateParams,
    CustomerCreateParamsAddress,
    CustomerUpdateParams,
    CustomerUpdateParamsAddress,
    InvoiceCreateParams,
    InvoiceFinalizeInvoiceParams,
    InvoiceItemCreateParams,
    InvoiceItemListParams,
    InvoiceVoidInvoiceParams,
)

from common.json_body import JsonBodyError, decode_json

__all__ = [
    "CollectionMethod",
    "CreditNoteReason",
    "StripeCreditNote",
    "StripeConfig",
    "StripeGateway",
    "StripeGatewayError",
    "StripeInvoice",
    "StripeInvoiceItem",
    "StripePermanentError",
    "StripeRetryableError",
    "WebhookSignatureError",
    "collection_method",
    "construct_webhook_event",
    "idempotency_key",
    "is_sandbox",
    "key_mode",
    "register_stored_keys",
    "StripeAccount",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")
ListedObject = TypeVar("ListedObject", stripe.InvoiceItem, stripe.CreditNote)
ListParams = TypeVar("ListParams", InvoiceItemListParams, CreditNoteListParams)
AddressParams = TypeVar("AddressParams", CustomerCreateParamsAddress, CustomerUpdateParamsAddress)

CollectionMethod = Literal["charge_automatically", "send_invoice"]
CreditNoteReason = Literal["duplicate", "fraudulent", "order_change", "product_unsatisfactory"]


def collection_method(value: str) -> CollectionMethod:
    """A customer's collection method as Stripe's parameter; anything else is refused."""
    if value == "charge_automatically":
        return "charge_automatically"
    if value == "send_invoice":
        return "send_invoice"
    raise ValueError(f"unknown collection_method {value!r}")

# Stripe's documented limits (https://docs.stripe.com/api/idempotent_requests, /api/metadata).
MAX_IDEMPOTENCY_KEY_LENGTH = 255
MAX_CREDIT_NOTE_MEMO_LENGTH = 5000  # Stripe's limit on free-text request parameters
AddressField = Literal["line1", "line2", "city", "state", "postal_code", "country"]
# Typed as the SDK's keys, so mypy checks each against its address TypedDicts.
ADDRESS_FIELDS: tuple[AddressField, ...] = ("line1", "line2", "city", "state", "postal_code", "country")
LIST_PAGE_SIZE = 100  # the largest page Stripe serves


# --------------------------------------------------------------------------------------------------
# Configuration


@dataclass(frozen=True)
class StripeConfig:
    """How to reach Stripe. Secrets are kept out of ``repr`` so they never land in logs or tracebacks."""

    api_key: str = field(repr=False)
    webhook_secret: str = field(default="", repr=False)
    api_base: str | None = None
    timeout_seconds: float = 20
    max_attempts: int = 4
    backoff_base_seconds: float = 0.5
    backoff_max_seconds: float = 8

    def __post_init__(self) -> None:
        if self.timeout_seconds <= 0:
            raise ValueError("timeout_seconds must be positive")
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.backoff_base_seconds < 0 or self.backoff_max_seconds < 0:
            raise ValueError("backoff seconds must not be negative")

    @classmethod
    def from_settings(cls) -> StripeConfig:
        """Read ``STRIPE_API_KEY``, ``STRIPE_WEBHOOK_SECRET`` and ``STRIPE_API_BASE`` (all optional); a key the
        environment leaves empty comes from the keys stored in Settings → Stripe (:func:`register_stored_keys`)."""
        from django.conf import settings

        api_key = (getattr(settings, "STRIPE_API_KEY", "") or "").strip()
        webhook_secret = (getattr(settings, "STRIPE_WEBHOOK_SECRET", "") or "").strip()
        if (not api_key or not webhook_secret) and _stored_keys is not None:
            stored_key, stored_secret = _stored_keys()
            api_key, webhook_secret = api_key or stored_key, webhook_secret or stored_secret
        return cls(
            api_key=api_key,
            webhook_secret=webhook_secret,
            api_base=(getattr(settings, "STRIPE_API_BASE", "") or "").strip() or None,
        )

    @property
    def sandbox(self) -> bool:
        return not self.api_key.strip()


# Keys entered in the admin (stored encrypted by invoicing): a function answering (api key, webhook secret), each
# "" when not stored. Registered by InvoicingConfig.ready(); this module never reads the database itself.
_stored_keys: Callable[[], tuple[str, str]] | None = None


def register_stored_keys(provider: Callable[[], tuple[str, str]] | None) -> None:
    global _stored_keys
    _stored_keys = provider


KeyMode = Literal["sandbox", "test", "live"]


def key_mode(api_key: str) -> KeyMode:
    """What a key reaches: ``live`` (``sk_live_``/``rk_live_``), ``test`` (any other key: ``sk_test_``,
    ``rk_test_``), ``sandbox`` without a key (nothing leaves this system)."""
    api_key = api_key.strip()
    if not api_key:
        return "sandbox"
    return "live" if api_key.startswith(("sk_live_", "rk_live_")) else "test"


def is_sandbox(config: StripeConfig | None = None) -> bool:
    """True when no Stripe API key is configured: invoices then stay local and nothing is pushed."""
    return (config if config is not None else StripeConfig.from_settings()).sandbox


def idempotency_key(kind: str, *ids: object) -> str:
    """A deterministic Stripe idempotency key from our own ids: ``idempotency_key("invoice-line", 42)``
    is ``"invoice-line-42"``.

    The optional setting ``STRIPE_IDEMPOTENCY_PREFIX`` namespaces the keys of one installation, so two
    installations sharing a Stripe account (staging and a developer laptop, say) never replay each
    other's responses for equal primary keys.
    """
    from django.conf import settings

    if not kind:
        raise ValueError("idempotency_key needs a kind")
    if not ids:
        raise ValueError("idempotency_key needs at least one id")
    parts = [kind]
    for value in ids:
        # An unsaved row (pk None) or a blank id would silently collide with every other such call.
        if value is None or (isinstance(value, str) and not value.strip()):
            raise ValueError(f"idempotency_key({kind!r}, ...) got an empty id: {ids!r}")
        parts.append(str(value))
    key = "-".join(parts)
    prefix = str(getattr(settings, "STRIPE_IDEMPOTENCY_PREFIX", "") or "").strip().rstrip("-")
    if prefix:
        key = f"{prefix}-{key}"
    if len(key) > MAX_IDEMPOTENCY_KEY_LENGTH:
        raise ValueError(f"idempotency key longer than {MAX_IDEMPOTENCY_KEY_LENGTH} characters: {key!r}")
    return key


# --------------------------------------------------------------------------------------------------
# Plain data handed back to callers


@dataclass(frozen=True)
class StripeAccount:
    """The Stripe account a key belongs to."""

    id: str
    name: str
    email: str
    country: str
    charges_enabled: bool


@dataclass(frozen=True)
class StripeInvoice:
    id: str
    number: str | None  # assigned by Stripe at finalization
    status: str  # draft | open | paid | uncollectible | void
    hosted_invoice_url: str | None  # set at finalization
    amount_due: int  # minor units
    currency: str  # lowercase, as Stripe spells it
    amount_remaining: int = 0  # what is still owed (amount due less paid); 0 once paid or void
    total: int = 0  # minor units, before credit notes and customer balance


@dataclass(frozen=True)
class StripeCreditNote:
    id: str
    number: str  # Stripe's own, ``<invoice number>-CN-01``
    status: str  # issued | void
    total: int  # minor units, positive
    invoice: str  # the ``in_...`` id it credits
    pre_payment_amount: int  # part that lowered what the invoice still owed
    post_payment_amount: int  # part credited elsewhere (here: to the customer's Stripe balance)
    metadata: Mapping[str, str]


@dataclass(frozen=True)
class StripeInvoiceItem:
    id: str
    amount: int  # minor units
    metadata: Mapping[str, str]


def _every_page(fetch: Callable[[ListParams], stripe.ListObject[ListedObject]],
                params: ListParams) -> list[ListedObject]:
    """Every object of a Stripe list, page after page (``params`` of the first; each next one starts after the
    last object of the page before)."""
    found: list[ListedObject] = []
    while True:
        page = fetch(params)
        found.extend(page.data)
        if not page.has_more or not page.data:
            return found
        params = params.copy()
        params["starting_after"] = page.data[-1].id


# --------------------------------------------------------------------------------------------------
# Errors


class StripeGatewayError(Exception):
    """A Stripe call failed. ``message`` is Stripe's own message when Stripe answered."""

    def __init__(
        self,
        message: str,
        code: str | None = None,
        http_status: int | None = None,
        *,
        error_type: str | None = None,
        param: str | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.http_status = http_status
        self.error_type = error_type
        self.param = param
        self.request_id = request_id

    def __str__(self) -> str:
        details = [
            f"{name}={value}"
            for name, value in (
                ("http_status", self.http_status),
                ("type", self.error_type),
                ("code", self.code),
                ("param", self.param),
                ("request_id", self.request_id),
            )
            if value is not None
        ]
        return f"{self.message} ({', '.join(details)})" if details else self.message


class StripeRetryableError(StripeGatewayError):
    """Transient: network error, timeout, HTTP 409/429/5xx, still failing after the in-process retries.
    Retrying later with the same idempotency key is safe."""


class StripePermanentError(StripeGatewayError):
    """Stripe refused the request (other 4xx: invalid parameters, wrong state, bad key, idempotency
    key reused with different parameters...). Retrying the same request cannot succeed."""


class WebhookSignatureError(ValueError):
    """A webhook payload whose signature is missing, wrong or too old, or whose body is not an event."""


# --------------------------------------------------------------------------------------------------
# The gateway


class StripeGateway:
    """Thin, typed calls to the Stripe API with bounded retries. One instance may serve many calls and
    threads (the HTTP client keeps one session per thread)."""

    def __init__(
        self,
        config: StripeConfig,
        *,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        if config.sandbox:
            raise ValueError("No Stripe API key configured (sandbox mode): invoices stay local")
        self.config = config
        self._sleep = sleep
        self._rng = rng or random.Random()  # jitter only; not security sensitive
        self._client = stripe.StripeClient(
            config.api_key,
            base_addresses={"api": config.api_base} if config.api_base else None,
            # Retries are ours (below), so they are bounded, logged and use an injectable sleep.
            max_network_retries=0,
            # `timeout` bounds the connect and each socket read of one attempt.
            http_client=stripe.RequestsClient(timeout=config.timeout_seconds),
        )

    # -- account -----------------------------------------------------------------------------------

    def retrieve_account(self) -> StripeAccount:
        """The account of the API key (Settings → Stripe's *Test connection*); a bad key is a permanent error."""
        account = self._call("retrieve_account", lambda: self._client.v1.accounts.retrieve_current())
        profile = account.business_profile
        settings_ = account.settings
        dashboard = settings_.dashboard if settings_ is not None else None
        name = (profile.name if profile is not None else None) or (
            dashboard.display_name if dashboard is not None else None) or ""
        return StripeAccount(id=account.id, name=name or "", email=account.email or "",
                             country=account.country or "", charges_enabled=bool(account.charges_enabled))

    # -- customers ---------------------------------------------------------------------------------

    def create_customer(
        self,
        *,
        customer_key: str,
        name: str,
        email: str | None,
        address: Mapping[str, Any] | None,
        idempotency_key: str,
    ) -> str:
        """Create a Stripe customer tagged with our customer key; returns its ``cus_...`` id."""
        params: CustomerCreateParams = {"name": name, "metadata": {"customer_key": customer_key}}
        if email:
            params["email"] = email
        create_address = _address_params(address, CustomerCreateParamsAddress)
        if create_address:
            params["address"] = create_address
        customer = self._call(
            "create_customer",
            lambda: self._client.v1.customers.create(params=params, options={"idempotency_key": idempotency_key}),
        )
        return customer.id

    def update_customer(
        self,
        *,
        stripe_customer_id: str,
        name: str,
        email: str | None,
        address: Mapping[str, Any] | None,
    ) -> None:
        """Overwrite name, email and address (a ``None`` email or address clears it in Stripe)."""
        params: CustomerUpdateParams = {"name": name, "email": email or ""}
        update_address = _address_params(address, CustomerUpdateParamsAddress)
        params["address"] = update_address if update_address else ""
        # Setting the same values twice is harmless, but one key per logical call makes our retries
        # replays rather than second writes.
        key = f"customer-update-{stripe_customer_id}-{uuid.uuid4()}"
        self._call(
            "update_customer",
            lambda: self._client.v1.customers.update(
                stripe_customer_id, params=params, options={"idempotency_key": key}
            ),
        )

    # -- invoices ----------------------------------------------------------------------------------

    def create_invoice(
        self,
        *,
        stripe_customer_id: str,
        currency: str,
        collection_method: CollectionMethod,
        days_until_due: int | None,
        metadata: Mapping[str, str],
        description: str | None,
        idempotency_key: str,
    ) -> StripeInvoice:
        """Create a draft invoice that Stripe will not advance on its own and that picks up none of the
        customer's pending invoice items."""
        if collection_method not in ("charge_automatically", "send_invoice"):
            raise ValueError(f"unknown collection_method {collection_method!r}")
        params: InvoiceCreateParams = {
            "customer": stripe_customer_id,
            "currency": currency.lower(),
            "collection_method": collection_method,
            "auto_advance": False,
            "pending_invoice_items_behavior": "exclude",
            "metadata": dict(metadata),
        }
        if days_until_due is not None:
            if collection_method != "send_invoice":
                raise ValueError("days_until_due only applies to collection_method='send_invoice'")
            params["days_until_due"] = days_until_due
        if description:
            params["description"] = description
        invoice = self._call(
            "create_invoice",
            lambda: self._client.v1.invoices.create(params=params, options={"idempotency_key": idempotency_key}),
        )
        return _invoice(invoice)

    def add_invoice_item(
        self,
        *,
        stripe_customer_id: str,
        stripe_invoice_id: str,
        amount: int,
        currency: str,
        description: str,
        metadata: Mapping[str, str],
        period_start: int | None,
        period_end: int | None,
        idempotency_key: str,
    ) -> str:
        """Attach one amount-only item (``amount`` in minor units, negative for a credit) to a draft
        invoice; returns its ``ii_...`` id. The period is shown on the invoice; we pass our half-open
        ``[start, end)`` bounds as they are, which is how Stripe's own subscription lines are dated."""
        if isinstance(amount, bool) or not isinstance(amount, int):
            raise TypeError(f"amount must be an int of minor units, got {amount!r}")
        params: InvoiceItemCreateParams = {
            "customer": stripe_customer_id,
            "invoice": stripe_invoice_id,
            "amount": amount,
            "currency": currency.lower(),
            "description": description,
            "metadata": dict(metadata),
        }
        if period_start is not None or period_end is not None:
            if period_start is None or period_end is None:
                raise ValueError("period_start and period_end go together")
            if period_end < period_start:
                raise ValueError("period_end is before period_start")
            params["period"] = {"start": period_start, "end": period_end}
        item = self._call(
            "add_invoice_item",
            lambda: self._client.v1.invoice_items.create(params=params, options={"idempotency_key": idempotency_key}),
        )
        return item.id

    def list_invoice_items(self, *, stripe_invoice_id: str) -> list[StripeInvoiceItem]:
        """Every invoice item attached to the invoice (all pages). Used after a crash to skip the lines
        already pushed: their metadata carries our line id."""
        params: InvoiceItemListParams = {"invoice": stripe_invoice_id, "limit": LIST_PAGE_SIZE}
        return [StripeInvoiceItem(id=item.id, amount=item.amount, metadata=_metadata(item.metadata))
                for item in _every_page(self._invoice_items_page, params)]

    def _invoice_items_page(self, params: InvoiceItemListParams) -> stripe.ListObject[stripe.InvoiceItem]:
        return self._call("list_invoice_items", lambda: self._client.v1.invoice_items.list(params=params))

    def finalize_invoice(self, *, stripe_invoice_id: str, idempotency_key: str) -> StripeInvoice:
        """draft -> open: Stripe assigns the number and the hosted URL. Still not auto-advanced, so
        Stripe neither emails nor charges on its own."""
        params: InvoiceFinalizeInvoiceParams = {"auto_advance": False}
        return _invoice(self._transition("finalize_invoice", self._client.v1.invoices.finalize_invoice,
                                         stripe_invoice_id, params, idempotency_key))

    def void_invoice(self, *, stripe_invoice_id: str, idempotency_key: str) -> StripeInvoice:
        """open -> void (Stripe refuses other states)."""
        params: InvoiceVoidInvoiceParams = {}
        return _invoice(self._transition("void_invoice", self._client.v1.invoices.void_invoice,
                                         stripe_invoice_id, params, idempotency_key))

    def retrieve_invoice(self, stripe_invoice_id: str) -> StripeInvoice:
        invoice = self._call("retrieve_invoice", lambda: self._client.v1.invoices.retrieve(stripe_invoice_id))
        return _invoice(invoice)

    # -- credit notes ------------------------------------------------------------------------------

    def create_credit_note(
        self,
        *,
        stripe_invoice_id: str,
        lines: Sequence[tuple[str, int]],
        metadata: Mapping[str, str],
        memo: str | None,
        credit_amount: int | None,
        idempotency_key: str,
        reason: CreditNoteReason | None = None,
    ) -> StripeCreditNote:
        """Credit a finalized invoice: one custom line (``description``, ``amount`` in positive minor units;
        quantity 1) per ``lines`` entry. Stripe first lowers what the invoice still owes (its
        ``amount_remaining``); whatever exceeds it -- all of it on a paid invoice -- must be placed, and
        ``credit_amount`` puts it on the customer's Stripe balance, which Stripe applies to their next invoice.
        ``None`` sends no placement (enough for an open invoice that still owes at least the total). Stripe
        refuses draft and void invoices and credits beyond what the invoice has left. Stripe does not email it
        (``email_type=none``): we decide what the customer receives."""
        if not lines:
            raise ValueError("a credit note needs at least one line")
        params_lines: list[CreditNoteCreateParamsLine] = []
        for description, amount in lines:
            if isinstance(amount, bool) or not isinstance(amount, int):
                raise TypeError(f"line amount must be an int of minor units, got {amount!r}")
            if amount <= 0:
                raise ValueError(f"credit note line amounts are positive, got {amount}")
            if not description or not description.strip():
                raise ValueError("credit note lines need a description")
            params_lines.append(
                {"type": "custom_line_item", "description": description, "quantity": 1, "unit_amount": amount}
            )
        total = sum(amount for _, amount in lines)
        params: CreditNoteCreateParams = {
            "invoice": stripe_invoice_id,
            "lines": params_lines,
            "metadata": dict(metadata),
            "email_type": "none",
        }
        if credit_amount is not None:
            if isinstance(credit_amount, bool) or not isinstance(credit_amount, int):
                raise TypeError(f"credit_amount must be an int of minor units, got {credit_amount!r}")
            if not 0 < credit_amount <= total:
                raise ValueError(f"credit_amount must be in 1..{total} (the credit note total), got {credit_amount}")
            params["credit_amount"] = credit_amount
        if memo and memo.strip():
            params["memo"] = memo.strip()[:MAX_CREDIT_NOTE_MEMO_LENGTH]
        if reason is not None:
            params["reason"] = reason
        credit_note = self._call(
            "create_credit_note",
            lambda: self._client.v1.credit_notes.create(params=params, options={"idempotency_key": idempotency_key}),
        )
        return _credit_note(credit_note)

    def list_credit_notes(self, *, stripe_invoice_id: str) -> list[StripeCreditNote]:
        """Every credit note of the invoice (all pages, newest first). Used after a lost answer to find the one
        carrying our credit note id in its metadata instead of creating it again."""
        params: CreditNoteListParams = {"invoice": stripe_invoice_id, "limit": LIST_PAGE_SIZE}
        return [_credit_note(note) for note in _every_page(self._credit_notes_page, params)]

    def _credit_notes_page(self, params: CreditNoteListParams) -> stripe.ListObject[stripe.CreditNote]:
        return self._call("list_credit_notes", lambda: self._client.v1.credit_notes.list(params=params))

    def void_credit_note(self, *, stripe_credit_note_id: str, idempotency_key: str) -> StripeCreditNote:
        """issued -> void, reversing its effect (Stripe allows it only while the invoice is open)."""
        params: CreditNoteVoidCreditNoteParams = {}
        return _credit_note(self._transition("void_credit_note", self._client.v1.credit_notes.void_credit_note,
                                             stripe_credit_note_id, params, idempotency_key))

    def retrieve_credit_note(self, stripe_credit_note_id: str) -> StripeCreditNote:
        credit_note = self._call(
            "retrieve_credit_note", lambda: self._client.v1.credit_notes.retrieve(stripe_credit_note_id)
        )
        return _credit_note(credit_note)

    # -- retries -----------------------------------------------------------------------------------

    def _transition(self, operation: str, request: Callable[..., T], stripe_id: str, params: Any,
                    idempotency_key: str) -> T:
        """A state change of one Stripe object (finalize, void), every attempt under the same idempotency key."""
        return self._call(operation,
                          lambda: request(stripe_id, params=params, options={"idempotency_key": idempotency_key}))

    def _call(self, operation: str, request: Callable[[], T]) -> T:
        """Run ``request`` with bounded retries. The request closes over its idempotency key, so every
        attempt sends the same key and Stripe executes the operation at most once."""
        attempts = self.config.max_attempts
        for attempt in range(1, attempts + 1):
            try:
                return request()
            except stripe.StripeError as exc:
                error = _translate(exc)
                if isinstance(error, StripePermanentError):
                    logger.warning("stripe %s failed permanently: %s", operation, error)
                    raise error from exc
                if attempt == attempts:
                    logger.warning("stripe %s still failing after %d attempts: %s", operation, attempts, error)
                    raise error from exc
                delay = self._backoff(attempt)
                logger.info(
                    "stripe %s attempt %d/%d failed (%s); retrying in %.2fs", operation, attempt, attempts, error, delay
                )
                self._sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def _backoff(self, attempt: int) -> float:
        """Exponential backoff with "equal jitter": a delay in [d/2, d] where d doubles per attempt and
        never exceeds ``backoff_max_seconds``."""
        ceiling = min(self.config.backoff_max_seconds, self.config.backoff_base_seconds * 2 ** (attempt - 1))
        return self._rng.uniform(ceiling / 2, ceiling)


# --------------------------------------------------------------------------------------------------
# Webhooks


def construct_webhook_event(
    payload: bytes,
    signature_header: str | None,
    *,
    secret: str,
    tolerance_seconds: int = 300,
) -> dict[str, Any]:
    """Verify a webhook's ``Stripe-Signature`` (HMAC-SHA256 over ``"{t}.{payload}"`` with the endpoint
    secret, timestamp ``t`` within ``tolerance_seconds`` of now, in either direction: a delivery dated in the
    future is as suspect as a replayed old one) and return the event as a plain dict (``id``, ``type``,
    ``created``, ``data.object``...). The payload is decoded under the request-body rules
    (:func:`common.json_body.decode_json`: UTF-8, nested at most 64 levels)."""
    if not secret:
        raise WebhookSignatureError("No webhook secret is configured (STRIPE_WEBHOOK_SECRET)")
    if tolerance_seconds <= 0:
        raise ValueError("tolerance_seconds must be positive (0 would disable the replay protection)")
    if not signature_header:
        raise WebhookSignatureError("Missing Stripe-Signature header")
    try:
        stripe.WebhookSignature.verify_header(payload, signature_header, secret, tolerance_seconds)
    except stripe.SignatureVerificationError as exc:
        raise WebhookSignatureError(exc.user_message or str(exc)) from exc
    except UnicodeDecodeError as exc:
        raise WebhookSignatureError("Webhook payload is not UTF-8") from exc
    signed_at = _signature_timestamp(signature_header)
    if signed_at is None or signed_at > time.time() + tolerance_seconds:
        raise WebhookSignatureError("Timestamp outside the tolerance zone (in the future)")
    try:
        event = decode_json(payload)
    except JsonBodyError as exc:
        raise WebhookSignatureError(f"Webhook payload is not acceptable JSON: {exc}") from exc
    if not (
        isinstance(event, dict)
        and isinstance(event.get("id"), str)
        and isinstance(event.get("type"), str)
        and isinstance(event.get("data"), dict)
    ):
        raise WebhookSignatureError("Webhook payload is not a Stripe event (needs id, type and data)")
    return event


def _signature_timestamp(header: str) -> int | None:
    """The ``t=`` of a ``Stripe-Signature`` header (``t=1700000000,v1=...``): the latest when repeated (stripe-python
    verifies with the last one); None when missing or one is not a number."""
    stamps = []
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        if key == "t":
            value = value.strip()
            if not (value.isascii() and value.isdigit() and len(value) <= 12):
                return None
            stamps.append(int(value))
    return max(stamps) if stamps else None


# --------------------------------------------------------------------------------------------------
# Helpers


def _translate(exc: stripe.StripeError) -> StripeGatewayError:
    """Classify a stripe-python error as retryable or permanent, keeping Stripe's message and code."""
    body: dict[str, Any] = exc.json_body if isinstance(exc.json_body, dict) else {}
    error: dict[str, Any] = body["error"] if isinstance(body.get("error"), dict) else {}
    status = exc.http_status
    message = exc.user_message or str(exc) or type(exc).__name__
    kwargs: dict[str, Any] = {
        "code": error.get("code") or exc.code,
        "http_status": status,
        "error_type": error.get("type"),
        "param": error.get("param"),
        "request_id": exc.request_id,
    }
    if isinstance(exc, stripe.APIConnectionError):  # connection refused/reset, DNS, timeouts
        return StripeRetryableError(message, **kwargs)
    should_retry = {k.lower(): v for k, v in (exc.headers or {}).items()}.get("stripe-should-retry")
    if should_retry == "true":
        return StripeRetryableError(message, **kwargs)
    if should_retry == "false":
        return StripePermanentError(message, **kwargs)
    if status is not None and (status in (409, 429) or status >= 500):
        return StripeRetryableError(message, **kwargs)
    return StripePermanentError(message, **kwargs)


def _invoice(invoice: stripe.Invoice) -> StripeInvoice:
    return StripeInvoice(
        id=invoice.id,
        number=invoice.number,
        status=str(invoice.status or ""),
        hosted_invoice_url=invoice.hosted_invoice_url,
        amount_due=invoice.amount_due,
        currency=invoice.currency,
        amount_remaining=invoice.amount_remaining,
        total=invoice.total,
    )


def _credit_note(credit_note: stripe.CreditNote) -> StripeCreditNote:
    invoice = credit_note.invoice
    return StripeCreditNote(
        id=credit_note.id,
        number=credit_note.number,
        status=str(credit_note.status or ""),
        total=credit_note.total,
        invoice=invoice if isinstance(invoice, str) else invoice.id,
        pre_payment_amount=credit_note.pre_payment_amount,
        post_payment_amount=credit_note.post_payment_amount,
        metadata=_metadata(credit_note.metadata),
    )


def _metadata(metadata: stripe.StripeObject | None) -> dict[str, str]:
    # StripeObject is not a dict in stripe-python 16; to_dict() gives its plain data.
    return {str(key): str(value) for key, value in (metadata.to_dict() if metadata else {}).items()}


def _address_params(address: Mapping[str, Any] | None, kind: type[AddressParams]) -> AddressParams | None:
    """The address as the SDK's create or update params (``kind``); None for no address."""
    if not address:
        return None
    unknown = set(address) - set(ADDRESS_FIELDS)
    if unknown:
        raise ValueError(f"unknown address fields {sorted(unknown)}; expected some of {ADDRESS_FIELDS}")
    result = kind()
    for name in ADDRESS_FIELDS:
        if address.get(name):
            result[name] = str(address[name])
    return result or None
