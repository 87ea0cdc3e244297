"""Development settings: the default of manage.py, make run and Celery."""

from .base import *  # noqa: F403
from .base import env

DEBUG = env.bool("DEBUG", default=True)
