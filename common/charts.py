"""Server-rendered SVG charts for the admin (no JavaScript, no external assets)."""

from __future__ import annotations

from decimal import Decimal

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe


def bar_chart_svg(points: list[tuple[str, Decimal]], *, width: int = 720, height: int = 180,
                  limit: Decimal | None = None, limit_label: str = "limit", unit: str = "",
                  label: str = "usage chart") -> SafeString:
    """Bars for ``(label, value)`` points; an optional dashed horizontal line for a limit."""
    if not points:
        return mark_safe('<p class="help">No usage in this range.</p>')  # noqa: S308 - constant markup
    top = max([value for _, value in points] + ([limit] if limit is not None else []) + [Decimal(1)])
    margin_left, margin_bottom, margin_top = 60, 28, 12
    plot_width, plot_height = width - margin_left - 8, height - margin_bottom - margin_top
    slot = plot_width / len(points)
    bar_width = max(1.0, slot * 0.8)

    def y_of(value: Decimal) -> float:
        return margin_top + plot_height - float(value / top) * plot_height

    def n(number: float) -> str:  # format_html escapes its arguments, so numbers are formatted first
        return f"{number:.1f}"

    bars = format_html_join(
        "",
        '<rect x="{}" y="{}" width="{}" height="{}" fill="#417690"><title>{}: {}{}</title></rect>',
        ((n(margin_left + i * slot + (slot - bar_width) / 2), n(y_of(value)), n(bar_width),
          n(max(0.0, margin_top + plot_height - y_of(value))), label, f"{value:,}", unit)
         for i, (label, value) in enumerate(points)),
    )
    step = max(1, len(points) // 8)
    labels = format_html_join(
        "",
        '<text x="{}" y="{}" font-size="10" text-anchor="middle" fill="#666">{}</text>',
        ((n(margin_left + i * slot + slot / 2), height - 10, label)
         for i, (label, _) in enumerate(points) if i % step == 0),
    )
    limit_svg = ""
    if limit is not None:
        limit_svg = format_html(
            '<line x1="{}" x2="{}" y1="{}" y2="{}" stroke="#ba2121" stroke-dasharray="4 3"/>'
            '<text x="{}" y="{}" font-size="10" fill="#ba2121" text-anchor="end">{} {}</text>',
            margin_left, width - 8, n(y_of(limit)), n(y_of(limit)), width - 10, n(y_of(limit) - 3), limit_label,
            f"{limit:,}",
        )
    return format_html(
        '<svg xmlns="http://www.w3.org/2000/svg" width="{}" height="{}" viewBox="0 0 {} {}" role="img" '
        'aria-label="{}" class="chart" style="background:#fff;border:1px solid #eee">'
        '<text x="4" y="{}" font-size="10" fill="#666">{}</text><text x="4" y="{}" font-size="10" fill="#666">0</text>'
        '<line x1="{}" x2="{}" y1="{}" y2="{}" stroke="#ccc"/>{}{}{}</svg>',
        width, height, width, height, label, margin_top + 8, f"{top:,}", margin_top + plot_height, margin_left,
        width - 8,
        margin_top + plot_height, margin_top + plot_height, bars, labels, limit_svg,
    )
