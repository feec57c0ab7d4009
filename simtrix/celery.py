"""The Celery app: tenant-aware, so a task runs in the schema of the tenant that queued it.

Its processes log and count like the web's: Django's LOGGING (simtrix.logs: JSON or text, the
tenant tenant-schemas-celery switched to) instead of Celery's own formats, and the metrics of
common.metrics in the same PROMETHEUS_MULTIPROC_DIR, so /metrics adds the worker's Bitrix24
requests to the web's. Error tracking starts with the settings (simtrix.sentry).
"""

from __future__ import annotations

import logging.config
import os
from typing import Any

from celery.signals import setup_logging, worker_process_shutdown
from django.conf import settings
from prometheus_client import multiprocess
from tenant_schemas_celery.app import CeleryApp

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "simtrix.settings")

app = CeleryApp("simtrix")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@setup_logging.connect
def _django_logging(loglevel: int | str | None = None, **kwargs: Any) -> None:
    """With a receiver here Celery leaves logging alone: the worker and beat log through
    settings.LOGGING, at the level of their `-l` option as before."""
    logging.config.dictConfig(settings.LOGGING)
    if loglevel:
        logging.getLogger().setLevel(loglevel)


@worker_process_shutdown.connect
def _prometheus_process_dead(pid: int | None = None, **kwargs: Any) -> None:
    """A pool process that ends leaves its counters in the directory (totals never go down) but
    takes its live gauges with it."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(pid or os.getpid())
