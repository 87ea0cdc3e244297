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
