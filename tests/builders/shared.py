"""Data built once for a group of tests that only read it.

A class- or module-scoped fixture builds the data inside an outer transaction; every test then runs inside it (the
``db`` fixture's transaction becomes a savepoint, so what one test changes is rolled back before the next), and the
outer transaction is rolled back when the group ends::

    @pytest.fixture(scope="class")
    def thirty_customers(django_db_setup, django_db_blocker):
        with built_once(django_db_blocker):
            yield build_thirty_customers()

Only for plain ``db`` tests: a ``transaction=True`` test cannot run inside the outer transaction, so keep such tests
out of the group (a class is the simplest boundary). Under pytest-xdist each worker that runs tests of the class
builds the data once for them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from django.db import transaction
from hypothesis.stateful import RuleBasedStateMachine

__all__ = ["built_once", "RolledBackMachine"]


@contextmanager
def built_once(django_db_blocker) -> Iterator[None]:
    with django_db_blocker.unblock(), transaction.atomic():
        yield
        transaction.set_rollback(True)


class RolledBackMachine(RuleBasedStateMachine):
    """A hypothesis state machine whose every example runs inside a savepoint of the test's transaction, rolled back
    at the example's end: what the test built before running the machine is there for every example, and nothing
    an example writes reaches the next. A subclass that checks more at the end calls ``super().teardown()`` last."""

    def __init__(self):
        super().__init__()
        self._atomic = transaction.atomic()
        self._atomic.__enter__()

    def teardown(self):
        transaction.set_rollback(True)
        self._atomic.__exit__(None, None, None)
