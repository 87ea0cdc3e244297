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
- ``catalog_as_code``: the example catalog file, ``write``, ``apply``/``apply_error`` (billing_apply), ``dump``;
  ``ai_gateway_catalog`` (a flow-style file) and ``llm_price_by_model_and_type`` (a dimensional price for it)
- ``customers``: ``customer``, ``kong_air`` (a customer billed for its own subject)
- ``credits``: ``grant`` (prepaid credits through ``grant_create``)
- ``invoicing``: ``monthly_close``, ``the_invoice``, November's invoice as the Stripe tests push it
- ``api``: ``bearer``; ``forms``: reading admin forms as a browser does
- ``shared``: ``built_once``, for data built once per class or module where tests only read it
- ``processes``: a migrated SQLite file (made once per run) and the environment for the project's own processes
"""

# Every builder under one name; each module's __all__ says what it offers.
from tests.builders.api import *  # noqa: F403
from tests.builders.catalog import *  # noqa: F403
from tests.builders.catalog_as_code import *  # noqa: F403
from tests.builders.credits import *  # noqa: F403
from tests.builders.customers import *  # noqa: F403
from tests.builders.events import *  # noqa: F403
from tests.builders.forms import *  # noqa: F403
from tests.builders.invoicing import *  # noqa: F403
from tests.builders.moments import *  # noqa: F403
from tests.builders.processes import *  # noqa: F403
from tests.builders.settings import *  # noqa: F403
from tests.builders.shared import *  # noqa: F403
from tests.builders.usage import *  # noqa: F403
