from django.apps import AppConfig


class CommonConfig(AppConfig):
    """What every app shares: job runs, problem+json, fields, charts, admin utilities, time formats."""

    name = "common"
    verbose_name = "Operations"

    def ready(self) -> None:
        from .admin.display import install

        install()  # decimals in the admin shown plain (0.00001), in one place
