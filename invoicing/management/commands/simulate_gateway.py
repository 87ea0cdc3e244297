"""``python manage.py simulate_gateway --consumer kong-air --requests 6 [--url URL --token T]``.

A stand-in for Kong's metering-and-billing plugin: posts the events of that many AI calls (one
``kong.api_request`` and two ``kong.llm_request`` each, shaped like ../shared/fixtures/kong_events.json) to
the ingest endpoint, as the plugin does. Every second call's input event also carries ``cache_read_tokens``
(prompt tokens served from the provider's cache, beside the uncached ``tokens``), which the
``llm_cache_read_tokens`` companion meter counts.
"""

from __future__ import annotations

import copy
import json
import os
import urllib.error
import urllib.request
import uuid
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from common.time import format_rfc3339
from invoicing.services.demo import demo_token_file

FIXTURES = Path(__file__).resolve().parents[3] / "metering" / "data" / "kong_events.json"
CACHE_READ_TOKENS = 16  # on the input event of every second call


BATCH = 1000  # events per POST


def gateway_events(consumer: str, requests: int) -> list[dict]:
    templates = json.loads(FIXTURES.read_text())["events"]
    events = []
    now = format_rfc3339(timezone.now())
    for call in range(requests):
        request_id = str(uuid.uuid4())
        for template in templates:
            event = copy.deepcopy(template)
            event["id"] = request_id if event["type"] == "kong.api_request" else str(uuid.uuid4())
            event["subject"] = consumer
            event["time"] = now
            event["data"]["subject_type"] = "consumer_id" if consumer.startswith("consumer:") else "consumer_username"
            if event["type"] == "kong.llm_request":
                event["data"]["api_request_id"] = request_id
                if call % 2 == 1 and event["data"].get("type") == "request":
                    event["data"]["cache_read_tokens"] = CACHE_READ_TOKENS
            events.append(event)
    return events


class Command(BaseCommand):
    help = "Post the Kong-shaped usage events of N AI calls by one consumer, like the gateway plugin."

    def add_arguments(self, parser):
        parser.add_argument("--consumer", required=True, help="Subject: a username (kong-air) or consumer:<id>.")
        parser.add_argument("--requests", type=int, default=1, help="How many AI calls (3 events each).")
        parser.add_argument("--url", default=f"http://127.0.0.1:{os.environ.get('PORT', '8000')}",
                            help="Base URL of this server (default: http://127.0.0.1:$PORT).")
        parser.add_argument("--token", help="Ingest token (default: the demo token saved by load_demo).")

    def handle(self, *args, consumer: str, requests: int, url: str, token: str | None, **options):
        if requests < 1 or requests > 3000:
            raise CommandError("--requests must be between 1 and 3000.")
        token = token or (demo_token_file().read_text().strip() if demo_token_file().exists() else None)
        if not token:
            raise CommandError("No --token given and no demo token found: run python manage.py load_demo first.")
        events = gateway_events(consumer, requests)
        statuses = set()
        for first in range(0, len(events), BATCH):  # batches a gateway would send, well under the body limit
            statuses.add(self._post(url, token, events[first:first + BATCH]))
        status = ", ".join(str(code) for code in sorted(statuses))
        input_tokens = sum(e["data"]["tokens"] for e in events
                           if e["type"] == "kong.llm_request" and e["data"]["type"] == "request")
        output_tokens = sum(e["data"]["tokens"] for e in events
                            if e["type"] == "kong.llm_request" and e["data"]["type"] == "response")
        cache_read = sum(e["data"].get("cache_read_tokens", 0) for e in events if e["type"] == "kong.llm_request")
        self.stdout.write(f"Posted {len(events)} events ({requests} AI calls by {consumer}) to {url}: HTTP {status}; "
                          f"{input_tokens} input tokens, {cache_read} cache read tokens, {output_tokens} output "
                          "tokens.")

    @staticmethod
    def _post(url: str, token: str, batch: list[dict]) -> int:
        request = urllib.request.Request(  # noqa: S310 - operator-given URL of this server
            url.rstrip("/") + "/api/v3/openmeter/events", data=json.dumps(batch).encode(), method="POST",
            headers={"Content-Type": "application/cloudevents-batch+json", "Authorization": f"Bearer {token}"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
                return int(response.status)
        except urllib.error.HTTPError as exc:
            raise CommandError(f"The server answered {exc.code}: {exc.read().decode(errors='replace')[:500]}") from exc
        except urllib.error.URLError as exc:
            raise CommandError(f"Cannot reach {url}: {exc.reason}. Is `make run` running?") from exc
