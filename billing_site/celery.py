"""The Celery app. Configuration comes from Django settings (``CELERY_*``); tasks live in each app.

``celery -A billing_site`` defaults to the production settings, like ``billing_site.wsgi``: this module runs first
whenever the ``billing_site`` package is imported (its ``__init__`` imports the app), so its default is the one a
plain ``gunicorn billing_site.wsgi`` gets too. ``manage.py`` sets the development settings before, and ``run_stack``
passes its own settings module to the worker and beat it starts.
"""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "billing_site.settings.production")

app = Celery("billing_site")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
