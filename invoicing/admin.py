"""Admin screens of the invoicing app."""
