"""schemathesis hooks of the CI run (.ci/schemathesis.toml, loaded with ``PYTHONPATH=.ci``).

One hook, narrow on purpose: a webhook endpoint's URL must resolve to public addresses only (the SSRF check: a
refusal naming the url is a data rule); and a few rules of the meter query depend on the data or on two parameters
at once, which JSON Schema cannot state (the operation's description states them): ``to`` after ``from``, at most 50,000
windows, group-by names of that meter, customers that exist. A *valid-looking* query refused for exactly one of
those rules (a 400 whose problem names the rule) is not a schema lie, so that positive-data failure is dropped.
Every other failure of every check is kept.
"""

from __future__ import annotations

import json

import schemathesis

QUERY_OPERATIONS = {"GET /api/v1/meters/{id_or_slug}/query", "POST /api/v1/meters/{id_or_slug}/query"}
# A webhook URL must resolve, and only to public addresses (SSRF): no schema can say which hosts do.
WEBHOOK_OPERATIONS = {"POST /api/v1/webhook-endpoints", "PUT /api/v1/webhook-endpoints/{endpoint_id}"}
# (field, words of the message) of each rule a schema cannot express
DATA_RULES = (
    ("to", "to must be after from"),
    ("windowSize", "windows: use a larger windowSize"),
    ("filterCustomerId", "unknown customer(s)"),
    ("groupBy", "is not a group-by of meter"),
)


def _names_a_data_rule(body: bytes, rules=DATA_RULES) -> bool:
    try:
        problem = json.loads(body)
    except ValueError:
        return False
    errors = problem.get("errors") if isinstance(problem, dict) else None
    if not isinstance(errors, list) or len(errors) != 1 or not isinstance(errors[0], dict):
        return False
    field, message = errors[0].get("field"), str(errors[0].get("message", ""))
    return any(field == rule_field and words in message for rule_field, words in rules)


@schemathesis.hook
def filter_failure(context, failure, case, response) -> bool:
    """Keep a failure unless it is a valid-looking meter query refused for a data rule."""
    rejected_positive = type(failure).__name__ == "RejectedPositiveData"
    if rejected_positive and case.operation.label in QUERY_OPERATIONS and response.status_code == 400:
        return not _names_a_data_rule(response.content)
    if rejected_positive and case.operation.label in WEBHOOK_OPERATIONS and response.status_code == 400:
        return not _names_a_data_rule(response.content, (("url", ""),))
    return True
