""""Include usage of the selected … in a customer": the confirmed bulk action of the Kong consumer and unbilled
subject lists (a customer chosen in the action's form)."""

from __future__ import annotations

from collections.abc import Callable

from common.admin.confirm import ConfirmAction

from ..forms import IncludeForm


def include_action(include: Callable) -> ConfirmAction:
    """``include(customer, row)`` is the one attribution service that includes one selected row."""
    return ConfirmAction(
        name="include", label="Include", scope="bulk", permission="customers.change_customer",
        bulk_title="Include usage in which customer?", form_class=IncludeForm, submit="Include",
        explanation="Their usage from now on is billed to the chosen customer.",
        service=lambda request, row, data: include(data["customer"], row),
        done=lambda outcome: f"{outcome.data['customer']} now includes the usage of {len(outcome.done)} more.",
    )
