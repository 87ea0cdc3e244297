"""Plan lifecycle, validation on publish, features, exact decimals on both databases, read API."""

from __future__ import annotations

from decimal import Decimal

import pytest

from catalog.models import Plan, PriceTier, RateCard
from catalog.services.features import FeatureError, feature_create, feature_delete, feature_update
from catalog.services.plans import (
    PlanError,
    RateCardSpec,
    TierSpec,
    plan_archive,
    plan_create,
    plan_new_version,
    plan_publish,
    plan_replace_rate_cards,
    plan_update_draft,
)
from tests.builders import (
    D,
    ai_token_feature,
    bearer,
    graduated_out,
    platform_fee,
    quota,
    sso_feature,
    token_plan,
    tokens_meter,
)

pytestmark = pytest.mark.django_db


def test_publish_freezes_and_edit_makes_a_new_version():
    v1 = token_plan(extra=[platform_fee()])
    assert (v1.version, v1.status) == (1, "published") and v1.published_at is not None
    with pytest.raises(PlanError, match="published versions never change"):
        plan_update_draft(plan=v1, name="Other", currency="USD", billing_cadence="P1M")
    with pytest.raises(PlanError):
        plan_replace_rate_cards(plan=v1, rate_cards=[])
    draft = plan_new_version(plan=v1)
    assert (draft.key, draft.version, draft.status) == ("token", 2, "draft")
    assert [rc.key for rc in draft.rate_cards.all()] == ["ai-token", "platform"]
    assert plan_new_version(plan=v1) == draft  # one draft at a time
    plan_replace_rate_cards(plan=draft, rate_cards=[RateCardSpec(key="ai-token", feature="ai-token", price_type="unit",
                                                                 unit_amount=D("0.00003"))])
    v2 = plan_publish(plan=draft)
    v1.refresh_from_db()
    assert (v1.status, v2.status) == ("archived", "published")
    assert RateCard.objects.get(plan=v1, key="ai-token").unit_amount == D("0.00002")  # untouched


def test_archive_stops_new_subscriptions_only():
    plan = plan_archive(plan=token_plan())
    assert plan.status == "archived" and plan.archived_at is not None
    with pytest.raises(PlanError, match="only a published plan"):
        plan_archive(plan=plan)


def test_publish_validates_every_rate_card():
    ai_token_feature()
    sso_feature()
    plan = plan_create(key="broken", name="Broken", currency="USD", rate_cards=[
        RateCardSpec(key="no-feature", price_type="unit", unit_amount=D(1)),
        RateCardSpec(key="tiers", feature="ai-token", price_type="graduated",
                     tiers=[TierSpec(D(100), D(1)), TierSpec(D(50), D(1)), TierSpec(None, D(1))]),
        RateCardSpec(key="open-middle", feature="ai-token", price_type="volume",
                     tiers=[TierSpec(None, D(1)), TierSpec(D(10), D(1))]),
        RateCardSpec(key="no-amount", price_type="flat"),
        RateCardSpec(key="advance-usage", feature="ai-token", price_type="unit", unit_amount=D(1),
                     payment_term="in_advance"),
        RateCardSpec(key="quota-without-limit", feature="ai-token", entitlement_type="metered"),
        RateCardSpec(key="quota-unmetered", feature="sso", entitlement_type="metered", entitlement_limit=D(5)),
        RateCardSpec(key="min-over-max", feature="ai-token", price_type="unit", unit_amount=D(1),
                     minimum_spend=D(10), maximum_spend=D(5)),
        RateCardSpec(key="nothing"),
    ])
    with pytest.raises(PlanError) as caught:
        plan_publish(plan=plan)
    text = "\n".join(caught.value.problems)
    for expected in [
        "rate card no-feature: a usage-based price needs a feature with a meter",
        "rate card tiers: tiers must be strictly ascending",
        "rate card open-middle: tier 1 has no up_to",
        "rate card no-amount: the flat price needs amount",
        "rate card advance-usage: usage can only be billed in arrears",
        "rate card quota-without-limit: a metered entitlement needs a limit",
        "rate card quota-unmetered: a metered entitlement needs a feature with a meter",
        "rate card min-over-max: minimum spend must not exceed maximum spend",
        "rate card nothing: needs a price, an entitlement, or both",
    ]:
        assert expected in text
    plan.refresh_from_db()
    assert plan.status == "draft"


def test_plan_needs_a_rate_card_and_a_known_currency():
    with pytest.raises(PlanError, match="not a known ISO 4217 code"):
        plan_create(key="x", name="X", currency="XYZ")
    with pytest.raises(PlanError, match="billing cadence"):
        plan_create(key="x", name="X", currency="USD", billing_cadence="P2M")
    with pytest.raises(PlanError, match="plan key"):
        plan_create(key="Bad Key", name="X", currency="USD")
    plan = plan_create(key="empty", name="Empty", currency="EUR")
    with pytest.raises(PlanError, match="at least one rate card"):
        plan_publish(plan=plan)
    with pytest.raises(PlanError, match="already has a draft"):
        plan_create(key="empty", name="Again", currency="EUR")


def test_rate_cards_with_unknown_or_duplicate_references_are_refused():
    plan = plan_create(key="p", name="P", currency="USD")
    with pytest.raises(PlanError, match="unknown feature 'nope'"):
        plan_replace_rate_cards(plan=plan, rate_cards=[RateCardSpec(key="a", feature="nope",
                                                                     entitlement_type="boolean")])
    with pytest.raises(PlanError, match="appears twice"):
        plan_replace_rate_cards(plan=plan, rate_cards=[platform_fee(), platform_fee()])


def test_the_full_example_plan_publishes_with_tiers_and_entitlements():
    sso_feature()
    plan = token_plan(extra=[platform_fee(), quota(), RateCardSpec(key="sso", feature="sso", entitlement_type="static",
                                                                   entitlement_config={"seats": 5}), graduated_out()])
    assert plan.status == "published"
    tiers = list(PriceTier.objects.filter(rate_card__plan=plan, rate_card__key="ai-token-out"))
    assert [(t.up_to, t.unit_amount, t.flat_amount) for t in tiers] == [
        (D(1_000_000), D("0.00001"), D(0)), (None, D("0.000008"), D(2))]


@pytest.mark.parametrize("value", ["0.000000000001", "0.000003", "123456789012.123456789012", "1E-15"])
def test_decimals_round_trip_exactly_on_this_database(value):
    plan = token_plan(unit_amount=value, publish=False)
    stored = RateCard.objects.get(plan=plan, key="ai-token").unit_amount
    assert stored == Decimal(value)


def test_features_validate_filters_against_the_meter():
    meter = tokens_meter()
    with pytest.raises(FeatureError, match='"colour" is not a group-by of the meter'):
        feature_create(key="f", name="F", meter=meter, filters={"colour": "red"})
    with pytest.raises(FeatureError, match="need a meter"):
        feature_create(key="f", name="F", filters={"provider": "openai"})
    with pytest.raises(FeatureError, match="key"):
        feature_create(key="F F", name="F")
    feature = feature_create(key="f", name="F", meter=meter, filters={"provider": "openai"})
    with pytest.raises(FeatureError, match="already exists"):
        feature_create(key="f", name="F")
    feature = feature_update(feature=feature, name="Renamed", meter=meter, filters={"type": "response"})
    assert feature.meter_group_by_filters == {"type": "response"}
    token_plan()
    with pytest.raises(FeatureError, match="used by rate cards"):
        feature_delete(feature=ai_token_feature())


def test_read_api_lists_features_and_plans(api, read_token):
    token_plan(extra=[platform_fee(), graduated_out()])
    features = api.get("/api/v1/features", **bearer(read_token)).json()
    assert [f["key"] for f in features] == ["ai-token", "ai-token-out"]
    assert features[0]["meterSlug"] == "llm_tokens"
    assert features[0]["meterGroupByFilters"] == {"provider": "openai", "type": "request"}
    plans = api.get("/api/v1/plans", {"status": "published"}, **bearer(read_token)).json()
    assert [(p["key"], p["version"], p["status"]) for p in plans] == [("token", 1, "published")]
    cards = {rc["key"]: rc for rc in plans[0]["rateCards"]}
    assert cards["ai-token"]["price"] == {"type": "unit", "unit_amount": "0.00002"}
    assert cards["platform"]["price"] == {"type": "flat", "amount": "49"}
    assert cards["ai-token-out"]["price"]["tiers"][1] == {"up_to": None, "unit_amount": "0.000008", "flat_amount": "2"}
    assert api.get("/api/v1/plans", {"status": "bogus"}, **bearer(read_token)).status_code == 400
    assert api.get("/api/v1/plans").status_code == 401


def test_plans_are_listed_newest_version_first(api, read_token):
    plan_publish(plan=plan_new_version(plan=token_plan()))
    assert [p["version"] for p in api.get("/api/v1/plans", {"key": "token"}, **bearer(read_token)).json()] == [2, 1]
    assert Plan.objects.filter(key="token", status="published").count() == 1


def test_a_meter_cannot_drop_a_group_by_a_feature_filters_on():
    from metering.services.meters import MeterValidationError, meter_update

    meter = tokens_meter()
    ai_token_feature()
    with pytest.raises(MeterValidationError, match="feature ai-token filters on provider, type"):
        meter_update(meter=meter, group_by={"model": "$.model"})
    assert meter_update(meter=meter, group_by={**meter.group_by, "region": "$.region"}).group_by["region"] == "$.region"
