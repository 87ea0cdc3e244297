"""The fast routes answered in front of Django (see :mod:`metering.api.fast_route`), in the order they are tried:
``billing_site.wsgi`` serves through them, and the test suite's clients meet them first too."""

from customers.api.entitlement_route import ENTITLEMENT_ROUTE
from metering.api.fast_route import FastRoutes, Route
from metering.api.ingest_route import INGEST_ROUTE

ROUTES: tuple[Route, ...] = (INGEST_ROUTE, ENTITLEMENT_ROUTE)


def with_fast_routes(app) -> FastRoutes:
    """``app`` (Django's WSGI application) behind the fast routes."""
    return FastRoutes(app, ROUTES)
