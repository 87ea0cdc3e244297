"""schemathesis hooks of the CI run (.ci/schemathesis.toml, loaded with ``PYTHONPATH=.ci``).

One hook, narrow on purpose: a webhook endpoint's URL must resolve to public addresses only (the SSRF check: a
refusal naming the url is a data rule); and a few rules of the meter query (and of a credit grant) depend on the
data or on two parameters at once, which JSON Schema cannot state (the operation's description states them): ``to``
after ``from``, at most 50,000 windows, group-by names of that meter, customers that exist (a grant: more than zero,
the customer's currency and its decimals, an expiry after the effective time, features that exist). A
*valid-looking* request refused only for those rules (a 400 whose problem names each) is not a schema lie, so that
positive-data failure is dropped.
Every other failure of every check is kept.
"""

from __future__ import annotations

import ast
import json
import threading

import schemathesis

# Python 3.11 keeps the AST constructor's recursion depth in interpreter-wide state, so two threads parsing at once
# fail with "AST constructor recursion depth mismatch" (hypothesis parses source to describe a strategy's lambda,
# and schemathesis runs 2 worker threads). Parsing is rare and quick here: serialise it.
_PARSE_LOCK = threading.RLock()
_unlocked_parse = ast.parse


def _parse_one_at_a_time(*args, **kwargs):
    with _PARSE_LOCK:
        return _unlocked_parse(*args, **kwargs)


ast.parse = _parse_one_at_a_time

QUERY_OPERATIONS = {"GET /api/v1/meters/{id_or_slug}/query", "POST /api/v1/meters/{id_or_slug}/query"}
# A webhook URL must resolve, and only to public addresses (SSRF): no schema can say which hosts do.
WEBHOOK_OPERATIONS = {"POST /api/v1/webhook-endpoints", "PUT /api/v1/webhook-endpoints/{endpoint_id}"}
GRANT_OPERATIONS = {"POST /api/v1/customers/{id_or_key}/credits/grants"}
# The margin report's range: ``to`` after ``from`` (two parameters at once).
MARGIN_OPERATIONS = {"GET /api/v1/margins"}
MARGIN_RULES = (("to", "must be after from"),)
# (field, words of the message) of each rule a schema cannot express
DATA_RULES = (
    ("to", "to must be after from"),
    ("windowSize", "windows: use a larger windowSize"),
    ("filterCustomerId", "unknown customer(s)"),
    ("groupBy", "is not a group-by of meter"),
)
# A credit grant's rules that depend on the customer or on two fields (the operation's schema description states
# them): more than zero, no more decimals than the customer's currency, the customer's currency, an expiry after
# the effective time, features that exist.
GRANT_RULES = (
    ("amount", "must be more than zero"),
    ("amount", "has more decimals than"),
    ("currency", "the customer is billed in"),
    ("expires_at", "the expiry must be after the effective time"),
    ("applies_to", "unknown feature"),
)


def _names_a_data_rule(body: bytes, rules=DATA_RULES) -> bool:
    try:
        problem = json.loads(body)
    except ValueError:
        return False
    errors = problem.get("errors") if isinstance(problem, dict) else None
    if not isinstance(errors, list) or not errors or not all(isinstance(error, dict) for error in errors):
        return False
    return all(any(error.get("field") == rule_field and words in str(error.get("message", ""))
                   for rule_field, words in rules) for error in errors)


@schemathesis.hook
def filter_failure(context, failure, case, response) -> bool:
    """Keep a failure unless it is a valid-looking meter query refused for a data rule."""
    rejected_positive = type(failure).__name__ == "RejectedPositiveData"
    if rejected_positive and case.operation.label in QUERY_OPERATIONS and response.status_code == 400:
        return not _names_a_data_rule(response.content)
    if rejected_positive and case.operation.label in WEBHOOK_OPERATIONS and response.status_code == 400:
        return not _names_a_data_rule(response.content, (("url", ""),))
    if rejected_positive and case.operation.label in MARGIN_OPERATIONS and response.status_code == 400:
        return not _names_a_data_rule(response.content, MARGIN_RULES)
    if rejected_positive and case.operation.label in GRANT_OPERATIONS and response.status_code == 400:
        return not _names_a_data_rule(response.content, GRANT_RULES)
    return True
