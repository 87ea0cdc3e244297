"""Seed a fresh database for the schemathesis run (.ci/schemathesis): the demo data (meter llm_tokens, feature
ai-token, plan token, customer kong-air and its subscription), a gateway's events, the first period's invoice, a
credit note, and an API token with every scope. Prints the token, last."""

import datetime as dt
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "billing_site.settings.local")

import django  # noqa: E402

django.setup()

from django.utils import timezone  # noqa: E402

from invoicing.management.commands.simulate_gateway import gateway_events  # noqa: E402
from invoicing.models import Invoice  # noqa: E402
from invoicing.services.close import close_cycles  # noqa: E402
from invoicing.services.demo import demo_load  # noqa: E402
from invoicing.services.lifecycle import invoice_reissue, invoice_void  # noqa: E402
from metering.cloudevents import MEDIA_BATCH, parse_events  # noqa: E402
from metering.services.ingest import events_ingest  # noqa: E402
from metering.services.tokens import api_token_create  # noqa: E402

now = timezone.now()
demo_load(now=now)
body = ("[" + ",".join(__import__("json").dumps(e) for e in gateway_events("kong-air", 20)) + "]").encode()
events_ingest(rows=parse_events(body, MEDIA_BATCH, now=now), received_at=now)
close_cycles(now=now + dt.timedelta(days=40))
issued = Invoice.objects.filter(status=Invoice.Status.ISSUED).order_by("id").first()
if issued is not None:  # a voided invoice and its replacement (and the credit note voiding may make)
    invoice_void(invoice=issued, actor=None, label="schemathesis seed", reason="seed")
    invoice_reissue(invoice=issued, actor=None, label="schemathesis seed")
print(f"invoices: {Invoice.objects.count()}", file=sys.stderr)
_, plain = api_token_create(name="schemathesis", scopes=["ingest", "read", "manage"])
print(plain)
