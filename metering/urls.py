"""API routes of the metering app."""


urlpatterns: list = []
