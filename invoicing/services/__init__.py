"""Writes of the invoicing app."""
