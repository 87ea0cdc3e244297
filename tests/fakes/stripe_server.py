"""A stateful fake of the part of the Stripe API that the invoicing push uses.

It is a real HTTP server (stdlib ``ThreadingHTTPServer`` on 127.0.0.1, random port) so the production
code talks to it through the real stripe-python client, HTTP library, form encoding and error parsing.
What it checks, on every request:

* ``Authorization: Bearer <its sk_test_ key>`` (401 otherwise), a ``Stripe-Version`` header equal to the
  SDK's pinned API version, and a deterministic ``Idempotency-Key`` on the calls that create things
  (stripe-python invents a random UUID when the caller gives none; the fake refuses those, which is how
  it proves that our keys come from our ids).
* The method and path are one of the endpoints implemented below (404 "Unrecognized request URL", as
  Stripe answers).
* Every parameter name, at every nesting level, exists in Stripe's API for that endpoint, and every
  value has the type Stripe expects. The allowed names and types are not typed in by hand: they are
  read from stripe-python's own ``stripe.params.*`` TypedDicts (generated from Stripe's OpenAPI spec for
  the SDK's API version), minus the SDK's ``RequestOptions`` keys, which travel as headers. Unknown
  names get Stripe's ``Received unknown parameter: foo`` error. A parameter that Stripe knows but this
  fake does not model is refused too (code ``fake_stripe_unimplemented``), so no test can pass because
  the fake silently ignored something.
* Idempotency like Stripe: a POST with a key seen before, same method, path and parameters, replays the
  stored status and body with ``Idempotent-Replayed: true``; different parameters or endpoint is a 400
  ``idempotency_error``. Results are stored only once an endpoint executed (like Stripe: not for auth,
  routing or validation failures, and not for injected faults).
* State rules: items only on draft invoices, customer and currency must match the invoice, finalize
  only drafts, void only open (or uncollectible) invoices, referenced objects must exist.
* Credit notes as Stripe documents them (https://docs.stripe.com/api/credit_notes/create and the
  "Issue credit notes" guide): only on open, paid or uncollectible invoices; all of an invoice's credit
  notes together never above its total; a credit note first lowers what the invoice still owes (its
  ``pre_payment_amount``, reflected in the invoice's ``pre_payment_credit_notes_amount``, ``amount_due``
  and ``amount_remaining``; an open invoice brought to zero becomes paid), and the rest
  (``post_payment_amount``) must be placed exactly by ``credit_amount`` (the customer's balance, applied
  to their next invoice at its finalization), ``refund_amount`` (needs a charge, which the fake never has)
  or ``out_of_band_amount``. Numbers are ``<invoice number>-CN-01``, ``-CN-02``... Void only an issued
  credit note on an open invoice; it reverses its effect.

Fault injection (``fail_next``, ``timeout_next``) and a record of every request are there for tests;
``sign_webhook_payload`` / ``FakeStripeServer.webhook_request`` build webhook deliveries signed exactly
as Stripe signs them.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import hmac
import json
import random
import re
import socket
import string
import sys
import threading
import time
import types
import typing
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import KW_ONLY, dataclass, field
from decimal import Decimal, InvalidOperation
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit

import stripe
import stripe.params as stripe_params
from babel.numbers import list_currencies
from stripe._api_version import _ApiVersion
from typing_extensions import is_typeddict  # the SDK's TypedDicts come from typing_extensions

from tests.fakes.loopback import LoopbackService

API_VERSION = _ApiVersion.CURRENT
REQUEST_OPTION_KEYS = frozenset(typing.get_type_hints(stripe.RequestOptions, localns={"StripeContext": Any}))
SUPPORTED_CURRENCIES = frozenset(code.lower() for code in list_currencies())
SDK_RANDOM_KEY = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
MAX_ITEMS_PER_INVOICE = 250
INVOICE_LINES_INLINE = 10  # Stripe embeds the first 10 lines in invoice.lines
CREDIT_NOTE_LINES_INLINE = 10  # and the first 10 lines of a credit note
CREDITABLE_INVOICE_STATUSES = ("open", "paid", "uncollectible")
DEFAULT_DAYS_UNTIL_DUE = 30


# --------------------------------------------------------------------------------------------------
# Errors in Stripe's shape


@dataclass(eq=False)  # eq=False: an exception stays hashable
class ApiError(Exception):
    """An error answer: the HTTP status and Stripe's error object (``body()``)."""

    status: int
    message: str
    _: KW_ONLY
    type: str = "invalid_request_error"  # Stripe's field name
    code: str | None = None
    param: str | None = None

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"type": self.type, "message": self.message}
        if self.code:
            error["code"] = self.code
            error["doc_url"] = f"https://stripe.com/docs/error-codes/{self.code.replace('_', '-')}"
        if self.param:
            error["param"] = self.param
        return {"error": error}


def _missing(param: str) -> ApiError:
    return ApiError(400, f"Missing required param: {param}.", code="parameter_missing", param=param)


def _no_such(kind: str, object_id: str, *, param: str | None, status: int = 400) -> ApiError:
    return ApiError(status, f"No such {kind}: '{object_id}'", code="resource_missing", param=param)


# --------------------------------------------------------------------------------------------------
# Parameter schema, read from stripe-python's TypedDicts


@functools.cache
def _hints(params_class: type) -> dict[str, Any]:
    module = sys.modules[params_class.__module__]
    # Inherited RequestOptions annotations are strings evaluated in the subclass's module; give them the
    # typing names they need.
    namespace = {**vars(typing), **vars(module)}
    return typing.get_type_hints(params_class, globalns=namespace, localns={"StripeContext": Any})


def allowed_parameters(params_class: type) -> frozenset[str]:
    """Top-level parameter names Stripe accepts for an endpoint, per the SDK's TypedDict."""
    return frozenset(_hints(params_class)) - REQUEST_OPTION_KEYS


def _is_map(hint: Any) -> bool:
    origin = typing.get_origin(hint) or hint
    return origin in (dict, typing.Dict) or (isinstance(origin, type) and issubclass(origin, stripe.StripeObject))  # noqa: UP006


def _describe(hint: Any) -> str:
    if is_typeddict(hint) or _is_map(hint):
        return "hash"
    if typing.get_origin(hint) is list:
        return "array"
    return getattr(hint, "__name__", str(hint))


def _coerce(value: Any, hint: Any, path: str) -> Any:
    """Check a parsed form value against an SDK type hint and convert it (ints, booleans, decimals)."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        return _coerce_union(value, args, path)
    if origin is Literal:
        if isinstance(value, str) and value in args:
            return value
        choices = " or ".join(str(arg) for arg in args)
        raise ApiError(400, f"Invalid {path}: must be one of {choices}", param=path)
    if is_typeddict(hint):
        if not isinstance(value, dict):
            raise ApiError(400, f"Invalid object for {path}: expected a hash", param=path)
        return _coerce_fields(value, hint, prefix=path)
    if _is_map(hint):
        if not isinstance(value, dict):
            raise ApiError(400, f"Invalid object for {path}: expected a hash", param=path)
        value_hint = args[-1] if args else Any
        return {key: _coerce(item, value_hint, f"{path}[{key}]") for key, item in value.items()}
    if origin is list:
        if isinstance(value, dict) and all(key.isdigit() for key in value):
            value = [value[key] for key in sorted(value, key=int)]
        if not isinstance(value, list):
            raise ApiError(400, f"Invalid array for {path}", param=path)
        item_hint = args[0] if args else Any
        return [_coerce(item, item_hint, f"{path}[{index}]") for index, item in enumerate(value)]
    if not isinstance(value, str):
        raise ApiError(400, f"Invalid {_describe(hint)} for {path}: got a hash or array", param=path)
    if hint is bool:
        if value not in ("true", "false"):
            raise ApiError(400, f"Invalid boolean: {value}", param=path)
        return value == "true"
    if hint is int:
        if not re.fullmatch(r"-?\d+", value):
            raise ApiError(400, f"Invalid integer: {value}", param=path)
        return int(value)
    if hint in (Decimal, float):
        try:
            return Decimal(value)
        except InvalidOperation:
            raise ApiError(400, f"Invalid decimal: {value}", param=path) from None
    return value  # str and anything the SDK leaves open


def _coerce_union(value: Any, args: tuple[Any, ...], path: str) -> Any:
    literals = [arg for arg in args if typing.get_origin(arg) is Literal]
    literal_values = [v for literal in literals for v in typing.get_args(literal)]
    if value == "" and "" in literal_values:
        return ""  # Stripe's "unset this field"
    if isinstance(value, dict):
        candidates = [a for a in args if is_typeddict(a) or _is_map(a) or typing.get_origin(a) is list]
    elif isinstance(value, list):
        candidates = [a for a in args if typing.get_origin(a) is list]
    else:
        enum_values = [v for v in literal_values if v != ""]
        if enum_values:
            # The SDK adds `| str` to enums for forward compatibility; the API itself accepts only the
            # values of its version, which are the Literal's.
            if value in enum_values:
                return value
            raise ApiError(400, f"Invalid {path}: must be one of {' or '.join(enum_values)}", param=path)
        candidates = [
            a for a in args
            if not (is_typeddict(a) or _is_map(a) or typing.get_origin(a) in (list, Literal))
        ]
    if not candidates:
        expected = " or ".join(_describe(a) for a in args if typing.get_origin(a) is not Literal)
        raise ApiError(400, f"Invalid {path}: expected {expected}", param=path)
    error: ApiError | None = None
    for candidate in candidates:
        try:
            return _coerce(value, candidate, path)
        except ApiError as exc:
            error = error or exc
    assert error is not None
    raise error


def _coerce_fields(values: dict[str, Any], params_class: type, *, prefix: str = "") -> dict[str, Any]:
    hints = _hints(params_class)
    allowed = set(hints) - (REQUEST_OPTION_KEYS if not prefix else set())
    result: dict[str, Any] = {}
    for name, value in values.items():
        path = f"{prefix}[{name}]" if prefix else name
        if name not in allowed:
            raise ApiError(400, f"Received unknown parameter: {path}", param=path)
        result[name] = _coerce(value, hints[name], path)
    for name in sorted(params_class.__required_keys__):  # type: ignore[attr-defined]
        if name not in values:
            raise _missing(f"{prefix}[{name}]" if prefix else name)
    return result


_KEY = re.compile(r"([^\[\]]+)((?:\[[^\[\]]*\])*)")


def parse_form(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """``a[b][c]=v`` and ``a[0]=v`` pairs, as stripe-python encodes them, into nested dicts (arrays stay
    dicts with digit keys until the schema says they are arrays)."""
    root: dict[str, Any] = {}
    for key, value in pairs:
        match = _KEY.fullmatch(key)
        if not match:
            raise ApiError(400, f"Invalid parameter name: {key}", param=key)
        parts = [match.group(1), *re.findall(r"\[([^\[\]]*)\]", match.group(2))]
        node = root
        for depth, part in enumerate(parts):
            if part == "":  # `expand[]=x` style append
                part = str(len(node))
            if depth == len(parts) - 1:
                if isinstance(node.get(part), dict):
                    raise ApiError(400, f"Invalid parameter: {key} is both a hash and a value", param=key)
                node[part] = value
            else:
                child = node.setdefault(part, {})
                if not isinstance(child, dict):
                    raise ApiError(400, f"Invalid parameter: {key} is both a value and a hash", param=key)
                node = child
    return root


# --------------------------------------------------------------------------------------------------
# Requests, routes and faults


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: str
    params: dict[str, Any]  # nested, values as sent (strings)
    raw_params: list[tuple[str, str]]
    headers: dict[str, str]
    status: int | None = None
    replayed: bool = False
    fault: str | None = None

    def header(self, name: str) -> str | None:
        lowered = name.lower()
        return next((value for key, value in self.headers.items() if key.lower() == lowered), None)

    @property
    def idempotency_key(self) -> str | None:
        return self.header("Idempotency-Key")


@dataclass
class _Fault:
    kind: Literal["fail", "timeout"]
    pattern: re.Pattern[str]
    method: str | None
    remaining: int
    status: int = 500
    message: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    execute: bool = True


@dataclass(frozen=True)
class _Route:
    method: str
    pattern: re.Pattern[str]
    params_class: type
    implemented: frozenset[str]
    handler: str
    needs_key: bool = False


def _route(method: str, path: str, params_class: type, handler: str, implemented: str, *, needs_key=False) -> _Route:
    regex = re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", path) + "$")
    names = frozenset(implemented.split())
    unknown = names - allowed_parameters(params_class)
    assert not unknown, f"{handler}: {unknown} are not Stripe parameters of {params_class.__name__}"
    return _Route(method, regex, params_class, names, handler, needs_key)


ROUTES = (
    _route("GET", "/v1/account", stripe_params.AccountRetrieveCurrentParams, "retrieve_account", ""),
    _route("POST", "/v1/customers", stripe_params.CustomerCreateParams, "create_customer",
           "name email address metadata description phone", needs_key=True),
    _route("GET", "/v1/customers/{id}", stripe_params.CustomerRetrieveParams, "retrieve_customer", ""),
    _route("POST", "/v1/customers/{id}", stripe_params.CustomerUpdateParams, "update_customer",
           "name email address metadata description phone"),
    _route("POST", "/v1/invoices", stripe_params.InvoiceCreateParams, "create_invoice",
           "customer currency collection_method days_until_due auto_advance metadata description "
           "pending_invoice_items_behavior", needs_key=True),
    _route("GET", "/v1/invoices/{id}", stripe_params.InvoiceRetrieveParams, "retrieve_invoice", ""),
    _route("POST", "/v1/invoices/{id}/finalize", stripe_params.InvoiceFinalizeInvoiceParams, "finalize_invoice",
           "auto_advance", needs_key=True),
    _route("POST", "/v1/invoices/{id}/void", stripe_params.InvoiceVoidInvoiceParams, "void_invoice", "",
           needs_key=True),
    _route("POST", "/v1/invoices/{id}/pay", stripe_params.InvoicePayParams, "pay_invoice", "paid_out_of_band"),
    _route("POST", "/v1/invoices/{id}/mark_uncollectible", stripe_params.InvoiceMarkUncollectibleParams,
           "mark_uncollectible", ""),
    _route("POST", "/v1/invoiceitems", stripe_params.InvoiceItemCreateParams, "create_invoice_item",
           "customer invoice amount currency description metadata period", needs_key=True),
    _route("GET", "/v1/invoiceitems", stripe_params.InvoiceItemListParams, "list_invoice_items",
           "customer invoice limit starting_after ending_before pending"),
    _route("POST", "/v1/credit_notes", stripe_params.CreditNoteCreateParams, "create_credit_note",
           "invoice lines memo metadata reason credit_amount refund_amount out_of_band_amount email_type",
           needs_key=True),
    _route("GET", "/v1/credit_notes", stripe_params.CreditNoteListParams, "list_credit_notes",
           "invoice customer limit starting_after ending_before"),
    _route("GET", "/v1/credit_notes/{id}", stripe_params.CreditNoteRetrieveParams, "retrieve_credit_note", ""),
    _route("POST", "/v1/credit_notes/{id}/void", stripe_params.CreditNoteVoidCreditNoteParams, "void_credit_note",
           "", needs_key=True),
)
# The line fields of POST /v1/credit_notes the fake models (custom lines only: we never credit Stripe's own
# invoice lines, whose amounts Stripe splits by discounts and taxes).
CREDIT_NOTE_LINE_FIELDS = frozenset({"type", "description", "quantity", "unit_amount", "metadata"})


def sign_webhook_payload(payload: bytes | str, secret: str, *, timestamp: int | None = None) -> str:
    """The ``Stripe-Signature`` header Stripe would send: ``t=<ts>,v1=<hex HMAC-SHA256 of "<ts>.<body>">``."""
    body = payload.decode("utf-8") if isinstance(payload, bytes) else payload
    ts = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode("utf-8"), f"{ts}.{body}".encode(), hashlib.sha256).hexdigest()
    return f"t={ts},v1={digest}"


# --------------------------------------------------------------------------------------------------
# The server


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer
    protocol_version = "HTTP/1.1"  # keep-alive, like api.stripe.com
    disable_nagle_algorithm = True  # headers and body are separate writes; avoid 40 ms delayed-ACK stalls

    def setup(self) -> None:
        super().setup()
        self.server.fake._connections.add(self.connection)

    def finish(self) -> None:
        self.server.fake._connections.discard(self.connection)
        super().finish()

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self.server.fake._serve(self)

    do_POST = do_GET
    do_DELETE = do_GET

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    fake: FakeStripeServer


class FakeStripeServer(LoopbackService):
    """Customers, invoices, invoice items and credit notes in memory behind Stripe's HTTP API. Use as a
    context manager (or ``start()``/``stop()``); ``url`` is the base to give the client."""

    def __init__(self, *, seed: int | None = None, clock: Callable[[], float] = time.time) -> None:
        self._random = random.Random(seed)
        self.clock = clock
        self.api_key = "sk_test_fake_" + self._token(24)
        self.webhook_secret = "whsec_fake_" + self._token(32)
        self.account_id = "acct_fake" + self._token(16)
        self.require_deterministic_keys = True
        self.client_timeout = 5.0  # the timeout of the clients tests build for this server (gateway_for)
        self.customers: dict[str, dict[str, Any]] = {}
        self.invoices: dict[str, dict[str, Any]] = {}
        self.invoice_items: dict[str, dict[str, Any]] = {}
        self.credit_notes: dict[str, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        self.requests: list[RecordedRequest] = []
        self._invoice_item_ids: dict[str, list[str]] = {}  # invoice id -> its items, in order added
        self._line_ids: dict[str, str] = {}  # invoice item id -> invoice line item id
        self._applied_balance: dict[str, int] = {}  # invoice id -> customer balance applied at finalization
        self._balance_credit: dict[str, int] = {}  # credit note id -> its credit_amount (to the customer balance)
        self._sequence: dict[str, int] = {}  # object id -> creation order, for stable listing
        self._idempotent: dict[str, dict[str, Any]] = {}
        self._faults: list[_Fault] = []
        self._lock = threading.RLock()
        self._stopping = threading.Event()  # wakes handlers sleeping for timeout_next
        self._connections: set[socket.socket] = set()

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> FakeStripeServer:
        self._serve_in_thread(_HTTPServer, _Handler, "fake-stripe")
        return self

    def _drop_connections(self) -> None:
        for connection in list(self._connections):
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    @property
    def url(self) -> str:
        return self.root

    # -- fault injection and inspection --------------------------------------------------------------

    def fail_next(
        self,
        path_regex: str,
        status: int = 500,
        times: int = 1,
        *,
        method: str | None = None,
        message: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Answer the next ``times`` matching requests with ``status`` without executing them (an outage
        in front of Stripe's API). Nothing is stored under their idempotency keys."""
        self._faults.append(_Fault("fail", re.compile(path_regex), method, times, status=status,
                                   message=message, headers=dict(headers or {})))

    def timeout_next(
        self, path_regex: str, seconds: float, times: int = 1, *, method: str | None = None, execute: bool = True
    ) -> None:
        """Hold the next ``times`` matching responses for ``seconds`` (longer than the client timeout).
        With ``execute=True`` (default) the request is executed first and only the answer is late: the
        realistic "Stripe did it but we never heard back", which only idempotency keys make safe to retry.
        With ``execute=False`` the request waits first and is then executed (a slow server)."""
        self._faults.append(_Fault("timeout", re.compile(path_regex), method, times, seconds=seconds,
                                   execute=execute))

    def requests_to(self, method: str, path_regex: str) -> list[RecordedRequest]:
        pattern = re.compile(path_regex)
        return [r for r in self.requests if r.method == method and pattern.search(r.path)]

    def items_of(self, invoice_id: str) -> list[dict[str, Any]]:
        with self._lock:
            return [self._render_item(self.invoice_items[i]) for i in self._invoice_item_ids.get(invoice_id, [])]

    def invoice(self, invoice_id: str) -> dict[str, Any]:
        with self._lock:
            return self._render_invoice(self.invoices[invoice_id])

    def credit_notes_of(self, invoice_id: str) -> list[dict[str, Any]]:
        """The invoice's credit notes, oldest first, as the API renders them."""
        with self._lock:
            notes = [n for n in self.credit_notes.values() if n["invoice"] == invoice_id]
            return [self._render_credit_note(n) for n in sorted(notes, key=lambda n: self._sequence[n["id"]])]

    def mark_paid(self, invoice_id: str) -> dict[str, Any]:
        """The customer paid on the hosted page: open -> paid, with an ``invoice.paid`` event."""
        with self._lock:
            invoice = self.invoices[invoice_id]
            if invoice["status"] not in ("open", "uncollectible"):
                raise ValueError(f"{invoice_id} is {invoice['status']}")
            self._pay(invoice)
            return self._render_invoice(invoice)

    # -- webhooks ------------------------------------------------------------------------------------

    def make_event(self, event_type: str, obj: Mapping[str, Any], *, created: int | None = None) -> dict[str, Any]:
        """An event as Stripe delivers it (snapshot payload)."""
        return {
            "id": "evt_" + self._token(24),
            "object": "event",
            "api_version": API_VERSION,
            "created": int(self.clock()) if created is None else created,
            "data": {"object": copy.deepcopy(dict(obj))},
            "livemode": False,
            "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None},
            "type": event_type,
        }

    def webhook_request(
        self, event: Mapping[str, Any], *, secret: str | None = None, timestamp: int | None = None
    ) -> tuple[bytes, dict[str, str]]:
        """Body and headers of a webhook delivery of ``event``, signed like Stripe signs it."""
        payload = json.dumps(event, indent=2).encode()
        signature = sign_webhook_payload(payload, secret or self.webhook_secret, timestamp=timestamp)
        return payload, {"Content-Type": "application/json; charset=utf-8", "Stripe-Signature": signature}

    # -- raw HTTP, for tests of the fake itself ------------------------------------------------------------

    def raw_request(
        self,
        method: str,
        path: str,
        params: Mapping[str, str] | list[tuple[str, str]] | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        api_key: str | None = None,
        idempotency_key: str | None = None,
        stripe_version: str | None = API_VERSION,
    ) -> tuple[int, dict[str, str], dict[str, Any]]:
        """Send a hand-made request (not through stripe-python); returns status, headers, JSON body."""
        encoded = urlencode(list(params.items()) if isinstance(params, Mapping) else (params or []))
        url = self.url + path
        data = None
        if method == "GET":
            url += ("?" + encoded) if encoded else ""
        else:
            data = encoded.encode()
        request = urllib.request.Request(url, data=data, method=method)
        request.add_header("Authorization", f"Bearer {api_key or self.api_key}")
        if stripe_version:
            request.add_header("Stripe-Version", stripe_version)
        if idempotency_key:
            request.add_header("Idempotency-Key", idempotency_key)
        if data is not None:
            request.add_header("Content-Type", "application/x-www-form-urlencoded")
        for name, value in (headers or {}).items():
            request.add_header(name, value)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, dict(response.headers), json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, dict(error.headers), json.loads(error.read())

    # -- request handling ------------------------------------------------------------------------------

    def _serve(self, handler: _Handler) -> None:
        split = urlsplit(handler.path)
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length).decode("utf-8") if length else ""
        query_or_body = split.query if handler.command in ("GET", "DELETE") else body
        raw = parse_qsl(query_or_body, keep_blank_values=True)
        record = RecordedRequest(handler.command, split.path, split.query, {}, raw, dict(handler.headers.items()))
        with contextlib.suppress(ApiError):  # a malformed name is reported below, by validation
            record.params = parse_form(raw)
        with self._lock:
            self.requests.append(record)
            fault = self._take_fault(record)

        if fault is not None and fault.kind == "fail":
            record.fault = f"fail {fault.status}"
            status, payload, extra = fault.status, self._fault_body(fault), dict(fault.headers)
        else:
            if fault is not None:
                record.fault = f"timeout {fault.seconds}s"
                if not fault.execute:
                    self._stopping.wait(fault.seconds)
            with self._lock:
                status, payload, extra, record.replayed = self._process(record)
            if fault is not None and fault.execute:
                self._stopping.wait(fault.seconds)
        record.status = status
        self._respond(handler, status, payload, extra)

    def _respond(self, handler: _Handler, status: int, payload: dict[str, Any], extra: Mapping[str, str]) -> None:
        body = json.dumps(payload, indent=2).encode()
        try:
            handler.send_response(status)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(body)))
            handler.send_header("Stripe-Version", API_VERSION)
            for name, value in extra.items():
                handler.send_header(name, value)
            handler.end_headers()
            handler.wfile.write(body)
            handler.wfile.flush()
        except OSError:
            handler.close_connection = True  # the client gave up (timeout) or went away

    def _take_fault(self, record: RecordedRequest) -> _Fault | None:
        for fault in self._faults:
            if fault.remaining > 0 and fault.pattern.search(record.path) and fault.method in (None, record.method):
                fault.remaining -= 1
                if fault.remaining == 0:
                    self._faults.remove(fault)
                return fault
        return None

    @staticmethod
    def _fault_body(fault: _Fault) -> dict[str, Any]:
        if fault.status == 429:
            error = ApiError(429, fault.message or "Request rate limit exceeded. Learn more about rate limits "
                             "here https://stripe.com/docs/rate-limits.", code="rate_limit")
        elif fault.status >= 500:
            error = ApiError(fault.status, fault.message or "An unknown error occurred", type="api_error")
        else:
            error = ApiError(fault.status, fault.message or "Injected failure")
        return error.body()

    def _process(self, record: RecordedRequest) -> tuple[int, dict[str, Any], dict[str, str], bool]:
        request_id = "req_" + self._token(14)
        headers = {"Request-Id": request_id}
        try:
            self._authenticate(record)
        except ApiError as error:
            return error.status, error.body(), headers, False

        key = record.idempotency_key if record.method == "POST" else None
        if key:
            headers["Idempotency-Key"] = key
            stored = self._idempotent.get(key)
            if stored is not None:
                try:
                    self._check_same_request(key, stored, record)
                except ApiError as error:
                    return error.status, error.body(), headers, False
                return stored["status"], copy.deepcopy(stored["body"]), {
                    **stored["headers"], "Idempotent-Replayed": "true"}, True

        try:
            route, path_args = self._match(record)
            params = self._validate(route, record)
        except ApiError as error:
            return error.status, error.body(), headers, False  # not executed: nothing stored

        try:
            status, body = 200, getattr(self, "_" + route.handler)(params, **path_args)
        except ApiError as error:
            status, body = error.status, error.body()
        if key:
            self._idempotent[key] = {
                "method": record.method, "path": record.path, "fingerprint": sorted(record.raw_params),
                "status": status, "body": copy.deepcopy(body), "headers": dict(headers),
            }
        return status, body, headers, False

    def _authenticate(self, record: RecordedRequest) -> None:
        authorization = record.header("Authorization") or ""
        if not authorization:
            raise ApiError(401, "You did not provide an API key. You need to provide your API key in the "
                           "Authorization header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY').")
        scheme, _, token = authorization.partition(" ")
        if scheme != "Bearer" or not token.startswith("sk_test_"):
            raise ApiError(401, "Invalid API Key provided: the fake Stripe server only accepts sk_test_ keys")
        if not hmac.compare_digest(token, self.api_key):
            raise ApiError(401, f"Invalid API Key provided: {token[:8]}{'*' * 8}{token[-4:]}")
        version = record.header("Stripe-Version")
        if not version:
            raise ApiError(400, "fake Stripe: the Stripe-Version header is missing (stripe-python always sends it)",
                           code="fake_stripe_contract")
        if version != API_VERSION:
            raise ApiError(400, f"Invalid Stripe API version: {version} (the fake models {API_VERSION})",
                           code="fake_stripe_contract")

    @staticmethod
    def _check_same_request(key: str, stored: Mapping[str, Any], record: RecordedRequest) -> None:
        if (stored["method"], stored["path"]) != (record.method, record.path):
            raise ApiError(400, "Keys for idempotent requests can only be used for the same endpoint they were "
                           f"first used for ('{stored['method']} {stored['path']}' vs "
                           f"'{record.method} {record.path}'). Try using a key other than '{key}' if you meant "
                           "to execute a different request.", type="idempotency_error")
        if stored["fingerprint"] != sorted(record.raw_params):
            raise ApiError(400, "Keys for idempotent requests can only be used with the same parameters they were "
                           f"first used with. Try using a key other than '{key}' if you meant to execute a "
                           "different request.", type="idempotency_error")

    @staticmethod
    def _match(record: RecordedRequest) -> tuple[_Route, dict[str, str]]:
        for route in ROUTES:
            if route.method == record.method:
                match = route.pattern.match(record.path)
                if match:
                    return route, match.groupdict()
        raise ApiError(404, f"Unrecognized request URL ({record.method}: {record.path}). Please see "
                       "https://stripe.com/docs or we can help at https://support.stripe.com/.")

    def _validate(self, route: _Route, record: RecordedRequest) -> dict[str, Any]:
        params = _coerce_fields(parse_form(record.raw_params), route.params_class)
        for name in params:
            if name not in route.implemented:
                raise ApiError(400, f"fake Stripe: `{name}` is a valid Stripe parameter for {route.method} "
                               f"{route.pattern.pattern} but the fake does not model it",
                               code="fake_stripe_unimplemented", param=name)
        key = record.idempotency_key
        if route.needs_key and not key:
            raise ApiError(400, f"fake Stripe: {record.method} {record.path} must carry an Idempotency-Key",
                           code="fake_stripe_contract")
        if route.needs_key and self.require_deterministic_keys and key and SDK_RANDOM_KEY.match(key):
            raise ApiError(400, f"fake Stripe: {record.method} {record.path} got a random (SDK-generated) "
                           "Idempotency-Key; create calls must pass a key derived from our ids",
                           code="fake_stripe_contract")
        return params

    # -- endpoints -----------------------------------------------------------------------------------

    def _create_customer(self, params: dict[str, Any]) -> dict[str, Any]:
        customer_id = self._new_id("cus", 14)
        customer: dict[str, Any] = {
            "id": customer_id, "object": "customer", "address": None, "balance": 0, "created": self._now(),
            "currency": None, "default_source": None, "delinquent": False, "description": None,
            "discount": None, "email": None, "invoice_prefix": self._token(8, string.ascii_uppercase + string.digits),
            "invoice_settings": {"custom_fields": None, "default_payment_method": None, "footer": None,
                                 "rendering_options": None},
            "livemode": False, "metadata": {}, "name": None, "next_invoice_sequence": 1, "phone": None,
            "preferred_locales": [], "shipping": None, "tax_exempt": "none", "test_clock": None,
        }
        self._apply_customer_params(customer, params)
        self.customers[customer_id] = customer
        self._event("customer.created", customer)
        return copy.deepcopy(customer)

    def _retrieve_account(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"id": self.account_id, "object": "account", "type": "standard", "country": "US",
                "email": "billing@example.com", "charges_enabled": True, "details_submitted": True,
                "business_profile": {"name": "Fake Stripe account"},
                "settings": {"dashboard": {"display_name": "Fake"}}}

    def _retrieve_customer(self, params: dict[str, Any], id: str) -> dict[str, Any]:  # noqa: A002
        return copy.deepcopy(self._customer(id, param="id", status=404))

    def _update_customer(self, params: dict[str, Any], id: str) -> dict[str, Any]:  # noqa: A002
        customer = self._customer(id, param="id", status=404)
        self._apply_customer_params(customer, params)
        self._event("customer.updated", customer)
        return copy.deepcopy(customer)

    def _apply_customer_params(self, customer: dict[str, Any], params: dict[str, Any]) -> None:
        for name in ("name", "email", "description", "phone"):
            if name in params:
                customer[name] = params[name] or None
        if "address" in params:
            address = params["address"]
            customer["address"] = None if address == "" else {
                name: address.get(name) for name in ("city", "country", "line1", "line2", "postal_code", "state")
            }
        if "metadata" in params:
            customer["metadata"] = self._merge_metadata(customer["metadata"], params["metadata"])

    def _create_invoice(self, params: dict[str, Any]) -> dict[str, Any]:
        if "customer" not in params:
            raise _missing("customer")
        customer = self._customer(params["customer"], param="customer")
        currency = params.get("currency") or customer["currency"] or "usd"
        self._check_currency(currency)
        collection_method = params.get("collection_method", "charge_automatically")
        days_until_due = params.get("days_until_due")
        if days_until_due is not None and collection_method != "send_invoice":
            raise ApiError(400, "You can only set `days_until_due` if `collection_method` is `send_invoice`.",
                           param="days_until_due")
        if collection_method == "send_invoice" and days_until_due is None:
            days_until_due = DEFAULT_DAYS_UNTIL_DUE  # the account's default payment terms
        now = self._now()
        invoice_id = self._new_id("in", 24)
        invoice: dict[str, Any] = {
            "id": invoice_id, "object": "invoice", "account_country": "US", "account_name": "Fake Stripe",
            "amount_overpaid": 0, "amount_shipping": 0, "attempt_count": 0, "attempted": False,
            "auto_advance": params.get("auto_advance", False),
            "automatic_tax": {"enabled": False, "liability": None, "provider": None, "status": None},
            "billing_reason": "manual", "collection_method": collection_method, "created": now,
            "currency": currency, "customer": customer["id"], "customer_address": copy.deepcopy(customer["address"]),
            "customer_email": customer["email"], "customer_name": customer["name"],
            "default_payment_method": None, "description": params.get("description") or None, "discounts": [],
            "due_date": now + days_until_due * 86400 if days_until_due is not None else None,
            "effective_at": None, "ending_balance": None, "footer": None, "hosted_invoice_url": None,
            "invoice_pdf": None, "issuer": {"type": "self"}, "last_finalization_error": None, "livemode": False,
            "metadata": self._merge_metadata({}, params.get("metadata", {})), "next_payment_attempt": None,
            "number": None, "on_behalf_of": None, "parent": None, "period_end": now, "period_start": now,
            "post_payment_credit_notes_amount": 0, "pre_payment_credit_notes_amount": 0, "receipt_number": None,
            "starting_balance": 0, "statement_descriptor": None, "status": "draft",
            "status_transitions": {"finalized_at": None, "marked_uncollectible_at": None, "paid_at": None,
                                   "voided_at": None},
            "test_clock": None, "total_discount_amounts": [], "total_taxes": [], "webhooks_delivered_at": None,
        }
        self.invoices[invoice_id] = invoice
        self._invoice_item_ids[invoice_id] = []
        self._sequence[invoice_id] = len(self._sequence)
        customer["currency"] = customer["currency"] or currency
        if params.get("pending_invoice_items_behavior", "exclude") == "include":
            for item in sorted(self.invoice_items.values(), key=lambda i: self._sequence[i["id"]]):
                if item["customer"] == customer["id"] and item["invoice"] is None and item["currency"] == currency:
                    self._attach(item, invoice)
        self._event("invoice.created", self._render_invoice(invoice))
        return self._render_invoice(invoice)

    def _retrieve_invoice(self, params: dict[str, Any], id: str) -> dict[str, Any]:  # noqa: A002
        return self._render_invoice(self._invoice(id, param="id", status=404))

    def _finalize_invoice(self, params: dict[str, Any], id: str) -> dict[str, Any]:  # noqa: A002
        invoice = self._invoice(id, param="id", status=404)
        if invoice["status"] != "draft":
            raise ApiError(400, f"This invoice is already finalized (status `{invoice['status']}`), you can't "
                           "re-finalize a non-draft invoice.")
        customer = self.customers[invoice["customer"]]
        now = self._now()
        token = self._token(40)
        invoice["number"] = f"{customer['invoice_prefix']}-{customer['next_invoice_sequence']:04d}"
        customer["next_invoice_sequence"] += 1
        invoice["status"] = "open"
        invoice["auto_advance"] = params.get("auto_advance", invoice["auto_advance"])
        invoice["effective_at"] = now
        invoice["status_transitions"]["finalized_at"] = now
        invoice["hosted_invoice_url"] = f"https://invoice.stripe.com/i/acct_fake/test_{token}?s=ap"
        invoice["invoice_pdf"] = f"https://pay.stripe.com/invoice/acct_fake/test_{token}/pdf?s=ap"
        # The customer's balance is applied now: a credit (negative) up to the invoice's total, a debt in full.
        # (A negative total is not credited to the balance: the fake never needs it.)
        balance = customer["balance"]
        subtotal = self._totals(invoice)["subtotal"]
        applied = max(balance, -max(subtotal, 0)) if balance < 0 else balance
        self._applied_balance[invoice["id"]] = applied
        customer["balance"] = balance - applied
        invoice["starting_balance"], invoice["ending_balance"] = balance, balance - applied
        self._event("invoice.finalized", self._render_invoice(invoice))
        if self._totals(invoice)["amount_due"] == 0:
            self._pay(invoice)  # Stripe marks zero-amount invoices paid on finalization
        return self._render_invoice(invoice)

    def _void_invoice(self, params: dict[str, Any], id: str) -> dict[str, Any]:  # noqa: A002
        return self._move_invoice(id, ("open", "uncollectible"), "void", "voided_at", "invoice.voided",
                                  refusal="void an open or uncollectible invoice")

    def _pay_invoice(self, params: dict[str, Any], id: str) -> dict[str, Any]:  # noqa: A002
        invoice = self._invoice(id, param="id", status=404)
        if invoice["status"] not in ("open", "uncollectible"):
            raise ApiError(400, f"Invoice is {invoice['status']}; only open or uncollectible invoices can be paid.")
        if not params.get("paid_out_of_band"):
            raise ApiError(400, "This customer has no attached payment source or default payment method. "
                           "Please consider adding a default payment method.")
        self._pay(invoice)
        return self._render_invoice(invoice)

    def _mark_uncollectible(self, params: dict[str, Any], id: str) -> dict[str, Any]:  # noqa: A002
        return self._move_invoice(id, ("open",), "uncollectible", "marked_uncollectible_at",
                                  "invoice.marked_uncollectible", refusal="mark an open invoice uncollectible")

    def _move_invoice(self, id: str, allowed: tuple[str, ...], status: str, stamp: str, event: str, *,  # noqa: A002
                      refusal: str) -> dict[str, Any]:
        """An invoice's move from one of ``allowed`` to ``status``, stamped and announced by ``event``."""
        invoice = self._invoice(id, param="id", status=404)
        if invoice["status"] not in allowed:
            raise ApiError(400, f"You can only {refusal}; invoice {id} is {invoice['status']}.")
        invoice["status"] = status
        invoice["status_transitions"][stamp] = self._now()
        self._event(event, self._render_invoice(invoice))
        return self._render_invoice(invoice)

    def _create_invoice_item(self, params: dict[str, Any]) -> dict[str, Any]:
        if "customer" not in params:
            raise _missing("customer")
        customer = self._customer(params["customer"], param="customer")
        if "amount" not in params:
            raise ApiError(400, "You must specify either `amount`, `pricing` or `price_data` (the fake models "
                           "`amount` only).", code="parameter_missing", param="amount")
        invoice = self._invoice(params["invoice"], param="invoice") if "invoice" in params else None
        currency = params.get("currency") or (invoice["currency"] if invoice else customer["currency"])
        if not currency:
            raise _missing("currency")
        self._check_currency(currency)
        if invoice is not None:
            if invoice["status"] != "draft":
                raise ApiError(400, f"You can only add invoice items to draft invoices; invoice {invoice['id']} "
                               f"is {invoice['status']}.", param="invoice")
            if invoice["customer"] != customer["id"]:
                raise ApiError(400, f"The invoice item's customer ({customer['id']}) must match the invoice's "
                               f"customer ({invoice['customer']}).", param="customer")
            if invoice["currency"] != currency:
                raise ApiError(400, f"The currency of the invoice item ({currency}) must match the currency of "
                               f"the invoice ({invoice['currency']}).", param="currency")
            if len(self._invoice_item_ids[invoice["id"]]) >= MAX_ITEMS_PER_INVOICE:
                raise ApiError(400, f"An invoice can have at most {MAX_ITEMS_PER_INVOICE} invoice items.",
                               param="invoice")
        now = self._now()
        period = params.get("period") or {"start": now, "end": now}
        if period["end"] < period["start"]:
            raise ApiError(400, "The `period[end]` must be greater than or equal to `period[start]`.",
                           param="period[end]")
        amount = params["amount"]
        item_id = self._new_id("ii", 24)
        item: dict[str, Any] = {
            "id": item_id, "object": "invoiceitem", "amount": amount, "currency": currency,
            "customer": customer["id"], "date": now, "description": params.get("description") or None,
            "discountable": amount >= 0, "discounts": [], "invoice": None, "livemode": False,
            "metadata": self._merge_metadata({}, params.get("metadata", {})), "net_amount": amount,
            "parent": None, "period": {"start": period["start"], "end": period["end"]}, "pricing": None,
            "proration": False, "quantity": 1, "tax_rates": [], "test_clock": None,
        }
        self.invoice_items[item_id] = item
        self._sequence[item_id] = len(self._sequence)
        self._line_ids[item_id] = self._new_id("il", 24)
        customer["currency"] = customer["currency"] or currency
        if invoice is not None:
            self._attach(item, invoice)
        self._event("invoiceitem.created", item)
        return self._render_item(item)

    def _list_invoice_items(self, params: dict[str, Any]) -> dict[str, Any]:
        def pending(item: dict[str, Any]) -> bool:
            return "pending" not in params or (item["invoice"] is None) == params["pending"]

        return self._list(params, self.invoice_items, "invoiceitem", "/v1/invoiceitems", self._render_item,
                          also=pending)

    def _create_credit_note(self, params: dict[str, Any]) -> dict[str, Any]:
        if "lines" not in params:
            raise ApiError(400, "You must pass `lines` (the fake models credit notes made of lines only; "
                           "Stripe also accepts `amount` or `shipping_cost`).", code="parameter_missing",
                           param="lines")
        invoice = self._invoice(params["invoice"], param="invoice")
        if invoice["status"] not in CREDITABLE_INVOICE_STATUSES:
            raise ApiError(400, f"You can only create a credit note for an open, paid or uncollectible invoice; "
                           f"invoice {invoice['id']} is {invoice['status']}.", param="invoice")
        lines = [self._credit_note_line(line, f"lines[{index}]") for index, line in enumerate(params["lines"])]
        if not lines:
            raise ApiError(400, "A credit note needs at least one line.", param="lines")
        total = sum(line["amount"] for line in lines)
        if total <= 0:
            raise ApiError(400, "The credit note total must be greater than zero.", param="lines")
        totals = self._totals(invoice)
        credited = sum(n["total"] for n in self.credit_notes.values()
                       if n["invoice"] == invoice["id"] and n["status"] == "issued")
        left = totals["total"] - credited
        if total > left:
            raise ApiError(400, f"The credit note total ({total}) exceeds what is left to credit on invoice "
                           f"{invoice['id']} ({left} of its total {totals['total']}).", param="lines")
        pre = min(total, totals["amount_remaining"])
        post = total - pre
        credit = params.get("credit_amount", 0)
        refund = params.get("refund_amount", 0)
        out_of_band = params.get("out_of_band_amount", 0)
        for name, value in (("credit_amount", credit), ("refund_amount", refund), ("out_of_band_amount", out_of_band)):
            if value < 0:
                raise ApiError(400, f"Invalid {name}: must be greater than or equal to 0.", param=name)
        if refund:
            raise ApiError(400, f"Invoice {invoice['id']} has no charge to refund; use `credit_amount` or "
                           "`out_of_band_amount`.", param="refund_amount")
        if credit + refund + out_of_band != post:
            raise ApiError(400, f"The sum of credit_amount ({credit}), refund_amount ({refund}) and "
                           f"out_of_band_amount ({out_of_band}) must equal the credit note's post-payment amount "
                           f"({post}): the part of its total ({total}) above what invoice {invoice['id']} still "
                           f"owes ({totals['amount_remaining']}).", param="credit_amount" if post else None)
        now = self._now()
        note_id = self._new_id("cn", 24)
        sequence = 1 + sum(1 for n in self.credit_notes.values() if n["invoice"] == invoice["id"])
        customer = self.customers[invoice["customer"]]
        for line in lines:
            line["id"] = self._new_id("cnli", 24)
        note: dict[str, Any] = {
            "id": note_id, "object": "credit_note", "amount": total, "amount_shipping": 0, "created": now,
            "currency": invoice["currency"], "customer": customer["id"], "customer_account": None,
            "customer_balance_transaction": self._new_id("cbtxn", 24) if credit else None,
            "discount_amount": 0, "discount_amounts": [], "effective_at": now, "invoice": invoice["id"],
            "lines": lines, "livemode": False, "memo": params.get("memo") or None,
            "metadata": self._merge_metadata({}, params.get("metadata", {})),
            "number": f"{invoice['number']}-CN-{sequence:02d}", "out_of_band_amount": out_of_band or None,
            "pdf": f"https://pay.stripe.com/credit_notes/acct_fake/test_{self._token(40)}/pdf?s=ap",
            "post_payment_amount": post, "pre_payment_amount": pre, "pretax_credit_amounts": [],
            "reason": params.get("reason"), "refunds": [], "shipping_cost": None, "status": "issued",
            "subtotal": total, "subtotal_excluding_tax": total, "total": total, "total_excluding_tax": total,
            "total_taxes": [], "type": "mixed" if pre and post else ("pre_payment" if pre else "post_payment"),
            "voided_at": None,
        }
        self.credit_notes[note_id] = note
        self._sequence[note_id] = len(self._sequence)
        self._balance_credit[note_id] = credit
        invoice["pre_payment_credit_notes_amount"] += pre
        invoice["post_payment_credit_notes_amount"] += post
        customer["balance"] -= credit
        self._event("credit_note.created", self._render_credit_note(note))
        if pre and invoice["status"] == "open" and self._totals(invoice)["amount_remaining"] == 0:
            self._pay(invoice)  # "if a credit note reduces the balance of an open invoice to 0, it is paid"
        return self._render_credit_note(note)

    def _credit_note_line(self, line: dict[str, Any], path: str) -> dict[str, Any]:
        unmodelled = sorted(set(line) - CREDIT_NOTE_LINE_FIELDS)
        if unmodelled:
            raise ApiError(400, f"fake Stripe: `{path}[{unmodelled[0]}]` is a valid Stripe parameter but the fake "
                           "does not model it", code="fake_stripe_unimplemented", param=f"{path}[{unmodelled[0]}]")
        if line["type"] != "custom_line_item":
            raise ApiError(400, f"fake Stripe: {path}[type]={line['type']} is not modelled (custom_line_item only)",
                           code="fake_stripe_unimplemented", param=f"{path}[type]")
        if "unit_amount" not in line:
            raise _missing(f"{path}[unit_amount]")
        quantity = line.get("quantity", 1)
        if quantity < 1:
            raise ApiError(400, f"Invalid {path}[quantity]: must be at least 1.", param=f"{path}[quantity]")
        if line["unit_amount"] < 0:
            raise ApiError(400, f"Invalid {path}[unit_amount]: a custom credit note line cannot credit a negative "
                           "amount.", param=f"{path}[unit_amount]")
        amount = line["unit_amount"] * quantity
        return {
            "object": "credit_note_line_item", "amount": amount, "description": line.get("description") or None,
            "discount_amount": 0, "discount_amounts": [], "invoice_line_item": None, "livemode": False,
            "metadata": self._merge_metadata({}, line.get("metadata", {})), "pretax_credit_amounts": [],
            "quantity": quantity, "tax_rates": [], "taxes": [], "type": "custom_line_item",
            "unit_amount": line["unit_amount"], "unit_amount_decimal": str(line["unit_amount"]),
        }

    def _retrieve_credit_note(self, params: dict[str, Any], id: str) -> dict[str, Any]:  # noqa: A002
        return self._render_credit_note(self._credit_note(id, param="id", status=404))

    def _void_credit_note(self, params: dict[str, Any], id: str) -> dict[str, Any]:  # noqa: A002
        note = self._credit_note(id, param="id", status=404)
        if note["status"] != "issued":
            raise ApiError(400, f"Credit note {id} is already void; you can only void an issued credit note.")
        invoice = self.invoices[note["invoice"]]
        if invoice["status"] != "open":
            raise ApiError(400, f"You can only void a credit note on an open invoice; invoice {invoice['id']} is "
                           f"{invoice['status']}.")
        invoice["pre_payment_credit_notes_amount"] -= note["pre_payment_amount"]
        invoice["post_payment_credit_notes_amount"] -= note["post_payment_amount"]
        self.customers[note["customer"]]["balance"] += self._balance_credit[id]
        note["status"], note["voided_at"] = "void", self._now()
        self._event("credit_note.voided", self._render_credit_note(note))
        return self._render_credit_note(note)

    def _list_credit_notes(self, params: dict[str, Any]) -> dict[str, Any]:
        return self._list(params, self.credit_notes, "credit_note", "/v1/credit_notes", self._render_credit_note)

    def _list(self, params: dict[str, Any], objects: dict[str, dict[str, Any]], kind: str, url: str,
              render: Callable[[dict[str, Any]], dict[str, Any]],
              also: Callable[[dict[str, Any]], bool] = lambda _: True) -> dict[str, Any]:
        """A Stripe list of ``objects``, newest first: ``limit``, filters by ``invoice`` and ``customer`` (and
        ``also``), pages by ``starting_after`` or ``ending_before``."""
        limit = params.get("limit", 10)
        if not 1 <= limit <= 100:
            raise ApiError(400, "This value must be between 1 and 100 (inclusive).", param="limit")
        found = sorted(objects.values(), key=lambda o: self._sequence[o["id"]], reverse=True)
        if "invoice" in params:
            self._invoice(params["invoice"], param="invoice")
            found = [o for o in found if o["invoice"] == params["invoice"]]
        if "customer" in params:
            self._customer(params["customer"], param="customer")
            found = [o for o in found if o["customer"] == params["customer"]]
        found = [o for o in found if also(o)]
        ids = [o["id"] for o in found]
        if "starting_after" in params:
            cursor = params["starting_after"]
            if cursor not in objects:
                raise _no_such(kind, cursor, param="starting_after")
            found = found[ids.index(cursor) + 1:] if cursor in ids else []
        elif "ending_before" in params:
            cursor = params["ending_before"]
            if cursor not in objects:
                raise _no_such(kind, cursor, param="ending_before")
            found = found[:ids.index(cursor)][-limit:] if cursor in ids else []
        return {"object": "list", "data": [render(o) for o in found[:limit]], "has_more": len(found) > limit,
                "url": url}

    # -- state helpers -------------------------------------------------------------------------------

    def _customer(self, customer_id: str, *, param: str | None, status: int = 400) -> dict[str, Any]:
        customer = self.customers.get(customer_id)
        if customer is None:
            raise _no_such("customer", customer_id, param=param, status=status)
        return customer

    def _invoice(self, invoice_id: str, *, param: str | None, status: int = 400) -> dict[str, Any]:
        invoice = self.invoices.get(invoice_id)
        if invoice is None:
            raise _no_such("invoice", invoice_id, param=param, status=status)
        return invoice

    def _credit_note(self, credit_note_id: str, *, param: str | None, status: int = 400) -> dict[str, Any]:
        note = self.credit_notes.get(credit_note_id)
        if note is None:
            raise _no_such("credit_note", credit_note_id, param=param, status=status)
        return note

    def _attach(self, item: dict[str, Any], invoice: dict[str, Any]) -> None:
        item["invoice"] = invoice["id"]
        self._invoice_item_ids[invoice["id"]].append(item["id"])

    def _pay(self, invoice: dict[str, Any]) -> None:
        invoice["status"] = "paid"
        invoice["status_transitions"]["paid_at"] = self._now()
        self._event("invoice.paid", self._render_invoice(invoice))

    @staticmethod
    def _check_currency(currency: str) -> None:
        if currency not in SUPPORTED_CURRENCIES:
            raise ApiError(400, f"Invalid currency: {currency}. Stripe currently supports these currencies: "
                           + ", ".join(sorted(SUPPORTED_CURRENCIES)[:20]) + ", ...", param="currency")

    @staticmethod
    def _merge_metadata(current: dict[str, str], update: dict[str, str] | str) -> dict[str, str]:
        if update == "":
            return {}  # `metadata=""` unsets every key
        assert isinstance(update, dict)
        merged = dict(current)
        for key, value in update.items():
            if len(key) > 40:
                raise ApiError(400, f"Invalid metadata: keys can be at most 40 characters ({key!r})",
                               param=f"metadata[{key}]")
            if len(value) > 500:
                raise ApiError(400, f"Invalid metadata: values can be at most 500 characters ({key!r})",
                               param=f"metadata[{key}]")
            if value == "":
                merged.pop(key, None)  # an empty value unsets the key
            else:
                merged[key] = value
        if len(merged) > 50:
            raise ApiError(400, "Invalid metadata: an object can have at most 50 metadata keys", param="metadata")
        return merged

    def _totals(self, invoice: dict[str, Any]) -> dict[str, int]:
        subtotal = sum(self.invoice_items[i]["amount"] for i in self._invoice_item_ids[invoice["id"]])
        # The customer balance applied at finalization, then what pre-payment credit notes took off.
        amount_due = max(subtotal + self._applied_balance.get(invoice["id"], 0), 0)
        amount_due -= invoice["pre_payment_credit_notes_amount"]
        paid = amount_due if invoice["status"] == "paid" else 0
        remaining = amount_due - paid if invoice["status"] in ("draft", "open", "uncollectible") else 0
        return {"subtotal": subtotal, "subtotal_excluding_tax": subtotal, "total": subtotal,
                "total_excluding_tax": subtotal, "amount_due": amount_due, "amount_paid": paid,
                "amount_remaining": remaining}

    def _render_item(self, item: dict[str, Any]) -> dict[str, Any]:
        return copy.deepcopy(item)

    def _render_line(self, item: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": self._line_ids[item["id"]], "object": "line_item", "amount": item["amount"],
            "currency": item["currency"], "description": item["description"], "discount_amounts": [],
            "discountable": item["discountable"], "discounts": [], "invoice": item["invoice"], "livemode": False,
            "metadata": dict(item["metadata"]),
            "parent": {
                "type": "invoice_item_details",
                "invoice_item_details": {"invoice": item["invoice"], "invoice_item": item["id"], "proration": False,
                                         "proration_details": {"credited_items": None}, "subscription": None},
                "subscription_item_details": None,
            },
            "period": dict(item["period"]), "pretax_credit_amounts": [], "pricing": None, "quantity": 1,
            "taxes": [],
        }

    def _render_invoice(self, invoice: dict[str, Any]) -> dict[str, Any]:
        rendered = copy.deepcopy(invoice)
        rendered.update(self._totals(invoice))
        lines = [self._render_line(self.invoice_items[i]) for i in self._invoice_item_ids[invoice["id"]]]
        rendered["lines"] = {"object": "list", "data": lines[:INVOICE_LINES_INLINE],
                             "has_more": len(lines) > INVOICE_LINES_INLINE, "total_count": len(lines),
                             "url": f"/v1/invoices/{invoice['id']}/lines"}
        return rendered

    def _render_credit_note(self, note: dict[str, Any]) -> dict[str, Any]:
        rendered = copy.deepcopy(note)
        lines = rendered["lines"]
        rendered["lines"] = {"object": "list", "data": lines[:CREDIT_NOTE_LINES_INLINE],
                             "has_more": len(lines) > CREDIT_NOTE_LINES_INLINE, "total_count": len(lines),
                             "url": f"/v1/credit_notes/{note['id']}/lines"}
        return rendered

    def _event(self, event_type: str, obj: Mapping[str, Any]) -> None:
        self.events.append(self.make_event(event_type, obj))

    def _now(self) -> int:
        return int(self.clock())

    def _token(self, length: int, alphabet: str = string.ascii_letters + string.digits) -> str:
        return "".join(self._random.choice(alphabet) for _ in range(length))

    def _new_id(self, prefix: str, length: int) -> str:
        return f"{prefix}_{self._token(length)}"
