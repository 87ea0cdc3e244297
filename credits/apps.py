from django.apps import AppConfig


class CreditsConfig(AppConfig):
    name = "credits"
    verbose_name = "Billing — prepaid credits"

    def ready(self) -> None:
        from customers.hooks import ApplySection, register_apply_section, register_credit_provider

        from .admin import extensions as admin_extensions
        from .apply import SECTION, credit_grants_apply, credit_grants_dump
        from .selectors import balance_subquery, gateway_balance

        register_credit_provider(gateway_balance, balance_subquery)
        admin_extensions.register()  # the customer page's balance, grants and buttons
        register_apply_section(ApplySection(SECTION, credit_grants_apply, credit_grants_dump))
