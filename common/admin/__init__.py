"""The admin of the common app (job runs, solar schedules) and the building blocks every app's admin uses:

- :mod:`.confirm` — ``ConfirmActionMixin``: one confirmation page and flow for every dangerous action;
- :mod:`.refusals` — ``ServiceErrorsMixin``: a service's refusal on save or delete is a form error, not a 500;
- :mod:`.extensions` — lower apps' admins offer hooks (list columns, change-page panels and buttons) that
  higher apps fill from their ``AppConfig.ready()``, so each model is registered exactly once;
- :mod:`.utils` — paginator, JSON display, view-only admins, decimal text boxes.
"""

from . import beat, jobs  # noqa: F401 - register the admins
