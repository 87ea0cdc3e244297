"""What credits adds to the customer page (registered from ``CreditsConfig.ready()``): the balance, what is
available, each grant with what is left of it, a burn-down chart of the ledger, and the buttons *Grant credits*
and *Credits ledger*."""

from __future__ import annotations

from decimal import Decimal

from django.contrib import admin
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from catalog.money import format_major, to_major
from common.admin.extensions import ObjectTool, Panel, PanelField, register_admin_extension, row_and_admin_url
from common.admin.utils import saved_only
from common.charts import bar_chart_svg
from customers.models import Customer

from ..models import LedgerEntry, LowBalanceAlert
from ..selectors import customer_credits, grant_status

VIEW_PERMISSION = "credits.view_creditgrant"
MANAGE_PERMISSION = "credits.manage_credits"
CHART_POINTS = 60


@admin.display(description="balance")
@saved_only
def credits_balance(customer: Customer) -> str:
    credits = customer_credits(customer, timezone.now())
    currency = customer.currency
    return format_html(
        '<span id="credits-balance">{} {}</span> — available <span id="credits-available">{} {}</span> '
        "(less this period's usage not yet invoiced: {} {})",
        format_major(credits.balance, currency), currency, format_major(credits.available, currency), currency,
        format_major(credits.pending_usage, currency), currency)


@admin.display(description="grants")
@saved_only
def credits_grants(customer: Customer) -> str:
    credits = customer_credits(customer, timezone.now())
    if not credits.states:
        return "No prepaid credits."
    rows = ((reverse("admin:credits_creditgrant_change", args=[state.grant.pk]), state.grant.pk,
             state.grant.get_source_display(), format_major(state.grant.amount, state.grant.currency),
             format_major(state.remaining, state.grant.currency), state.grant.priority,
             f"{state.grant.effective_at:%Y-%m-%d}",
             f"{state.grant.expires_at:%Y-%m-%d}" if state.grant.expires_at else "never",
             ", ".join(state.grant.applies_to or []) or "every charge", grant_status(state))
            for state in credits.states)
    return format_html(
        '<table id="credits-grants"><tr><th>grant</th><th>source</th><th>amount</th><th>remaining</th>'
        "<th>priority</th><th>from</th><th>expires</th><th>applies to</th><th>status</th></tr>{}</table>",
        format_html_join("", '<tr><td><a href="{}">#{}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>'
                             "<td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>", rows))


@admin.display(description="low-credit alert")
@saved_only
def credits_low_alert(customer: Customer) -> str:
    """The customer's credits.low threshold and state, with a link to set or change it."""
    alert, url = row_and_admin_url(LowBalanceAlert, "customer", customer)
    if alert is None:
        return format_html('None: credits.low is not announced. <a href="{}" id="credits-low-alert">Set one</a>', url)
    state = (f"announced {alert.low_since:%Y-%m-%d %H:%M} UTC (re-armed when available is back at or above it)"
             if alert.low_since else "armed")
    return format_html('credits.low below {} {} — {}{}. <a href="{}" id="credits-low-alert">Change</a>',
                       format_major(alert.threshold, customer.currency), customer.currency, state,
                       "" if alert.enabled else " (disabled)", url)


@admin.display(description="burn-down")
@saved_only
def credits_chart(customer: Customer) -> str:
    """The ledger balance after each day with entries (the last ``CHART_POINTS`` such days)."""
    entries = list(LedgerEntry.objects.filter(customer=customer).order_by("at", "id").values_list("at", "amount"))
    if not entries:
        return "—"
    by_day: dict[str, int] = {}
    running = 0
    for at, amount in entries:
        running += amount
        by_day[f"{at:%Y-%m-%d}"] = running
    points = [(day, to_major(balance, customer.currency)) for day, balance in list(by_day.items())[-CHART_POINTS:]]
    return bar_chart_svg([(day, max(value, Decimal(0))) for day, value in points], unit=f" {customer.currency}")


def register() -> None:
    register_admin_extension(
        Customer, "credits",
        panels=[Panel("Prepaid credits", [PanelField(credits_balance, permission=VIEW_PERMISSION),
                                          PanelField(credits_grants, permission=VIEW_PERMISSION),
                                          PanelField(credits_low_alert, permission=VIEW_PERMISSION),
                                          PanelField(credits_chart, permission=VIEW_PERMISSION)])],
        object_tools=[
            ObjectTool("Grant credits", lambda customer: reverse("admin:credits_creditgrant_add")
                       + f"?customer={customer.pk}", element_id="grant-credits", permission=MANAGE_PERMISSION),
            ObjectTool("Credits ledger", lambda customer: reverse("admin:credits_ledgerentry_changelist")
                       + f"?customer__id__exact={customer.pk}", element_id="credits-ledger",
                       permission=VIEW_PERMISSION),
        ],
    )
