"""Admin screens of the customers app."""
