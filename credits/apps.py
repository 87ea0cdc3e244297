from django.apps import AppConfig


class CreditsConfig(AppConfig):
    name = "credits"
    verbose_name = "Billing — prepaid credits"

    def ready(self) -> None:
        from customers.hooks import register_credit_provider

        from .admin import extensions as admin_extensions
        from .selectors import gateway_credits

        register_credit_provider(gateway_credits)
        admin_extensions.register()  # the customer page's balance, grants and buttons
