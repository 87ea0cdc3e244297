"""Credit notes: against the invoice each corrects, numbered, never edited (read-only pages); void and retry
sync are confirmed actions, and a manual credit note is one on the invoice's page."""

from __future__ import annotations

from django.contrib import admin
from django.urls import path

from catalog.money import format_major
from common.admin.confirm import ConfirmAction, ConfirmActionMixin
from common.admin.utils import ViewOnlyAdminMixin
from common.formatting import format_amount

from ..forms import CreditNoteForm, VoidReasonForm
from ..models import CreditNote, CreditNoteLine, Invoice
from ..services.credit_notes import credit_note_create, credit_note_void, creditable_amounts
from ..services.stripe_push import retry_credit_note_sync
from .actions import ISSUE_PERMISSION
from .documents import credit_note_page
from .inlines import LineInline


def _credit_explanation(invoice: Invoice) -> str:
    left = format_major(creditable_amounts([invoice.pk]).get(invoice.pk, 0), invoice.currency)
    return (f"A credit note corrects issued invoice {invoice} ({invoice.customer}) by a manual amount: {left} "
            f"{invoice.currency} is left to credit on it. It does not change what the invoice's periods count as "
            "billed, so the next close does not bill it back. To re-bill a period instead, void the invoice and "
            "reissue it.")


CREDIT = ConfirmAction(  # on the invoice admin: a manual credit note against one invoice
    name="credit-note", label="Credit note", route=("<int:pk>/credit-note/", "invoicing_invoice_credit_note"),
    permission=ISSUE_PERMISSION, title=lambda invoice: f"Credit note against {invoice}", submit="Issue credit note",
    available=lambda invoice: invoice.status in (Invoice.Status.ISSUED, Invoice.Status.PAID,
                                                 Invoice.Status.UNCOLLECTIBLE),
    explanation=_credit_explanation, form_class=CreditNoteForm,
    form_kwargs=lambda request, invoice: {"invoice": invoice},
    service=lambda request, invoice, data: credit_note_create(
        invoice=invoice, amount=data["amount"], reason=data["reason"], description=data["description"],
        actor=request.user),
    done=lambda outcome: f"Credit note {outcome.result} issued against {outcome.obj}.",
)
VOID_NOTE = ConfirmAction(
    name="void", label="Void", permission=ISSUE_PERMISSION, form_class=VoidReasonForm,
    explanation="Void cancels the credit note for good (also in Stripe); the invoice owes its amount again.",
    available=lambda note: note.status == CreditNote.Status.ISSUED,
    service=lambda request, note, data: credit_note_void(credit_note=note, actor=request.user, reason=data["reason"]),
)
RETRY_NOTE_SYNC = ConfirmAction(
    name="retry_sync", label="Retry Stripe sync", permission=ISSUE_PERMISSION,
    explanation="Retry Stripe sync pushes the credit note to Stripe again, continuing where it stopped.",
    available=lambda note: note.sync_status == Invoice.SyncStatus.FAILED,
    service=lambda request, note, data: retry_credit_note_sync(credit_note=note, actor=request.user),
)


class CreditNoteLineInline(LineInline):
    model = CreditNoteLine
    fields = ("kind", "rate_card_key", "description", "period", "quantity_shown", "amount_shown")
    readonly_fields = fields

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("credit_note")

    @admin.display(description="amount credited")
    def amount_shown(self, line: CreditNoteLine) -> str:
        return format_amount(line.amount, line.credit_note.currency)


@admin.register(CreditNote)
class CreditNoteAdmin(ConfirmActionMixin, ViewOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("number", "customer", "invoice", "total_shown", "currency", "status", "issued_at", "sync_status")
    list_filter = ("status", "currency", "sync_status")
    search_fields = ("number", "invoice__number", "customer__key", "customer__name", "reason")
    list_select_related = ("customer", "invoice")
    date_hierarchy = "issued_at"
    inlines = [CreditNoteLineInline]
    readonly_fields = ("number", "status", "invoice", "customer", "currency", "total_shown", "reason", "issued_at",
                       "voided_at", "sync_status", "sync_error", "stripe_credit_note_id", "stripe_status")
    fieldsets = (
        (None, {"fields": (("number", "status"), ("invoice", "customer"), ("currency", "total_shown"), "reason",
                           ("issued_at", "voided_at"))}),
        ("Stripe", {"fields": (("sync_status", "stripe_status"), "sync_error", "stripe_credit_note_id")}),
    )
    confirm_actions = (VOID_NOTE, RETRY_NOTE_SYNC)
    confirm_route = ("<int:pk>/do/<str:action>/", "invoicing_creditnote_do")
    confirm_button_id = "credit-note-{name}"
    change_form_template = "admin/invoicing/creditnote/change_form.html"

    def has_view_permission(self, request, obj=None):
        return super().has_view_permission(request, obj) or request.user.has_perm("invoicing.view_invoice")

    def confirm_row(self, obj: CreditNote) -> str:
        return (f"{obj.customer}, against invoice {obj.invoice}, {format_major(obj.total, obj.currency)} "
                f"{obj.currency}, {obj.get_status_display().lower()}")

    @admin.display(description="total", ordering="total")
    def total_shown(self, obj: CreditNote) -> str:
        return format_amount(obj.total, obj.currency)

    def get_urls(self):
        return [
            path("<int:pk>/print/", self.admin_site.admin_view(self.print_view), name="invoicing_creditnote_print"),
            path("<int:pk>/pdf/", self.admin_site.admin_view(self.pdf_view), name="invoicing_creditnote_pdf"),
            *super().get_urls(),
        ]

    def print_view(self, request, pk: int):
        return credit_note_page(self, request, pk)

    def pdf_view(self, request, pk: int):
        return credit_note_page(self, request, pk, pdf=True)
