"""Kong consumers: imported from a Kong Admin API (a tracked background job) and included in customers."""

from __future__ import annotations

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.urls import reverse

from common.admin.confirm import ConfirmAction, ConfirmActionMixin, confirm_bulk_action
from common.jobs import job_run_queue

from ..forms import KongImportForm
from ..models import KongConsumer
from ..services.attributions import consumer_include
from ..tasks import import_kong_consumers
from .include import include_action

IMPORT = ConfirmAction(
    name="import", label="Import", scope="model", route=("import/", "customers_kongconsumer_import"),
    permission="customers.add_kongconsumer", title="Import consumers from Kong", form_class=KongImportForm,
    submit="Import",
    explanation="Reads GET /consumers page by page (following next). Consumers are stored only when every page "
                "arrived; importing again updates them.",
    service=lambda request, _, data: job_run_queue(
        kind="import_kong_consumers", task_name=import_kong_consumers.name, params={"admin_url": data["admin_url"]},
        requested_by=request.user, admin_url=data["admin_url"], token=data["token"] or None),
    done=lambda outcome: "Importing consumers; the job's page shows the result.",
    redirect=lambda outcome: reverse("admin:common_jobrun_change", args=[outcome.result.pk]),
)
INCLUDE = include_action(lambda customer, consumer: consumer_include(customer=customer, consumer=consumer))


@admin.register(KongConsumer)
class KongConsumerAdmin(ConfirmActionMixin, admin.ModelAdmin):
    list_display = ("username", "kong_id", "custom_id", "tag_list", "customer", "imported_at")
    search_fields = ("username", "kong_id", "custom_id")
    readonly_fields = ("kong_id", "username", "custom_id", "tags", "admin_url", "imported_at")
    confirm_actions = (IMPORT, INCLUDE)
    include_in_customer = confirm_bulk_action("include", "Include usage of selected consumers in a customer…")
    actions = ["include_in_customer"]
    change_list_template = "admin/customers/kongconsumer/change_list.html"

    def has_add_permission(self, request):
        return False  # imported, never typed in

    def confirm_denied(self, request, action, obj=None):
        raise PermissionDenied

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("attributions__customer")

    @admin.display(description="tags")
    def tag_list(self, obj: KongConsumer) -> str:
        return ", ".join(obj.tags or [])

    @admin.display(description="customer")
    def customer(self, obj: KongConsumer) -> str:
        open_ = [a.customer for a in obj.attributions.all() if a.end is None]
        return str(open_[0]) if open_ else "—"
