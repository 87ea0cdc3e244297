"""The admin login lockout's records (django-axes), for superusers only.

Access attempts (who is locked out now: delete one to unlock that username + address), access failures (every
failed login) and access logs (successful logins and logouts); the logs are never edited or deleted here.
Listed under Settings; staff roles never see them, whatever permissions they are given.
"""

from __future__ import annotations

from axes.admin import AccessAttemptAdmin, AccessFailureLogAdmin, AccessLogAdmin
from axes.models import AccessAttempt, AccessFailureLog, AccessLog
from django.contrib import admin
from django.http import HttpRequest


class SuperuserOnlyMixin:
    """Every right on these records needs a superuser (the admin's default needs only the model permission)."""

    def has_module_permission(self, request: HttpRequest) -> bool:
        return request.user.is_active and request.user.is_superuser

    def has_view_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return request.user.is_active and request.user.is_superuser

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False  # records, never edited

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False  # the logs are an audit trail


@admin.register(AccessAttempt)
class LockoutAttemptAdmin(SuperuserOnlyMixin, AccessAttemptAdmin):
    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return request.user.is_active and request.user.is_superuser  # deleting an attempt unlocks its login


@admin.register(AccessFailureLog)
class LockoutFailureAdmin(SuperuserOnlyMixin, AccessFailureLogAdmin):
    pass


@admin.register(AccessLog)
class LockoutLogAdmin(SuperuserOnlyMixin, AccessLogAdmin):
    pass
