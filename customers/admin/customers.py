"""Customers: their "Include usage from" subjects (validated as one batch, saved through the attribution
service), subscriptions and usage this period. Higher apps add panels and buttons (e.g. invoicing's invoice
preview) through :mod:`common.admin.extensions`."""

from __future__ import annotations

from django.contrib import admin
from django.utils import timezone

from common.admin.extensions import ExtensibleAdminMixin
from common.admin.refusals import ServiceErrorsMixin, refusals

from .. import forms
from ..models import Customer, SubjectAttribution, Subscription
from ..services.attributions import attributions_save
from ..services.customers import customer_create, customer_update
from .usage import current_usage


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
class CustomerAdmin(ExtensibleAdminMixin, ServiceErrorsMixin, admin.ModelAdmin):
    form = forms.CustomerForm
    list_display = ("name", "key", "email", "currency", "subjects", "plans", "collection_method", "stripe_customer_id")
    list_filter = ("currency", "collection_method")
    search_fields = ("key", "name", "email", "attributions__subject")
    inlines = [AttributionInline, SubscriptionInline]
    readonly_fields = ("current_usage",)
    fieldsets = (
        (None, {"fields": (("key", "name"), ("email", "currency"))}),
        ("Billing address", {
            "fields": ("address_line1", "address_line2", ("city", "state"), ("postal_code", "country"), "tax_id"),
            "classes": ("collapse",),
        }),
        ("Invoicing", {"fields": (("collection_method", "days_until_due"), "stripe_customer_id", "metadata")}),
        ("Usage this period", {"fields": ("current_usage",)}),
    )
    change_form_template = "admin/customers/customer/change_form.html"

    def get_readonly_fields(self, request, obj=None):
        fields = super().get_readonly_fields(request, obj)
        return ("key", *fields) if obj else fields

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("attributions", "subscriptions__plan")

    @admin.display(description="include usage from")
    def subjects(self, obj: Customer) -> str:
        return ", ".join(a.subject for a in obj.attributions.all() if a.end is None)

    @admin.display(description="plans")
    def plans(self, obj: Customer) -> str:
        now = timezone.now()
        return ", ".join(f"{s.plan.key} v{s.plan.version}" for s in obj.subscriptions.all()
                         if s.status_at(now) in ("active", "canceling", "scheduled"))

    @admin.display(description="current usage")
    def current_usage(self, obj: Customer) -> str:
        return current_usage(obj)

    def save_model(self, request, obj, form, change):
        """Through the customer services; a refusal (a race with the form's checks) is a form error."""
        data = {k: v for k, v in form.cleaned_data.items() if k in form.Meta.fields}
        with refusals():
            if change:
                data.pop("key", None)
                saved = customer_update(customer=Customer.objects.get(pk=obj.pk), **data)
            else:
                saved = customer_create(**data)
        obj.pk = saved.pk
        obj.refresh_from_db()

    def save_formset(self, request, form, formset, change):
        """The "Include usage from" rows were checked as one batch in the formset's ``clean``; save them through
        the service (a refusal now, a race, undoes the whole save and is a form error) and tell the admin log
        what was added and changed."""
        if formset.model is not SubjectAttribution:
            return super().save_formset(request, form, formset, change)
        pairs = formset.attribution_changes
        with refusals():
            saved = attributions_save(customer=form.instance, changes=[c for _, c in pairs])
        formset.new_objects, formset.changed_objects, formset.deleted_objects = [], [], []
        for (inline_form, attribution_change), attribution in zip(pairs, saved, strict=True):
            if attribution_change.attribution is None:
                formset.new_objects.append(attribution)
            else:
                fields = [name for name in ("start", "end") if name in inline_form.changed_data]
                formset.changed_objects.append((attribution, fields))
        return None
