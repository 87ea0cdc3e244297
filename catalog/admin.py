"""Admin screens of the catalog app."""
