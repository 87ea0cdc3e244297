"""What happened, told to whoever listens: the registry lower apps announce business events through.

``invoicing`` issues invoices, ``customers`` starts subscriptions, ``metering`` sees usage; only the app at the top
(``notifications``) turns those into webhooks and emails. The lower apps call :func:`announce` inside the
transaction that makes the change; listeners registered at app-ready time run right there, in the same
transaction (``notifications`` writes its outbox row), so a rolled-back change announces nothing and a committed
one is never lost. A listener must not call outside services: it records, and work happens after the commit.

``announce("invoice.issued", invoice=invoice)``: the event type and the objects it concerns, as keywords.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Listener = Callable[[str, dict[str, Any]], None]
_listeners: list[Listener] = []


def register_listener(listener: Listener) -> None:
    """Register once (registering the same function again is a no-op)."""
    if listener not in _listeners:
        _listeners.append(listener)


def unregister_listener(listener: Listener) -> None:
    if listener in _listeners:
        _listeners.remove(listener)


def announce(event_type: str, **objects: Any) -> None:
    """Tell every listener, in registration order, inside the caller's transaction."""
    for listener in list(_listeners):
        listener(event_type, objects)
