from django.apps import AppConfig


class NotificationsConfig(AppConfig):
    name = "notifications"
    verbose_name = "Notifications"

    def ready(self) -> None:
        from common.announcements import register_listener
        from common.dashboard import register_dashboard
        from metering.api.schema import register_webhooks

        from .admin import extensions as admin_extensions
        from .event_types import webhook_schemas
        from .services.alerts import on_usage_announcement
        from .services.outbox import on_announcement

        register_listener(on_announcement)
        register_listener(on_usage_announcement)
        register_webhooks(webhook_schemas())
        admin_extensions.register()
        register_dashboard(admin_extensions.dashboard)
