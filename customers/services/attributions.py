"""Subjects a customer includes ("Include usage from"): add, change, end, move between customers.

The rules (``SubjectAttribution.covers`` / ``clip`` decide what a window counts):

* A subject included without dates counts all its usage: the new mapping starts at the beginning (no start)
  when the subject never belonged to anyone, or exactly where its previous mapping ends, so usage billed to a
  previous owner never moves.
* Dates are needed only where a subject moves: the move ends the old mapping and starts the new one at the
  same instant (default now).
* The windows of one subject never overlap; the checks run under a per-subject lock, over the whole batch of
  changes, against the state the batch leaves behind (so one save may end a mapping and add the next).
* The start or end of an existing mapping changes only when no registered guard refuses it
  (:mod:`customers.hooks`; invoicing refuses when an issued invoice billed usage in the part of time the change
  moves).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from typing import Any

from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from ..hooks import attribution_change_refusals
from ..models import Customer, KongConsumer, SubjectAttribution, format_instant, windows_overlap

SUBJECT_MAX_LENGTH = 255


class AttributionError(ValueError):
    """A refused change; ``errors`` holds, per change of the batch, ``{field: message}``."""

    def __init__(self, message: str, errors: list[dict[str, str]] | None = None) -> None:
        self.errors = errors or []
        super().__init__(message)


@dataclass
class AttributionChange:
    """One mapping as it should be after a save: ``attribution`` changed to ``[start, end)``, or (without
    ``attribution``) a new mapping of the batch's customer. ``default_start``: a new mapping given without a
    start; the check fills ``start`` in (None, or where the subject's previous mapping ends)."""

    subject: str
    start: dt.datetime | None = None
    end: dt.datetime | None = None
    attribution: SubjectAttribution | None = None
    default_start: bool = False
    kong_consumer: KongConsumer | None = None


def subject_problem(subject: Any) -> str | None:
    """Why ``subject`` cannot be a subject (None when it can); surrounding spaces are ignored."""
    if not isinstance(subject, str):
        return f"a subject is a string, not {type(subject).__name__}"
    subject = subject.strip()
    if not subject or len(subject) > SUBJECT_MAX_LENGTH:
        return f"a subject is a non-empty string of at most {SUBJECT_MAX_LENGTH} characters"
    if any(ord(c) < 32 or ord(c) == 127 for c in subject):
        return "a subject must not contain control characters (such as NUL or a line break)"
    return None


def _lock_key(subject: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"attribution:{subject}".encode(), digest_size=8).digest(), "big",
                          signed=True)


def _lock_subjects(subjects: set[str]) -> None:
    """Serialise changes to these subjects until the transaction ends, also for subjects without rows yet
    (PostgreSQL advisory locks, in a fixed order; SQLite serialises writers anyway)."""
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        for subject in sorted(subjects):
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_lock_key(subject)])


@dataclass
class _Window:
    start: dt.datetime | None
    end: dt.datetime | None
    customer_id: int | None
    customer_name: str

    def text(self) -> str:
        parts = ([f"from {format_instant(self.start)}"] if self.start else []) + (
            [f"until {format_instant(self.end)}"] if self.end else [])
        return " ".join(parts) or "from the beginning"


def attribution_changes_problems(
    *, customer: Customer, changes: list[AttributionChange], lock: bool = False
) -> list[dict[str, str]]:
    """The problems of each change (``{field: message}``, empty when fine), checked together against what the
    batch leaves behind. Fills in the start of new mappings given without one. Read-only (the admin's formset
    calls it in ``clean``); :func:`attributions_save` calls it again. ``lock`` (inside a transaction): lock the
    subjects and their rows until the transaction ends, so what was checked is what gets saved."""
    problems: list[dict[str, str]] = [{} for _ in changes]
    valid: list[int] = []
    for i, change in enumerate(changes):
        if change.attribution is None:
            problem = subject_problem(change.subject)
            if problem:
                problems[i]["subject"] = problem
                continue
            change.subject = change.subject.strip()
        valid.append(i)
    subjects = {changes[i].subject for i in valid}
    if lock:
        _lock_subjects(subjects)
    rows = SubjectAttribution.objects.select_related("customer").filter(subject__in=subjects).order_by("id")
    if lock:
        rows = rows.select_for_update(of=("self",))
    current = {row.pk: row for row in rows}
    changed_pks: dict[int, int] = {}
    for i in valid:
        change = changes[i]
        if change.attribution is None:
            continue
        if change.attribution.pk in changed_pks:
            problems[i]["start"] = "this mapping is changed twice"
            continue
        if change.attribution.pk not in current:
            problems[i]["start"] = "this mapping no longer exists (changed by someone else?); reload the page"
            continue
        changed_pks[change.attribution.pk] = i
        change.subject = current[change.attribution.pk].subject

    windows: dict[str, list[_Window]] = {}
    for row in current.values():
        if row.pk not in changed_pks:
            windows.setdefault(row.subject, []).append(
                _Window(row.start, row.end, row.customer_id, str(row.customer)))
    name = str(customer) if customer.pk else (customer.name or "this customer")
    ordered = sorted((i for i in valid if "start" not in problems[i]), key=lambda i: changes[i].default_start)
    for i in ordered:  # explicit windows first: a default start depends on them
        change = changes[i]
        if change.attribution is not None:
            row = current[change.attribution.pk]
            owner_id, owner_name = row.customer_id, str(row.customer)
        else:
            owner_id, owner_name = customer.pk, name
        others = windows.setdefault(change.subject, [])
        if change.default_start:
            open_ = next((w for w in others if w.end is None), None)
            if open_ is not None:
                if owner_id is not None and open_.customer_id == owner_id:
                    problems[i]["subject"] = f"{change.subject} is already included by this customer {open_.text()}"
                else:
                    problems[i]["subject"] = (f"{change.subject} belongs to {open_.customer_name} {open_.text()}; end "
                                              "it there first to move it (usage before the move stays with them)")
                continue
            ends = [w.end for w in others if w.end is not None]
            change.start = max(ends) if ends else None
        if change.start is not None and change.end is not None and change.end <= change.start:
            where = " (where the subject's previous mapping ends)" if change.default_start else ""
            problems[i]["end"] = f"the end must be after the start, {format_instant(change.start)}{where}"
            continue
        clash = next((w for w in others if windows_overlap((change.start, change.end), (w.start, w.end))), None)
        field = "end" if change.attribution is not None and change.start == current[change.attribution.pk].start \
            else "start"
        if clash is not None:
            whose = "this customer" if owner_id is not None and clash.customer_id == owner_id else clash.customer_name
            problems[i][field] = (f"{change.subject} would overlap its mapping to {whose} {clash.text()}; a subject "
                                  "belongs to one customer at a time")
            continue
        if change.attribution is not None:
            refusals = attribution_change_refusals(current[change.attribution.pk], change.start, change.end)
            if refusals:
                problems[i][field] = "; ".join(refusals)
                continue
        others.append(_Window(change.start, change.end, owner_id, owner_name))
    return problems


def _raise_if_any(problems: list[dict[str, str]]) -> None:
    messages = [message for errors in problems for message in errors.values()]
    if messages:
        raise AttributionError("; ".join(messages), problems)


@transaction.atomic
def attributions_save(*, customer: Customer, changes: list[AttributionChange]) -> list[SubjectAttribution]:
    """Apply a batch of changes to the mappings of ``customer``'s subjects (the admin's "Include usage from"
    rows) all or nothing; returns the saved mapping of each change."""
    if not changes:
        return []
    _raise_if_any(attribution_changes_problems(customer=customer, changes=changes, lock=True))
    saved: list[SubjectAttribution | None] = [None] * len(changes)
    updates = [i for i, c in enumerate(changes) if c.attribution is not None]
    # Bounded windows first: the open / unbounded-start constraints hold after every single statement.
    updates.sort(key=lambda i: (changes[i].end is None, changes[i].start is None))
    try:
        with transaction.atomic():
            for i in updates:
                row = SubjectAttribution.objects.get(pk=changes[i].attribution.pk)  # type: ignore[union-attr]
                row.start, row.end = changes[i].start, changes[i].end
                row.save(update_fields=["start", "end"])
                saved[i] = row
            for i, change in enumerate(changes):
                if change.attribution is None:
                    saved[i] = SubjectAttribution.objects.create(
                        customer=customer, subject=change.subject, start=change.start, end=change.end,
                        kong_consumer=change.kong_consumer)
    except IntegrityError as exc:  # a writer that did not take the lock (or a race on a brand-new subject)
        raise AttributionError("the subject's mappings were just changed by someone else; try again") from exc
    return [row for row in saved if row is not None]


@transaction.atomic
def attribution_add(
    *,
    customer: Customer,
    subject: str,
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
    kong_consumer: KongConsumer | None = None,
    reassign: bool = False,
    now: dt.datetime | None = None,
) -> SubjectAttribution:
    """Include the usage of ``subject``. Without ``start``: from the beginning when the subject never belonged
    to anyone, else from where its previous mapping ends. A subject belongs to one customer at a time: with
    ``reassign`` the current mapping of another customer ends at the move (``start``, default now) and the new
    one starts there, so usage before it stays with the previous customer. Already included by this customer
    (and no ``end`` given): that mapping is returned unchanged. With ``end``: a mapping that ended (history)."""
    problem = subject_problem(subject)
    if problem:
        raise AttributionError(problem)
    subject = subject.strip()
    _lock_subjects({subject})
    current = (SubjectAttribution.objects.select_for_update(of=("self",)).select_related("customer")
               .filter(subject=subject, end__isnull=True).first())
    if current is not None and current.customer_id == customer.pk and end is None:
        return current
    history = end is not None and current is not None and current.start is not None and end <= current.start
    if current is not None and current.customer_id != customer.pk and not history:
        if not reassign:
            raise AttributionError(
                f"subject {subject!r} already belongs to {current.customer}; "
                "reassign it to move it (usage before the move stays with them)"
            )
        move = start or now or timezone.now()
        if current.start is not None and move <= current.start:
            raise AttributionError(
                f"subject {subject!r} belongs to {current.customer} since "
                f"{current.start.isoformat()}; it can move only after that"
            )
        changes = [AttributionChange(subject, current.start, move, attribution=current),
                   AttributionChange(subject, move, end, kong_consumer=kong_consumer)]
    else:
        changes = [AttributionChange(subject, start, end, default_start=start is None, kong_consumer=kong_consumer)]
    return attributions_save(customer=customer, changes=changes)[-1]


def attribution_update(
    *, attribution: SubjectAttribution, start: dt.datetime | None, end: dt.datetime | None
) -> SubjectAttribution:
    """Move the start and/or end of a mapping (None: from the beginning / open), unless it would overlap
    another mapping of the subject or a guard refuses (an issued invoice depends on it)."""
    customer = Customer.objects.get(pk=attribution.customer_id)
    return attributions_save(customer=customer,
                             changes=[AttributionChange(attribution.subject, start, end, attribution=attribution)])[0]


@transaction.atomic
def attribution_end(*, attribution: SubjectAttribution, end: dt.datetime | None = None) -> SubjectAttribution:
    """Stop including the subject at ``end`` (default now); an ended mapping is returned as it is."""
    _lock_subjects({attribution.subject})
    attribution = SubjectAttribution.objects.select_for_update().get(pk=attribution.pk)
    end = end or timezone.now()
    if attribution.end is not None:
        return attribution
    if attribution.start is not None and end <= attribution.start:
        raise AttributionError("the end of an attribution must be after its start")
    return attribution_update(attribution=attribution, start=attribution.start, end=end)


@transaction.atomic
def consumer_include(
    *, customer: Customer, consumer: KongConsumer, start: dt.datetime | None = None, reassign: bool = False
) -> list[SubjectAttribution]:
    """Include a Kong consumer: both ``consumer:<id>`` and its username attribute to the customer (without
    ``start``: as :func:`attribution_add`; a move happens at one instant for both)."""
    now = timezone.now()
    return [
        attribution_add(customer=customer, subject=subject, start=start, kong_consumer=consumer, reassign=reassign,
                        now=now)
        for subject in consumer.subjects
    ]
