"""Admin screens of the metering app."""
