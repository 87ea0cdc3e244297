"""Reads of the metering app, one module per concern."""
