"""API routes of the customers app."""

from django.urls import path

from .api.entitlements import EntitlementValueView

urlpatterns = [
    path(
        "api/v1/customers/<str:id_or_key>/entitlements/<str:feature_key>/value",
        EntitlementValueView.as_view(),
        name="entitlement-value",
    ),
]
