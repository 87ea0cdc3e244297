from django.apps import AppConfig


class CustomersConfig(AppConfig):
    """Customers, the gateway subjects mapped to them, subscriptions and entitlements. Metering knows subjects, not
    customers: this app tells metering's event views which customer each event is of, and which subjects a customer
    has."""

    name = "customers"
    verbose_name = "Billing"

    def ready(self) -> None:
        from metering.enrichment import register_customer_subject_resolver, register_event_enricher

        from .admin import extensions as admin_extensions
        from .enrichment import customer_of_events, subjects_of_customers

        register_event_enricher("customers", customer_of_events, order=20)
        register_customer_subject_resolver(subjects_of_customers)
        admin_extensions.register()  # the event explorer's customer column
