"""The Celery app: tenant-aware, so a task runs in the schema of the tenant that queued it.

Its processes log and count like the web's: Django's LOGGING (simtrix.logs: JSON or text, the
tenant tenant-schemas-celery switched to) instead of Celery's own formats, and the metrics of
common.metrics in the same PROMETHEUS_MULTIPROC_DIR, so /metrics adds the worker's Bitrix24
requests to the web's. Error tracking starts with the settings (simtrix.sentry).

A task's lines carry the request id of the request that queued it (a message header, as
tenant-schemas-celery sends the schema), so one id finds a bridge request and the Bitrix24 work
it caused (a retry keeps it); a task no request queued (beat's) uses its own task id.

A worker keeps its database connections from task to task (CELERY_DB_REUSE_MAX), closing them
by Django's rules for a request's (CONN_MAX_AGE, broken ones) after each task.
"""

from __future__ import annotations

import logging.config
import os
from contextvars import Token
from typing import Any

from celery.signals import (
    before_task_publish,
    setup_logging,
    task_postrun,
    task_prerun,
    worker_process_shutdown,
)
from django.conf import settings
from django.db import close_old_connections
from tenant_schemas_celery.app import CeleryApp

from common.metrics_files import process_dead
from simtrix.request_id import current_request_id, request_id_reset, request_id_set

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "simtrix.settings")

app = CeleryApp("simtrix")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

REQUEST_ID_HEADER = "simtrix_request_id"


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
    process_dead(pid or os.getpid())


@before_task_publish.connect
def _request_id_publish(headers: dict[str, Any] | None = None, **kwargs: Any) -> None:
    request_id = current_request_id()
    if request_id and headers is not None:
        headers.setdefault(REQUEST_ID_HEADER, request_id)


# Task id -> the token that puts the request id back when the task is over.
_request_id_tokens: dict[str, Token[str | None]] = {}


@task_prerun.connect
def _request_id_prerun(task_id: str | None = None, task: Any = None, **kwargs: Any) -> None:
    request = getattr(task, "request", None)
    headers = getattr(request, "headers", None) or {}
    given = headers.get(REQUEST_ID_HEADER) or getattr(request, REQUEST_ID_HEADER, None)
    # An eager task (run inside a request) keeps the request's id.
    request_id = given or current_request_id() or task_id
    if task_id:
        _request_id_tokens[task_id] = request_id_set(request_id)


@task_postrun.connect
def _request_id_postrun(task_id: str | None = None, **kwargs: Any) -> None:
    token = _request_id_tokens.pop(task_id or "", None)
    if token is not None:
        request_id_reset(token)


@task_postrun.connect
def _database_connections_tidy(task: Any = None, **kwargs: Any) -> None:
    """The connections Celery keeps from task to task (CELERY_DB_REUSE_MAX) are closed as a
    request's are when it ends: past CONN_MAX_AGE, or broken (a server gone, a transaction
    left open). An eager task's (inside a request or a test) are its caller's."""
    if not getattr(getattr(task, "request", None), "is_eager", False):
        close_old_connections()
