from django.apps import AppConfig


class InvoicingConfig(AppConfig):
    name = "invoicing"
    verbose_name = "Billing"

    def ready(self) -> None:
        from common.dashboard import register_dashboard
        from credits.hooks import register_purchase
        from customers.hooks import register_unbilled_periods
        from metering.enrichment import register_event_enricher

        from . import checks  # noqa: F401 - registers the system checks
        from .admin import extensions as admin_extensions
        from .selectors.dashboard import dashboard
        from .selectors.enrichment import invoices_of_events, unpriced_events
        from .selectors.guards import register_guards
        from .selectors.settings import stored_stripe_keys
        from .selectors.unbilled import any_cycle_done, unbilled_cycles
        from .services.top_ups import credits_buy
        from .stripe_gateway import register_stored_keys

        register_event_enricher("invoicing", invoices_of_events, order=30)
        register_event_enricher("invoicing-unpriced", unpriced_events, order=25)
        register_dashboard(dashboard)
        register_guards()
        register_stored_keys(stored_stripe_keys)  # Stripe keys entered in Settings → Stripe
        register_unbilled_periods(unbilled_cycles, any_cycle_done)  # ended periods not billed yet: live credits
        register_purchase(credits_buy)  # a "purchased" grant (API, admin) is a top-up billed on its own invoice
        admin_extensions.register()  # the customer, subscription and event pages' invoicing parts
