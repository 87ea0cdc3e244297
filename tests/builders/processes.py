"""For tests that start the project's own processes (gunicorn, ``run_stack``) on a SQLite file: a migrated file is
made once per run by ``manage.py migrate`` (xdist workers share it: the first to need it makes it, the others wait
for it), and each test works on its own copy.

``migrated_sqlite_template(root)`` returns the migrated file under ``root`` (the ``migrated_sqlite`` fixture in
``tests/conftest.py`` passes the run's temporary root); ``copy_sqlite(template, path)`` copies it with SQLite's
backup API (what the write-ahead log holds is copied too).
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

__all__ = ["process_env", "migrated_sqlite_template", "copy_sqlite"]

ROOT = Path(__file__).resolve().parents[2]


def process_env(var_dir: Path, database_url: str) -> dict[str, str]:
    """The environment of a project process under the development settings: its own database and VAR_DIR, no
    Redis, Celery in memory, no debug pages."""
    env = {k: v for k, v in os.environ.items() if k not in ("DJANGO_SETTINGS_MODULE", "DATABASE_URL", "REDIS_URL")}
    env.update({"DJANGO_SETTINGS_MODULE": "billing_site.settings.local", "DATABASE_URL": database_url,
                "VAR_DIR": str(var_dir), "DEBUG": "false", "CELERY_BROKER_URL": "memory://",
                "CELERY_RESULT_BACKEND": "cache+memory://"})
    return env


def migrated_sqlite_template(root: Path) -> Path:
    template = root / "migrated-template.sqlite3"
    with open(root / "migrated-template.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not template.exists():
            building = root / "migrating.sqlite3"
            building.unlink(missing_ok=True)
            env = process_env(root / "migrate-var", f"sqlite:///{building}")
            subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True,
                           timeout=300)
            copy_sqlite(building, template)
    return template


def copy_sqlite(source: Path, target: Path) -> Path:
    with closing(sqlite3.connect(source)) as src, closing(sqlite3.connect(target)) as dst:
        src.backup(dst)
    return target
