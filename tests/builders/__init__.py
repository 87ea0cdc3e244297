"""Test builders, in one place: ``from tests.builders import kong_air, token_plan, llm_event, ingest, utc``.

Builders make data through the real services (customers, plans, events, closes), so a test starts from states the
application can reach. Fixtures that wrap them live in ``tests/conftest.py``; fakes of outside services (Stripe,
Kong's Admin API) in ``tests/fakes/``.

- ``moments``: ``utc``, ``iso``
- ``events``: Kong-shaped CloudEvents (``llm_event``, ``tokens``, ``api_request_event``, ``body``), the sample
  ``kong_fixtures()``
- ``usage``: ``ingest`` through the ingest service, ``roll_up``/``wait_until_foldable`` with the real aggregator,
  ``make_meter``
- ``catalog``: meters, features, plans, rate cards (``token_plan``, ``cent_plan``, ``platform_fee``, ``quota``...)
- ``customers``: ``customer``, ``kong_air`` (a customer billed for its own subject)
- ``invoicing``: ``monthly_close``, ``the_invoice``, November's invoice as the Stripe tests push it
- ``api``: ``bearer``; ``forms``: reading admin forms as a browser does
- ``shared``: ``built_once``, for data built once per class or module where tests only read it
"""

from tests.builders.api import bearer
from tests.builders.catalog import (
    D,
    ai_token_feature,
    cent_plan,
    graduated_out,
    platform_fee,
    quota,
    sso_feature,
    token_plan,
    tokens_meter,
)
from tests.builders.customers import customer, kong_air
from tests.builders.events import KONG_FIXTURES_FILE, api_request_event, body, kong_fixtures, llm_event, tokens
from tests.builders.forms import Form, form_by_id, form_with_input, parse_forms
from tests.builders.invoicing import (
    AFTER_NOV,
    STRIPE_BILLING_DETAILS,
    monthly_close,
    november_invoice,
    seed_plan,
    subscribe_with_november_usage,
    the_invoice,
)
from tests.builders.moments import iso, utc
from tests.builders.shared import built_once
from tests.builders.usage import ingest, make_meter, roll_up, wait_until_foldable

__all__ = [
    "AFTER_NOV", "D", "KONG_FIXTURES_FILE", "STRIPE_BILLING_DETAILS", "Form", "ai_token_feature", "api_request_event",
    "bearer", "body", "built_once", "cent_plan", "customer", "form_by_id", "form_with_input", "graduated_out",
    "ingest", "iso", "kong_air", "kong_fixtures", "llm_event", "make_meter", "monthly_close", "november_invoice",
    "parse_forms", "platform_fee", "quota", "roll_up", "seed_plan", "sso_feature", "subscribe_with_november_usage",
    "the_invoice", "token_plan", "tokens", "tokens_meter", "utc", "wait_until_foldable",
]
