"""Writes of the customers app."""
