"""``billing_apply``: the whole catalog-as-code file (meters, features, plans, customers, subscriptions) in one
transaction, and ``billing_dump``: the current state in the same format.

Order: read the YAML; check every entry's shape and types; check references and the services' rules against
the file and the database; then, inside one ``transaction.atomic()``, compare each entry with the database and
call the services (meters → features → plans → customers → subject removals → subject additions →
subscriptions), one output line per change. Any problem, found before or raised by a service during the
apply, rolls everything back. A dry run does the same and rolls back at the end.

Customers and subscriptions (the catalog's rules are in ``catalog.services.apply``):

* Customers by ``key``: created when missing; otherwise only the differing fields change. Optional fields
  (``email``, address, ``tax_id``, ``collection_method``, ``days_until_due``, ``metadata``) left out of the
  entry are left as they are; ``null`` or ``""`` clears them. ``stripe_customer_id`` is never touched.
* ``subjects`` is the complete list of subjects the customer includes now: missing ones are added from now,
  open attributions of the customer that are not listed end now (usage before stays billed to the customer).
  Without ``subjects`` the customer's subjects are left as they are. A subject that belongs to another
  customer is an error naming that customer, unless the file moves it (the other customer's entry lists its
  subjects without it) or the entry says ``reassign: true`` (the subject moves now; earlier usage stays with
  the other customer).
* Subscriptions by (customer, plan key, start): created when missing on the plan's published version at apply
  time (``billing_anchor`` defaults to ``start``); an existing one is never changed, canceled or restarted. A
  different ``billing_anchor`` than the existing subscription's, or a new start that overlaps a subscription of
  the customer to the same plan, is an error.
* Nothing is deleted: entries missing from the file are left alone.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import yaml
from django.db import DatabaseError, IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from catalog.models import Plan
from catalog.rules import clean_currency, key_problem
from catalog.services.apply import (
    MISSING,
    ApplyError,
    CatalogSpec,
    Problems,
    Reader,
    catalog_apply,
    catalog_dump,
    catalog_parse,
    catalog_validate,
    entry_label,
    entry_list,
    show,
    sorted_json,
)
from catalog.services.apply import service_problems as _service_problems
from common.time import format_rfc3339

from ..models import Customer, KongConsumer, SubjectAttribution, Subscription
from .customers import (
    AttributionError,
    CustomerError,
    attribution_add,
    attribution_end,
    customer_create,
    customer_problems,
    customer_update,
)
from .subscriptions import SubscriptionError, subscription_create

__all__ = ["ApplyError", "ApplyResult", "billing_apply", "billing_dump", "billing_dump_text", "billing_load"]

TOP_LEVEL = ("meters", "features", "plans", "customers", "subscriptions")
CUSTOMER_TEXT_FIELDS = (
    "email", "address_line1", "address_line2", "city", "state", "postal_code", "country", "tax_id",
)
CUSTOMER_OPTIONAL_FIELDS = (*CUSTOMER_TEXT_FIELDS, "collection_method", "days_until_due", "metadata")
CUSTOMER_ENTRY_FIELDS = ("key", "name", "currency", *CUSTOMER_OPTIONAL_FIELDS, "subjects", "reassign")
SUBSCRIPTION_FIELDS = ("customer", "plan", "start", "billing_anchor")
ACTOR = "billing_apply"


@dataclass
class CustomerEntry:
    where: str
    key: str
    fields: dict[str, Any]  # name, currency and the optional fields the entry gives
    subjects: list[str] | None  # None: left as they are
    subject_wheres: list[str]
    reassign: bool


@dataclass
class SubscriptionEntry:
    where: str
    customer: str
    plan: str
    start: dt.datetime
    billing_anchor: dt.datetime | None


@dataclass
class BillingSpec:
    catalog: CatalogSpec
    customers: list[CustomerEntry] = field(default_factory=list)
    subscriptions: list[SubscriptionEntry] = field(default_factory=list)
    declared_customers: set[str] = field(default_factory=set)


@dataclass
class ApplyResult:
    changes: list[str]
    dry_run: bool


class _DryRun(Exception):
    """Raised at the end of a dry run to roll the transaction back."""


# ---------------------------------------------------------------------------------------------------------- YAML


class _Loader(yaml.SafeLoader):
    """YAML's safe loader, refusing duplicate keys (PyYAML silently keeps the last one)."""


def _mapping_without_duplicates(loader: _Loader, node: yaml.MappingNode) -> dict:
    loader.flatten_mapping(node)
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        if isinstance(key_node, yaml.ScalarNode):
            key = loader.construct_object(key_node)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first on line {seen[key] + 1})", key_node.start_mark)
            seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=True)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)


def billing_load(*, text: str, filename: str) -> dict:
    """The file's top-level mapping, or ApplyError (syntax errors with their line)."""
    try:
        document = yaml.load(text, Loader=_Loader)  # noqa: S506 -- a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = " ".join(p for p in (exc.context, exc.problem) if p)
        raise ApplyError([f"{filename}: {where}invalid YAML: {problem}"]) from exc
    except yaml.YAMLError as exc:
        raise ApplyError([f"{filename}: invalid YAML: {exc}"]) from exc
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise ApplyError([f"{filename}: the file must be a mapping with the keys {', '.join(TOP_LEVEL)}"])
    unknown = [key for key in document if key not in TOP_LEVEL]
    if unknown:
        raise ApplyError([f"{filename}: {key}: unknown top-level key (known: {', '.join(TOP_LEVEL)})"
                          for key in unknown])
    return document


# --------------------------------------------------------------------------------------------------------- parse


def _customer_parse(problems: Problems, where: str, data: Any) -> CustomerEntry | None:
    r = Reader(problems, where, data, CUSTOMER_ENTRY_FIELDS)
    key = r.text("key", required=True)
    if isinstance(key, str) and key and key_problem(key, "customer key"):
        r.fail("key", key_problem(key, "customer key") or "")
    fields: dict[str, Any] = {
        "name": r.text("name", required=True, max_length=getattr(Customer._meta.get_field("name"), "max_length", None)),
        "currency": clean_currency(r.text("currency", required=True)),  # usd → USD, as customer_create stores it
    }
    for name in CUSTOMER_TEXT_FIELDS:
        value = r.text(name, max_length=getattr(Customer._meta.get_field(name), "max_length", None))
        if value is not MISSING:
            fields[name] = value
    method = r.text("collection_method", choices=Customer.CollectionMethod.values)
    if method is not MISSING:
        fields["collection_method"] = method or Customer.CollectionMethod.CHARGE_AUTOMATICALLY
    days = r.integer("days_until_due")
    if days is not MISSING:
        fields["days_until_due"] = days
    metadata = r.mapping("metadata", json_only=True)
    if metadata is not MISSING:
        fields["metadata"] = metadata or {}
    subjects: list[str] | None = None
    wheres: list[str] = []
    if r.has("subjects"):
        subjects = []
        for i, subject in enumerate(r.items("subjects") or []):
            at = f"subjects[{i}]"
            if not isinstance(subject, str) or not subject.strip() or len(subject.strip()) > 255:
                r.fail(at, f"must be a non-empty string of at most 255 characters, not {show(subject)}")
            elif subject.strip() in subjects:
                r.fail(at, f"{subject.strip()!r} is listed twice")
            else:
                subjects.append(subject.strip())
                wheres.append(r.at(at))
    reassign = r.boolean("reassign")
    if not r.ok:
        return None
    return CustomerEntry(where, key, fields, subjects, wheres, reassign)


def _subscription_parse(problems: Problems, where: str, data: Any) -> SubscriptionEntry | None:
    r = Reader(problems, where, data, SUBSCRIPTION_FIELDS)
    customer = r.text("customer", required=True)
    plan = r.text("plan", required=True)
    start = r.datetime("start", required=True)
    anchor = r.datetime("billing_anchor")
    if not r.ok or start is None:
        return None
    return SubscriptionEntry(where, customer, plan, start, anchor)


def _subscription_label(index: int, data: Any) -> str:
    if isinstance(data, dict) and isinstance(data.get("customer"), str) and isinstance(data.get("plan"), str):
        return f"subscriptions[{index}] ({data['customer']} on {data['plan']})"
    return f"subscriptions[{index}]"


def _parse(problems: Problems, document: dict) -> BillingSpec:
    spec = BillingSpec(catalog=catalog_parse(problems=problems, document=document))
    for i, data in enumerate(entry_list(problems, document, "customers")):
        if isinstance(data, dict) and isinstance(data.get("key"), str):
            spec.declared_customers.add(data["key"].strip())
        entry = _customer_parse(problems, entry_label("customers", i, data, "key"), data)
        if entry is not None:
            spec.customers.append(entry)
    for i, data in enumerate(entry_list(problems, document, "subscriptions")):
        sub = _subscription_parse(problems, _subscription_label(i, data), data)
        if sub is not None:
            spec.subscriptions.append(sub)
    first: dict[Any, str] = {}
    for entry in spec.customers:
        if entry.key in first:
            problems.add(entry.where, f"duplicate: {first[entry.key]} has the same key")
        first.setdefault(entry.key, entry.where)
    listed: dict[str, CustomerEntry] = {}
    for entry in spec.customers:
        for subject, where in zip(entry.subjects or [], entry.subject_wheres, strict=True):
            if subject in listed and listed[subject] is not entry:
                problems.add(where, f"{subject!r} is also listed by {listed[subject].where}; a subject belongs to "
                             "one customer at a time")
            listed.setdefault(subject, entry)
    seen: dict[Any, str] = {}
    for sub in spec.subscriptions:
        ident = (sub.customer, sub.plan, sub.start)
        if ident in seen:
            problems.add(sub.where, f"duplicate: {seen[ident]} has the same customer, plan and start")
        seen.setdefault(ident, sub.where)
    return spec


# ---------------------------------------------------------------------------------------------------- validation


def _customers_validate(problems: Problems, spec: BillingSpec) -> None:
    existing = {c.key: c for c in Customer.objects.filter(key__in=[e.key for e in spec.customers])}
    for entry in spec.customers:
        customer = existing.get(entry.key)
        current = {f: getattr(customer, f) for f in ("name", "currency", *CUSTOMER_OPTIONAL_FIELDS)} if customer else {}
        for name, message in customer_problems({**current, **entry.fields}).items():
            problems.add(f"{entry.where}.{name}", message)
        if (customer is not None and entry.fields["currency"] != customer.currency
                and customer.subscriptions.exists()):
            problems.add(f"{entry.where}.currency", f"customer {entry.key} has subscriptions: its currency "
                         f"{customer.currency} cannot change")

    in_file = {e.key: e for e in spec.customers}
    subjects = [s for e in spec.customers for s in (e.subjects or [])]
    owners = {a.subject: a for a in SubjectAttribution.objects.select_related("customer")
              .filter(subject__in=subjects, end__isnull=True)}
    for entry in spec.customers:
        for subject, where in zip(entry.subjects or [], entry.subject_wheres, strict=True):
            owner = owners.get(subject)
            if owner is None or owner.customer.key == entry.key or entry.reassign:
                continue
            owner_entry = in_file.get(owner.customer.key)
            if owner_entry is not None and owner_entry.subjects is not None:
                continue  # the file moves it: the other customer's list no longer has it
            problems.add(where, f"subject {subject!r} belongs to customer {owner.customer.key} ({owner.customer.name}) "
                         f"since {format_rfc3339(owner.start)}; remove it from that customer's subjects, or set "
                         "reassign: true to move it now (usage before stays with them)")


def _subscriptions_validate(problems: Problems, spec: BillingSpec) -> None:
    file_customers = {e.key: e for e in spec.customers}
    file_plans = {p.key: p for p in spec.catalog.plans}
    db_customers = {c.key: c for c in Customer.objects.filter(key__in=[s.customer for s in spec.subscriptions])}
    published = {p.key: p for p in Plan.objects.filter(key__in=[s.plan for s in spec.subscriptions],
                                                       status=Plan.Status.PUBLISHED)}
    known_plans = set(Plan.objects.filter(key__in=[s.plan for s in spec.subscriptions])
                      .values_list("key", flat=True))
    new_by_pair: dict[tuple[str, str], SubscriptionEntry] = {}
    for sub in spec.subscriptions:
        customer_entry, customer = file_customers.get(sub.customer), db_customers.get(sub.customer)
        if customer_entry is None and customer is None:
            if sub.customer not in spec.declared_customers:
                problems.add(f"{sub.where}.customer", f"unknown customer {sub.customer!r} (not in the file, not in "
                             "the database)")
            continue
        others = list(Subscription.objects.select_related("plan").filter(customer=customer, plan__key=sub.plan)
                      .order_by("start")) if customer is not None else []
        same = next((o for o in others if o.start == sub.start), None)
        if same is not None:  # exists: nothing to do (its plan version may since be archived)
            if sub.billing_anchor is not None and sub.billing_anchor != same.billing_anchor:
                problems.add(f"{sub.where}.billing_anchor", f"the subscription exists with billing anchor "
                             f"{format_rfc3339(same.billing_anchor)}; billing_apply does not change existing "
                             "subscriptions")
            continue
        plan_entry = file_plans.get(sub.plan)
        if plan_entry is not None and plan_entry.status == "published":
            plan_currency = plan_entry.state.currency
        elif sub.plan in published:
            plan_currency = published[sub.plan].currency
        else:
            if sub.plan in known_plans or plan_entry is not None:
                problems.add(f"{sub.where}.plan", f"plan {sub.plan} has no published version to subscribe to")
            elif sub.plan not in spec.catalog.declared["plans"]:
                problems.add(f"{sub.where}.plan", f"unknown plan {sub.plan!r} (not in the file, not in the "
                             "database)")
            continue
        currency = customer_entry.fields["currency"] if customer_entry else customer.currency  # type: ignore[union-attr]
        if plan_currency != currency:
            problems.add(f"{sub.where}.plan", f"plan {sub.plan} bills in {plan_currency} but customer "
                         f"{sub.customer} is invoiced in {currency}")
            continue
        for other in others:
            end = other.cancel_at
            if end is not None and end <= other.start:
                continue  # canceled before it began
            if end is None or sub.start < end:
                problems.add(f"{sub.where}.start", f"overlaps the subscription of {sub.customer} to {sub.plan} "
                             f"v{other.plan.version} from {format_rfc3339(other.start)}; billing_apply creates "
                             "subscriptions only (change a plan or start in the admin)")
                break
        pair = (sub.customer, sub.plan)
        if pair in new_by_pair:
            problems.add(f"{sub.where}.start", f"overlaps {new_by_pair[pair].where} (both open-ended)")
        new_by_pair.setdefault(pair, sub)


# ---------------------------------------------------------------------------------------------------------- apply


def _customers_apply(problems: Problems, spec: BillingSpec, lines: list[str], now: dt.datetime) -> None:
    customers: dict[str, Customer] = {}
    for entry in spec.customers:
        customer = Customer.objects.filter(key=entry.key).first()
        try:
            if customer is None:
                lines.append(f"create customer {entry.key}")
                customer = customer_create(key=entry.key, **entry.fields)
            else:
                changes = {name: v for name, v in entry.fields.items() if getattr(customer, name) != v}
                if changes:
                    lines.append(f"update customer {entry.key}: " + ", ".join(
                        f"{name} {show(getattr(customer, name))} -> {show(v)}" for name, v in changes.items()))
                    customer = customer_update(customer=customer, **changes)
        except CustomerError as exc:
            raise _service_problems(problems, entry.where, exc) from exc
        customers[entry.key] = customer

    for entry in spec.customers:  # removals first, so a subject can move between customers of the file
        if entry.subjects is None:
            continue
        stale = SubjectAttribution.objects.filter(customer=customers[entry.key], end__isnull=True).exclude(
            subject__in=entry.subjects).order_by("subject")
        for attribution in stale:
            lines.append(f"remove subject {attribution.subject} from customer {entry.key}")
            try:
                attribution_end(attribution=attribution, end=now)
            except AttributionError as exc:
                raise _service_problems(problems, f"{entry.where}.subjects", exc) from exc

    for entry in spec.customers:
        customer = customers[entry.key]
        for subject, where in zip(entry.subjects or [], entry.subject_wheres, strict=True):
            current = SubjectAttribution.objects.select_related("customer").filter(
                subject=subject, end__isnull=True).first()
            if current is not None and current.customer_id == customer.pk:
                continue
            if current is not None:
                lines.append(f"move subject {subject} from customer {current.customer.key} to customer {entry.key}")
            else:
                lines.append(f"add subject {subject} to customer {entry.key}")
            try:
                attribution_add(customer=customer, subject=subject, start=now, kong_consumer=_kong_consumer(subject),
                                reassign=entry.reassign)
            except AttributionError as exc:
                raise _service_problems(problems, where, exc) from exc


def _kong_consumer(subject: str) -> KongConsumer | None:
    """The imported Kong consumer a subject names (``consumer:<id>`` or its username), to link the mapping."""
    if subject.startswith("consumer:"):
        return KongConsumer.objects.filter(kong_id=subject.removeprefix("consumer:")).first()
    return KongConsumer.objects.filter(username=subject).first()


def _subscriptions_apply(problems: Problems, spec: BillingSpec, lines: list[str]) -> None:
    for sub in spec.subscriptions:
        customer = Customer.objects.get(key=sub.customer)
        if Subscription.objects.filter(customer=customer, plan__key=sub.plan, start=sub.start).exists():
            continue
        plan = Plan.objects.get(key=sub.plan, status=Plan.Status.PUBLISHED)
        line = f"create subscription {sub.customer} on {sub.plan} v{plan.version} from {format_rfc3339(sub.start)}"
        if sub.billing_anchor is not None and sub.billing_anchor != sub.start:
            line += f" (billing anchor {format_rfc3339(sub.billing_anchor)})"
        lines.append(line)
        try:
            subscription_create(customer=customer, plan=plan, start=sub.start, billing_anchor=sub.billing_anchor,
                                actor=ACTOR)
        except SubscriptionError as exc:
            raise _service_problems(problems, sub.where, exc) from exc


def billing_apply(*, text: str, filename: str, dry_run: bool = False, now: dt.datetime | None = None) -> ApplyResult:
    """Make the database match the file; all or nothing. ``changes`` has one line per change (empty: none).

    Raises :class:`ApplyError` listing every problem (``FILE: ENTRY.FIELD: message``); nothing is applied then.
    """
    problems = Problems(filename)
    spec = _parse(problems, billing_load(text=text, filename=filename))
    now = now or timezone.now()
    lines: list[str] = []
    try:
        with transaction.atomic():
            catalog_validate(problems=problems, spec=spec.catalog)
            _customers_validate(problems, spec)
            _subscriptions_validate(problems, spec)
            problems.raise_if_any()
            catalog_apply(problems=problems, spec=spec.catalog, lines=lines)
            _customers_apply(problems, spec, lines, now)
            _subscriptions_apply(problems, spec, lines)
            if dry_run:
                raise _DryRun
    except _DryRun:
        pass
    except IntegrityError as exc:
        raise ApplyError([f"{filename}: a concurrent change conflicted with this apply ({exc}); nothing was "
                          "applied, run it again"]) from exc
    except DatabaseError as exc:
        raise ApplyError([f"{filename}: the database refused a change ({exc}); nothing was applied"]) from exc
    return ApplyResult(changes=lines, dry_run=dry_run)


# ----------------------------------------------------------------------------------------------------------- dump


def _customer_doc(customer: Customer, subjects: list[str]) -> dict[str, Any]:
    doc: dict[str, Any] = {"key": customer.key, "name": customer.name, "currency": customer.currency}
    for name in CUSTOMER_TEXT_FIELDS:
        if getattr(customer, name):
            doc[name] = getattr(customer, name)
    if customer.collection_method != Customer.CollectionMethod.CHARGE_AUTOMATICALLY:
        doc["collection_method"] = customer.collection_method
    if customer.days_until_due is not None:
        doc["days_until_due"] = customer.days_until_due
    if customer.metadata:
        doc["metadata"] = sorted_json(customer.metadata)
    doc["subjects"] = subjects
    return doc


def billing_dump(*, now: dt.datetime | None = None) -> dict[str, list[dict[str, Any]]]:
    """The current state in ``billing_apply``'s format: applying it changes nothing.

    Customers list their open subjects; subscriptions are those that have not ended (and were not canceled
    before they began), each without its pinned version (identity is customer, plan key and start)."""
    now = now or timezone.now()
    document = catalog_dump()
    subjects: dict[int, list[str]] = {}
    for customer_id, subject in SubjectAttribution.objects.filter(end__isnull=True).order_by("subject").values_list(
            "customer_id", "subject"):
        subjects.setdefault(customer_id, []).append(subject)
    document["customers"] = [_customer_doc(c, subjects.get(c.pk, [])) for c in Customer.objects.order_by("key")]
    running = Subscription.objects.select_related("customer", "plan").filter(
        Q(cancel_at__isnull=True) | Q(cancel_at__gt=now)).order_by("customer__key", "plan__key", "start", "id")
    document["subscriptions"] = []
    for sub in running:
        if sub.cancel_at is not None and sub.cancel_at <= sub.start:
            continue
        doc: dict[str, Any] = {"customer": sub.customer.key, "plan": sub.plan.key, "start": format_rfc3339(sub.start)}
        if sub.billing_anchor != sub.start:
            doc["billing_anchor"] = format_rfc3339(sub.billing_anchor)
        document["subscriptions"].append(doc)
    return document


def billing_dump_text(*, now: dt.datetime | None = None) -> str:
    return yaml.safe_dump(billing_dump(now=now), sort_keys=False, allow_unicode=True, width=120)
