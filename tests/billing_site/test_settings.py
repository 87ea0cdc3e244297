import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings

from billing_site.settings.base import BASE_DIR, database_from_url

pytestmark = pytest.mark.slow  # Python subprocesses

SAFE_KEY = "x7Qk2-very-long-random-production-secret-key-9fJ3mZ0pL5vB8nC1rT6yU4eW2qA"


def run_python(code: str, env: dict) -> subprocess.CompletedProcess:
    base_env = {k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "ALLOWED_HOSTS", "DATABASE_URL")}
    return subprocess.run(
        [sys.executable, "-c", code], cwd=BASE_DIR, env={**base_env, **env}, capture_output=True, text=True,
        timeout=120,
    )


def test_default_database_is_sqlite_under_var_with_wal_and_immediate_transactions(tmp_path):
    config = database_from_url(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    assert config["ENGINE"] == "django.db.backends.sqlite3"
    assert config["NAME"] == str(tmp_path / "db.sqlite3")
    assert "journal_mode=WAL" in config["OPTIONS"]["init_command"]
    assert config["OPTIONS"]["transaction_mode"] == "IMMEDIATE"


def test_default_url_points_under_var():
    from billing_site.settings import base

    assert base.DEFAULT_SQLITE_URL.endswith(str(Path(base.VAR_DIR) / "db.sqlite3"))


def test_postgres_url_is_parsed():
    config = database_from_url("postgres://billing:s3cret@db.internal:6543/billing_prod")
    assert config["ENGINE"] == "django.db.backends.postgresql"
    assert (config["HOST"], config["PORT"], config["NAME"]) == ("db.internal", 6543, "billing_prod")
    assert (config["USER"], config["PASSWORD"]) == ("billing", "s3cret")
    assert config["CONN_HEALTH_CHECKS"] is True
    assert config["CONN_MAX_AGE"] == 600  # persistent connections, renewed every 10 minutes


def test_settings_from_environment_switch_database_and_broker():
    result = run_python(
        "import django, os; os.environ['DJANGO_SETTINGS_MODULE']='billing_site.settings.local'; "
        "from django.conf import settings as s; "
        "print(s.DATABASES['default']['ENGINE'], s.CELERY_BROKER_URL, s.CACHES['default']['BACKEND'])",
        {"DATABASE_URL": "postgres://u:p@127.0.0.1:5999/x", "REDIS_URL": "redis://127.0.0.1:6999/3"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [
        "django.db.backends.postgresql", "redis://127.0.0.1:6999/3", "django.core.cache.backends.redis.RedisCache"
    ]


def test_embedded_broker_is_filesystem_with_absolute_existing_folders():
    if os.environ.get("REDIS_URL"):
        assert os.environ["REDIS_URL"] == settings.CELERY_BROKER_URL
        return
    assert settings.CELERY_BROKER_URL == "filesystem://"
    options = settings.CELERY_BROKER_TRANSPORT_OPTIONS
    assert Path(options["control_folder"]).is_absolute()
    for key in ("data_folder_in", "data_folder_out", "control_folder"):
        assert Path(options[key]).is_dir()


def test_production_settings_refuse_to_start_without_secrets():
    result = run_python(
        "import os, django; os.environ['DJANGO_SETTINGS_MODULE']='billing_site.settings.production'; django.setup()",
        {},
    )
    assert result.returncode != 0
    assert "SECRET_KEY, ALLOWED_HOSTS, DATABASE_URL" in result.stderr


def test_production_settings_refuse_when_one_secret_is_missing(tmp_path):
    result = run_python(
        "import os, django; os.environ['DJANGO_SETTINGS_MODULE']='billing_site.settings.production'; django.setup()",
        {"SECRET_KEY": SAFE_KEY, "DATABASE_URL": f"sqlite:///{tmp_path}/p.sqlite3"},
    )
    assert result.returncode != 0
    assert "ALLOWED_HOSTS" in result.stderr
    assert "SECRET_KEY" not in result.stderr.split("need these environment variables:")[-1]


def test_production_settings_pass_check_deploy(tmp_path):
    env = {
        "DJANGO_SETTINGS_MODULE": "billing_site.settings.production",
        "SECRET_KEY": SAFE_KEY,
        "ALLOWED_HOSTS": "billing.example.com",
        "DATABASE_URL": f"sqlite:///{tmp_path}/p.sqlite3",
        "VAR_DIR": str(tmp_path / "var"),
    }
    base_env = {k: v for k, v in os.environ.items() if k not in env}
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=BASE_DIR, env={**base_env, **env}, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


# --- hardened production defaults -----------------------------------------------------------------------------

PRODUCTION_SETUP = (
    "import os, django; os.environ['DJANGO_SETTINGS_MODULE']='billing_site.settings.production'; django.setup(); "
    "from django.conf import settings as s; "
    "print(s.DEBUG, s.SECURE_HSTS_SECONDS, s.SECURE_HSTS_INCLUDE_SUBDOMAINS, s.SECURE_HSTS_PRELOAD)"
)


def production_env(tmp_path, **extra: str) -> dict:
    return {"SECRET_KEY": SAFE_KEY, "ALLOWED_HOSTS": "billing.example.com",
            "DATABASE_URL": f"sqlite:///{tmp_path}/p.sqlite3", "VAR_DIR": str(tmp_path / "var"), **extra}


@pytest.mark.parametrize(("key", "reason"), [
    ("dev-only-insecure-secret-key-change-me-for-any-real-deployment", "it is the development default"),
    ("django-insecure-" + "k3j4h5g6f7d8s9a0q1w2e3r4t5y6u7i8o9p0z1x2c3v4b5n6m7", "starts with 'django-insecure-'"),
    ("Sh0rt-but-random-9fJ3mZ0pL5", "it has 27 characters, fewer than 50"),
    ("ab" * 40, "it has 2 distinct characters, fewer than 5"),
])
def test_production_refuses_a_weak_secret_key(tmp_path, key, reason):
    result = run_python(PRODUCTION_SETUP, production_env(tmp_path, SECRET_KEY=key))
    assert result.returncode != 0
    assert "SECRET_KEY is too weak for production" in result.stderr
    assert reason in result.stderr
    assert "get_random_secret_key" in result.stderr  # how to make a good one
    assert key not in result.stderr  # the key itself is never printed


def test_production_accepts_a_generated_secret_key(tmp_path):
    from django.core.management.utils import get_random_secret_key

    result = run_python(PRODUCTION_SETUP, production_env(tmp_path, SECRET_KEY=get_random_secret_key(), DEBUG="true"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "31536000", "True", "True"]  # DEBUG=true in the environment is ignored


def test_production_refuses_hsts_preload_with_less_than_a_year(tmp_path):
    result = run_python(PRODUCTION_SETUP, production_env(tmp_path, SECURE_HSTS_SECONDS=str(30 * 24 * 3600)))
    assert result.returncode != 0
    assert "SECURE_HSTS_PRELOAD needs SECURE_HSTS_SECONDS of at least 31536000 (a year); it is 2592000" in result.stderr


def test_production_refuses_hsts_preload_without_subdomains(tmp_path):
    result = run_python(PRODUCTION_SETUP, production_env(tmp_path, SECURE_HSTS_INCLUDE_SUBDOMAINS="false"))
    assert result.returncode != 0
    assert "SECURE_HSTS_PRELOAD needs SECURE_HSTS_INCLUDE_SUBDOMAINS=true" in result.stderr


def test_a_short_hsts_max_age_is_allowed_without_preload(tmp_path):
    result = run_python(PRODUCTION_SETUP, production_env(tmp_path, SECURE_HSTS_SECONDS="3600",
                                                         SECURE_HSTS_PRELOAD="false"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "3600", "True", "False"]
