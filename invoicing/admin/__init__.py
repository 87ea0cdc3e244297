"""Invoices for finance staff: lists and read-only detail pages of invoices, credit notes, cycle closes and Stripe
webhook events; lifecycle actions (issue, void, paid, uncollectible, reissue, retry sync, credit note, close due
cycles) through the one confirmation mechanism (:mod:`common.admin.confirm`); previews, printable documents, CSV
export and the reconciliation page. What invoicing shows on the customer, subscription and event pages it adds
through :mod:`common.admin.extensions` (see :mod:`.extensions`)."""

from . import credit_notes, cycles, invoices, settings, stripe  # noqa: F401 - register the admins
