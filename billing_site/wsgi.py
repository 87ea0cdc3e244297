"""WSGI entry point for gunicorn: ``gunicorn billing_site.wsgi``.

Event POSTs that need nothing of Django's request cycle are answered by the ingest fast route in front of it
(:mod:`metering.api.ingest_route`, which holds the rule); everything else goes to Django.

Defaults to the production settings (which refuse to start without real secrets); development goes through
``manage.py`` (``runserver``, ``run_stack``), whose default is ``billing_site.settings.local``.
"""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "billing_site.settings.production")
django_application = get_wsgi_application()

from metering.api.ingest_route import IngestRoute  # noqa: E402 - needs the settings configured and apps loaded

application = IngestRoute(django_application)
