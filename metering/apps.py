from django.apps import AppConfig


class MeteringConfig(AppConfig):
    name = "metering"
    verbose_name = "Metering"

    def ready(self) -> None:
        from common.dashboard import register_dashboard

        from .api import schema  # noqa: F401 - registers the OpenAPI auth extension
        from .dashboard import dashboard
        from .enrichment import register_event_enricher
        from .selectors.event_problems import meter_problems

        register_event_enricher("meters", meter_problems, order=10)
        register_dashboard(dashboard)
