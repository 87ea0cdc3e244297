"""Ended periods whose usage no invoice has billed yet, for the live credits (``customers.selectors.pending_usage``).

A period's usage is billed by the cycle at its end, after the grace period (and, for a subscription a plan change
replaced, by its successor's first cycle). Until that cycle's lines are computed, its usage is in neither the
prepaid balance (nothing burned) nor the current period: without these periods a ``credit_only`` customer could
spend its balance again between a period's end and its close. Registered into ``customers.hooks`` at start-up.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from django.db import connection
from django.db.models import Model

from catalog.models import Plan
from customers.models import Subscription
from customers.periods import Period, period_at
from customers.selectors import Grant
from metering.usage_sql import db_datetime

from ..models import CycleClose
from ..services.cycles import lookback_cutoff, replaced_at, subscription_cycles

Cycle = tuple[int, int]  # (subscription id, cycle index): the cycle whose close bills a period


def unbilled_cycles(customer_id: int, at: dt.datetime) -> list[tuple[Grant, Period, Cycle]]:
    """The customer's periods that ended by ``at`` (within the late-usage lookback) and whose billing cycle is not
    done, each with its subscription's terms and the cycle that will bill it."""
    horizon = lookback_cutoff(at)
    subscriptions = _subscriptions(customer_id, at, horizon)
    if not subscriptions:
        return []
    done = _done_cycles([subscription.pk for subscription in subscriptions])
    found: list[tuple[Grant, Period, Cycle]] = []
    for subscription in subscriptions:
        for cycle in subscription_cycles(subscription, until=at):
            period = cycle.previous
            if period is not None and period.end > horizon and (subscription.pk, cycle.index) not in done:
                found.append((Grant.of(subscription), period, (subscription.pk, cycle.index)))
        cutover = replaced_at(subscription)
        if cutover is not None and cutover <= at and (subscription.next.pk, 0) not in done:
            last = period_at(subscription.billing_anchor, subscription.plan.billing_cadence, subscription.start,
                             subscription.cancel_at, cutover - dt.timedelta(microseconds=1))
            if last is not None and last.end > horizon:  # billed by the successor's first cycle
                found.append((Grant.of(subscription), last, (subscription.next.pk, 0)))
    return found


def any_cycle_done(cycles: list[Cycle]) -> bool:
    """Whether any of these cycles is done now (its lines computed): the gateway's check asks this every few
    seconds of each customer with periods waiting for their close, a statement of ~0.2 ms instead of
    :func:`unbilled_cycles`' ~2 ms, which it asks again only when one is."""
    if not cycles:
        return False
    pairs = " OR ".join(["(subscription_id = %s AND cycle = %s)"] * len(cycles))
    states = ", ".join(["%s"] * len(CycleClose.DONE_STATES))
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT 1 FROM {CycleClose._meta.db_table} "  # noqa: S608 - placeholders
                       f"WHERE ({pairs}) AND state IN ({states}) LIMIT 1",
                       [*(value for cycle in cycles for value in cycle), *CycleClose.DONE_STATES])
        return cursor.fetchone() is not None


def _subscriptions(customer_id: int, begun_before: dt.datetime, ended_after: dt.datetime) -> list[Subscription]:
    """The customer's subscriptions begun before ``begun_before`` and not ended by ``ended_after``, each with its
    plan and its successor (``next``, or none) loaded, newest first, as
    ``Subscription.objects.filter(…).select_related("plan", "next")`` gives them. Written in SQL, the rows converted by
    the fields' own database converters: the gateway's credit checks ask this of every customer every few minutes,
    and the ORM took ~1.3 ms of CPU to build and read it."""
    parts = [(Subscription, "s"), (Plan, "p"), (Subscription, "n")]
    fields = [(model, alias, list(model._meta.concrete_fields)) for model, alias in parts]
    quote = connection.ops.quote_name
    columns = ", ".join(f"{alias}.{quote(str(field.column))}" for _, alias, model_fields in fields
                        for field in model_fields)  # (a concrete field's column is never None)
    table, plans = quote(Subscription._meta.db_table), quote(Plan._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {columns} FROM {table} s JOIN {plans} p ON p.id = s.plan_id "  # noqa: S608 - names
                       f"LEFT JOIN {table} n ON n.previous_id = s.id WHERE s.customer_id = %s AND s.start < %s "
                       "AND (s.cancel_at IS NULL OR s.cancel_at > %s) ORDER BY s.start DESC, s.id DESC",
                       [customer_id, db_datetime(begun_before), db_datetime(ended_after)])
        rows = cursor.fetchall()
    readers = [_reader(model, alias, model_fields) for model, alias, model_fields in fields]
    loaded: list[Subscription] = []
    for row in rows:
        values = iter(row)
        subscription, plan, successor = (read([next(values) for _ in model_fields])
                                         for read, (_, _, model_fields) in zip(readers, fields, strict=True))
        subscription.plan = plan
        # A reverse one-to-one: the successor, or none (cached, so that reading it asks nothing).
        Subscription.next.related.set_cached_value(subscription, successor if successor.pk is not None else None)
        loaded.append(subscription)
    return loaded


def _reader(model: type[Model], alias: str, fields: list[Any]) -> Callable[[list[Any]], Any]:
    """A function making ``model`` from its columns' values (``fields``, selected as ``alias``), each converted as the
    ORM converts it (e.g. SQLite's datetimes made aware)."""
    names = [field.attname for field in fields]
    columns = [field.get_col(alias) for field in fields]
    converters = [connection.ops.get_db_converters(column) + column.get_db_converters(connection)
                  for column in columns]

    def read(values: list[Any]) -> Any:
        converted = []
        for value, column, converting in zip(values, columns, converters, strict=True):
            for converter in converting:
                value = converter(value, column, connection)
            converted.append(value)
        return model.from_db(connection.alias, names, converted)

    return read


def _done_cycles(subscription_ids: list[int]) -> set[tuple[int, int]]:
    """``(subscription, cycle)`` of the cycles of these subscriptions whose lines are computed. Written in SQL: the
    gateway's credit checks ask this of every customer every few minutes, and the ORM took 0.5-0.9 ms of CPU to
    build and read this query, against 0.1 ms for the statement written out."""
    ids, states = ", ".join(["%s"] * len(subscription_ids)), ", ".join(["%s"] * len(CycleClose.DONE_STATES))
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT subscription_id, cycle FROM {CycleClose._meta.db_table} "  # noqa: S608 - placeholders
                       f"WHERE subscription_id IN ({ids}) AND state IN ({states})",
                       [*subscription_ids, *CycleClose.DONE_STATES])
        return {(subscription, cycle) for subscription, cycle in cursor.fetchall()}
