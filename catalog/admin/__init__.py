"""Catalog screens: features, plans with their rate cards and lifecycle (publish, new version, archive, each
confirmed), rate cards with tiers, a live price preview and a cost calculator."""

from . import costs, features, plans, rate_cards  # noqa: F401 - register the admins
