from django.apps import AppConfig


class CustomersConfig(AppConfig):
    name = "customers"
    verbose_name = "Billing — customers"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from metering.enrichment import register_customer_subject_resolver, register_event_enricher

        from .enrichment import customer_of_events, subjects_of_customers

        register_event_enricher("customers", customer_of_events, order=20)
        register_customer_subject_resolver(subjects_of_customers)
