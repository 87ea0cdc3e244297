"""``billing_apply`` / ``billing_dump``: catalog as code (customers.apply, catalog.apply, common.yaml_reader)."""

from __future__ import annotations

import copy
import datetime as dt
import re
from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from catalog.models import Feature, Plan, RateCard
from catalog.services.plans import plan_archive, plan_new_version
from customers.models import Customer, KongConsumer, SubjectAttribution, Subscription, SubscriptionEvent
from customers.services.customers import attribution_add, customer_create, customer_update
from customers.services.subscriptions import SubscriptionError, subscription_cancel
from metering.models import Meter
from metering.services.meters import meter_update
from tests.builders import CATALOG_EXAMPLE as FIXTURE
from tests.builders import DELETE, EMPTY, apply, apply_error, dump, snapshot, write
from tests.builders import catalog_example as example
from tests.builders import change_at as _set

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("in_tmp_path")]


UTC = dt.UTC


EXAMPLE_LINES = [
    "create meter llm_tokens",
    "create feature ai-token",
    "create feature ai-token-out",
    "create feature sso",
    "create plan token v1",
    "create customer kong-air",
    "create customer acme",
    "add subject kong-air to customer kong-air",
    "add subject acme-corp to customer acme",
    "add subject consumer:8f3c2a10-5b1e-4c7d-9e21-3a4b5c6d7e8f to customer acme",
    "create subscription kong-air on token v1 from 2026-10-01T00:00:00Z",
    "create subscription acme on token v1 from 2026-10-16T00:00:00Z (billing anchor 2026-10-01T00:00:00Z)",
]


# ------------------------------------------------------------------------------------------------ the example file


def test_example_into_an_empty_database():
    assert apply(write(FIXTURE.read_text())).splitlines() == [*EXAMPLE_LINES, "Applied 12 changes."]
    meter = Meter.objects.get()
    assert (meter.slug, meter.name, meter.event_type, meter.aggregation, meter.value_property) == (
        "llm_tokens", "AI Gateway Tokens", "kong.llm_request", "SUM", "$.tokens")
    assert meter.group_by == {"model": "$.model", "provider": "$.provider", "type": "$.type"}
    features = {f.key: f for f in Feature.objects.select_related("meter")}
    assert features["ai-token"].meter == meter
    assert features["ai-token"].meter_group_by_filters == {"provider": "openai", "type": "request"}
    assert features["ai-token-out"].meter_group_by_filters == {"provider": "openai", "type": "response"}
    assert features["sso"].meter is None and features["sso"].name == "SSO"

    plan = Plan.objects.get()
    assert (plan.key, plan.version, plan.status, plan.name, plan.currency, plan.billing_cadence) == (
        "token", 1, "published", "Token", "USD", "P1M")
    cards = list(plan.rate_cards.select_related("feature").prefetch_related("tiers"))
    assert [c.key for c in cards] == ["ai-token", "platform", "ai-quota", "sso", "ai-token-out"]
    ai, platform, quota, sso, out_card = cards
    assert ai.feature is not None
    assert (ai.feature.key, ai.price_type, ai.unit_amount, ai.entitlement_type) == (
        "ai-token", "unit", Decimal("0.00002"), "boolean")
    assert (platform.name, platform.feature, platform.payment_term, platform.price_type, platform.amount) == (
        "Platform fee", None, "in_advance", "flat", Decimal("49"))
    assert (quota.price_type, quota.entitlement_type, quota.entitlement_limit, quota.entitlement_soft) == (
        "", "metered", Decimal("500000"), False)
    assert (sso.entitlement_type, sso.entitlement_config) == ("static", {"seats": 5})
    assert (out_card.free_quantity, out_card.minimum_spend, out_card.price_type) == (
        Decimal("1000"), Decimal("5"), "graduated")
    assert [(t.up_to, t.unit_amount, t.flat_amount) for t in out_card.tiers.all()] == [
        (Decimal("1000000"), Decimal("0.00001"), Decimal("0")),
        (None, Decimal("0.000008"), Decimal("2")),
    ]

    subjects = {a.subject: a.customer.key for a in SubjectAttribution.objects.select_related("customer")}
    assert subjects == {"kong-air": "kong-air", "acme-corp": "acme",
                        "consumer:8f3c2a10-5b1e-4c7d-9e21-3a4b5c6d7e8f": "acme"}
    assert Customer.objects.get(key="acme").name == "Acme Corp"
    subs = {s.customer.key: s for s in Subscription.objects.select_related("customer", "plan")}
    assert subs["kong-air"].plan == plan
    assert subs["kong-air"].start == subs["kong-air"].billing_anchor == dt.datetime(2026, 10, 1, tzinfo=UTC)
    assert subs["acme"].start == dt.datetime(2026, 10, 16, tzinfo=UTC)
    assert subs["acme"].billing_anchor == dt.datetime(2026, 10, 1, tzinfo=UTC)  # partial first period
    assert SubscriptionEvent.objects.filter(actor="billing_apply").count() == 2


def test_applying_twice_changes_nothing():
    apply(write(FIXTURE.read_text()))
    before = snapshot()

    assert apply() == "No changes.\n"
    assert snapshot() == before


def test_numbers_instead_of_strings_and_equal_decimals_are_no_change():
    apply(write(FIXTURE.read_text()))
    text = (FIXTURE.read_text().replace('"49.00"', "49").replace('"0.00002"', "0.00002")
            .replace('"500000"', "500000.000").replace('"5.00"', "5"))
    assert "0.00002}" in text
    before = snapshot()

    assert apply(write(text)) == "No changes.\n"
    assert snapshot() == before


def test_dry_run_prints_the_diff_and_changes_nothing():
    write(FIXTURE.read_text())
    assert apply("catalog.yaml", "--dry-run").splitlines() == [*EXAMPLE_LINES, "Dry run: nothing applied."]
    assert snapshot() == EMPTY

    apply()
    before = snapshot()
    doc = example()
    doc["plans"][0]["rate_cards"][0]["price"]["unit_amount"] = "0.00003"
    doc["features"][0]["filters"]["provider"] = "anthropic"
    doc["customers"][0]["email"] = "billing@kong-air.example"
    assert apply(write(doc), "--dry-run").splitlines() == [
        "update feature ai-token: filters {provider: openai, type: request} -> {provider: anthropic, type: request}",
        "new version 2 of plan token (rate card ai-token: price.unit_amount 0.00002 -> 0.00003)",
        'update customer kong-air: email "" -> billing@kong-air.example',
        "Dry run: nothing applied.",
    ]
    assert snapshot() == before


# ------------------------------------------------------------------------------------------------------ versions


def test_a_changed_price_publishes_version_2_and_subscriptions_stay_on_version_1():
    apply(write(FIXTURE.read_text()))
    doc = example()
    doc["plans"][0]["rate_cards"][0]["price"]["unit_amount"] = "0.00003"
    doc["customers"].append({"key": "globex", "name": "Globex", "currency": "USD", "subjects": ["globex"]})
    doc["subscriptions"].append({"customer": "globex", "plan": "token", "start": "2026-11-01T00:00:00Z"})

    assert apply(write(doc)).splitlines() == [
        "new version 2 of plan token (rate card ai-token: price.unit_amount 0.00002 -> 0.00003)",
        "create customer globex",
        "add subject globex to customer globex",
        "create subscription globex on token v2 from 2026-11-01T00:00:00Z",
        "Applied 4 changes.",
    ]
    v1, v2 = Plan.objects.get(key="token", version=1), Plan.objects.get(key="token", version=2)
    assert (v1.status, v2.status) == ("archived", "published")
    assert v1.archived_at is not None
    assert v1.rate_cards.get(key="ai-token").unit_amount == Decimal("0.00002")
    assert v2.rate_cards.get(key="ai-token").unit_amount == Decimal("0.00003")
    assert v2.rate_cards.count() == 5
    assert {s.customer.key: s.plan.version for s in Subscription.objects.select_related("customer", "plan")} == {
        "kong-air": 1, "acme": 1, "globex": 2}
    assert apply() == "No changes.\n"


def test_plan_diff_names_added_removed_and_plan_fields():
    apply(write(FIXTURE.read_text()))
    doc = example()
    plan = doc["plans"][0]
    plan["name"] = "Token Pro"
    plan["description"] = "For teams"
    del plan["rate_cards"][3]  # sso
    plan["rate_cards"].append({"key": "support", "name": "Support", "price": {"type": "flat", "amount": "10"}})
    plan["rate_cards"][3]["price"]["tiers"][1]["flat_amount"] = "3"  # ai-token-out

    assert apply(write(doc), "--dry-run").splitlines()[0] == (
        'new version 2 of plan token (name Token -> "Token Pro"; description "" -> "For teams"; '
        "remove rate card sso; rate card ai-token-out: price.tiers[1].flat_amount 2 -> 3; add rate card support)"
    )


def test_draft_plans_are_created_updated_in_place_and_published():
    doc = example()
    doc["plans"][0]["status"] = "draft"
    doc["subscriptions"] = []
    assert apply(write(doc)).splitlines()[4] == "create draft plan token v1"
    assert Plan.objects.get().status == "draft"
    assert apply() == "No changes.\n"

    doc["plans"][0]["rate_cards"][1]["price"]["amount"] = "59"
    assert apply(write(doc)).splitlines() == [
        "update draft plan token v1 (rate card platform: price.amount 49 -> 59)", "Applied 1 change."]
    assert Plan.objects.get().status == "draft"

    del doc["plans"][0]["status"]
    assert apply(write(doc)).splitlines() == ["publish draft plan token v1", "Applied 1 change."]
    assert Plan.objects.get().status == "published"

    doc["plans"][0]["status"] = "draft"
    doc["plans"][0]["rate_cards"][1]["price"]["amount"] = "69"
    assert apply(write(doc)).splitlines()[0] == (
        "new draft version 2 of plan token (rate card platform: price.amount 59 -> 69)")
    assert list(Plan.objects.order_by("version").values_list("status", flat=True)) == ["published", "draft"]

    doc["plans"][0]["status"] = "published"
    doc["plans"][0]["rate_cards"][1]["price"]["amount"] = "79"
    assert apply(write(doc)).splitlines()[0] == (
        "update and publish draft plan token v2 (rate card platform: price.amount 69 -> 79)")
    assert list(Plan.objects.order_by("version").values_list("status", flat=True)) == ["archived", "published"]


def test_an_archived_plan_is_left_out_of_the_dump_and_published_again_by_the_file():
    apply(write(FIXTURE.read_text()))
    plan_archive(plan=Plan.objects.get())
    text = dump()
    assert yaml.safe_load(text)["plans"] == []
    assert len(yaml.safe_load(text)["subscriptions"]) == 2  # still running on the archived version
    assert apply(write(text, "dump.yaml")) == "No changes.\n"

    assert apply().splitlines() == ["new version 2 of plan token (v1 is archived)", "Applied 1 change."]
    assert list(Plan.objects.order_by("version").values_list("status", flat=True)) == ["archived", "published"]
    assert set(Subscription.objects.values_list("plan__version", flat=True)) == {1}


def test_a_draft_in_progress_is_left_alone_when_the_published_version_matches():
    apply(write(FIXTURE.read_text()))
    draft = plan_new_version(plan=Plan.objects.get())  # someone edits in the admin
    assert apply() == "No changes.\n"
    assert Plan.objects.get(pk=draft.pk).status == "draft"

    text = dump()  # the latest version is the draft
    assert yaml.safe_load(text)["plans"][0]["status"] == "draft"
    assert apply(write(text, "dump.yaml")) == "No changes.\n"


def test_a_subscription_needs_a_published_version():
    doc = example()
    doc["plans"][0]["status"] = "draft"
    message = apply_error(write(doc))
    assert "catalog.yaml: subscriptions[0] (kong-air on token).plan: plan token has no published version" in message
    assert snapshot() == EMPTY


# --------------------------------------------------------------------------------------- meters, features, customers


def test_meter_definition_change_goes_through_meter_update():
    full = example()
    doc = {"meters": full["meters"], "features": full["features"]}  # no published plan: the meter is not frozen
    apply(write(doc))
    meter_update(meter=Meter.objects.get(), description="Set in the admin")
    doc["meters"][0]["value_property"] = "$.usage.tokens"

    assert apply(write(doc)).splitlines() == [
        "update meter llm_tokens: value_property $.tokens -> $.usage.tokens", "Applied 1 change."]
    meter = Meter.objects.get()
    assert meter.definition_version == 2
    assert meter.description == "Set in the admin"  # left out of the file: left as it is
    doc["meters"][0]["description"] = ""
    assert apply(write(doc)).splitlines()[0] == 'update meter llm_tokens: description "Set in the admin" -> ""'


def test_customer_update_changes_only_differing_fields_and_customers():
    apply(write(FIXTURE.read_text()))
    acme_updated = Customer.objects.get(key="acme").updated_at
    customer_update(customer=Customer.objects.get(key="kong-air"), tax_id="DE123")
    doc = example()
    doc["customers"][0].update(email="ap@kong-air.example", country="DE", collection_method="send_invoice",
                               days_until_due=30, metadata={"tier": "gold"})

    assert apply(write(doc)).splitlines() == [
        "update customer kong-air: email \"\" -> ap@kong-air.example, country \"\" -> DE, collection_method "
        "charge_automatically -> send_invoice, days_until_due null -> 30, metadata {} -> {tier: gold}",
        "Applied 1 change.",
    ]
    kong_air = Customer.objects.get(key="kong-air")
    assert (kong_air.email, kong_air.days_until_due, kong_air.tax_id) == ("ap@kong-air.example", 30, "DE123")
    assert Customer.objects.get(key="acme").updated_at == acme_updated
    assert apply() == "No changes.\n"


def test_subjects_are_the_full_list():
    apply(write(FIXTURE.read_text()))
    KongConsumer.objects.create(kong_id="c-42", username="acme-mobile")
    doc = example()
    doc["customers"][1]["subjects"] = ["consumer:8f3c2a10-5b1e-4c7d-9e21-3a4b5c6d7e8f", "acme-mobile"]
    doc["customers"][0]["subjects"] = ["kong-air", "acme-corp"]  # moved from acme within the file

    assert apply(write(doc)).splitlines() == [
        "remove subject acme-corp from customer acme",
        "add subject acme-corp to customer kong-air",
        "add subject acme-mobile to customer acme",
        "Applied 3 changes.",
    ]
    ended = SubjectAttribution.objects.get(subject="acme-corp", customer__key="acme")
    moved = SubjectAttribution.objects.get(subject="acme-corp", customer__key="kong-air")
    assert ended.end == moved.start  # usage before the move stays with acme
    consumer = SubjectAttribution.objects.get(subject="acme-mobile").kong_consumer
    assert consumer is not None
    assert consumer.kong_id == "c-42"
    assert apply() == "No changes.\n"

    del doc["customers"][1]["subjects"]  # left out: left as they are
    assert apply(write(doc)) == "No changes.\n"


def test_a_subject_of_another_customer_is_an_error_unless_reassigned():
    other = customer_create(key="other", name="Other Co", currency="USD")
    attribution_add(customer=other, subject="kong-air", start=dt.datetime(2026, 1, 1, tzinfo=UTC))
    write(FIXTURE.read_text())

    message = apply_error()
    assert ("catalog.yaml: customers[0] (kong-air).subjects[0]: subject 'kong-air' belongs to customer other "
            "(Other Co) since 2026-01-01T00:00:00Z") in message
    assert Meter.objects.count() == 0

    doc = example()
    doc["customers"][0]["reassign"] = True
    out = apply(write(doc))
    assert "move subject kong-air from customer other to customer kong-air" in out.splitlines()
    assert SubjectAttribution.objects.get(subject="kong-air", customer=other).end is not None


# ---------------------------------------------------------------------------------------------------- subscriptions


def test_an_overlapping_new_start_or_a_changed_anchor_is_an_error():
    apply(write(FIXTURE.read_text()))
    doc = example()
    doc["subscriptions"][0]["start"] = "2026-11-01T00:00:00Z"
    doc["subscriptions"][1]["billing_anchor"] = "2026-10-16T00:00:00Z"

    message = apply_error(write(doc))

    assert ("catalog.yaml: subscriptions[0] (kong-air on token).start: overlaps the subscription of kong-air to "
            "token v1 from 2026-10-01T00:00:00Z") in message
    assert ("catalog.yaml: subscriptions[1] (acme on token).billing_anchor: the subscription exists with billing "
            "anchor 2026-10-01T00:00:00Z") in message


def test_existing_subscriptions_are_never_changed_or_restarted():
    apply(write(FIXTURE.read_text()))
    subscription_cancel(subscription=Subscription.objects.get(customer__key="acme"), when="now",
                        now=dt.datetime(2026, 10, 20, tzinfo=UTC))
    before = snapshot()
    assert apply() == "No changes.\n"
    assert snapshot() == before


# ---------------------------------------------------------------------------------------------------- atomicity


def test_an_invalid_last_entry_applies_nothing():
    doc = example()
    doc["subscriptions"][-1]["plan"] = "gold"
    message = apply_error(write(doc))
    assert message.splitlines() == [
        "Nothing applied: 1 problem:",
        "catalog.yaml: subscriptions[1] (acme on gold).plan: unknown plan 'gold' (not in the file, not in the "
        "database)",
    ]
    assert snapshot() == EMPTY


def test_a_service_error_during_apply_rolls_everything_back(monkeypatch):
    def refuse(**kwargs):
        raise SubscriptionError("the service said no")

    monkeypatch.setattr("customers.apply.subscription_create", refuse)
    write(FIXTURE.read_text())

    message = apply_error()

    assert "catalog.yaml: subscriptions[0] (kong-air on token): the service said no" in message
    assert snapshot() == EMPTY


def test_every_problem_is_reported_at_once():
    doc = example()
    doc["meters"][0]["aggregation"] = "TOTAL"
    doc["customers"][1]["email"] = "not-an-email"
    message = apply_error(write(doc))
    assert message.startswith("Nothing applied: 2 problems:\n")
    assert "catalog.yaml: meters[0] (llm_tokens).aggregation: must be one of SUM, COUNT" in message
    assert "catalog.yaml: customers[1] (acme).email: 'not-an-email' is not an email address" in message


# ------------------------------------------------------------------------------------------------- error messages


RATE_CARDS = "catalog.yaml: plans[0] (token) rate_cards"  # ai-token, platform, ai-quota, sso, ai-token-out
BAD_ENTRIES = [
    (_set("plans.0.rate_cards.2.entitlement.limit", "lots"),
     f"{RATE_CARDS}[2] (ai-quota).entitlement.limit: must be a decimal number"),
    (_set("plan", []), "catalog.yaml: plan: unknown top-level key (known: meters, features, plans, customers, "
                       "subscriptions, costs, credit_grants)"),
    (_set("meters.0.agregation", "SUM"), "catalog.yaml: meters[0] (llm_tokens).agregation: unknown field"),
    (_set("customers.0.name", 42), "catalog.yaml: customers[0] (kong-air).name: must be a string, not a number "
                                   "(put it in quotes)"),
    (_set("features.0.meter", "tokens"),
     "catalog.yaml: features[0] (ai-token).meter: unknown meter 'tokens' (not in the file, not in the database)"),
    (_set("plans.0.rate_cards.0.feature", "ai-tokens"),
     f"{RATE_CARDS}[0] (ai-token).feature: unknown feature 'ai-tokens'"),
    (_set("subscriptions.0.customer", "nobody"),
     "catalog.yaml: subscriptions[0] (nobody on token).customer: unknown customer 'nobody'"),
    (_set("meters.0.aggregation", "TOTAL"),
     "catalog.yaml: meters[0] (llm_tokens).aggregation: must be one of SUM, COUNT, UNIQUE_COUNT, AVG, MIN, MAX, "
     "LATEST, not 'TOTAL'"),
    (_set("meters.0.value_property", "$..tokens"), "catalog.yaml: meters[0] (llm_tokens).value_property: "),
    (_set("plans.0.rate_cards.2.entitlement.soft", "no"),
     f"{RATE_CARDS}[2] (ai-quota).entitlement.soft: must be true or false, not a string"),
    (_set("plans.0.rate_cards.0.feature", "sso"),
     f"{RATE_CARDS}[0] (ai-token): a usage-based price needs a feature with a meter"),
    (_set("plans.0.rate_cards.4.price.tiers.0.up_to", "0"), f"{RATE_CARDS}[4] (ai-token-out): "),
    (_set("plans.0.rate_cards.1.payment_term", "upfront"),
     f"{RATE_CARDS}[1] (platform).payment_term: must be one of in_advance, in_arrears"),
    (_set("plans.0.rate_cards.1.price", {"type": "unit", "unit_amount": "1"}),
     f"{RATE_CARDS}[1] (platform): usage can only be billed in arrears"),
    (_set("subscriptions.0.start", "2026-10-01T00:00:00"),
     "catalog.yaml: subscriptions[0] (kong-air on token).start: needs a time zone offset"),
    (_set("subscriptions.1.billing_anchor", "October"),
     "catalog.yaml: subscriptions[1] (acme on token).billing_anchor: must be an RFC 3339 date-time"),
    (_set("plans.0.rate_cards.0.price.unit_amount", True),
     f"{RATE_CARDS}[0] (ai-token).price.unit_amount: must be a decimal number, not a boolean"),
    (_set("plans.0.rate_cards.0.price.type", "tiered"),
     f"{RATE_CARDS}[0] (ai-token).price.type: must be one of dimensional, flat, graduated, package, unit, volume, "
     "not 'tiered'"),
    (_set("plans.0.rate_cards.0.price.amount", "1"),
     f"{RATE_CARDS}[0] (ai-token).price.amount: unknown field (known: type, unit_amount)"),
    (_set("plans.0.rate_cards.0.price.unit_amount", "0.0000000000000001"),
     f"{RATE_CARDS}[0] (ai-token).price.unit_amount: must have at most 15 decimal places"),
    (_set("customers.0.currency", "EUR"),
     "catalog.yaml: subscriptions[0] (kong-air on token).plan: plan token bills in USD but customer kong-air is "
     "invoiced in EUR"),
    (_set("customers.0.currency", "XYZ"), "catalog.yaml: customers[0] (kong-air).currency: currency 'XYZ' is not"),
    (_set("features.0.filters", {"region": "eu"}),
     'catalog.yaml: features[0] (ai-token).filters: "region" is not a group-by of the meter'),
    (_set("meters.0", "llm_tokens"), "catalog.yaml: meters[0]: must be a mapping of fields, not a string"),
    (_set("plans.0.status", "archived"),
     "catalog.yaml: plans[0] (token).status: must be one of published, draft, not 'archived'"),
    (_set("plans.0.currency", DELETE), "catalog.yaml: plans[0] (token).currency: is required"),
    (_set("plans.0.rate_cards.3.entitlement.config", DELETE), f"{RATE_CARDS}[3] (sso).entitlement.config: is required"),
    (_set("features.2.key", "SSO!"), "catalog.yaml: features[2] (SSO!).key: feature key must be lowercase"),
    (_set("customers.1.subjects", ["acme-corp", "kong-air"]),
     "catalog.yaml: customers[1] (acme).subjects[1]: 'kong-air' is also listed by customers[0] (kong-air)"),
    (_set("customers", "acme"), "catalog.yaml: customers: must be a list of entries, not a string"),
    (_set("customers.1.days_until_due", -3), "catalog.yaml: customers[1] (acme).days_until_due: must be a whole"),
]


@pytest.mark.parametrize(("change", "expected"), BAD_ENTRIES, ids=[e[1][13:70] for e in BAD_ENTRIES])
def test_bad_entries_name_file_entry_and_field(change, expected):
    doc = example()
    change(doc)
    message = apply_error(write(doc))
    assert expected in message
    assert snapshot() == EMPTY


def test_duplicate_entries_are_errors():
    doc = example()
    doc["meters"].append(copy.deepcopy(doc["meters"][0]))
    doc["subscriptions"].append(copy.deepcopy(doc["subscriptions"][0]))
    message = apply_error(write(doc))
    assert "catalog.yaml: meters[1] (llm_tokens): duplicate: meters[0] (llm_tokens) has the same slug" in message
    assert ("catalog.yaml: subscriptions[2] (kong-air on token): duplicate: subscriptions[0] (kong-air on token) "
            "has the same customer, plan and start") in message


def test_missing_file():
    assert apply_error("nope.yaml") == "nope.yaml: no such file"


def test_yaml_syntax_error_names_the_line():
    message = apply_error(write("meters:\n  - slug: llm_tokens\n   name: broken\n"))
    assert message.splitlines()[1].startswith("catalog.yaml: line 3, column 4: invalid YAML:")


def test_duplicate_yaml_keys_are_refused():
    message = apply_error(write("meters:\n  - slug: a\n    name: A\n    slug: b\n"))
    assert "catalog.yaml: line 4, column 5: invalid YAML: duplicate key 'slug' (first on line 2)" in message


def test_a_file_that_is_not_a_mapping():
    assert "catalog.yaml: the file must be a mapping" in apply_error(write("- meters\n"))


def test_an_empty_file_changes_nothing():
    assert apply(write("")) == "No changes.\n"


# ----------------------------------------------------------------------------------------------------------- dump


def test_dump_then_apply_prints_no_changes(tmp_path):
    apply(write(FIXTURE.read_text()))
    doc = example()
    doc["plans"][0]["rate_cards"][0]["price"]["unit_amount"] = "0.00003"
    doc["plans"].append({"key": "starter", "name": "Starter", "description": "Try it", "currency": "USD",
                         "billing_cadence": "P1Y", "status": "draft",
                         "rate_cards": [{"key": "base", "price": {"type": "package", "amount": "10",
                                                                   "quantity_per_package": "1000"},
                                         "feature": "ai-token"}]})
    doc["customers"][1].update(email="ap@acme.example", collection_method="send_invoice", days_until_due=14,
                               metadata={"crm": {"id": 7}}, address_line1="1 Main St", country="US")
    apply(write(doc))
    subscription_cancel(subscription=Subscription.objects.get(customer__key="kong-air"), when="now",
                        now=dt.datetime(2026, 10, 20, tzinfo=UTC))

    out = dump("--output", "dump.yaml")
    assert out == "Wrote dump.yaml.\n"
    dumped = yaml.safe_load(Path("dump.yaml").read_text())
    assert {p["key"]: p.get("status", "published") for p in dumped["plans"]} == {"starter": "draft",
                                                                                 "token": "published"}
    assert dumped["subscriptions"] == [
        {"customer": "acme", "plan": "token", "start": "2026-10-16T00:00:00Z",
         "billing_anchor": "2026-10-01T00:00:00Z"},
    ]  # kong-air's ended
    before = snapshot()

    assert apply("dump.yaml") == "No changes.\n"
    assert snapshot() == before
    assert dump() == Path("dump.yaml").read_text()


def test_dump_rebuilds_the_same_state_in_an_empty_database():
    doc = example()
    doc["plans"][0]["rate_cards"][0]["price"]["unit_amount"] = "0.00003"
    apply(write(FIXTURE.read_text()))
    apply(write(doc))  # token v2; subscriptions stay on v1
    text = dump()
    Subscription.objects.all().delete()
    SubjectAttribution.objects.all().delete()
    Customer.objects.all().delete()
    Plan.objects.all().delete()
    Feature.objects.all().delete()
    Meter.objects.all().delete()

    apply(write(text, "dump.yaml"))

    assert dump() == text
    assert apply("dump.yaml") == "No changes.\n"


def test_tiny_decimals_round_trip():
    doc = example()
    doc["plans"][0]["rate_cards"][0]["price"]["unit_amount"] = "0.000000000001"
    apply(write(doc))
    assert RateCard.objects.get(key="ai-token").unit_amount == Decimal("0.000000000001")

    text = dump()
    assert "unit_amount: '0.000000000001'" in text
    assert not re.search(r"(amount|up_to|limit|quantity|spend): '?[-\d.]+[eE]", text)  # no exponents
    assert apply(write(text, "dump.yaml")) == "No changes.\n"
    # the same number unquoted (a YAML float) is the same price
    assert apply(write(FIXTURE.read_text().replace('"0.00002"', "0.000000000001"))) == "No changes.\n"
