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
* ``subjects`` lists the customer's mappings: ``kong-air`` (short form) includes the subject without dates —
  all its usage counts, from the beginning, or from where the subject's previous mapping ends (a previous
  owner keeps what it was billed); ``{subject: kong-air, from: 2026-11-01T00:00:00Z}`` gives the start, and
  ``to:`` an end (a mapping that ended). Missing mappings are added; a listed mapping whose start or end
  differs is changed (refused while an issued invoice billed usage in the time the change moves); open
  mappings of the customer that are not listed end now (usage before stays billed to the customer); ended
  mappings that are not listed are left alone. Without ``subjects`` the customer's subjects are left as they
  are. A subject that belongs to another customer is an error naming that customer, unless the file moves it
  (the other customer's entry no longer lists it without ``to``) or the entry says ``reassign: true`` (the
  subject moves now, or at ``from``; earlier usage stays with the other customer).
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
from django.db.models import F, Q
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
    type_name,
)
from catalog.services.apply import service_problems as _service_problems
from common.time import format_rfc3339

from ..models import Customer, SubjectAttribution, Subscription, windows_overlap
from ..selectors import attribution_default_start, kong_consumer_of
from .attributions import AttributionError, attribution_add, attribution_end, attribution_update, subject_problem
from .customers import CustomerError, customer_create, customer_problems, customer_update
from .subscriptions import SubscriptionError, subscription_create

__all__ = ["ApplyError", "ApplyResult", "billing_apply", "billing_dump", "billing_dump_text", "billing_load"]

TOP_LEVEL = ("meters", "features", "plans", "customers", "subscriptions")
CUSTOMER_TEXT_FIELDS = (
    "email", "address_line1", "address_line2", "city", "state", "postal_code", "country", "tax_id",
)
CUSTOMER_OPTIONAL_FIELDS = (*CUSTOMER_TEXT_FIELDS, "collection_method", "days_until_due", "metadata")
CUSTOMER_ENTRY_FIELDS = ("key", "name", "currency", *CUSTOMER_OPTIONAL_FIELDS, "subjects", "reassign")
SUBSCRIPTION_FIELDS = ("customer", "plan", "start", "billing_anchor")
SUBJECT_FIELDS = ("subject", "from", "to")
ACTOR = "billing_apply"


@dataclass
class SubjectEntry:
    where: str
    subject: str
    start: dt.datetime | None  # ``from``; None: from the beginning, or where the subject's previous mapping ends
    end: dt.datetime | None  # ``to``; None: still included


@dataclass
class CustomerEntry:
    where: str
    key: str
    fields: dict[str, Any]  # name, currency and the optional fields the entry gives
    subjects: list[SubjectEntry] | None  # None: left as they are
    reassign: bool

    def includes_now(self, subject: str) -> bool:
        return any(s.subject == subject and s.end is None for s in self.subjects or [])


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
    subjects: list[SubjectEntry] | None = None
    if r.has("subjects"):
        subjects = []
        for i, item in enumerate(r.items("subjects") or []):
            subject = _subject_parse(r, f"subjects[{i}]", item)
            if subject is not None:
                subjects.append(subject)
    reassign = r.boolean("reassign")
    if not r.ok:
        return None
    return CustomerEntry(where, key, fields, subjects, reassign)


def _subject_parse(r: Reader, at: str, item: Any) -> SubjectEntry | None:
    """``kong-air`` or ``{subject: kong-air, from: …, to: …}``."""
    if isinstance(item, str):
        problem = subject_problem(item)
        if problem:
            shown = show(item) if problem.endswith("characters") else "this one"
            r.fail(at, f"{problem}, not {shown}")
            return None
        return SubjectEntry(r.at(at), item.strip(), None, None)
    if not isinstance(item, dict):
        r.fail(at, f"must be a subject (a string) or a mapping with subject, from and to, not {type_name(item)}")
        return None
    fields = Reader(r.problems, r.at(at), item, SUBJECT_FIELDS)
    subject = fields.text("subject", required=True, strip=False)
    if isinstance(subject, str) and subject:
        problem = subject_problem(subject)
        if problem:
            fields.fail("subject", problem)
    start, end = fields.datetime("from"), fields.datetime("to")
    if start is not None and end is not None and end <= start:
        fields.fail("to", f"must be after from ({format_rfc3339(start)})")
    if not fields.ok:
        r.ok = False
        return None
    return SubjectEntry(r.at(at), subject.strip(), start, end)


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
    listed: dict[str, tuple[CustomerEntry, SubjectEntry]] = {}  # the mapping without an end, per subject
    dated: dict[str, list[SubjectEntry]] = {}  # mappings with a start, per subject
    for entry in spec.customers:
        for item in entry.subjects or []:
            if item.end is None and item.subject in listed:
                other_entry, other = listed[item.subject]
                if other_entry is entry:
                    problems.add(item.where, f"{item.subject!r} is listed twice without an end (at most one mapping "
                                 "of a subject is still included)")
                else:
                    problems.add(item.where, f"{item.subject!r} is also listed by {other_entry.where}; a subject "
                                 "belongs to one customer at a time (end one of them with to:)")
                continue
            if item.end is None:
                listed[item.subject] = (entry, item)
            if item.start is None:
                continue
            clash = next((o for o in dated.get(item.subject, [])
                          if windows_overlap((o.start, o.end), (item.start, item.end))), None)
            if clash is not None:
                problems.add(item.where, f"overlaps {clash.where}: the mappings of a subject must not overlap")
            dated.setdefault(item.subject, []).append(item)
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
    subjects = [s.subject for e in spec.customers for s in (e.subjects or []) if s.end is None]
    owners = {a.subject: a for a in SubjectAttribution.objects.select_related("customer")
              .filter(subject__in=subjects, end__isnull=True)}
    for entry in spec.customers:
        for item in entry.subjects or []:
            owner = owners.get(item.subject)
            if item.end is not None or owner is None or owner.customer.key == entry.key or entry.reassign:
                continue
            owner_entry = in_file.get(owner.customer.key)
            if owner_entry is not None and owner_entry.subjects is not None and not owner_entry.includes_now(
                    item.subject):
                continue  # the file moves it: the other customer's list no longer includes it
            since = f"since {format_rfc3339(owner.start)}" if owner.start else "from the beginning"
            problems.add(item.where, f"subject {item.subject!r} belongs to customer {owner.customer.key} "
                         f"({owner.customer.name}) {since}; remove it from that customer's subjects (or end it "
                         "there with to:), or set reassign: true to move it now (usage before stays with them)")


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

    _subjects_apply(problems, spec, customers, lines, now)


def _window(start: dt.datetime | None, end: dt.datetime | None) -> str:
    parts = ([f"from {format_rfc3339(start)}"] if start else []) + ([f"until {format_rfc3339(end)}"] if end else [])
    return " ".join(parts) or "from the beginning"


def _subjects_apply(
    problems: Problems, spec: BillingSpec, customers: dict[str, Customer], lines: list[str], now: dt.datetime
) -> None:
    """Pair each listed mapping with the customer's mapping it describes (the one without an end; else the one
    with the same end; else the open one the entry ends), then: ends first (so a subject can move between
    customers of the file), then changed starts and new mappings."""
    plans: list[tuple[CustomerEntry, list[tuple[SubjectEntry, SubjectAttribution | None]]]] = []
    for entry in spec.customers:
        if entry.subjects is None:
            continue
        customer = customers[entry.key]
        rows = list(SubjectAttribution.objects.filter(customer=customer).order_by("subject", "id"))
        open_rows = {row.subject: row for row in rows if row.end is None}
        used: set[int] = set()
        paired: dict[int, SubjectAttribution | None] = {}
        for n, item in enumerate(entry.subjects):
            row = open_rows.get(item.subject) if item.end is None else None
            if row is not None:
                used.add(row.pk)
            paired[n] = row
        for n, item in enumerate(entry.subjects):
            if item.end is None:
                continue
            row = next((r for r in rows if r.subject == item.subject and r.end == item.end and r.pk not in used),
                       None)
            if row is None and not entry.includes_now(item.subject):
                row = next((r for r in rows if r is open_rows.get(item.subject) and r.pk not in used), None)
            if row is not None:
                used.add(row.pk)
            paired[n] = row
        for row in sorted(open_rows.values(), key=lambda r: r.subject):
            if row.pk not in used:
                lines.append(f"remove subject {row.subject} from customer {entry.key}")
                try:
                    attribution_end(attribution=row, end=now)
                except AttributionError as exc:
                    raise _service_problems(problems, f"{entry.where}.subjects", exc) from exc
        plans.append((entry, [(item, paired[n]) for n, item in enumerate(entry.subjects)]))

    for ending in (True, False):
        for entry, pairs in plans:
            for item, row in pairs:
                if row is not None and (row.end is None and item.end is not None) == ending:
                    _subject_change(problems, entry, item, row, lines)
                elif row is None and not ending:
                    _subject_add(problems, entry, customers[entry.key], item, lines, now)


def _subject_change(
    problems: Problems, entry: CustomerEntry, item: SubjectEntry, row: SubjectAttribution, lines: list[str]
) -> None:
    row.refresh_from_db()
    start = item.start if item.start is not None else attribution_default_start(subject=row.subject, attribution=row)
    if (row.start, row.end) == (start, item.end):
        return
    lines.append(f"change subject {row.subject} of customer {entry.key}: {_window(row.start, row.end)} -> "
                 f"{_window(start, item.end)}")
    try:
        attribution_update(attribution=row, start=start, end=item.end)
    except AttributionError as exc:
        if item.start is None and row.start is not None:
            exc = AttributionError(f"{exc} (to keep its start, write {{subject: {row.subject}, from: "
                                   f"{format_rfc3339(row.start)}}})")
        raise _service_problems(problems, item.where, exc) from exc


def _subject_add(
    problems: Problems, entry: CustomerEntry, customer: Customer, item: SubjectEntry, lines: list[str],
    now: dt.datetime,
) -> None:
    current = SubjectAttribution.objects.select_related("customer").filter(
        subject=item.subject, end__isnull=True).first()
    if current is not None and current.customer_id != customer.pk and item.end is None:
        lines.append(f"move subject {item.subject} from customer {current.customer.key} to customer {entry.key}")
    else:
        window = "" if item.start is None and item.end is None else " " + _window(item.start, item.end)
        lines.append(f"add subject {item.subject} to customer {entry.key}{window}")
    try:
        attribution_add(customer=customer, subject=item.subject, start=item.start, end=item.end,
                        kong_consumer=kong_consumer_of(item.subject), reassign=entry.reassign, now=now)
    except AttributionError as exc:
        raise _service_problems(problems, item.where, exc) from exc


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


def _customer_doc(customer: Customer, subjects: list[Any]) -> dict[str, Any]:
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

    Customers list all their mappings: the short form (``kong-air``) for one without dates, else
    ``{subject, from, to}``; subscriptions are those that have not ended (and were not canceled before they
    began), each without its pinned version (identity is customer, plan key and start)."""
    now = now or timezone.now()
    document = catalog_dump()
    subjects: dict[int, list[Any]] = {}
    rows = SubjectAttribution.objects.order_by("subject", F("start").asc(nulls_first=True), "id").values_list(
        "customer_id", "subject", "start", "end")
    for customer_id, subject, start, end in rows:
        item: Any = subject
        if start is not None or end is not None:
            item = {"subject": subject}
            if start is not None:
                item["from"] = format_rfc3339(start)
            if end is not None:
                item["to"] = format_rfc3339(end)
        subjects.setdefault(customer_id, []).append(item)
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
