"""What the customers app adds to the metering admin: the event explorer's "customer" column (registered from
``CustomersConfig.ready()``; metering knows subjects, not customers)."""

from __future__ import annotations

from django.contrib import admin

from common.admin.extensions import ListColumn, register_admin_extension
from metering.admin.events import event_extra
from metering.models import Event


@admin.display(description="customer")
def customer(event: Event) -> str:
    return event_extra(event, "customerId") or "—"


def register() -> None:
    register_admin_extension(Event, "customers", columns=[ListColumn(customer, after="subject")])
