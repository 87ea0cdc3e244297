"""Where a close's credits go when its invoice would net below zero: each item's credits first offset that item's
own charges in the close (one row of a price table re-rated lower while another row of it bills late usage), and
only what the item nets below zero becomes credit notes, never more than the invoices that billed the item billed
for it. Before, every credit went to a credit note, and a row credited more than its rate card's net share on the
invoice that billed it stopped the close ("nothing left to credit") although that invoice had billed the row."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from catalog.models import RateCard
from customers.models import Subscription
from invoicing.models import Invoice, InvoiceLine
from invoicing.services import credit_notes
from invoicing.services.lines import Billed, DraftLine, split_credits
from tests.invoicing import test_rerating_property
from tests.invoicing.test_rerating_property import BillingHistory, _plans

PERIOD = (dt.datetime(2026, 11, 1, tzinfo=dt.UTC), dt.datetime(2026, 12, 1, tzinfo=dt.UTC))
CREDIT, LATE = InvoiceLine.Kind.CREDIT, InvoiceLine.Kind.LATE_USAGE


def _line(kind: str, amount: int, *, card: str = "llm", part: str = "", quantity: str = "10") -> DraftLine:
    subscription = Subscription(pk=1)
    return DraftLine(kind, subscription, RateCard(key=card), f"{card} {part} {kind}", *PERIOD,
                     Decimal(quantity), None, amount, part=part)


def test_credits_stay_on_an_invoice_that_nets_to_zero_or_more():
    lines = [_line(LATE, 500, part="a"), _line(CREDIT, -500, part="b")]
    assert split_credits(lines) == (lines, [])


def test_a_row_credit_first_offsets_the_late_usage_of_its_rate_card_and_only_the_rest_is_a_credit_note():
    late, credit = _line(LATE, 468, part="gpt-4o·input"), _line(CREDIT, -768, part="gpt-4o·output", quantity="12")
    kept, noted = split_credits([late, credit])
    assert [(line.kind, line.part, line.amount) for line in kept] == [
        (LATE, "gpt-4o·input", 468), (CREDIT, "gpt-4o·output", -468)]
    assert [(line.kind, line.part, line.amount) for line in noted] == [(CREDIT, "gpt-4o·output", -300)]
    assert kept[1].quantity + noted[0].quantity == Decimal(12)  # the quantity is shared, not counted twice
    assert kept[1].description == noted[0].description == credit.description


def test_a_credit_of_a_rate_card_with_no_charge_in_the_close_is_a_credit_note_whole():
    other_card = _line(LATE, 100, card="ai-token")
    credit = _line(CREDIT, -700, part="gpt-4o·output")
    assert split_credits([other_card, credit]) == ([other_card], [credit])


@given(st.lists(st.tuples(st.sampled_from(["llm", "ai-token", "support"]), st.booleans(), st.integers(1, 5000),
                          st.sampled_from(["", "a", "b"])), max_size=12))
def test_split_keeps_every_amount_and_never_leaves_an_item_below_zero_on_the_invoice(spec):
    lines = [_line(CREDIT if credit else LATE, -amount if credit else amount, card=card, part=part)
             for card, credit, amount, part in spec]
    kept, noted = split_credits(lines)

    def by_item(chosen):
        sums: dict[tuple, int] = defaultdict(int)
        for line in chosen:
            sums[line.item_key] += line.amount
        return sums

    before, on_invoice, on_notes = by_item(lines), by_item(kept), by_item(noted)
    for key in before:
        assert on_invoice[key] + on_notes[key] == before[key]  # nothing lost, nothing invented
    assert all(line.kind == CREDIT and line.amount < 0 for line in noted)
    assert all(line.amount < 0 for line in kept if line.kind == CREDIT)
    if noted:
        assert all(amount >= 0 for amount in on_invoice.values())  # no item below zero on the invoice
        for key, amount in on_notes.items():  # a credit note carries only what its item nets below zero
            assert amount == min(before[key], 0)
    else:
        assert sum(line.amount for line in kept) >= 0 or not any(line.kind == CREDIT for line in lines)


def test_credits_of_one_item_never_take_more_from_an_invoice_than_it_billed_for_that_item(monkeypatch):
    monkeypatch.setattr(credit_notes, "creditable_amounts", lambda ids: dict.fromkeys(ids, 10_000))
    first, second = _line(CREDIT, -400, part="a"), _line(CREDIT, -400, part="b")
    billed = {first.item_key: Billed(amount=800, by_invoice={5: 500, 3: 300})}
    allocation = credit_notes.allocate_credits([first, second], billed, fallback_invoice_ids=[])
    assert {pk: [part.amount for part in parts] for pk, parts in allocation.items()} == {5: [400, 100], 3: [300]}
    with pytest.raises(credit_notes.CreditNoteError, match="cannot credit 100"):
        credit_notes.allocate_credits([first, second, _line(CREDIT, -100)], billed, fallback_invoice_ids=[])


def test_an_invoice_whose_share_of_an_item_is_used_up_is_not_its_fallback(monkeypatch):
    """However a credit is split into lines, an invoice that billed the item gives at most its share; the rest goes
    to the customer's other invoices (invoice 3 billed 300 of it but has nothing left, say after a manual note)."""
    monkeypatch.setattr(credit_notes, "creditable_amounts", lambda ids: {5: 10_000, 3: 0, 2: 10_000})
    billed = {_line(CREDIT, -1).item_key: Billed(amount=800, by_invoice={5: 500, 3: 300})}
    two = credit_notes.allocate_credits([_line(CREDIT, -500, part="a"), _line(CREDIT, -300, part="b")], billed,
                                        fallback_invoice_ids=[5, 3, 2])
    one = credit_notes.allocate_credits([_line(CREDIT, -800, part="a")], billed, fallback_invoice_ids=[5, 3, 2])
    assert {pk: sum(p.amount for p in parts) for pk, parts in two.items()} == {5: 500, 2: 300}
    assert {pk: sum(p.amount for p in parts) for pk, parts in one.items()} == {5: 500, 2: 300}


def test_a_credit_shared_between_invoices_shares_its_quantity(monkeypatch):
    monkeypatch.setattr(credit_notes, "creditable_amounts", lambda ids: dict.fromkeys(ids, 10_000))
    line = _line(CREDIT, -800, part="a", quantity="400")
    billed = {line.item_key: Billed(amount=800, by_invoice={5: 500, 3: 300})}
    allocation = credit_notes.allocate_credits([line], billed, fallback_invoice_ids=[])
    assert {pk: [(p.amount, p.line and p.line.quantity) for p in parts] for pk, parts in allocation.items()} == {
        5: [(500, Decimal(250))], 3: [(300, Decimal(150))]}


class _Pick:
    """The ``data`` a rule of the state machine draws from, answering with a chosen invoice."""

    def __init__(self, number: str):
        self.number = number

    def draw(self, strategy):
        invoice = Invoice.objects.get(number=self.number)
        assert invoice.status in ("issued", "uncollectible")  # one the rule could have drawn
        return invoice


@pytest.mark.slow
@pytest.mark.django_db
def test_the_history_that_stopped_a_close_with_nothing_left_to_credit_now_bills_exactly_what_rates(monkeypatch):
    """The history hypothesis found (stored shrunk): after plan changes and voids, one close re-rates the gpt-4o
    output row of a period 768 lower while other rows of the same rate card and period bill 468 of late usage.
    The close failed on every attempt; the machine's teardown checks billed = rated for every item and row."""
    monkeypatch.setattr(test_rerating_property, "event", lambda *args: None)  # statistics: only inside @given
    _plans()
    state = BillingHistory()
    steps: list[tuple[str, dict[str, Any]]] = [
        ("subscribe", {"start_offset_days": 20, "calendar": True}),
        ("traffic", {"burst": [(105, 237, "request", "gpt-4o"), (408, 560, "request", "gpt-4o")]}),
        ("void_an_invoice", {"data": None}),
        ("traffic", {"burst": [(213, 205, "request", "gpt-4o"), (415, 162, "request", "gpt-4o"),
                               (147, 544, "request", "gpt-4o"), (48, 222, "request", "gpt-4o")]}),
        ("credits_granted", {"amount": 800, "for_tokens": True, "lasts": None, "priority": 0}),
        ("void_an_invoice", {"data": None}),
        ("traffic", {"burst": [(67, 134, "request", "gpt-4o"), (492, 736, "request", "gpt-4o"),
                               (249, 379, "request", "gpt-4o"), (128, 889, "request", "gpt-4o"),
                               (390, 708, "request", "gpt-4o"), (137, 163, "request", "gpt-4o")]}),
        ("time_passes", {"close": True, "hours": 354}),
        ("time_passes", {"close": False, "hours": 1}),
        ("traffic", {"burst": [(856, 163, "request", "gpt-5"), (1, 263, "response", "o3"),
                               (137, 468, "response", "gpt-5"), (760, 651, "request", "gpt-5")]}),
        ("time_passes", {"close": True, "hours": 284}),
        ("credits_granted", {"amount": 2782, "for_tokens": True, "lasts": None, "priority": 2}),
        ("void_an_invoice", {"data": _Pick("INV-2026-000001")}),
        ("time_passes", {"close": False, "hours": 261}),
        ("time_passes", {"close": True, "hours": 185}),
        ("time_passes", {"close": True, "hours": 300}),
        ("change_plan", {"when": "now"}),
        ("traffic", {"burst": [(210, 37, "request", "gpt-5"), (200, 180, "response", "o3")]}),
        ("time_passes", {"close": False, "hours": 104}),
        ("traffic", {"burst": [(604, 45, "request", "gpt-5"), (153, 351, "response", "o3"),
                               (363, 329, "request", "gpt-5"), (363, 329, "request", "gpt-5"),
                               (358, 615, "request", "o3"), (745, 386, "response", "gpt-4o-mini")]}),
        ("change_plan", {"when": "now"}),
        ("credits_granted", {"amount": 2341, "for_tokens": False, "lasts": None, "priority": 2}),
        ("change_plan", {"when": "now"}),
        ("traffic", {"burst": [(491, 225, "response", "gpt-4o-mini"), (76, 234, "request", "o3"),
                               (164, 347, "request", "gpt-5"), (517, 338, "response", "gpt-5"),
                               (640, 859, "response", "gpt-4o"), (509, 162, "response", "gpt-4o")]}),
        ("time_passes", {"close": False, "hours": 336}),
        ("change_plan", {"when": "period_end"}),
        ("credits_granted", {"amount": 4943, "for_tokens": True, "lasts": None, "priority": 2}),
        ("traffic", {"burst": [(210, 37, "request", "gpt-5"), (76, 234, "request", "o3"),
                               (164, 347, "request", "gpt-5"), (517, 338, "response", "gpt-5"),
                               (640, 859, "response", "gpt-4o"), (509, 162, "response", "gpt-4o")]}),
        ("void_an_invoice", {"data": _Pick("INV-2026-000002")}),
        ("time_passes", {"close": False, "hours": 95}),
    ]
    try:
        for name, arguments in steps:
            if name == "void_an_invoice" and arguments["data"] is None:
                assert not InvoiceLine.objects.exists()  # nothing to void yet: the rule draws nothing
                continue
            getattr(state, name)(**arguments)
            state.never_negative()
    finally:
        state.teardown()  # the final close, then billed = rated per item and per row, and reconcile clean
