"""API routes of the metering app. These paths are contracts gateways depend on."""

from django.urls import path

from .api.events import EventsView, KongEventsView

urlpatterns = [
    path("api/v1/events", EventsView.as_view(), name="events"),
    path("api/v3/openmeter/events", KongEventsView.as_view(), name="kong-events"),
    path("v3/openmeter/events", KongEventsView.as_view(), name="kong-events-short"),
]
