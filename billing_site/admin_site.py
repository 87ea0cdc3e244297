"""The admin as finance staff's workplace: navigation in the order of the seed flow, and a dashboard home.

Navigation: Metering (events, meters, usage explorer) → Product catalog (features, plans) → Billing (customers,
subscriptions, invoices) → Settings (API tokens, connect a gateway, Stripe, job runs, users, and for superusers
the admin login lockout's attempts and logs) → Operations (superusers only: the scheduler's periodic tasks and
schedules).
Only what the user may see is listed (Django's per-model permissions; Operations also needs a superuser).
"""

from __future__ import annotations

import contextlib
from typing import Any, NamedTuple

from django.contrib import admin
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, reverse

from common.dashboard import dashboard_for


class Link(NamedTuple):
    """A navigation entry that is a page, not a model: shown to users with ``permission``."""

    name: str
    url_name: str
    permission: str


# Each section lists models as (app label, model name) and pages as links.
SECTIONS: list[tuple[str, list[tuple[str, str] | Link]]] = [
    (
        "Metering",
        [
            ("metering", "event"),
            ("metering", "meter"),
            Link("Usage explorer", "admin:metering_meter_usage", "metering.view_meter"),
            Link("Margins", "admin:invoicing_margins", "invoicing.view_invoice"),
            ("metering", "subjectactivity"),
            ("metering", "eventtypeactivity"),
        ],
    ),
    ("Product catalog", [("catalog", "feature"), ("catalog", "plan"), ("catalog", "modelcost")]),
    (
        "Billing",
        [
            ("customers", "customer"),
            ("customers", "subscription"),
            ("invoicing", "invoice"),
            ("invoicing", "creditnote"),
            Link("Reconciliation", "admin:invoicing_reconciliation", "invoicing.view_invoice"),
            ("customers", "unbilledsubject"),
            ("customers", "kongconsumer"),
        ],
    ),
    (
        "Settings",
        [
            ("metering", "apitoken"),
            Link("Connect a gateway", "admin:metering_apitoken_connect", "metering.add_apitoken"),
            ("invoicing", "stripewebhookevent"),
            ("common", "jobrun"),
            ("invoicing", "cycleclose"),
            ("auth", "user"),
            ("auth", "group"),
            # The admin login lockout (django-axes): superusers only (billing_site/admin.py).
            ("axes", "accessattempt"),
            ("axes", "accessfailurelog"),
            ("axes", "accesslog"),
        ],
    ),
    (
        "Operations",
        [
            ("django_celery_beat", "periodictask"),
            ("django_celery_beat", "clockedschedule"),
            ("django_celery_beat", "crontabschedule"),
            ("django_celery_beat", "intervalschedule"),
            ("django_celery_beat", "solarschedule"),
        ],
    ),
]
SUPERUSER_SECTIONS = {"Operations"}  # shown to superusers only, whatever permissions a group grants
HIDDEN = {("catalog", "ratecard"), ("catalog", "pricetier"), ("catalog", "pricerow")}


class BillingAdminSite(admin.AdminSite):
    site_header = "Billing back office"
    site_title = "Billing back office"
    index_title = "Dashboard"
    index_template = "admin/billing_index.html"

    def get_app_list(self, request: HttpRequest, app_label: str | None = None) -> list[Any]:
        if app_label is not None:
            return super().get_app_list(request, app_label)
        apps = super().get_app_list(request)
        models = {(app["app_label"], model["object_name"].lower()): model for app in apps for model in app["models"]}
        placed: set[tuple[str, str]] = set()
        sections: list[dict[str, Any]] = []
        for title, entries in SECTIONS:
            if title in SUPERUSER_SECTIONS and not request.user.is_superuser:
                placed.update(entry for entry in entries if not isinstance(entry, Link))
                continue
            items: list[dict[str, Any]] = []
            for entry in entries:
                if isinstance(entry, Link):
                    name, url_name, permission = entry
                    if request.user.has_perm(permission):
                        with contextlib.suppress(NoReverseMatch):
                            items.append(
                                {
                                    "name": name,
                                    "object_name": name.replace(" ", ""),
                                    "perms": {"view": True},
                                    "admin_url": reverse(url_name),
                                    "add_url": None,
                                    "view_only": True,
                                }
                            )
                    continue
                model = models.get(entry)
                if model is not None:
                    items.append(model)
                    placed.add(entry)
            if items:
                sections.append(
                    {
                        "name": title,
                        "app_label": title.lower().replace(" ", "_"),
                        "app_url": "",
                        "has_module_perms": True,
                        "models": items,
                    }
                )
        rest = [model for key, model in models.items() if key not in placed and key not in HIDDEN]
        if rest:
            more = next((s for s in sections if s["name"] == "Settings"), None)
            if more is None:
                more = {
                    "name": "Settings",
                    "app_label": "settings",
                    "app_url": "",
                    "has_module_perms": True,
                    "models": [],
                }
                sections.append(more)
            more["models"] = more["models"] + sorted(rest, key=lambda m: m["name"])
        return sections

    def index(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> TemplateResponse:
        extra_context = {**(extra_context or {}), "dashboard": dashboard_for(request.user)}
        return super().index(request, extra_context)
