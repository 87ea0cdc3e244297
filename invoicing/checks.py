"""System checks of invoicing settings (``manage.py check`` and every start)."""

from __future__ import annotations

from django.conf import settings
from django.core.checks import Error, register


@register()
def number_prefixes_differ(app_configs=None, **kwargs) -> list[Error]:
    """Invoices and credit notes share the sequence table: the same prefix would interleave their numbers."""
    if settings.INVOICE_NUMBER_PREFIX == settings.CREDIT_NOTE_NUMBER_PREFIX:
        return [Error("INVOICE_NUMBER_PREFIX and CREDIT_NOTE_NUMBER_PREFIX must differ",
                      hint="each document type has its own gapless sequence", id="invoicing.E001")]
    return []
