"""Writes of the catalog app."""
