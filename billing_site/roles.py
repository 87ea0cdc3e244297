"""The three roles finance staff are given, as Django groups (kept in sync by a migration).

- **Finance viewer**: reads everything billing-related; changes nothing.
- **Billing operator**: the viewer's reads, plus meters, the catalog (features, plans, rate cards), customers,
  their subjects and Kong consumers, subscriptions, and invoice previews.
- **Billing admin**: the operator's rights, plus issuing, voiding, marking paid or uncollectible, cycle closes,
  Stripe sync and webhooks, Settings → Company and Stripe, API tokens, webhook endpoints, email templates, job
  runs, and prepaid credits (grant, adjust, void grants; auto top-ups).

The scheduler's internals (django-celery-beat's periodic tasks and schedules) are for superusers only: the admin
shows them under *Operations*, and no role has their permissions.

The same permissions govern the JSON API for a logged-in staff user (``metering.authentication.HasScope``):
``view_<model>`` to read, ``add_``/``change_``/``delete_<model>`` to write, ``invoicing.issue_invoice`` to void or
reissue. Posting events is for API tokens only. README's "API access" section has the role × action matrix;
``tests/security/test_permission_matrix.py`` walks it through the admin and the API.
"""

from __future__ import annotations

VIEW_MODELS = [
    ("metering", "event"), ("metering", "meter"), ("metering", "subjectactivity"), ("metering", "eventtypeactivity"),
    ("catalog", "feature"), ("catalog", "plan"), ("catalog", "ratecard"), ("catalog", "pricetier"),
    ("customers", "customer"), ("customers", "subscription"), ("customers", "subjectattribution"),
    ("customers", "kongconsumer"), ("customers", "unbilledsubject"), ("customers", "subscriptionevent"),
    ("invoicing", "invoice"), ("invoicing", "invoiceline"), ("invoicing", "invoiceevent"),
    ("invoicing", "creditnote"), ("invoicing", "creditnoteline"), ("invoicing", "cycleclose"),
    ("notifications", "webhookendpoint"), ("notifications", "outboxevent"), ("notifications", "delivery"),
    ("notifications", "deliveryattempt"), ("notifications", "firedalert"),
    ("notifications", "customernotificationsettings"), ("notifications", "usagealertrule"),
    ("notifications", "emailtemplate"), ("notifications", "portallink"),
    ("credits", "creditgrant"), ("credits", "ledgerentry"), ("credits", "autotopup"), ("credits", "lowbalancealert"),
]
OPERATOR_MODELS = [
    ("metering", "meter"), ("catalog", "feature"), ("catalog", "plan"), ("catalog", "ratecard"),
    ("catalog", "pricetier"), ("customers", "customer"), ("customers", "subscription"),
    ("customers", "subjectattribution"), ("customers", "kongconsumer"),
    ("notifications", "customernotificationsettings"), ("notifications", "usagealertrule"),
]
ADMIN_MODELS = [("metering", "apitoken"), ("notifications", "webhookendpoint"), ("notifications", "emailtemplate")]
ADMIN_VIEW_ONLY = [("common", "jobrun"), ("invoicing", "stripewebhookevent")]
# Settings → Company and Settings → Stripe (one row each: viewed and changed, never added or deleted).
ADMIN_SETTINGS = [("invoicing", "companyprofile"), ("invoicing", "stripesettings")]


def role_permissions() -> dict[str, list[tuple[str, str]]]:
    """Role name → [(app label, permission codename)]."""
    viewer = [(app, f"view_{model}") for app, model in VIEW_MODELS]
    operator = viewer + [(app, f"{action}_{model}") for app, model in OPERATOR_MODELS
                         for action in ("add", "change", "delete")] + [("invoicing", "preview_invoice")]
    operator += [("notifications", "share_portal_link")]
    admin = operator + [(app, f"{action}_{model}") for app, model in ADMIN_MODELS
                        for action in ("add", "change", "delete", "view")]
    admin += [(app, f"view_{model}") for app, model in ADMIN_VIEW_ONLY] + [("invoicing", "issue_invoice")]
    admin += [(app, f"{action}_{model}") for app, model in ADMIN_SETTINGS for action in ("view", "change")]
    admin += [("notifications", "send_test_event")]
    admin += [("credits", "manage_credits")] + [("credits", f"{action}_{model}") for action in ("add", "change",
                                                                                                 "delete")
                                                for model in ("autotopup", "lowbalancealert")]
    return {"Finance viewer": viewer, "Billing operator": operator, "Billing admin": admin}


def sync_roles(apps) -> None:
    """Create or update the groups with exactly their permissions (works on historical app registries)."""
    from django.contrib.auth.management import create_permissions

    for app_config in apps.get_app_configs():
        # Historical registries have no models module, which create_permissions needs to see.
        original = getattr(app_config, "models_module", None)
        app_config.models_module = original or True
        try:
            create_permissions(app_config, apps=apps, verbosity=0)
        finally:
            app_config.models_module = original
    group_model = apps.get_model("auth", "Group")
    permission_model = apps.get_model("auth", "Permission")
    # One read of every permission (this runs after each migrate, and after each flush in the tests).
    by_name = {(p.content_type.app_label, p.codename): p
               for p in permission_model.objects.select_related("content_type").order_by("id")}
    for name, wanted in role_permissions().items():
        group, _ = group_model.objects.get_or_create(name=name)
        permissions = []
        for app_label, codename in wanted:
            permission = by_name.get((app_label, codename))
            if permission is None:
                raise LookupError(f"role {name}: permission {app_label}.{codename} does not exist")
            permissions.append(permission)
        group.permissions.set(permissions)
