"""ASGI entry point. Defaults to the production settings, like ``billing_site.wsgi``."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "billing_site.settings.production")
application = get_asgi_application()
