"""Reads of the customers app: attribution windows, periods, usage of a subscription, entitlements."""

from __future__ import annotations

import datetime as dt
import functools
import json
import time
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

from django.db.models import Max, Q, QuerySet

from catalog.charges import charge_rate_card, dimensional_price, is_dimensional
from catalog.dimensional import DimensionalPrice, effective_segments, segment_usage_groups
from catalog.display import plain_number
from catalog.models import Feature, Plan, RateCard
from catalog.money import to_major
from catalog.rules import USAGE_PRICES, cadence_delta
from catalog.selectors import FEATURE_CACHE_SECONDS
from common.caches import ProcessCache
from common.prepared import prepared_cursor
from metering.models import Meter, SubjectActivity
from metering.selectors.live_usage import Groups, LiveUsage, forget_settled_usage, usage_groups_live
from metering.selectors.usage import usage_rows, usage_total_for_periods
from metering.usage_sql import db_datetime, from_db_datetime
from metering.windows import decompose

from .hooks import any_unbilled_cycle_done, credit_balance_of, credit_balance_sql, unbilled_periods_of
from .models import Customer, KongConsumer, SubjectAttribution, Subscription, format_instant, window_clip
from .periods import Period, anchor_for, period_at, periods_between

EntitlementType = RateCard.EntitlementType


BIGINT_MAX = 2**63 - 1  # the biggest value of a bigint column, so the biggest id a row can have


def as_row_id(value: str) -> int | None:
    """``value`` as a row id when it is ASCII digits of a number a bigint holds, else None (``"²"``, a
    5,000-digit number)."""
    if not (value.isascii() and value.isdigit()) or len(value) > len(str(BIGINT_MAX)):
        return None
    number = int(value)
    return number if number <= BIGINT_MAX else None


def customer_by_id_or_key(value: str) -> Customer | None:
    customer = Customer.objects.filter(key=value).first()
    number = as_row_id(value)
    if customer is None and number is not None:
        customer = Customer.objects.filter(pk=number).first()
    return customer


def attributions_of_subjects(subjects: set[str], *, with_customer: bool = False) -> dict[str, list[SubjectAttribution]]:
    """Every attribution window of each subject (one query), for matching a page of events to customers."""
    rows = SubjectAttribution.objects.filter(subject__in=subjects)
    if with_customer:
        rows = rows.select_related("customer")
    windows: dict[str, list[SubjectAttribution]] = {}
    for attribution in rows:
        windows.setdefault(attribution.subject, []).append(attribution)
    return windows


def customer_ids_of_events(events: list[Any]) -> dict[int, int]:
    """Event pk → id of the customer whose attribution covers the event's subject at its time (one query); events
    of subjects nobody includes then are left out."""
    windows = attributions_of_subjects({event.subject for event in events})
    owners: dict[int, int] = {}
    for event in events:
        match = next((a for a in windows.get(event.subject, []) if a.covers(event.time)), None)
        if match is not None:
            owners[event.pk] = match.customer_id
    return owners


def subject_periods(
    customer: Customer, start: dt.datetime, end: dt.datetime
) -> list[tuple[str, dt.datetime, dt.datetime]]:
    """Each subject of the customer with the part of ``[start, end)`` it was attributed to the customer
    (:meth:`SubjectAttribution.clip`). Uses the customer's prefetched attributions when a batch job loaded them."""
    if "attributions" in getattr(customer, "_prefetched_objects_cache", {}):
        rows = list(customer.attributions.all())
    else:
        rows = list(SubjectAttribution.objects.filter(customer=customer).overlapping(start, end))
    clipped = []
    for attribution in rows:
        window = attribution.clip(start, end)
        if window is not None:
            clipped.append((attribution.subject, *window))
    return sorted(clipped)


def attribution_default_start(*, subject: str, attribution: SubjectAttribution | None = None) -> dt.datetime | None:
    """Where a mapping of ``subject`` given without a start begins: where the subject's previous mapping ends,
    else None (from the beginning). For an existing ``attribution`` the previous mapping is the latest one ending
    by its start (one without a start has none)."""
    if attribution is not None and attribution.start is None:
        return None
    rows = SubjectAttribution.objects.filter(subject=subject, end__isnull=False)
    if attribution is not None:
        rows = rows.exclude(pk=attribution.pk).filter(end__lte=attribution.start)
    return rows.aggregate(previous_end=Max("end"))["previous_end"]


def kong_consumer_of(subject: str) -> KongConsumer | None:
    """The imported Kong consumer a subject names (``consumer:<id>`` or its username), to link a mapping."""
    if subject.startswith("consumer:"):
        return KongConsumer.objects.filter(kong_id=subject.removeprefix("consumer:")).first()
    return KongConsumer.objects.filter(username=subject).first()


def subscription_periods(subscription: Subscription, *, until: dt.datetime) -> list[Period]:
    return periods_between(
        subscription.billing_anchor,
        subscription.plan.billing_cadence,
        subscription.start,
        subscription.cancel_at,
        until=until,
    )


def subscription_period_at(subscription: Subscription, instant: dt.datetime) -> Period | None:
    return period_at(
        subscription.billing_anchor,
        subscription.plan.billing_cadence,
        subscription.start,
        subscription.cancel_at,
        instant,
    )


def feature_usage(*, subscription: Subscription, feature: Feature, start: dt.datetime, end: dt.datetime) -> Decimal:
    """Usage of a metered feature for ``[start, end)``: the customer's subjects, the feature's meter and filters,
    clipped to the subscription and to each subject's attribution window. Events before the subscription's
    start are never counted."""
    if feature.meter_id is None:
        return Decimal(0)
    start = max(start, subscription.start)
    if subscription.cancel_at is not None:
        end = min(end, subscription.cancel_at)
    if start >= end:
        return Decimal(0)
    periods = subject_periods(subscription.customer, start, end)
    if not periods or feature.meter is None:
        return Decimal(0)
    return usage_total_for_periods(
        meter=feature.meter, subject_periods=periods, filters=feature.meter_group_by_filters or None
    )


GroupValues = tuple[str | None, ...]  # a usage group's values, in the order of the request's dimensions


def feature_usage_grouped(*, subscription: Subscription, feature: Feature, dimensions: tuple[str, ...],
                          start: dt.datetime, end: dt.datetime) -> dict[GroupValues, Decimal]:
    """:func:`feature_usage` split by the values of some of the meter's group-bys (a dimensional price's table
    keys): ``{(value of dimensions[0], …): usage}``, a missing value as None. Exact for every aggregation."""
    return _grouped_rows(_feature_rows(subscription, feature, dimensions, start, end), feature, dimensions)


def feature_usage_grouped_by_subject(*, subscription: Subscription, feature: Feature, dimensions: tuple[str, ...],
                                     start: dt.datetime, end: dt.datetime) -> dict[str, dict[GroupValues, Decimal]]:
    """:func:`feature_usage_grouped` per subject of the customer: ``{subject: {values: usage}}`` (which subject
    sent which usage, e.g. for an alert naming it)."""
    rows = _feature_rows(subscription, feature, dimensions, start, end, by_subject=True)
    by_subject: dict[str, list] = {}
    for row in rows:
        by_subject.setdefault(row.subject or "", []).append(row)
    return {subject: _grouped_rows(found, feature, dimensions) for subject, found in sorted(by_subject.items())}


def _feature_rows(subscription: Subscription, feature: Feature, dimensions: tuple[str, ...], start: dt.datetime,
                  end: dt.datetime, *, by_subject: bool = False) -> list:
    """The usage rows of the feature's meter for ``[start, end)``, clipped to the subscription and to each subject's
    attribution window, grouped by the dimensions and the feature's filter keys (and the subject)."""
    if feature.meter_id is None or feature.meter is None:
        return []
    start = max(start, subscription.start)
    if subscription.cancel_at is not None:
        end = min(end, subscription.cancel_at)
    if start >= end:
        return []
    periods = subject_periods(subscription.customer, start, end)
    pieces = [piece for subject, a, b in periods if a < b for piece in decompose(0, a, b, subject)]
    if not pieces:
        return []
    return usage_rows(meter=feature.meter, pieces=pieces, window_bounds=[(start, end)],
                      group_by=list(dict.fromkeys([*dimensions, *(feature.meter_group_by_filters or {})])),
                      group_by_subject=by_subject, subjects=sorted({s for s, _, _ in periods}))


def _grouped_rows(rows: list, feature: Feature, dimensions: tuple[str, ...]) -> dict[GroupValues, Decimal]:
    """Sum rows (one window) by the dimensions' values, keeping those the feature's filters match."""
    filters = feature.meter_group_by_filters or {}
    out: dict[GroupValues, Decimal] = {}
    for row in rows:
        if all(row.group_by.get(name) == str(value) for name, value in filters.items()):
            values = tuple(row.group_by.get(name) for name in dimensions)
            out[values] = out.get(values, Decimal(0)) + row.value
    return out


@dataclass(frozen=True)
class UsageRequest:
    subscription: Subscription
    feature: Feature
    start: dt.datetime
    end: dt.datetime
    dimensions: tuple[str, ...] = ()  # non-empty: the usage split by these group-by values

    @property
    def key(self) -> tuple:
        return (self.subscription.pk, self.feature.pk, self.start, self.end, self.dimensions)


ADDITIVE = frozenset({"SUM", "COUNT"})
MAX_BATCH_PIECES = 3000


def features_usage(requests: list[UsageRequest]) -> dict[tuple, Any]:
    """:func:`feature_usage` for many subscriptions, features and periods at once (a cycle close's chunk):
    one statement per meter for SUM and COUNT meters, grouped by window and by the features' filter keys and the
    requests' dimensions, and each feature's value summed from the groups its filters match. Other aggregations
    are not additive over groups, so they take one statement per request. Returns ``{request.key: usage}``: a
    ``Decimal``, or for a request with ``dimensions`` a ``{GroupValues: Decimal}`` (:func:`feature_usage_grouped`)."""
    results: dict[tuple, Any] = {}
    by_meter: dict[int, list[UsageRequest]] = {}
    for request in requests:
        feature = request.feature
        if feature.meter is None:
            results[request.key] = {} if request.dimensions else Decimal(0)
        elif request.dimensions and feature.meter.aggregation not in ADDITIVE:
            results[request.key] = feature_usage_grouped(subscription=request.subscription, feature=feature,
                                                         dimensions=request.dimensions, start=request.start,
                                                         end=request.end)
        elif feature.meter.aggregation in ADDITIVE:
            by_meter.setdefault(feature.meter.pk, []).append(request)
        else:
            results[request.key] = feature_usage(subscription=request.subscription, feature=feature,
                                                 start=request.start, end=request.end)
    for meter_requests in by_meter.values():
        meter = meter_requests[0].feature.meter
        keys = sorted({k for r in meter_requests for k in (*(r.feature.meter_group_by_filters or {}), *r.dimensions)})
        batch: list[tuple[UsageRequest, list]] = []
        pieces_in_batch = 0
        for request in meter_requests:
            results[request.key] = {} if request.dimensions else Decimal(0)
            subscription = request.subscription
            start = max(request.start, subscription.start)
            end = request.end if subscription.cancel_at is None else min(request.end, subscription.cancel_at)
            periods = subject_periods(subscription.customer, start, end) if start < end else []
            if not periods:
                continue
            batch.append((request, periods))
            pieces_in_batch += 5 * len(periods)
            if pieces_in_batch >= MAX_BATCH_PIECES:
                _usage_batch(meter, keys, batch, results)
                batch, pieces_in_batch = [], 0
        if batch:
            _usage_batch(meter, keys, batch, results)
    return results


def _usage_batch(meter, keys: list[str], batch: list, results: dict[tuple, Any]) -> None:
    pieces, bounds, subjects = [], [], set()
    for position, (request, periods) in enumerate(batch):
        bounds.append((request.start, request.end))
        for subject, a, b in periods:
            pieces += decompose(position, a, b, subject)
            subjects.add(subject)
    rows = usage_rows(meter=meter, pieces=pieces, window_bounds=bounds, group_by=keys, subjects=sorted(subjects))
    for row in rows:
        request = batch[row.index][0]
        filters = request.feature.meter_group_by_filters or {}
        if all(row.group_by.get(name) == str(value) for name, value in filters.items()):
            if request.dimensions:
                groups: dict[GroupValues, Decimal] = results[request.key]
                values = tuple(row.group_by.get(name) for name in request.dimensions)
                groups[values] = groups.get(values, Decimal(0)) + row.value
            else:
                results[request.key] += row.value


def active_subscriptions(customer: Customer, at: dt.datetime) -> QuerySet[Subscription]:
    return (
        Subscription.objects.filter(customer=customer, start__lte=at)
        .filter(Q(cancel_at__isnull=True) | Q(cancel_at__gt=at))
        .select_related("plan", "customer")
        .order_by("start", "id")
    )


@dataclass(frozen=True)
class EntitlementValue:
    has_access: bool
    kind: str
    balance: Decimal | None = None
    usage: Decimal | None = None
    overage: Decimal | None = None
    limit: Decimal | None = None
    config: Any = None
    period_start: dt.datetime | None = None
    period_end: dt.datetime | None = None
    soft: bool = False
    credits: str = ""  # the metered entitlement's credit mode (credit_only, credit_then_invoice)
    credit_balance: Decimal | None = None  # major units of the customer's currency
    credit_available: Decimal | None = None

    def as_json(self) -> dict[str, Any]:
        """OpenMeter's entitlement value shape (with ``creditBalance`` and ``creditAvailable`` when prepaid
        credits decide access)."""
        body: dict[str, Any] = {"hasAccess": self.has_access}
        if self.kind == EntitlementType.METERED:
            body.update({"balance": self.balance, "usage": self.usage, "overage": self.overage})
            if self.credits:
                body.update({"creditBalance": self.credit_balance, "creditAvailable": self.credit_available})
        if self.kind == EntitlementType.STATIC:
            body["config"] = json.dumps(self.config)
        return body


@dataclass(frozen=True)
class Grant:
    """An active subscription's terms that entitlements need (read by the ORM or by one raw statement)."""

    customer_id: int
    plan_id: int
    plan_published_at: dt.datetime | None
    plan_is_draft: bool
    start: dt.datetime
    anchor: dt.datetime
    cancel_at: dt.datetime | None
    cadence: str
    currency: str  # the plan's

    @classmethod
    def of(cls, subscription: Subscription) -> Grant:
        plan = subscription.plan
        return cls(subscription.customer_id, plan.pk, plan.published_at, plan.status == Plan.Status.DRAFT,
                   subscription.start, subscription.billing_anchor, subscription.cancel_at, plan.billing_cadence,
                   plan.currency)

    def period_at(self, cadence: str, at: dt.datetime) -> Period:
        """The period of ``cadence`` containing ``at`` (the subscription is active then), clipped to the part the
        subscription covers."""
        period = period_at(self.anchor, cadence, self.start, self.cancel_at, at)
        assert period is not None  # the subscription is active at ``at``
        return period


@dataclass
class CustomerTerms:
    """What an entitlement check reads of a customer: its currency, its active subscriptions and its subjects'
    attribution windows ``(subject, start, end)`` (None: unbounded; the list None: read on first use, since
    boolean and static entitlements never need it)."""

    customer_id: int
    currency: str
    grants: list[Grant]
    attributions: list[tuple[str, dt.datetime | None, dt.datetime | None]] | None = None
    credit_balance: int | None = None  # the live prepaid balance, when the statement that read the rest read it too

    def subject_periods(self, start: dt.datetime, end: dt.datetime) -> list[tuple[str, dt.datetime, dt.datetime]]:
        """Each subject with the part of ``[start, end)`` it was the customer's (:func:`window_clip`)."""
        if self.attributions is None:
            self.attributions = _attributions(self.customer_id)
        clipped = []
        for subject, attributed_from, attributed_to in self.attributions:
            window = window_clip(attributed_from, attributed_to, start, end)
            if window is not None:
                clipped.append((subject, *window))
        return sorted(clipped)


ENTITLEMENT_CACHE_SIZE = 50_000
_ENTITLEMENT_CARDS: ProcessCache[list[RateCard]] = ProcessCache(maxsize=ENTITLEMENT_CACHE_SIZE, ttl=None)
# A published version's prices still change: price rows are scheduled on it, its features re-pointed. So its priced
# rate cards (with their rows, features and meters) are kept a few seconds only, as features are.
_USAGE_CARDS: ProcessCache[list[RateCard]] = ProcessCache(maxsize=ENTITLEMENT_CACHE_SIZE, ttl=FEATURE_CACHE_SECONDS,
                                                           spread=0.5)


def forget_cached_entitlements() -> None:
    _ENTITLEMENT_CARDS.clear()
    _USAGE_CARDS.clear()
    _UNBILLED.clear()
    _CREDIT_MODE_FEATURES.clear()
    forget_settled_usage()


def entitlement_rate_cards(grant: Grant, feature: Feature) -> list[RateCard]:
    """The rate cards of a plan version granting an entitlement on a feature. Published and archived versions
    never change, so they are remembered for the life of the process (the gateway asks this constantly)."""
    key = (grant.plan_id, grant.plan_published_at, feature.pk)
    cached = _ENTITLEMENT_CARDS.get(key)
    if cached is not None:
        return cached
    cards = list(RateCard.objects.filter(plan_id=grant.plan_id, feature=feature)
                 .exclude(entitlement_type=EntitlementType.NONE)
                 .order_by("position"))
    if not grant.plan_is_draft:
        _ENTITLEMENT_CARDS.set(key, cards)
    return cards


def usage_rate_cards(grant: Grant) -> list[RateCard]:
    """The plan version's usage-priced rate cards on a feature, with what pricing them reads (a published version's
    remembered for ``FEATURE_CACHE_SECONDS``: a scheduled price row or a changed feature applies within them)."""
    key = (grant.plan_id, grant.plan_published_at)
    cached = _USAGE_CARDS.get(key)
    if cached is not None:
        return cached
    cards = list(RateCard.objects.filter(plan_id=grant.plan_id, price_type__in=USAGE_PRICES, feature__isnull=False)
                 .select_related("feature", "feature__meter").prefetch_related("tiers", "price_rows")
                 .order_by("position", "id"))
    if not grant.plan_is_draft:
        _USAGE_CARDS.set(key, cards)
    return cards


# Which ended periods are not billed yet changes when a period ends, when a subscription ends or changes plan, and
# when a cycle closes. So for the gateway's check each process keeps the answer per customer and active subscriptions
# until the next period boundary of those subscriptions; while it names periods (a close is pending), it asks every
# few seconds whether one of their cycles closed (one small statement: between a period's end and its close, after
# the grace period, every customer's check asks it), and reads the answer again when one did, so a close reaches the
# check within those seconds (meanwhile the period counts twice, in the burn and here: access is refused, never
# granted, wrongly).
UNBILLED_RECHECK_SECONDS = 5.0
UNBILLED_CACHE_SECONDS = 300.0


@dataclass(frozen=True)
class _Unbilled:
    periods: list[tuple[Grant, Period, Any]]  # each with the cycle whose close bills it
    asked_at: dt.datetime  # the check's instant it was asked for
    valid_until: dt.datetime  # the next period boundary of the active subscriptions
    read: float  # time.monotonic() when it was read (read again UNBILLED_CACHE_SECONDS later in any case)
    checked: float  # time.monotonic() (a non-empty answer's cycles are checked UNBILLED_RECHECK_SECONDS later)


_UNBILLED: ProcessCache[_Unbilled] = ProcessCache(maxsize=ENTITLEMENT_CACHE_SIZE, ttl=UNBILLED_CACHE_SECONDS)


def _unbilled(terms: CustomerTerms, current: list[tuple[Grant, Period]], at: dt.datetime) -> list[tuple[Grant, Period]]:
    key = (terms.customer_id, tuple(terms.grants))
    entry = _UNBILLED.get(key)
    now = time.monotonic()
    if entry is not None and (not entry.asked_at <= at < entry.valid_until
                              or now - entry.read >= UNBILLED_CACHE_SECONDS):
        entry = None
    if entry is not None and entry.periods and now - entry.checked >= UNBILLED_RECHECK_SECONDS:
        if any_unbilled_cycle_done([cycle for _, _, cycle in entry.periods]):
            entry = None
        else:  # none closed: the same answer, its cycles checked again in a few seconds
            entry = replace(entry, checked=now)
            _UNBILLED.set(key, entry)
    if entry is None:
        valid_until = min((period.end for _, period in current), default=at)
        entry = _Unbilled(unbilled_periods_of(terms.customer_id, at), at, valid_until, now, now)
        _UNBILLED.set(key, entry)
    return [(grant, period) for grant, period, _ in entry.periods]


def _live_request(terms: CustomerTerms, feature: Feature, start: dt.datetime, end: dt.datetime,
                  dimensions: tuple[str, ...] = ()) -> LiveUsage:
    return LiveUsage.of(terms.subject_periods(start, end) if start < end else [], feature.meter_group_by_filters,
                        dimensions)


def _live_groups(requests: list[tuple[Meter, LiveUsage]]) -> list[Groups]:
    """:func:`usage_groups_live` of requests on several meters (one call per meter)."""
    by_meter: dict[int, list[int]] = {}
    for position, (meter, _) in enumerate(requests):
        by_meter.setdefault(meter.pk, []).append(position)
    found: list[Groups] = [{} for _ in requests]
    for positions in by_meter.values():
        meter = requests[positions[0]][0]
        groups = usage_groups_live(meter=meter, requests=[requests[p][1] for p in positions])
        for position, usage in zip(positions, groups, strict=True):
            found[position] = usage
    return found


def pending_usage(terms: CustomerTerms, at: dt.datetime, *, also: list[tuple[Meter, LiveUsage]] | None = None,
                  gateway: bool = False) -> tuple[int, list[Groups]]:
    """The current period's rated usage not invoiced yet (minor units): for each active subscription, every
    usage-priced rate card priced on its usage recorded for the billing period containing ``at`` (the whole
    period, prorated like its invoice when the subscription covers part of it; a dimensional one on its usage by
    dimension values and effective segment), live from the usage selectors. ``also``: more usage read in the same
    statements (the entitlement's own), returned second.

    For the ``gateway``'s access decision, ended periods whose usage no invoice has billed yet count too (between a
    period's end and its close, and a subscription a plan change replaced; the invoicing app names them,
    :func:`hooks.unbilled_periods_of`): otherwise a ``credit_only`` customer could spend its balance again in that
    window. The credits API, auto top-ups and low-credit alerts keep the current period only (their contract; the
    close that bills the ended period burns its credits and checks them then)."""
    requests = list(also or [])
    priced: list[tuple[Grant, RateCard, Period, DimensionalPrice | None, dict[tuple[dt.datetime, dt.datetime], int]]]
    priced = []
    periods = [(grant, grant.period_at(grant.cadence, at)) for grant in terms.grants]
    unbilled = _unbilled(terms, periods, at) if gateway else []
    for grant, period in periods + unbilled:
        for rate_card in usage_rate_cards(grant):
            feature = rate_card.usage_feature
            if feature.meter is None:
                continue
            table = dimensional_price(rate_card) if is_dimensional(rate_card) else None
            segments = [(period.start, period.end)] if table is None else (
                effective_segments(table, period.start, period.end) if period.start < period.end else [])
            positions = {}
            for a, b in segments:
                positions[(a, b)] = len(requests)
                requests.append((feature.meter, _live_request(terms, feature, a, b,
                                                              tuple(table.dimensions) if table else ())))
            priced.append((grant, rate_card, period, table, positions))
    found = _live_groups(requests)
    amount = 0
    for grant, rate_card, period, table, positions in priced:
        if table is not None:
            def read(a: dt.datetime, b: dt.datetime, positions: dict = positions) -> Groups:
                return found[positions[(a, b)]]

            groups = segment_usage_groups(table, period.start, period.end, read)
            charge = charge_rate_card(rate_card, quantity=Decimal(0), currency=grant.currency,
                                      proration=period.fraction, usage_groups=groups)
        else:
            quantity = found[positions[(period.start, period.end)]].get((), Decimal(0))
            charge = charge_rate_card(rate_card, quantity=quantity, currency=grant.currency,
                                      proration=period.fraction)
        amount += sum(line.amount for line in charge.lines if line.kind in ("usage", "discount"))
    return amount, found[:len(also or [])]


def _value_of(terms: CustomerTerms, feature: Feature, at: dt.datetime) -> EntitlementValue:
    """The rule: several rate cards may grant the same feature (the seed plan has a boolean one and a metered
    quota); a metered entitlement decides access and gives the numbers; otherwise static (with its config) or
    boolean grant access. Without an active subscription granting the feature there is no access."""
    by_kind: dict[str, tuple[Grant, RateCard]] = {}
    for grant in terms.grants:
        for rate_card in entitlement_rate_cards(grant, feature):
            by_kind.setdefault(rate_card.entitlement_type, (grant, rate_card))
    if not by_kind:
        return EntitlementValue(False, "none")
    if EntitlementType.METERED in by_kind:
        return _metered_value(terms, feature, at, *by_kind[EntitlementType.METERED])
    if EntitlementType.STATIC in by_kind:
        static_card = by_kind[EntitlementType.STATIC][1]
        return EntitlementValue(True, EntitlementType.STATIC, config=static_card.entitlement_config)
    return EntitlementValue(True, EntitlementType.BOOLEAN)


def _metered_value(terms: CustomerTerms, feature: Feature, at: dt.datetime, grant: Grant,
                   rate_card: RateCard) -> EntitlementValue:
    """A metered entitlement: usage in its usage period against the limit, and with a credit mode the live
    credits (balance less pending usage, read in the same statements as the usage)."""
    period = grant.period_at(rate_card.entitlement_usage_period or grant.cadence, at)
    own = [(feature.meter, _live_request(terms, feature, period.start, period.end))] if feature.meter else []
    mode, credit_balance, credit_available = rate_card.entitlement_credits, None, None
    balance = None
    if mode:
        balance = terms.credit_balance if terms.credit_balance is not None else credit_balance_of(terms.customer_id, at)
    if balance is not None:  # a credit mode, and a credits app to read the balance from
        pending, found = pending_usage(terms, at, also=own, gateway=True)
        credit_balance = to_major(balance, terms.currency)
        credit_available = to_major(balance - pending, terms.currency)
    else:
        found = _live_groups(own)
    usage = found[0].get((), Decimal(0)) if found else Decimal(0)
    limit = rate_card.entitlement_limit or Decimal(0)
    access = rate_card.entitlement_soft or usage < limit
    if mode == RateCard.CreditMode.CREDIT_ONLY:
        access = access and credit_available is not None and credit_available > 0
    elif mode:  # credit_then_invoice: credits pay first, the invoice the rest; access always
        access = True
    return EntitlementValue(access, EntitlementType.METERED,
                            balance=max(limit - usage, Decimal(0)), usage=usage,
                            overage=max(usage - limit, Decimal(0)), limit=limit, period_start=period.start,
                            period_end=period.end, soft=rate_card.entitlement_soft, credits=mode,
                            credit_balance=credit_balance, credit_available=credit_available)


def _attributions(customer_id: int) -> list[tuple[str, dt.datetime | None, dt.datetime | None]]:
    return list(SubjectAttribution.objects.filter(customer_id=customer_id).values_list("subject", "start", "end"))


def customer_terms(customer: Customer, at: dt.datetime) -> CustomerTerms:
    """:class:`CustomerTerms` through the ORM (the customer page, the credits API)."""
    return CustomerTerms(customer.pk, customer.currency, [Grant.of(s) for s in active_subscriptions(customer, at)])


def entitlement_value(*, customer: Customer, feature: Feature, at: dt.datetime) -> EntitlementValue:
    """What a customer is entitled to on a feature now (see :func:`_value_of` for the rule)."""
    return _value_of(customer_terms(customer, at), feature, at)


# The gateway's check in one statement: the customer (by key, else by id) with its active subscriptions (rows of
# kind 0; one with no plan when it has none) and, for a metered feature that a rate card gives a credit mode, its live
# prepaid credit balance (the last column; NULL otherwise, or without a credits app), then, when the feature is
# metered (%(subjects)s), its subjects' attribution windows (kind 1: subject, start, end in the columns of the
# currency, the start and the end of a subscription).
_GRANTS_SQL = """
    WITH found (id) AS (SELECT x.id FROM (SELECT id, 0 AS pref FROM customers_customer WHERE key = %(key)s
                                          UNION ALL
                                          SELECT id, 1 AS pref FROM customers_customer WHERE id = %(id)s) AS x
                        ORDER BY x.pref LIMIT 1)
    SELECT 0 AS kind, c.id, c.currency, s.plan_id, p.published_at, p.status, s.start, s.billing_anchor,
           s.cancel_at, p.billing_cadence, p.currency, s.id, CREDIT_BALANCE
    FROM customers_customer c
    LEFT JOIN customers_subscription s
           ON s.customer_id = c.id AND s.start <= %(at)s AND (s.cancel_at IS NULL OR s.cancel_at > %(at)s)
    LEFT JOIN catalog_plan p ON p.id = s.plan_id
    WHERE c.id = (SELECT id FROM found)
    UNION ALL
    SELECT 1, a.customer_id, a.subject, NULL, NULL, NULL, a.start, NULL, a."end", NULL, NULL, a.id, NULL
    FROM customers_subjectattribution a
    WHERE a.customer_id = (SELECT id FROM found) AND %(subjects)s
    ORDER BY 1, 7, 12
"""


@functools.cache
def _grants_sql(credits: bool) -> str:
    """The gateway's customer statement, reading the credit balance or not (one text each, so each is prepared;
    the balance of the one customer found, read once whatever the number of its subscriptions)."""
    balance = credit_balance_sql("(SELECT id FROM found)") if credits else None
    return _GRANTS_SQL.replace("CREDIT_BALANCE", balance or "NULL")


# Whether a rate card gives the feature a credit mode, per feature for a few seconds: only then does the customer
# statement read the balance (a stale "no" only costs the check a statement of its own, _metered_value).
_CREDIT_MODE_FEATURES: ProcessCache[bool] = ProcessCache(maxsize=ENTITLEMENT_CACHE_SIZE, ttl=FEATURE_CACHE_SECONDS,
                                                         spread=0.5)


def _has_credit_mode(feature: Feature) -> bool:
    found = _CREDIT_MODE_FEATURES.get(feature.pk)
    if found is None:
        found = RateCard.objects.filter(feature_id=feature.pk).exclude(entitlement_credits="").exists()
        _CREDIT_MODE_FEATURES.set(feature.pk, found)
    return found


def entitlement_check(*, id_or_key: str, feature: Feature, at: dt.datetime) -> EntitlementValue | None:
    """:func:`entitlement_value` for the gateway's hot path: raw statements instead of building ORM queries, the
    customer, its subscriptions and its subjects in one. None when no customer has this key (or id)."""
    number = as_row_id(id_or_key)
    metered = feature.meter_id is not None  # only usage needs the subjects (a customer may have thousands)
    with prepared_cursor() as cursor:
        cursor.execute(_grants_sql(credits=metered and _has_credit_mode(feature)),
                       {"at": db_datetime(at), "key": id_or_key, "id": number, "subjects": metered})
        rows = cursor.fetchall()
    if not rows or rows[0][0] != 0:
        return None
    customer_id, currency, balance = rows[0][1], rows[0][2], rows[0][12]
    grants = []
    attributions = []
    for kind, _, text, plan_id, published_at, status, start, anchor, end, cadence, plan_currency, _, _ in rows:
        if kind == 1:
            attributions.append((text, from_db_datetime(start), from_db_datetime(end)))
        elif plan_id is not None:
            grants.append(Grant(customer_id, plan_id, from_db_datetime(published_at), status == Plan.Status.DRAFT,
                                from_db_datetime(start), from_db_datetime(anchor), from_db_datetime(end), cadence,
                                plan_currency))
    return _value_of(CustomerTerms(customer_id, currency, grants, attributions if metered else None,
                                   None if balance is None else int(balance)), feature, at)


def subscription_entitlements(subscription: Subscription, at: dt.datetime) -> list[tuple[RateCard, EntitlementValue]]:
    """Every entitlement a subscription grants, with its current value (for the customer page)."""
    result = []
    for rate_card in (
        RateCard.objects.filter(plan=subscription.plan)
        .exclude(entitlement_type=EntitlementType.NONE)
        .select_related("feature", "feature__meter")
    ):
        feature = rate_card.feature
        if feature is None:
            continue
        if subscription.status_at(at) in ("active", "canceling"):
            value = entitlement_value(customer=subscription.customer, feature=feature, at=at)
        else:
            value = EntitlementValue(False, rate_card.entitlement_type)
        result.append((rate_card, value))
    return result


def unattributed_subjects() -> QuerySet[SubjectActivity]:
    """Subjects seen in events that no customer includes now: usage nobody is billed for."""
    attributed = SubjectAttribution.objects.filter(end__isnull=True).values("subject")
    return SubjectActivity.objects.exclude(subject__in=attributed).order_by("-last_seen")


@dataclass(frozen=True)
class ReviewPeriod:
    """A billing period on the review page of a new subscription and what the next close bills of it."""

    number: int  # 1 = the subscription's first period
    period: Period
    billed: str  # what the next close bills of it
    usage: list[tuple[str, Decimal]]  # (metered rate card, usage found so far)

    @property
    def usage_text(self) -> list[str]:
        return [plain_number(value) for _, value in self.usage]


@dataclass(frozen=True)
class SubscriptionReview:
    start_in_past: bool
    periods: list[ReviewPeriod]
    rate_cards: list[str]  # the metered rate cards whose usage is listed
    ended: int  # periods before today that the next close bills (usage and all fees)
    not_listed: int  # earlier periods left out of ``periods`` (the page lists the latest ones)
    warning: str


REVIEW_MAX_PERIODS = 24
FUTURE_PERIODS_SHOWN = 3


def subscription_review(
    *, customer: Customer, plan: Plan, start: dt.datetime, billing_anchor: dt.datetime | str | None,
    now: dt.datetime, grace: dt.timedelta,
) -> SubscriptionReview:
    """What a new subscription would bill (the *Review* step of *Add subscription*). A start in the past:
    every period from the start up to now — the ended ones are billed (usage and fees) at the next close once
    the grace period after their end has passed, the current one's in-advance fees too — each with the usage
    already found per metered rate card (one usage statement per meter for SUM/COUNT meters, at most
    ``REVIEW_MAX_PERIODS`` periods). A future start: its first periods."""
    anchor = anchor_for(start, billing_anchor)
    if start > now:
        periods = periods_between(anchor, plan.billing_cadence, start, None,
                                  until=start + cadence_delta(plan.billing_cadence) * FUTURE_PERIODS_SHOWN)
        shown = [ReviewPeriod(n, p, "", []) for n, p in enumerate(periods[:FUTURE_PERIODS_SHOWN], start=1)]
        return SubscriptionReview(False, shown, [], 0, 0, "")
    periods = periods_between(anchor, plan.billing_cadence, start, None, until=now + dt.timedelta(microseconds=1))
    ended = sum(1 for p in periods if p.end + grace <= now)
    first_number = max(len(periods) - REVIEW_MAX_PERIODS, 0) + 1
    listed = periods[first_number - 1:]
    cards = [c for c in plan.rate_cards.select_related("feature__meter").order_by("position")
             if c.feature is not None and c.feature.meter_id and c.price_type not in ("", RateCard.PriceType.FLAT)]
    customer = Customer.objects.prefetch_related("attributions").get(pk=customer.pk)
    draft = Subscription(customer=customer, plan=plan, start=start, billing_anchor=anchor)
    requests = [UsageRequest(draft, card.usage_feature, p.start, min(p.end, now)) for p in listed for card in cards]
    found = features_usage([r for r in requests if r.start < r.end])
    shown = []
    for number, p in enumerate(listed, start=first_number):
        if p.end + grace <= now:
            billed = "usage and all fees"
        elif p.end <= now:
            billed = (f"in-advance fees; usage after the grace period, from {format_instant(p.end + grace)}")
        else:
            billed = "in-advance fees" + (" (prorated)" if p.is_partial else "") + "; usage when the period ends"
        usage = [(card.key, found.get(UsageRequest(draft, card.usage_feature, p.start, min(p.end, now)).key,
                                      Decimal(0))) for card in cards]
        shown.append(ReviewPeriod(number, p, billed, usage))
    if ended:
        warning = (f"The start is in the past: {ended} period{'s' if ended != 1 else ''} before today will be billed "
                   "at the next close, with the usage found so far (below), and the current period's in-advance "
                   "fees.")
    else:
        warning = (f"The start is in the past: usage from {format_instant(start)} counts, and the next close bills "
                   "the current period's in-advance fees.")
    return SubscriptionReview(True, shown, [c.key for c in cards], ended, first_number - 1, warning)


@dataclass(frozen=True)
class ProrationLine:
    rate_card: str
    description: str
    amount: Decimal  # major units, negative for a credit


def plan_change_proration(*, subscription: Subscription, new_plan: Plan, at: dt.datetime) -> list[ProrationLine]:
    """In-advance fees when switching plans at ``at``: a credit for the unused part of the current period on
    the old plan, a prorated charge for the rest of it on the new plan (same anchor, so the same period)."""
    period = subscription_period_at(subscription, at)
    if period is None or at <= period.start:
        return []
    full = period.full_end - period.full_start
    remaining = Decimal((period.end - at) // dt.timedelta(microseconds=1)) / Decimal(
        full // dt.timedelta(microseconds=1)
    )
    lines = []
    for plan, sign in ((subscription.plan, -1), (new_plan, 1)):
        for rate_card in plan.rate_cards.filter(payment_term=RateCard.PaymentTerm.IN_ADVANCE,
                                                    price_type=RateCard.PriceType.FLAT).prefetch_related("tiers"):
            charge = charge_rate_card(rate_card, quantity=Decimal(0), currency=plan.currency, proration=remaining)
            amount = to_major(sign * charge.total, plan.currency)
            verb = "Unused" if sign < 0 else "Remaining"
            lines.append(
                ProrationLine(
                    rate_card.key,
                    f"{verb} {rate_card.display_name} ({plan.key} v{plan.version}) "
                    f"from {at:%Y-%m-%d %H:%M} to {period.end:%Y-%m-%d}",
                    amount,
                )
            )
    return lines


def metadata_seen(*, sample: int = 500, limit: int = 200) -> tuple[list[str], list[str]]:
    """Keys and (text) values of the most recently changed customers' metadata: what the metadata rows offer."""
    keys: set[str] = set()
    values: set[str] = set()
    for metadata in Customer.objects.order_by("-id").values_list("metadata", flat=True)[:sample]:
        if not isinstance(metadata, dict):
            continue
        for key, value in metadata.items():
            keys.add(str(key))
            if isinstance(value, str) and len(value) <= 200:
                values.add(value)
    return sorted(keys)[:limit], sorted(values)[:limit]
