"""``billing_apply``: the whole catalog-as-code file (meters, features, plans, customers, subscriptions) in one
transaction, and ``billing_dump``: the current state in the same format.

Order: read the YAML (``common.yaml_reader``); check every entry's shape and types; check references and the
services' rules against the file and the database; then, inside one ``transaction.atomic()``, compare each entry
with the database and call the services (meters → features → plans → customers → subject removals → subject
additions → subscriptions), one output line per change. Any problem, found before or raised by a service during
the apply, rolls everything back. A dry run does the same and rolls back at the end.

Customers and subscriptions (the catalog's rules are in ``catalog.apply``):

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

from catalog.apply import (
    CatalogSpec,
    PlanEntry,
    catalog_apply,
    catalog_dump,
    catalog_parse,
    catalog_validate,
    currency_check,
    key_check,
)
from catalog.models import Plan
from catalog.rules import clean_currency
from common.time import format_rfc3339
from common.type_names import type_name
from common.yaml_reader import (
    MISSING,
    FileError,
    Problems,
    Reader,
    changed_fields,
    changes_text,
    check_duplicates,
    entry_list,
    load_mapping,
    parse_entries,
    show,
    sorted_json,
    without_empty,
)

from .hooks import apply_sections
from .models import Customer, SubjectAttribution, Subscription, windows_overlap
from .selectors import attribution_default_start, kong_consumer_of
from .services.attributions import (
    AttributionError,
    attribution_add,
    attribution_end,
    attribution_update,
    subject_problem,
)
from .services.customers import CustomerError, customer_create, customer_problems, customer_update
from .services.subscriptions import SubscriptionError, _overlapping, subscription_create

__all__ = ["ApplyResult", "billing_apply", "billing_dump", "billing_dump_text"]

TOP_LEVEL = ("meters", "features", "plans", "customers", "subscriptions", "costs")
CUSTOMER_TEXT_FIELDS = (
    "email", "address_line1", "address_line2", "city", "state", "postal_code", "country", "tax_id",
)
CUSTOMER_OPTIONAL_FIELDS = (*CUSTOMER_TEXT_FIELDS, "collection_method", "days_until_due", "metadata")
CUSTOMER_ENTRY_FIELDS = ("key", "name", "currency", *CUSTOMER_OPTIONAL_FIELDS, "subjects", "reassign")
DAYS_UNTIL_DUE_MAX = 2**31 - 1  # a PositiveIntegerField: PostgreSQL's integer (SQLite would store more)
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


# --------------------------------------------------------------------------------------------------------- parse


def _max_length(name: str) -> int | None:
    return getattr(Customer._meta.get_field(name), "max_length", None)


def _customer_fields(r: Reader) -> dict[str, Any]:
    """Name, currency and the optional fields the entry gives."""
    fields: dict[str, Any] = {
        "name": r.text("name", required=True, max_length=_max_length("name")),
        "currency": clean_currency(r.text("currency", required=True, check=currency_check)),  # usd → USD
    }
    for name in CUSTOMER_TEXT_FIELDS:
        value = r.text(name, max_length=_max_length(name))
        if value is not MISSING:
            fields[name] = value
    method = r.text("collection_method", choices=Customer.CollectionMethod.values)
    if method is not MISSING:
        fields["collection_method"] = method or Customer.CollectionMethod.CHARGE_AUTOMATICALLY
    days = r.integer("days_until_due", maximum=DAYS_UNTIL_DUE_MAX)
    if days is not MISSING:
        fields["days_until_due"] = days
    metadata = r.mapping("metadata", json_only=True)
    if metadata is not MISSING:
        fields["metadata"] = metadata or {}
    return fields


def _customer_parse(problems: Problems, where: str, data: Any) -> CustomerEntry | None:
    r = Reader(problems, where, data, CUSTOMER_ENTRY_FIELDS)
    key = r.text("key", required=True, check=key_check("customer key"))
    fields = _customer_fields(r)
    subjects: list[SubjectEntry] | None = None
    if r.has("subjects"):
        parsed = [_subject_parse(r, f"subjects[{i}]", item) for i, item in enumerate(r.items("subjects") or [])]
        subjects = [subject for subject in parsed if subject is not None]
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
    fields = r.nested(at, item, SUBJECT_FIELDS)
    subject = fields.text("subject", required=True, strip=False, check=subject_problem)
    start, end = fields.datetime("from"), fields.datetime("to")
    if start is not None and end is not None and end <= start:
        fields.fail("to", f"must be after from ({format_rfc3339(start)})")
    if not fields.ok:
        return None
    return SubjectEntry(fields.where, subject.strip(), start, end)


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


def _subjects_check(problems: Problems, customers: list[CustomerEntry]) -> None:
    """Across the file: a subject is included without an end by one customer at most, and the dated mappings of
    a subject do not overlap."""
    listed: dict[str, tuple[CustomerEntry, SubjectEntry]] = {}  # the mapping without an end, per subject
    dated: dict[str, list[SubjectEntry]] = {}  # mappings with a start, per subject
    for entry in customers:
        for item in entry.subjects or []:
            if item.end is None and item.subject in listed:
                other_entry, _ = listed[item.subject]
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


def _parse(problems: Problems, document: dict) -> BillingSpec:
    spec = BillingSpec(catalog=catalog_parse(problems=problems, document=document))
    spec.customers = parse_entries(problems, document, "customers", _customer_parse, key_field="key",
                                   declared=spec.declared_customers)
    spec.subscriptions = parse_entries(problems, document, "subscriptions", _subscription_parse,
                                       label=_subscription_label)
    check_duplicates(problems, spec.customers, lambda e: e.key, "key")
    _subjects_check(problems, spec.customers)
    check_duplicates(problems, spec.subscriptions, lambda s: (s.customer, s.plan, s.start),
                     "customer, plan and start")
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


def _owners_validate(problems: Problems, spec: BillingSpec) -> None:
    """A subject the file includes without an end must not belong to another customer, unless the file moves it
    (the other customer's entry no longer includes it) or the entry says ``reassign: true``."""
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


@dataclass
class _References:
    """What the file's subscriptions refer to, in the file and in the database."""

    spec: BillingSpec
    file_customers: dict[str, CustomerEntry]
    file_plans: dict[str, PlanEntry]
    customers: dict[str, Customer]
    published: dict[str, Plan]
    plans: set[str]

    @classmethod
    def of(cls, spec: BillingSpec) -> _References:
        plan_keys = [s.plan for s in spec.subscriptions]
        return cls(
            spec=spec,
            file_customers={e.key: e for e in spec.customers},
            file_plans={p.key: p for p in spec.catalog.plans},
            customers={c.key: c for c in Customer.objects.filter(key__in=[s.customer for s in spec.subscriptions])},
            published={p.key: p for p in Plan.objects.filter(key__in=plan_keys, status=Plan.Status.PUBLISHED)},
            plans=set(Plan.objects.filter(key__in=plan_keys).values_list("key", flat=True)),
        )

    def plan_currency(self, problems: Problems, sub: SubscriptionEntry) -> str | None:
        """The currency of the version ``sub`` would subscribe to (the file's published entry, else the
        database's published version); None, with a problem, when there is none."""
        plan_entry = self.file_plans.get(sub.plan)
        if plan_entry is not None and plan_entry.status == "published":
            return plan_entry.state.currency
        if sub.plan in self.published:
            return self.published[sub.plan].currency
        if sub.plan in self.plans or plan_entry is not None:
            problems.add(f"{sub.where}.plan", f"plan {sub.plan} has no published version to subscribe to")
        elif sub.plan not in self.spec.catalog.declared["plans"]:
            problems.add(f"{sub.where}.plan", f"unknown plan {sub.plan!r} (not in the file, not in the database)")
        return None


def _subscription_validate(problems: Problems, refs: _References, sub: SubscriptionEntry) -> bool:
    """The problems of one subscription of the file; True when it is new and can be created (if nothing else
    fails), False when it exists or its customer or plan is missing."""
    entry, customer = refs.file_customers.get(sub.customer), refs.customers.get(sub.customer)
    if entry is not None:
        currency = entry.fields["currency"]
    elif customer is not None:
        currency = customer.currency
    else:
        if sub.customer not in refs.spec.declared_customers:
            problems.add(f"{sub.where}.customer", f"unknown customer {sub.customer!r} (not in the file, not in "
                         "the database)")
        return False
    existing = Subscription.objects.filter(customer=customer, plan__key=sub.plan) if customer else None
    same = existing.filter(start=sub.start).first() if existing is not None else None
    if same is not None:  # exists: nothing to do (its plan version may since be archived)
        if sub.billing_anchor is not None and sub.billing_anchor != same.billing_anchor:
            problems.add(f"{sub.where}.billing_anchor", f"the subscription exists with billing anchor "
                         f"{format_rfc3339(same.billing_anchor)}; billing_apply does not change existing "
                         "subscriptions")
        return False
    plan_currency = refs.plan_currency(problems, sub)
    if plan_currency is None:
        return False
    if plan_currency != currency:
        problems.add(f"{sub.where}.plan", f"plan {sub.plan} bills in {plan_currency} but customer "
                     f"{sub.customer} is invoiced in {currency}")
        return False
    clash = _overlapping(customer, sub.plan, sub.start, None) if customer is not None else []
    if clash:
        other = min(clash, key=lambda s: s.start)
        problems.add(f"{sub.where}.start", f"overlaps the subscription of {sub.customer} to {sub.plan} "
                     f"v{other.plan.version} from {format_rfc3339(other.start)}; billing_apply creates "
                     "subscriptions only (change a plan or start in the admin)")
    return True


def _subscriptions_validate(problems: Problems, spec: BillingSpec) -> None:
    refs = _References.of(spec)
    new_by_pair: dict[tuple[str, str], SubscriptionEntry] = {}
    for sub in spec.subscriptions:
        if not _subscription_validate(problems, refs, sub):
            continue
        pair = (sub.customer, sub.plan)
        if pair in new_by_pair:
            problems.add(f"{sub.where}.start", f"overlaps {new_by_pair[pair].where} (both open-ended)")
        new_by_pair.setdefault(pair, sub)


def _validate(problems: Problems, spec: BillingSpec) -> None:
    """Every problem of the file against the database (reads only), raised together."""
    catalog_validate(problems=problems, spec=spec.catalog)
    _customers_validate(problems, spec)
    _owners_validate(problems, spec)
    _subscriptions_validate(problems, spec)
    problems.raise_if_any()


# ---------------------------------------------------------------------------------------------------------- apply


def _customers_apply(problems: Problems, spec: BillingSpec, lines: list[str]) -> dict[str, Customer]:
    customers: dict[str, Customer] = {}
    for entry in spec.customers:
        customer = Customer.objects.filter(key=entry.key).first()
        try:
            if customer is None:
                lines.append(f"create customer {entry.key}")
                customer = customer_create(key=entry.key, **entry.fields)
            else:
                current = {name: getattr(customer, name) for name in entry.fields}
                changes = changed_fields(current, entry.fields)
                if changes:
                    lines.append(f"update customer {entry.key}: {changes_text(current, changes)}")
                    customer = customer_update(customer=customer, **changes)
        except CustomerError as exc:
            raise problems.refused(entry.where, exc) from exc
        customers[entry.key] = customer
    return customers


def _window(start: dt.datetime | None, end: dt.datetime | None) -> str:
    parts = ([f"from {format_rfc3339(start)}"] if start else []) + ([f"until {format_rfc3339(end)}"] if end else [])
    return " ".join(parts) or "from the beginning"


Pairs = list[tuple[SubjectEntry, SubjectAttribution | None]]


def _subjects_pair(entry: CustomerEntry, rows: list[SubjectAttribution]) -> Pairs:
    """Each listed mapping with the customer's mapping it describes: the one without an end; else the one with
    the same end; else the open one the entry ends."""
    subjects = entry.subjects or []
    open_rows = {row.subject: row for row in rows if row.end is None}
    used: set[int] = set()
    paired: dict[int, SubjectAttribution | None] = {}
    for n, item in enumerate(subjects):
        row = open_rows.get(item.subject) if item.end is None else None
        if row is not None:
            used.add(row.pk)
        paired[n] = row
    for n, item in enumerate(subjects):
        if item.end is None:
            continue
        row = next((r for r in rows if r.subject == item.subject and r.end == item.end and r.pk not in used), None)
        if row is None and not entry.includes_now(item.subject):
            row = next((r for r in rows if r is open_rows.get(item.subject) and r.pk not in used), None)
        if row is not None:
            used.add(row.pk)
        paired[n] = row
    return [(item, paired[n]) for n, item in enumerate(subjects)]


def _unlisted_end(problems: Problems, entry: CustomerEntry, rows: list[SubjectAttribution], pairs: Pairs,
                  lines: list[str], now: dt.datetime) -> None:
    """End now the open mappings of the customer that the entry does not list."""
    used = {row.pk for _, row in pairs if row is not None}
    for row in sorted((r for r in rows if r.end is None and r.pk not in used), key=lambda r: r.subject):
        lines.append(f"remove subject {row.subject} from customer {entry.key}")
        try:
            attribution_end(attribution=row, end=now)
        except AttributionError as exc:
            raise problems.refused(f"{entry.where}.subjects", exc) from exc


def _subjects_apply(
    problems: Problems, spec: BillingSpec, customers: dict[str, Customer], lines: list[str], now: dt.datetime
) -> None:
    """Pair each listed mapping with the customer's mapping it describes, then: unlisted open mappings end, then
    listed ends (so a subject can move between customers of the file), then changed starts and new mappings."""
    plans: list[tuple[CustomerEntry, Pairs]] = []
    for entry in spec.customers:
        if entry.subjects is None:
            continue
        rows = list(SubjectAttribution.objects.filter(customer=customers[entry.key]).order_by("subject", "id"))
        pairs = _subjects_pair(entry, rows)
        _unlisted_end(problems, entry, rows, pairs, lines, now)
        plans.append((entry, pairs))
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
        raise problems.refused(item.where, exc) from exc


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
        raise problems.refused(item.where, exc) from exc


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
            raise problems.refused(sub.where, exc) from exc


def _apply(problems: Problems, spec: BillingSpec, now: dt.datetime) -> list[str]:
    """Call the services for what differs, in dependency order; one line per change."""
    lines: list[str] = []
    catalog_apply(problems=problems, spec=spec.catalog, lines=lines)
    customers = _customers_apply(problems, spec, lines)
    _subjects_apply(problems, spec, customers, lines, now)
    _subscriptions_apply(problems, spec, lines)
    return lines


def billing_apply(*, text: str, filename: str, dry_run: bool = False, now: dt.datetime | None = None) -> ApplyResult:
    """Make the database match the file; all or nothing. ``changes`` has one line per change (empty: none).

    Raises :class:`~common.yaml_reader.FileError` listing every problem (``FILE: ENTRY.FIELD: message``); nothing
    is applied then.
    """
    problems = Problems(filename)
    sections = apply_sections()
    document = load_mapping(text, filename, keys=(*TOP_LEVEL, *(section.name for section in sections)))
    spec = _parse(problems, document)
    now = now or timezone.now()
    lines: list[str] = []
    try:
        with transaction.atomic():
            _validate(problems, spec)
            lines = _apply(problems, spec, now)
            for section in sections:  # e.g. credit_grants, from the credits app
                section.apply(problems, entry_list(problems, document, section.name), lines, now)
            problems.raise_if_any()
            if dry_run:
                raise _DryRun
    except _DryRun:
        pass
    except IntegrityError as exc:
        raise FileError([f"{filename}: a concurrent change conflicted with this apply ({exc}); nothing was "
                         "applied, run it again"]) from exc
    except DatabaseError as exc:
        raise FileError([f"{filename}: the database refused a change ({exc}); nothing was applied"]) from exc
    return ApplyResult(changes=lines, dry_run=dry_run)


# ----------------------------------------------------------------------------------------------------------- dump


def _customer_doc(customer: Customer, subjects: list[Any]) -> dict[str, Any]:
    automatic = customer.collection_method == Customer.CollectionMethod.CHARGE_AUTOMATICALLY
    return without_empty({
        "key": customer.key, "name": customer.name, "currency": customer.currency,
        **{name: getattr(customer, name) for name in CUSTOMER_TEXT_FIELDS},
        "collection_method": None if automatic else customer.collection_method,
        "days_until_due": customer.days_until_due, "metadata": sorted_json(customer.metadata), "subjects": subjects,
    }, optional=CUSTOMER_OPTIONAL_FIELDS)


def _subjects_dump() -> dict[int, list[Any]]:
    """Each customer's mappings: the short form (``kong-air``) without dates, else ``{subject, from, to}``."""
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
    return subjects


def _subscriptions_dump(now: dt.datetime) -> list[dict[str, Any]]:
    """Subscriptions that have not ended (and were not canceled before they began), without their pinned
    version: identity is customer, plan key and start."""
    running = Subscription.objects.select_related("customer", "plan").filter(
        Q(cancel_at__isnull=True) | Q(cancel_at__gt=now)).order_by("customer__key", "plan__key", "start", "id")
    docs = []
    for sub in running:
        if sub.cancel_at is not None and sub.cancel_at <= sub.start:
            continue
        doc: dict[str, Any] = {"customer": sub.customer.key, "plan": sub.plan.key, "start": format_rfc3339(sub.start)}
        if sub.billing_anchor != sub.start:
            doc["billing_anchor"] = format_rfc3339(sub.billing_anchor)
        docs.append(doc)
    return docs


def billing_dump(*, now: dt.datetime | None = None) -> dict[str, list[dict[str, Any]]]:
    """The current state in ``billing_apply``'s format: applying it changes nothing."""
    document = catalog_dump()
    subjects = _subjects_dump()
    document["customers"] = [_customer_doc(c, subjects.get(c.pk, [])) for c in Customer.objects.order_by("key")]
    document["subscriptions"] = _subscriptions_dump(now or timezone.now())
    for section in apply_sections():
        entries = section.dump()
        if entries:
            document[section.name] = entries
    return document


def billing_dump_text(*, now: dt.datetime | None = None) -> str:
    return yaml.safe_dump(billing_dump(now=now), sort_keys=False, allow_unicode=True, width=120)
