"""Operations → Cycle closes (view only): each subscription's cycles, what closing them did, and any held by an
error; and "Close due cycles now", a confirmed action of the invoice list that runs the close as a tracked job."""

from __future__ import annotations

import datetime as dt

from django.contrib import admin
from django.urls import reverse

from common.admin.confirm import ConfirmAction
from common.admin.utils import ViewOnlyAdminMixin
from common.jobs import job_run_queue
from common.time import period_label

from ..models import CycleClose
from ..tasks import close_billing_cycles
from .actions import ISSUE_PERMISSION

CLOSE = ConfirmAction(  # on the invoice admin: closing cycles issues invoices
    name="close", label="Close due cycles", scope="model", route=("close/", "invoicing_close_cycles"),
    permission=ISSUE_PERMISSION, title="Close due billing cycles now?", submit="Close due cycles",
    explanation="Every subscription period whose end plus the grace period has passed gets its invoice now (the beat "
                "job does this every few minutes anyway). Running it twice never bills a period twice.",
    service=lambda request, _, data: job_run_queue(kind="close_cycles", task_name=close_billing_cycles.name,
                                                   requested_by=request.user),
    done=lambda outcome: "Closing due billing cycles; progress below.",
    redirect=lambda outcome: reverse("admin:common_jobrun_change", args=[outcome.result.pk]),
)


@admin.register(CycleClose)
class CycleCloseAdmin(ViewOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("subscription", "cycle_shown", "state", "invoice", "closed_at", "error_shown")
    list_filter = ("state", ("error", admin.EmptyFieldListFilter))
    search_fields = ("subscription__customer__key", "invoice__number", "error")
    list_select_related = ("subscription__customer", "subscription__plan", "invoice")
    readonly_fields = ("subscription", "cycle_shown", "cycle", "boundary", "state", "invoice", "review_until",
                       "closed_at", "error", "failed_at", "updated_at")

    @admin.display(description="billing period", ordering="boundary")
    def cycle_shown(self, obj: CycleClose) -> str:
        """The period the close billed (its invoice's), or the day the period ended; cycle 0 opens a subscription."""
        if obj.invoice is not None:
            return period_label(obj.invoice.period_start, obj.invoice.period_end)
        if obj.cycle == 0:
            return f"opening, {period_label(obj.boundary, obj.boundary + dt.timedelta(days=1))}"
        return f"period ending {period_label(obj.boundary - dt.timedelta(days=1), obj.boundary)}"

    @admin.display(description="error")
    def error_shown(self, obj: CycleClose) -> str:
        return obj.error if len(obj.error) <= 80 else obj.error[:79] + "…"
