"""URL map. Each app owns its API routes; paths here are contracts gateways and scripts depend on."""

from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

from common.views import healthz

from .api_docs import RedocView, SchemaView, SwaggerView

urlpatterns = [
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
    path("healthz", healthz, name="healthz"),
    path("admin/", admin.site.urls),
    # A staff session or a read token, unless API_DOCS_PUBLIC (billing_site/api_docs.py).
    path("api/schema/", SchemaView.as_view(), name="api-schema"),
    path("api/docs/", SwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("api/redoc/", RedocView.as_view(url_name="api-schema"), name="api-redoc"),
    path("", include("metering.urls")),
    path("", include("catalog.urls")),
    path("", include("customers.urls")),
    path("", include("credits.urls")),
    path("", include("invoicing.urls")),
    path("", include("notifications.urls")),
]

handler404 = "common.views.not_found"
handler500 = "common.views.server_failure"
