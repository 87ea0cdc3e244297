"""Admin screens of the metering app: the event explorer, meters with the usage explorer, API tokens and the
subjects and event types seen. Higher apps add columns to the event explorer through
:mod:`common.admin.extensions` (metering knows subjects, not customers or invoices)."""

from . import activity, events, meters, tokens  # noqa: F401 - register the admins
