"""Customers, gateway subjects mapped to them, subscriptions and entitlements."""
