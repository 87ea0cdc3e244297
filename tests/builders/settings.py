"""Settings → Company as the document tests fill it in, and small images for the logo."""

from __future__ import annotations

import io
from typing import Any

__all__ = ["ACME", "tiny_jpeg", "tiny_png"]

ACME: dict[str, Any] = {
    "legal_name": "Acme Billing Inc.", "street_line1": "1 Market St", "street_line2": "Suite 300",
    "city": "San Francisco", "region": "CA", "postal_code": "94105", "country": "US", "tax_id": "US 12-3456789",
    "email": "billing@acme.example", "payment_instructions": "Bank: First Bank\nIBAN: DE89 3704 0044 0532 0130 00",
    "invoice_footer": "Thank you for your business.", "locale": "en_US",
}


def _image(kind: str, size: tuple[int, int]) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", size, (20, 90, 160)).save(buffer, format=kind)
    return buffer.getvalue()


def tiny_png(size: tuple[int, int] = (40, 16)) -> bytes:
    return _image("PNG", size)


def tiny_jpeg(size: tuple[int, int] = (40, 16)) -> bytes:
    return _image("JPEG", size)
