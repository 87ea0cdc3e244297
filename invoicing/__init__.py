"""Invoices, lines, billing-cycle close, preview, numbering, Stripe push and Stripe webhooks."""
