"""Settings shared by every environment, read from the environment with django-environ.

Embedded defaults make a fresh checkout run with no services at all: SQLite under ``var/`` and a Celery
broker on the filesystem under ``var/``. ``DATABASE_URL=postgres://…`` and ``REDIS_URL=redis://…`` switch
the same code to PostgreSQL and Redis.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import environ
from csp.constants import NONCE, NONE, SELF, UNSAFE_INLINE
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent.parent

env = environ.Env()
# A .env file is optional; real environment variables win over it.
env_file = BASE_DIR / ".env"
if env_file.exists():
    environ.Env.read_env(str(env_file), overwrite=False)

VAR_DIR = Path(env.str("VAR_DIR", default=str(BASE_DIR / "var"))).resolve()
VAR_DIR.mkdir(parents=True, exist_ok=True)

# The development default; production settings refuse it (and any other weak key).
DEVELOPMENT_SECRET_KEY = "dev-only-insecure-secret-key-change-me-for-any-real-deployment"  # noqa: S105
SECRET_KEY = env.str("SECRET_KEY", default=DEVELOPMENT_SECRET_KEY)
DEBUG = env.bool("DEBUG", default=False)
ALLOWED_HOSTS: list[str] = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS: list[str] = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "billing_site.apps.BillingAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "django.forms",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_beat",
    "axes",
    "csp",
    "billing_site",
    "common",
    "metering",
    "catalog",
    "customers",
    "credits",
    "invoicing",
    "notifications",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # API requests with NUL or broken UTF-8 in the path or query → 400; chunked bodies read; outages → 503.
    "common.middleware.RequestHygieneMiddleware",
    "common.middleware.ChunkedBodyMiddleware",
    "common.middleware.OutageMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "csp.middleware.CSPMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "axes.middleware.AxesMiddleware",  # last, as django-axes asks: turns a lockout into the lockout page
]

# Widget templates may live in templates/ (e.g. the subject picker).
FORM_RENDERER = "django.forms.renderers.TemplatesSetting"

ROOT_URLCONF = "billing_site.urls"
WSGI_APPLICATION = "billing_site.wsgi.application"
ASGI_APPLICATION = "billing_site.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------------------
DEFAULT_SQLITE_URL = f"sqlite:///{VAR_DIR / 'db.sqlite3'}"


def database_from_url(url: str) -> dict:
    """Parse a database URL and add the options each engine needs to be shared by web, worker and beat."""
    config = environ.Env.db_url_config(url)
    if config["ENGINE"] == "django.db.backends.sqlite3":
        # WAL lets readers run beside the writer; IMMEDIATE takes the write lock at BEGIN, so concurrent
        # writers queue on busy_timeout instead of failing with "database is locked" on lock upgrade.
        config["OPTIONS"] = {
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            "transaction_mode": "IMMEDIATE",
            "timeout": 30,
        }
    elif config["ENGINE"] in ("django.db.backends.postgresql", "django.db.backends.postgresql_psycopg2"):
        config["ENGINE"] = "django.db.backends.postgresql"
        # Persistent connections, replaced when broken (health checks) and renewed every 10 minutes: a new one costs
        # the next request ~10 ms (connecting, PostgreSQL's cold caches, statements prepared again), felt at the p99
        # of the gateway's entitlement check when every worker renewed its connection every minute.
        config["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=600)
        config["CONN_HEALTH_CHECKS"] = True
    return config


DATABASE_URL = env.str("DATABASE_URL", default=DEFAULT_SQLITE_URL)
DATABASES = {"default": database_from_url(DATABASE_URL)}
# The gateway's hot reads are prepared on PostgreSQL (common.prepared); off behind a pooler in transaction mode that
# does not keep prepared statements (PgBouncer before 1.22, or its max_prepared_statements = 0).
DATABASE_PREPARED_STATEMENTS = env.bool("DATABASE_PREPARED_STATEMENTS", default=True)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Auth, i18n, time ------------------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LANGUAGE_CODE = "en-us"
USE_I18N = True
USE_TZ = True
TIME_ZONE = "UTC"
LOGIN_URL = "admin:login"
# django-axes first: it refuses a login for a locked-out username + IP before any password is checked.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]

# --- Admin login lockout (django-axes) -------------------------------------------------------------
# After AXES_FAILURE_LIMIT failed logins for one username from one client address, that pair is refused (429,
# even with the right password) until AXES_COOLOFF_MINUTES have passed since its last failure. Other users,
# and the same user from another address, are not affected. Superusers see the attempts in the admin
# (Settings → Access attempts / Access failures / Access logs) and unlock a pair by deleting its attempt.
AXES_FAILURE_LIMIT = env.int("AXES_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = timedelta(minutes=env.int("AXES_COOLOFF_MINUTES", default=15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_ENABLE_ACCESS_FAILURE_LOG = True
AXES_VERBOSE = False  # no banner on every manage.py command
AXES_ENABLE_ADMIN = False  # billing_site/admin.py registers its own views of them, for superusers only
AXES_LOCKOUT_CALLABLE = "billing_site.lockout.lockout_response"
AXES_CLIENT_IP_CALLABLE = "billing_site.security.client_ip"
# How many reverse proxies in front of the web server append to X-Forwarded-For. 0: the client address is
# REMOTE_ADDR (a client-sent X-Forwarded-For is ignored); N: the N-th address from the right of X-Forwarded-For.
TRUSTED_PROXY_COUNT = env.int("TRUSTED_PROXY_COUNT", default=0)

# --- Static files ----------------------------------------------------------------------------------
STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = VAR_DIR / "static"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

# --- Celery ----------------------------------------------------------------------------------------
REDIS_URL = env.str("REDIS_URL", default="")
CELERY_FILESYSTEM_DIR = VAR_DIR / "celery"


def filesystem_broker_options(root: Path) -> dict:
    """kombu's filesystem transport: needs its folders to exist and an absolute control folder."""
    queue_dir = root / "queue"
    control_dir = root / "control"
    processed_dir = root / "processed"
    for folder in (queue_dir, control_dir, processed_dir):
        folder.mkdir(parents=True, exist_ok=True)
    return {
        "data_folder_in": str(queue_dir),
        "data_folder_out": str(queue_dir),
        "control_folder": str(control_dir.resolve()),
        "processed_folder": str(processed_dir),
        "store_processed": False,
    }


if REDIS_URL:
    CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default=REDIS_URL)
    CELERY_RESULT_BACKEND = env.str("CELERY_RESULT_BACKEND", default=REDIS_URL)
    CELERY_BROKER_TRANSPORT_OPTIONS: dict = {"visibility_timeout": 3600}
else:
    CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="filesystem://")
    CELERY_BROKER_TRANSPORT_OPTIONS = (
        filesystem_broker_options(CELERY_FILESYSTEM_DIR) if CELERY_BROKER_URL == "filesystem://" else {}
    )
    results_dir = CELERY_FILESYSTEM_DIR / "results"
    results_dir.mkdir(parents=True, exist_ok=True)
    CELERY_RESULT_BACKEND = env.str("CELERY_RESULT_BACKEND", default=f"file://{results_dir}")

CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_RESULT_EXPIRES = 24 * 3600
CELERY_TIMEZONE = "UTC"
CELERY_ENABLE_UTC = True
# Jobs are idempotent, so a task whose worker died is safely redelivered rather than lost.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_TIME_LIMIT = env.int("CELERY_TASK_TIME_LIMIT", default=30 * 60)
CELERY_TASK_SOFT_TIME_LIMIT = env.int("CELERY_TASK_SOFT_TIME_LIMIT", default=25 * 60)
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_TASK_ALWAYS_EAGER = False

# --- Caches ----------------------------------------------------------------------------------------
CACHES = {
    "default": (
        {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}
        if REDIS_URL
        else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
    )
}

# --- REST API --------------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "metering.authentication.BearerTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["metering.authentication.HasScope"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["common.parsers.JsonBodyParser"],  # UTF-8, at most 64 levels deep, no NUL
    "EXCEPTION_HANDLER": "common.problems.problem_exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": None,
}
# API throttles (metering/throttles.py), counted in the "default" cache: shared by every worker on Redis; with
# locmem (no REDIS_URL) each process counts alone. Failed Bearer authentications per client IP per minute before
# 429 (0: off); proxies in front of the app whose X-Forwarded-For is trusted (0: REMOTE_ADDR only); the window
# over which a token's ingest rate limit (events per second) is counted.
API_AUTH_FAILURES_PER_MINUTE = env.int("API_AUTH_FAILURES_PER_MINUTE", default=20)
API_TRUSTED_PROXIES = env.int("API_TRUSTED_PROXIES", default=0)
API_INGEST_RATE_WINDOW_SECONDS = env.int("API_INGEST_RATE_WINDOW_SECONDS", default=10)
API_THROTTLE_CACHE = "default"
SPECTACULAR_SETTINGS = {
    "TITLE": "Billing back office API",
    "DESCRIPTION": "OpenMeter-compatible ingest, meters, usage, entitlements and invoices. Errors are "
                   "`application/problem+json` (RFC 9457). Fuzzed against this schema by schemathesis in CI.",
    "VERSION": "1",
    # 3.1: JSON Schema's propertyNames, null types and const say exactly what the handlers accept.
    "OAS_VERSION": "3.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "metering.api.schema.postprocess",
    ],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# The OpenAPI schema (/api/schema/) and its docs (/api/docs/, /api/redoc/) need a staff session or a token with
# the read scope; true publishes them to anyone.
API_DOCS_PUBLIC = env.bool("API_DOCS_PUBLIC", default=False)

# --- Content-Security-Policy (django-csp) ---------------------------------------------------------
# Scripts only from this site (no inline script anywhere, no eval); <style> elements only from files or with the
# response's nonce; style="" attributes are allowed (server-rendered tables and SVG charts use them, and they
# cannot run code). Nothing may frame the pages; forms post only here.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF, NONCE],
        "style-src-attr": [UNSAFE_INLINE],
        "img-src": [SELF, "data:"],
        "font-src": [SELF, "data:"],
        "connect-src": [SELF],
        "object-src": [NONE],
        "base-uri": [NONE],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    },
}

# --- Logging ---------------------------------------------------------------------------------------
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}, "axes": {"level": "WARNING"}},
}

# --- Billing ---------------------------------------------------------------------------------------
# Large ingest batches: the ingest view reads the body itself and enforces its own limits.
DATA_UPLOAD_MAX_MEMORY_SIZE = 6 * 1024 * 1024

# --- Usage on the gateway's hot path (metering.selectors.live_usage) --------------------------------
# Each process remembers the settled part of a period's usage (what the aggregator has rolled up) and reads only
# newer events live. On SQLite (where it cannot grow with the newest events) a remembered part is read again once
# the aggregator has moved on and it is this old...
USAGE_SETTLED_REFRESH_SECONDS = env.float("USAGE_SETTLED_REFRESH_SECONDS", default=10.0)
# ... and, everywhere, after between half of this many seconds and all of them; at most this many parts per process.
# Reading a part again makes that check a cold one (4-7 ms instead of ~1.5): at 300 s a worker keeping 2,000 parts
# (1,000 customers, two metered features) read ~9 of them again every second, so the age is an hour (a part is also
# read again when the rollups are reset, and a changed meter, attribution or period is another part).
USAGE_SETTLED_MAX_SECONDS = env.float("USAGE_SETTLED_MAX_SECONDS", default=3600.0)
USAGE_SETTLED_CACHE_SIZE = env.int("USAGE_SETTLED_CACHE_SIZE", default=50_000)

# --- Invoicing -------------------------------------------------------------------------------------
# A period closes this long after its end, so events that arrive a little late still land on its invoice.
INVOICE_GRACE_PERIOD_SECONDS = env.int("INVOICE_GRACE_PERIOD_SECONDS", default=3600)
# 0: issue invoices as soon as a cycle closes; N > 0: keep them as drafts for review for N hours, then issue.
INVOICE_DRAFT_REVIEW_HOURS = env.int("INVOICE_DRAFT_REVIEW_HOURS", default=0)
INVOICE_NUMBER_PREFIX = env.str("INVOICE_NUMBER_PREFIX", default="INV")
# Credit notes have their own gapless sequence (CN-2026-000001).
CREDIT_NOTE_NUMBER_PREFIX = env.str("CREDIT_NOTE_NUMBER_PREFIX", default="CN")
# A cycle whose invoice would have no non-zero line is recorded as "nothing to bill"; true issues it anyway.
INVOICE_ISSUE_ZERO_TOTAL = env.bool("INVOICE_ISSUE_ZERO_TOTAL", default=False)
# How far back late-arriving usage is looked for (periods already invoiced).
INVOICE_LATE_USAGE_LOOKBACK_DAYS = env.int("INVOICE_LATE_USAGE_LOOKBACK_DAYS", default=90)
INVOICE_CLOSE_CHUNK_SIZE = env.int("INVOICE_CLOSE_CHUNK_SIZE", default=500)
# How many tasks one month-end close is split into (by subscription id), for as many worker processes to share:
# one close process keeps a single core busy, half on Python and half waiting on PostgreSQL.
INVOICE_CLOSE_SHARDS = env.int("INVOICE_CLOSE_SHARDS", default=1)
if not 1 <= INVOICE_CLOSE_SHARDS <= 256:
    raise ImproperlyConfigured(f"INVOICE_CLOSE_SHARDS must be 1 to 256, not {INVOICE_CLOSE_SHARDS}")

# --- Prepaid credits -------------------------------------------------------------------------------
# A grant's remainder is written off this long after its expiry (the close of the period it covered, at the
# period's end plus the grace period, may still burn it for that period's usage).
CREDITS_EXPIRY_DELAY_SECONDS = env.int("CREDITS_EXPIRY_DELAY_SECONDS", default=INVOICE_GRACE_PERIOD_SECONDS + 3600)

# --- Stripe ----------------------------------------------------------------------------------------
# Without STRIPE_API_KEY the system runs in sandbox mode: invoices stay local.
STRIPE_API_KEY = env.str("STRIPE_API_KEY", default="")
STRIPE_WEBHOOK_SECRET = env.str("STRIPE_WEBHOOK_SECRET", default="")
STRIPE_API_BASE = env.str("STRIPE_API_BASE", default="")
STRIPE_IDEMPOTENCY_PREFIX = env.str("STRIPE_IDEMPOTENCY_PREFIX", default="")
# Secrets stored in the database (Stripe keys entered in Settings → Stripe) are encrypted with a key derived from
# this, or from SECRET_KEY when it is empty (common/crypto.py).
FIELD_ENCRYPTION_KEY = env.str("FIELD_ENCRYPTION_KEY", default="")

# --- Notifications (outbound webhooks, alerts, emails, customer portal) -------------------------------------
BILLING_FROM_EMAIL = env.str("BILLING_FROM_EMAIL", default="billing@localhost")
DEFAULT_FROM_EMAIL = BILLING_FROM_EMAIL
EMAIL_BACKEND = env.str("EMAIL_BACKEND", default="django.core.mail.backends.console.EmailBackend")
# Webhook URLs: https only unless WEBHOOKS_ALLOW_HTTP; loopback/private/link-local hosts refused unless allowed.
WEBHOOKS_ALLOW_HTTP = env.bool("WEBHOOKS_ALLOW_HTTP", default=False)
WEBHOOKS_ALLOW_PRIVATE_NETWORKS = env.bool("WEBHOOKS_ALLOW_PRIVATE_NETWORKS", default=False)
WEBHOOK_TIMEOUT_SECONDS = env.int("WEBHOOK_TIMEOUT_SECONDS", default=10)
# 8 attempts; waits of 700 s × 2^n (capped at 12 h): the last attempt about 24 h after the first.
WEBHOOK_MAX_ATTEMPTS = env.int("WEBHOOK_MAX_ATTEMPTS", default=8)
WEBHOOK_RETRY_BACKOFF_SECONDS = env.int("WEBHOOK_RETRY_BACKOFF_SECONDS", default=700)
WEBHOOK_RETRY_BACKOFF_MAX_SECONDS = env.int("WEBHOOK_RETRY_BACKOFF_MAX_SECONDS", default=12 * 3600)
WEBHOOK_DISABLE_AFTER_DAYS = env.int("WEBHOOK_DISABLE_AFTER_DAYS", default=5)
WEBHOOK_SECRET_ROTATION_HOURS = env.int("WEBHOOK_SECRET_ROTATION_HOURS", default=24)
ENTITLEMENT_ALERT_THRESHOLDS = env.list("ENTITLEMENT_ALERT_THRESHOLDS", cast=int, default=[50, 80, 100])
ALERTS_RECENT_USAGE_MINUTES = env.int("ALERTS_RECENT_USAGE_MINUTES", default=10)
PORTAL_LINK_DAYS = env.int("PORTAL_LINK_DAYS", default=30)
PORTAL_REQUESTS_PER_MINUTE = env.int("PORTAL_REQUESTS_PER_MINUTE", default=60)
