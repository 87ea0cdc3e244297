"""WSGI entry point for gunicorn: ``gunicorn billing_site.wsgi``.

A few hot requests that need nothing of Django's request cycle are answered by fast routes in front of it
(:mod:`billing_site.fast_routes`: the ingest POSTs, :mod:`metering.api.ingest_route`, and the gateway's
entitlement check, :mod:`customers.api.entitlement_route`; the shared machinery is :mod:`metering.api.fast_route`);
everything else goes to Django.

Defaults to the production settings (which refuse to start without real secrets); development goes through
``manage.py`` (``runserver``, ``run_stack``), whose default is ``billing_site.settings.local``.
"""

import gc
import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "billing_site.settings.production")
django_application = get_wsgi_application()

from billing_site.fast_routes import with_fast_routes  # noqa: E402 - needs the settings configured and apps loaded

application = with_fast_routes(django_application)

# What exists once Django is loaded (~140,000 objects: modules, models, URL patterns, settings) lives as long as the
# process, yet every full garbage collection walked all of it: a 65-80 ms pause of the worker on a 2-core machine, in
# which it answers nothing (the p99 of the gateway's entitlement check). Kept out of the collector's reach, a full
# collection walks only what requests and caches made since (~10 ms). Garbage left by the loading is collected first.
gc.collect()
gc.freeze()
