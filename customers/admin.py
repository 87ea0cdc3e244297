"""Billing screens: customers with "Include usage from", Kong consumers, subscriptions, unbilled subjects."""

from __future__ import annotations

import datetime as dt

from django import forms as django_forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.http import HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from catalog.display import plain_number
from common.admin_utils import ViewOnlyAdminMixin
from common.jobs import job_run_create
from common.models import JobRun
from metering.admin import EventAdmin
from metering.models import Event

from . import forms
from .models import Customer, KongConsumer, SubjectAttribution, Subscription, SubscriptionEvent, UnbilledSubject
from .selectors import (
    active_subscriptions,
    plan_change_proration,
    subscription_entitlements,
    subscription_period_at,
    subscription_review,
    unattributed_subjects,
)
from .services.attributions import AttributionError, attribution_add, attributions_save, consumer_include
from .services.customers import CustomerError, customer_create, customer_update
from .services.subscriptions import (
    SubscriptionError,
    subscription_cancel,
    subscription_change_plan,
    subscription_create,
)


class AttributionInline(admin.TabularInline):
    model = SubjectAttribution
    form = forms.AttributionForm
    formset = forms.AttributionFormSet
    fk_name = "customer"
    extra = 1
    verbose_name = "subject (include usage from)"
    verbose_name_plural = "Include usage from"
    readonly_fields = ("kong_consumer",)
    can_delete = False


class SubscriptionInline(admin.TabularInline):
    model = Subscription
    fk_name = "customer"
    extra = 0
    show_change_link = True
    can_delete = False
    fields = ("plan", "start", "billing_anchor", "cancel_at", "state")
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False

    @admin.display(description="status")
    def state(self, obj: Subscription) -> str:
        return obj.status_at(timezone.now())


@admin.register(Customer)
class CustomerAdmin(admin.ModelAdmin):
    form = forms.CustomerForm
    list_display = ("name", "key", "email", "currency", "subjects", "plans", "collection_method", "stripe_customer_id")
    list_filter = ("currency", "collection_method")
    search_fields = ("key", "name", "email", "attributions__subject")
    inlines = [AttributionInline, SubscriptionInline]
    readonly_fields = ("current_usage",)
    fieldsets = (
        (None, {"fields": (("key", "name"), ("email", "currency"))}),
        (
            "Billing address",
            {
                "fields": ("address_line1", "address_line2", ("city", "state"), ("postal_code", "country"), "tax_id"),
                "classes": ("collapse",),
            },
        ),
        ("Invoicing", {"fields": (("collection_method", "days_until_due"), "stripe_customer_id", "metadata")}),
        ("Usage this period", {"fields": ("current_usage",)}),
    )

    def get_readonly_fields(self, request, obj=None):
        return ("key", *self.readonly_fields) if obj else self.readonly_fields

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("attributions", "subscriptions__plan")

    @admin.display(description="include usage from")
    def subjects(self, obj: Customer) -> str:
        return ", ".join(a.subject for a in obj.attributions.all() if a.end is None)

    @admin.display(description="plans")
    def plans(self, obj: Customer) -> str:
        now = timezone.now()
        return ", ".join(
            f"{s.plan.key} v{s.plan.version}"
            for s in obj.subscriptions.all()
            if s.status_at(now) in ("active", "canceling", "scheduled")
        )

    @admin.display(description="current usage")
    def current_usage(self, obj: Customer) -> str:
        """Per metered feature of each active subscription: usage so far this period by day, against the
        entitlement limit; other entitlements as access."""
        if not obj.pk:
            return "—"
        now = timezone.now()
        rows, charts = [], []
        for subscription in active_subscriptions(obj, now):
            period = subscription_period_at(subscription, now)
            values = dict(subscription_entitlements(subscription, now))
            features = {}
            for rate_card in subscription.plan.rate_cards.select_related("feature", "feature__meter"):
                if rate_card.feature_id and rate_card.feature.meter_id:
                    features.setdefault(rate_card.feature.key, (rate_card.feature, None))
                if rate_card in values and values[rate_card].kind == "metered":
                    features[rate_card.feature.key] = (rate_card.feature, values[rate_card])
            for rate_card, value in values.items():
                if value.kind == "metered":
                    shown = (
                        f"{plain_number(value.usage)} of {plain_number(value.limit)} "
                        f"({'soft' if value.soft else 'hard'} limit)"
                    )
                else:
                    shown = "access" if value.has_access else "no access"
                rows.append(
                    (
                        subscription.plan.key,
                        rate_card.feature.key,
                        shown,
                        f"{period.start:%Y-%m-%d} – {period.end:%Y-%m-%d}" if period else "",
                    )
                )
            if period is not None:
                for key, (feature, value) in sorted(features.items()):
                    charts.append(
                        (
                            f"{key} ({subscription.plan.key}) by day this period",
                            usage_chart(obj, feature, period.start, period.end, limit=value.limit if value else None),
                        )
                    )
        if not rows and not charts:
            return "No active subscription with entitlements."
        table = (
            format_html(
                "<table><tr><th>plan</th><th>feature</th><th>usage / entitlement</th><th>period</th></tr>{}</table>",
                format_html_join("", "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>", rows),
            )
            if rows
            else ""
        )
        return format_html("{}{}", table, format_html_join("", '<h4 style="margin:8px 0 2px">{}</h4>{}', charts))

    def save_model(self, request, obj, form, change):
        data = {k: v for k, v in form.cleaned_data.items() if k in form.Meta.fields}
        try:
            if change:
                data.pop("key", None)
                saved = customer_update(customer=Customer.objects.get(pk=obj.pk), **data)
            else:
                saved = customer_create(**data)
        except CustomerError as exc:  # the form ran the same rules; this is a race
            raise ValueError(str(exc)) from exc
        obj.pk = saved.pk
        obj.refresh_from_db()

    def save_formset(self, request, form, formset, change):
        """The "Include usage from" rows were checked as one batch in the formset's ``clean``; save them through
        the service and tell the admin log what was added and changed."""
        if formset.model is not SubjectAttribution:
            return super().save_formset(request, form, formset, change)
        pairs = formset.attribution_changes
        saved = attributions_save(customer=form.instance, changes=[c for _, c in pairs])
        formset.new_objects, formset.changed_objects, formset.deleted_objects = [], [], []
        for (inline_form, attribution_change), attribution in zip(pairs, saved, strict=True):
            if attribution_change.attribution is None:
                formset.new_objects.append(attribution)
            else:
                fields = [name for name in ("start", "end") if name in inline_form.changed_data]
                formset.changed_objects.append((attribution, fields))
        return None


@admin.register(KongConsumer)
class KongConsumerAdmin(admin.ModelAdmin):
    list_display = ("username", "kong_id", "custom_id", "tag_list", "customer", "imported_at")
    search_fields = ("username", "kong_id", "custom_id")
    readonly_fields = ("kong_id", "username", "custom_id", "tags", "admin_url", "imported_at")
    actions = ["include_in_customer"]
    change_list_template = "admin/customers/kongconsumer/change_list.html"

    def has_add_permission(self, request):
        return False

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("attributions__customer")

    @admin.display(description="tags")
    def tag_list(self, obj: KongConsumer) -> str:
        return ", ".join(obj.tags or [])

    @admin.display(description="customer")
    def customer(self, obj: KongConsumer) -> str:
        open_ = [a.customer for a in obj.attributions.all() if a.end is None]
        return str(open_[0]) if open_ else "—"

    def get_urls(self):
        return [
            path("import/", self.admin_site.admin_view(self.import_view), name="customers_kongconsumer_import"),
            *super().get_urls(),
        ]

    def import_view(self, request):
        """Import consumers from a Kong Admin API as a background job that shows progress and its result."""
        if not request.user.has_perm("customers.add_kongconsumer"):
            raise PermissionDenied

        class ImportForm(django_forms.Form):
            admin_url = django_forms.CharField(
                label="Kong Admin API URL", max_length=500, help_text="e.g. http://kong:8001"
            )
            token = django_forms.CharField(
                required=False, widget=django_forms.PasswordInput, help_text="Kong-Admin-Token, when RBAC is on."
            )

            def clean_admin_url(self):
                # Scheme and host only: service names like http://kong:8001 are fine.
                from urllib.parse import urlparse

                value = self.cleaned_data["admin_url"].strip()
                parsed = urlparse(value)
                if parsed.scheme not in ("http", "https") or not parsed.hostname:
                    raise django_forms.ValidationError("Enter an http:// or https:// URL, e.g. http://kong:8001")
                return value

        form = ImportForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            from .tasks import import_kong_consumers

            run = job_run_create(
                kind="import_kong_consumers",
                trigger=JobRun.Trigger.ADMIN,
                params={"admin_url": form.cleaned_data["admin_url"]},
                requested_by=request.user,
            )
            url, token = form.cleaned_data["admin_url"], form.cleaned_data["token"] or None
            transaction.on_commit(lambda: import_kong_consumers.delay(url, token, run.pk))
            self.message_user(request, "Importing consumers; the job's page shows the result.", messages.SUCCESS)
            return HttpResponseRedirect(reverse("admin:common_jobrun_change", args=[run.pk]))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "form": form,
            "title": "Import consumers from Kong",
        }
        return TemplateResponse(request, "admin/customers/kongconsumer/import.html", context)

    class IncludeForm(django_forms.Form):
        customer = django_forms.ModelChoiceField(queryset=Customer.objects.order_by("name"))

    def has_include_permission(self, request) -> bool:
        return request.user.has_perm("customers.change_customer")

    @admin.action(description="Include usage of selected consumers in a customer…", permissions=["include"])
    def include_in_customer(self, request, queryset):
        return _include_subjects_action(
            self, request, queryset, lambda customer, consumer: consumer_include(customer=customer, consumer=consumer)
        )


def usage_chart(customer: Customer, feature, start, end, *, limit=None):
    """Daily usage of a feature for the customer's subjects included in the range (an SVG bar chart)."""
    from common.charts import bar_chart_svg
    from metering.selectors.usage import usage_series

    day = dt.timedelta(days=1)
    first = start.astimezone(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    last = end.astimezone(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    last = last if last == end else last + day
    last = min(last, timezone.now().astimezone(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0) + day)
    subjects = sorted({a.subject for a in customer.attributions.all() if a.clip(first, last)})
    if not subjects:
        return "no subjects"
    rows = usage_series(
        meter=feature.meter,
        subjects=subjects,
        start=first,
        end=last,
        window_size="DAY",
        filters=feature.meter_group_by_filters or None,
    )
    by_day = {row.window_start: row.value for row in rows}
    points, running, cursor = [], 0, first
    while cursor < last:
        running += by_day.get(cursor, 0)
        points.append((f"{cursor:%b %d}", running))
        cursor += day
    return bar_chart_svg(points, limit=limit, limit_label="limit")


def _include_subjects_action(model_admin, request, queryset, include):
    form = KongConsumerAdmin.IncludeForm(request.POST if "customer" in request.POST else None)
    if form.is_bound and form.is_valid():
        customer = form.cleaned_data["customer"]
        done = 0
        for item in queryset:
            try:
                include(customer, item)
                done += 1
            except AttributionError as exc:
                model_admin.message_user(request, str(exc), messages.ERROR)
        model_admin.message_user(request, f"{customer} now includes the usage of {done} more.", messages.SUCCESS)
        return None
    context = {
        **model_admin.admin_site.each_context(request),
        "opts": model_admin.model._meta,
        "form": form,
        "items": queryset,
        "action": request.POST.get("action"),
        "title": "Include usage in which customer?",
        "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
    }
    return TemplateResponse(request, "admin/customers/include_subjects.html", context)


@admin.register(UnbilledSubject)
class UnbilledSubjectAdmin(ViewOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("subject", "event_count", "first_seen", "last_seen")
    search_fields = ("^subject",)
    actions = ["include_in_customer"]

    def get_queryset(self, request):
        return unattributed_subjects()

    def has_include_permission(self, request) -> bool:
        return request.user.has_perm("customers.change_customer")

    @admin.action(description="Include usage of selected subjects in a customer…", permissions=["include"])
    def include_in_customer(self, request, queryset):
        return _include_subjects_action(
            self, request, queryset, lambda customer, item: attribution_add(customer=customer, subject=item.subject)
        )


class SubscriptionLogInline(admin.TabularInline):
    model = SubscriptionEvent
    extra = 0
    can_delete = False
    fields = ("at", "action", "detail", "actor")
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Subscription)
class SubscriptionAdmin(admin.ModelAdmin):
    list_display = ("customer", "plan", "start", "billing_anchor", "state", "cancel_at")
    list_select_related = ("customer", "plan")
    list_filter = ("plan__key", "plan__currency")
    search_fields = ("customer__key", "customer__name", "plan__key")
    readonly_fields = (
        "customer",
        "plan",
        "start",
        "billing_anchor",
        "cancel_at",
        "canceled_at",
        "previous",
        "current_period",
    )
    inlines = [SubscriptionLogInline]
    change_form_template = "admin/customers/subscription/change_form.html"

    @admin.display(description="status")
    def state(self, obj: Subscription) -> str:
        return obj.status_at(timezone.now())

    @admin.display(description="current period")
    def current_period(self, obj: Subscription) -> str:
        period = subscription_period_at(obj, timezone.now())
        return f"{period.start:%Y-%m-%d %H:%M} – {period.end:%Y-%m-%d %H:%M} UTC" if period else "—"

    def has_change_permission(self, request, obj=None):
        return request.method in ("GET", "HEAD") and super().has_view_permission(request, obj)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        extra_context = {
            **(extra_context or {}),
            "show_save": False,
            "show_save_and_continue": False,
            "show_save_and_add_another": False,
        }
        return super().change_view(request, object_id, form_url, extra_context)

    def get_urls(self):
        return [
            path(
                "<int:pk>/cancel/", self.admin_site.admin_view(self.cancel_view), name="customers_subscription_cancel"
            ),
            path(
                "<int:pk>/change-plan/",
                self.admin_site.admin_view(self.change_plan_view),
                name="customers_subscription_change_plan",
            ),
            *super().get_urls(),
        ]

    def _actor(self, request) -> str:
        return request.user.get_username()

    def add_view(self, request, form_url="", extra_context=None):
        """Create with a confirmation step that shows the first billing periods."""
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = forms.SubscriptionCreateForm(request.POST or None, initial={"customer": request.GET.get("customer")})
        review = None
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            if request.POST.get("confirmed") == "yes":
                try:
                    with transaction.atomic():
                        subscription = subscription_create(
                            customer=data["customer"],
                            plan=data["plan"],
                            start=data["start"],
                            billing_anchor=form.anchor_value(),
                            actor=self._actor(request),
                        )
                except SubscriptionError as exc:
                    form.add_error(None, str(exc))
                else:
                    self.message_user(request, f"Subscribed: {subscription}.", messages.SUCCESS)
                    return HttpResponseRedirect(reverse("admin:customers_subscription_change", args=[subscription.pk]))
            else:
                review = subscription_review(customer=data["customer"], plan=data["plan"], start=data["start"],
                                             billing_anchor=form.anchor_value(), now=timezone.now(),
                                             grace=dt.timedelta(seconds=settings.INVOICE_GRACE_PERIOD_SECONDS))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "form": form,
            "review": review,
            "title": "Add subscription",
        }
        return TemplateResponse(request, "admin/customers/subscription/add.html", context)

    def cancel_view(self, request, pk: int):
        if not request.user.has_perm("customers.change_subscription"):
            raise PermissionDenied
        subscription = get_object_or_404(Subscription.objects.select_related("customer", "plan"), pk=pk)
        form = forms.SubscriptionCancelForm(request.POST or None)
        if request.method == "POST" and form.is_valid() and request.POST.get("confirmed") == "yes":
            try:
                subscription_cancel(
                    subscription=subscription, when=form.cleaned_data["when"], actor=self._actor(request)
                )
                self.message_user(
                    request,
                    f"{subscription} canceled ({form.cleaned_data['when'].replace('_', ' ')}).",
                    messages.SUCCESS,
                )
            except SubscriptionError as exc:
                self.message_user(request, str(exc), messages.ERROR)
            return HttpResponseRedirect(reverse("admin:customers_subscription_change", args=[pk]))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "form": form,
            "subscription": subscription,
            "period": subscription_period_at(subscription, timezone.now()),
            "title": f"Cancel {subscription}?",
        }
        return TemplateResponse(request, "admin/customers/subscription/cancel.html", context)

    def change_plan_view(self, request, pk: int):
        if not request.user.has_perm("customers.change_subscription"):
            raise PermissionDenied
        subscription = get_object_or_404(Subscription.objects.select_related("customer", "plan"), pk=pk)
        form = forms.SubscriptionChangeForm(request.POST or None)
        proration = None
        if request.method == "POST" and form.is_valid():
            plan, when = form.cleaned_data["plan"], form.cleaned_data["when"]
            if request.POST.get("confirmed") == "yes":
                try:
                    new = subscription_change_plan(
                        subscription=subscription, plan=plan, when=when, actor=self._actor(request)
                    )
                except SubscriptionError as exc:
                    form.add_error(None, str(exc))
                else:
                    self.message_user(request, f"Plan changed: {new}.", messages.SUCCESS)
                    return HttpResponseRedirect(reverse("admin:customers_subscription_change", args=[new.pk]))
            else:
                proration = (
                    plan_change_proration(subscription=subscription, new_plan=plan, at=timezone.now())
                    if when == "now"
                    else []
                )
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "form": form,
            "subscription": subscription,
            "proration": proration,
            "title": f"Change the plan of {subscription}",
        }
        return TemplateResponse(request, "admin/customers/subscription/change_plan.html", context)


class CustomerEventAdmin(EventAdmin):
    """The event explorer, with the customer each event is billed to (known only at this layer)."""

    list_display = ("time", "type", "subject", "customer", "event_id", "data_preview", "problem", "ingested_at")

    @admin.display(description="customer")
    def customer(self, obj: Event) -> str:
        extras = getattr(obj, "extras", {}) or {}
        return extras.get("customerId") or "—"


admin.site.unregister(Event)
admin.site.register(Event, CustomerEventAdmin)
