"""A month-end close split into shards (``INVOICE_CLOSE_SHARDS``): disjoint, together complete, safe to overlap
and to rerun; and the tasks a chunk's commits queue sent once per chunk."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
from django.core.management import CommandError, call_command

from common import queue
from common.jobs import job_run_create
from common.models import JobRun
from customers.services.customers import customer_create
from customers.services.subscriptions import subscription_create
from invoicing.models import CycleClose, Invoice, InvoiceEvent
from invoicing.services.close import Shard, close_cycles
from invoicing.tasks import close_billing_cycles
from tests.builders import ingest, platform_fee, token_plan, tokens, utc
from tests.threads import run_in_threads

pytestmark = pytest.mark.django_db
NOV, DEC = utc(2026, 11, 1), utc(2026, 12, 1)
OPENING, AFTER_NOV = utc(2026, 11, 1, 0, 1), utc(2026, 12, 1, 2)


def subscribed(count: int) -> list[int]:
    plan = token_plan(extra=[platform_fee()])
    ids = []
    for n in range(count):
        customer = customer_create(key=f"c{n}", name=f"C{n}", currency="USD", subjects=[f"s{n}"])
        ids.append(subscription_create(customer=customer, plan=plan, start=NOV).pk)
    ingest([tokens(100 * (n + 1), utc(2026, 11, 3), subject=f"s{n}") for n in range(count)])
    return ids


def invoiced_subscriptions(cycle: int) -> list[int]:
    return sorted(Invoice.objects.filter(cycle=cycle).values_list("subscription_id", flat=True))


def test_each_shard_closes_its_own_subscriptions_and_together_all_of_them_once():
    ids = subscribed(7)
    close_cycles(now=OPENING)
    for index in range(3):
        report = close_cycles(now=AFTER_NOV, shard=Shard(index, 3))
        mine = sorted(pk for pk in ids if pk % 3 == index)
        assert report.subscriptions == len(mine) and report.invoices == len(mine)
        assert sorted(set(invoiced_subscriptions(1)) & set(mine)) == mine
    assert invoiced_subscriptions(1) == sorted(ids)
    again = [close_cycles(now=AFTER_NOV, shard=Shard(index, 3)).invoices for index in range(3)]
    assert again == [0, 0, 0] and Invoice.objects.filter(cycle=1).count() == 7
    assert set(CycleClose.objects.filter(cycle=1).values_list("state", flat=True)) == {"issued"}


def test_a_shard_only_closes_cycles_it_owns_even_when_others_are_due():
    ids = subscribed(4)
    close_cycles(now=OPENING)
    close_cycles(now=AFTER_NOV, shard=Shard(1, 2))
    assert invoiced_subscriptions(1) == sorted(pk for pk in ids if pk % 2 == 1)
    assert not CycleClose.objects.filter(cycle=1, subscription_id__in=[pk for pk in ids if pk % 2 == 0]).exists()


@pytest.mark.parametrize(("index", "count"), [(0, 0), (-1, 2), (2, 2), (5, 3)])
def test_a_shard_outside_its_count_is_refused(index, count):
    with pytest.raises(ValueError, match="no shard"):
        Shard(index, count)


def test_shard_names_read_one_based():
    assert (str(Shard()), str(Shard(1, 4))) == ("1/1", "2/4")


@pytest.fixture
def beat_after_november(monkeypatch):
    """The beat task reads the clock: it runs on 1 December, 02:00."""
    monkeypatch.setattr("invoicing.tasks.timezone", SimpleNamespace(now=lambda: AFTER_NOV))


def test_the_beat_task_queues_the_other_shards_and_every_shard_is_a_job_run(settings, beat_after_november,
                                                                             django_capture_on_commit_callbacks):
    settings.INVOICE_CLOSE_SHARDS = 3
    ids = subscribed(5)
    close_cycles(now=OPENING)
    with django_capture_on_commit_callbacks(execute=True):  # the shards are queued after the commit (eager here)
        close_billing_cycles()
    assert invoiced_subscriptions(1) == sorted(ids)
    runs = JobRun.objects.filter(kind="close_cycles").order_by("pk")
    assert sorted(run.params["shard"] for run in runs) == ["1/3", "2/3", "3/3"]
    assert {run.status for run in runs} == {"succeeded"}
    assert sum(run.result["invoices"] for run in runs) == 5
    assert all(run.message.startswith(f"shard {run.params['shard']}: ") for run in runs)


def test_a_close_started_from_the_admin_runs_every_shard_as_its_requester(settings, beat_after_november,
                                                                           django_user_model,
                                                                           django_capture_on_commit_callbacks):
    settings.INVOICE_CLOSE_SHARDS = 2
    ids = subscribed(4)
    close_cycles(now=OPENING)
    clerk = django_user_model.objects.create_user("clerk", password="x-very-long-password-1")
    started = job_run_create(kind="close_cycles", trigger=JobRun.Trigger.ADMIN, requested_by=clerk)
    with django_capture_on_commit_callbacks(execute=True):
        close_billing_cycles(job_run_id=started.pk)
    assert invoiced_subscriptions(1) == sorted(ids)
    runs = list(JobRun.objects.filter(kind="close_cycles").order_by("pk"))
    assert [run.params.get("shard") for run in runs] == ["1/2", "2/2"] and runs[0].pk == started.pk
    assert {(run.trigger, run.requested_by_id, run.status) for run in runs} == {("admin", clerk.pk, "succeeded")}
    labels = set(InvoiceEvent.objects.filter(invoice__cycle=1, action="issued").values_list("actor_label", flat=True))
    assert labels == {"clerk"}


def test_one_shard_is_one_job_run_without_shard_params(settings, beat_after_november):
    settings.INVOICE_CLOSE_SHARDS = 1
    subscribed(2)
    close_billing_cycles()
    run = JobRun.objects.get(kind="close_cycles")
    assert run.params == {} and run.status == "succeeded" and not run.message.startswith("shard")
    assert run.result["invoices"] == 4  # the opening cycles and November


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_shards_running_at_once_with_a_whole_close_give_one_invoice_per_cycle_and_gapless_numbers():
    ids = subscribed(24)
    close_cycles(now=OPENING)
    barrier = threading.Barrier(4)
    shards = iter([Shard(0, 3), Shard(1, 3), Shard(2, 3), Shard()])
    lock = threading.Lock()

    def close() -> None:
        with lock:
            shard = next(shards)
        barrier.wait()
        close_cycles(now=AFTER_NOV, chunk_size=5, shard=shard)

    assert not run_in_threads(close, 4)
    assert invoiced_subscriptions(1) == sorted(ids)
    numbers = sorted(int(n.rsplit("-", 1)[1]) for n in Invoice.objects.values_list("number", flat=True) if n)
    assert numbers == list(range(1, len(numbers) + 1)) and len(numbers) == Invoice.objects.count()


# --- tasks queued by many commits, sent once per stretch --------------------------------------------------


@pytest.fixture
def sent(monkeypatch):
    calls: list[tuple[str, dict]] = []
    monkeypatch.setattr(queue, "_send", lambda name, kwargs: calls.append((name, kwargs)))
    return calls


def test_enqueue_outside_a_coalesced_block_sends_at_once(sent):
    queue.enqueue("a.task", x=1)
    assert sent == [("a.task", {"x": 1})]


def test_a_coalesced_block_sends_each_distinct_task_once_in_first_asked_order_when_it_ends(sent):
    with queue.enqueues_coalesced():
        queue.enqueue("b.task")
        queue.enqueue("a.task", x=1)
        queue.enqueue("b.task")
        with queue.enqueues_coalesced():  # nested: belongs to the outer block
            queue.enqueue("a.task", x=1)
            queue.enqueue("a.task", x=2)
        assert sent == []
    assert sent == [("b.task", {}), ("a.task", {"x": 1}), ("a.task", {"x": 2})]
    queue.enqueue("b.task")
    assert sent[-1] == ("b.task", {})


def test_a_coalesced_block_that_raises_still_sends_what_it_held(sent):
    with pytest.raises(RuntimeError), queue.enqueues_coalesced():
        queue.enqueue("a.task")
        raise RuntimeError("boom")
    assert sent == [("a.task", {})]


def test_another_threads_enqueues_are_not_held(sent):
    with queue.enqueues_coalesced():
        thread = threading.Thread(target=lambda: queue.enqueue("other.thread"))
        thread.start()
        thread.join()
        assert sent == [("other.thread", {})]


@pytest.mark.django_db(transaction=True)
def test_the_close_dispatches_the_outbox_once_per_chunk_not_once_per_invoice(sent):
    subscribed(5)
    close_cycles(now=OPENING)
    sent.clear()
    report = close_cycles(now=AFTER_NOV, chunk_size=2)
    assert report.invoices == 5
    assert [name for name, _ in sent].count("notifications.dispatch") == 3  # chunks of 2, 2 and 1


@pytest.mark.parametrize("value", ["0", "257", "-1"])
def test_a_shard_count_out_of_range_stops_the_settings(value):
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "INVOICE_CLOSE_SHARDS": value, "DJANGO_SETTINGS_MODULE": "billing_site.settings.base"}
    result = subprocess.run([sys.executable, "-c", "import django; django.setup()"], cwd=root, env=env,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode != 0 and "INVOICE_CLOSE_SHARDS must be 1 to 256" in result.stderr


# --- the command --------------------------------------------------------------------------------------------


def test_the_command_closes_one_shard_and_records_it():
    ids = subscribed(4)
    call_command("close_cycles", "--now", OPENING.isoformat())
    out = io.StringIO()
    call_command("close_cycles", "--now", AFTER_NOV.isoformat(), "--shard", "2/2", stdout=out)
    assert invoiced_subscriptions(1) == sorted(pk for pk in ids if pk % 2 == 1)
    assert "2 subscriptions" in out.getvalue()
    run = JobRun.objects.filter(kind="close_cycles").latest("pk")
    assert run.params["shard"] == "2/2" and run.trigger == "cli"
    call_command("close_cycles", "--now", AFTER_NOV.isoformat(), "--shard", "1/2", stdout=io.StringIO())
    assert invoiced_subscriptions(1) == sorted(ids)


@pytest.mark.parametrize("value", ["0/2", "3/2", "1/0", "1/257", "a/b", "1", "1/2/3", "-1/2", "１/２", "1/2\x00",
                                   "", "99999999999999999999/2", " 1/2"])
def test_the_command_refuses_a_shard_it_cannot_read_and_closes_nothing(value):
    subscribed(2)
    with pytest.raises(CommandError, match="--shard must be I/N"):
        call_command("close_cycles", "--now", AFTER_NOV.isoformat(), f"--shard={value}")
    assert not Invoice.objects.exists() and not JobRun.objects.filter(kind="close_cycles").exists()
