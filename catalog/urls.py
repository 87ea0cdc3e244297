"""API routes of the catalog."""

from django.urls import path

from .api.features import FeatureListView
from .api.plans import PlanListView

urlpatterns = [
    path("api/v1/features", FeatureListView.as_view(), name="features"),
    path("api/v1/plans", PlanListView.as_view(), name="plans"),
]
