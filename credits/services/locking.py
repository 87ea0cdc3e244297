"""The one lock every credits write takes first."""

from __future__ import annotations

from customers.models import Customer


def lock_customer(customer_id: int) -> None:
    """Inside a transaction: serialize every write of this customer's credits and billing (the same row lock the
    invoicing services take)."""
    list(Customer.objects.select_for_update().filter(pk=customer_id).values_list("pk"))
