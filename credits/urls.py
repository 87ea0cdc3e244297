"""API routes of the credits app."""

from django.urls import path

from .api.views import CustomerCreditsView, CustomerGrantsView, GrantVoidView

urlpatterns = [
    path("api/v1/customers/<str:id_or_key>/credits", CustomerCreditsView.as_view(), name="customer-credits"),
    path("api/v1/customers/<str:id_or_key>/credits/grants", CustomerGrantsView.as_view(), name="credit-grants"),
    path("api/v1/customers/<str:id_or_key>/credits/grants/<str:grant_id>/void", GrantVoidView.as_view(),
         name="credit-grant-void"),
]
