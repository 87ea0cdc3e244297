from django.apps import AppConfig


class CommonConfig(AppConfig):
    """What every app shares: job runs, problem+json, fields, charts, admin utilities, time formats."""

    name = "common"
    verbose_name = "Operations"
