from django.apps import AppConfig


class CatalogConfig(AppConfig):
    name = "catalog"
    verbose_name = "Product catalog"

    def ready(self) -> None:
        from metering.enrichment import register_meter_update_check

        from .checks import meter_change_refusals

        register_meter_update_check(meter_change_refusals)
