"""Breadcrumbs that read like the menu: ``Home › Billing › Customers``, the model's section of the navigation
(``billing_site.admin_site.SECTIONS``) rather than its Django app's name."""

from __future__ import annotations

from typing import Any

from django import template

from ..admin_site import SECTIONS, Link

register = template.Library()

_SECTION_OF: dict[tuple[str, str], str] = {
    entry: title for title, entries in SECTIONS for entry in entries if not isinstance(entry, Link)
}


@register.simple_tag
def menu_section(opts: Any) -> str:
    """The menu section that lists ``opts``' model (its app's name for a model the menu does not list)."""
    if opts is None:
        return ""
    return _SECTION_OF.get((opts.app_label, opts.model_name), str(opts.app_config.verbose_name))
