"""API routes of the metering app. These paths are contracts gateways and scripts depend on."""

from django.urls import path

from .api.events import EventsView, KongEventsAliasView, KongEventsView
from .api.meters import MeterDetailView, MeterListView, MeterQueryView

urlpatterns = [
    path("api/v1/events", EventsView.as_view(), name="events"),
    path("api/v3/openmeter/events", KongEventsView.as_view(), name="kong-events"),
    path("v3/openmeter/events", KongEventsAliasView.as_view(), name="kong-events-short"),
    path("api/v1/meters", MeterListView.as_view(), name="meters"),
    path("api/v1/meters/<str:id_or_slug>", MeterDetailView.as_view(), name="meter"),
    path("api/v1/meters/<str:id_or_slug>/query", MeterQueryView.as_view(), name="meter-query"),
]
