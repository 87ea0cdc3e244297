"""Production settings: refuse to start without real secrets, and pass ``manage.py check --deploy``.

``billing_site.wsgi``, ``billing_site.asgi`` and the Celery app default to these settings, so a server started
without ``DJANGO_SETTINGS_MODULE`` either has real secrets or does not start (never DEBUG pages).
"""

from django.core.exceptions import ImproperlyConfigured

from billing_site.security import HOW_TO_GENERATE_A_KEY, hsts_problems, secret_key_problems

from .base import *  # noqa: F403
from .base import DEVELOPMENT_SECRET_KEY, database_from_url, env

_missing = [name for name in ("SECRET_KEY", "ALLOWED_HOSTS", "DATABASE_URL") if not env.str(name, default="")]
if _missing:
    raise ImproperlyConfigured(
        "Production settings need these environment variables: " + ", ".join(_missing)
    )

DEBUG = False
SECRET_KEY = env.str("SECRET_KEY")
_weak = secret_key_problems(SECRET_KEY, development_key=DEVELOPMENT_SECRET_KEY)
if _weak:
    raise ImproperlyConfigured(
        "SECRET_KEY is too weak for production: " + "; ".join(_weak) + ". Generate one with: " + HOW_TO_GENERATE_A_KEY
    )
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS")
DATABASES = {"default": database_from_url(env.str("DATABASE_URL"))}

# Behind a TLS-terminating proxy that sets X-Forwarded-Proto.
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
# Load balancers probe /healthz over plain HTTP.
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
# HSTS for a year, with subdomains and preload by default; preload is refused with less than a year or without
# subdomains (the preload list's own rules). SECURE_HSTS_PRELOAD=false to roll out with a shorter max-age first.
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=365 * 24 * 60 * 60)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=True)
_hsts = hsts_problems(
    seconds=SECURE_HSTS_SECONDS, preload=SECURE_HSTS_PRELOAD, include_subdomains=SECURE_HSTS_INCLUDE_SUBDOMAINS
)
if _hsts:
    raise ImproperlyConfigured("HSTS settings refused: " + "; ".join(_hsts) + ".")
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}
