"""WSGI entry point for gunicorn: ``gunicorn billing_site.wsgi``.

Defaults to the production settings (which refuse to start without real secrets); development goes through
``manage.py`` (``runserver``, ``run_stack``), whose default is ``billing_site.settings.local``.
"""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "billing_site.settings.production")
application = get_wsgi_application()
