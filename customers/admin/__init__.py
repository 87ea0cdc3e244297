"""Billing screens of the customers app: customers with "Include usage from", subscriptions (add with a review,
cancel, change plan), Kong consumers (import, include) and unbilled subjects. What invoicing shows on the
customer and subscription pages it adds through :mod:`common.admin.extensions`."""

from . import customers, kong, subscriptions, unbilled  # noqa: F401 - register the admins
