"""Settings modules: ``local`` (development default), ``production``, ``test``; all build on ``base``."""
