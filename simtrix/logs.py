"""Log lines that say when, how bad, where and for whom: time, level, logger, the tenant's
schema, the SIMtrix call a Bitrix24 request serves (crm.context), the bridge's id of the call
whose event is being handled (common.logcontext) and the request id (simtrix.request_id; a Celery
task's is the one of the request that queued it).

`SIMTRIX_LOG_FORMAT=json` writes one JSON object a line (python-json-logger) for a log shipper;
the default is the same facts as text. The tenant is the schema of the database connection, which
django-tenants sets for a request and tenant-schemas-celery for a task, so a Celery task's lines
carry their tenant without the task saying so.
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import connection

from common.logcontext import current_bridge_call_id
from crm.context import current_call_id
from simtrix.request_id import current_request_id

# The record's attributes ContextFilter adds, in the order the text format shows them.
CONTEXT_FIELDS = ("tenant", "call_id", "bridge_call_id", "request_id")
_TEXT_NAMES = {
    "tenant": "tenant",
    "call_id": "call",
    "bridge_call_id": "bridge_call",
    "request_id": "request",
}


def _schema() -> str | None:
    try:
        return getattr(connection, "schema_name", None)
    except Exception:  # settings not loaded yet (a line logged while Django starts)
        return None


class ContextFilter(logging.Filter):
    """Adds the tenant, call ids and request id to every record (unless the caller gave them)."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = {
            "tenant": _schema,
            "call_id": current_call_id,
            "bridge_call_id": current_bridge_call_id,
            "request_id": current_request_id,
        }
        for name, read in context.items():
            if not hasattr(record, name):
                setattr(record, name, read())
        return True


class TextFormatter(logging.Formatter):
    """`2026-05-04 10:00:00,123 WARNING crm.session tenant=alpha call=12 request=ab12: message`;
    what is not known is left out rather than shown empty."""

    def format(self, record: logging.LogRecord) -> str:
        known = [
            f"{_TEXT_NAMES[name]}={value}"
            for name in CONTEXT_FIELDS
            if (value := getattr(record, name, None)) is not None
        ]
        record.context = " " + " ".join(known) if known else ""
        return super().format(record)


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s%(context)s: %(message)s"


def logging_config(*, log_format: str, level: str) -> dict[str, Any]:
    """settings.LOGGING: everything to standard error, through ContextFilter."""
    if log_format not in ("text", "json"):
        raise ValueError(f"SIMTRIX_LOG_FORMAT is 'text' or 'json', not {log_format!r}")
    formatters: dict[str, dict[str, Any]] = {
        "text": {"()": TextFormatter, "format": TEXT_FORMAT},
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": ["levelname", "name", "message", *CONTEXT_FIELDS],
            "rename_fields": {"levelname": "level", "name": "logger"},
            "timestamp": "time",  # ISO 8601, UTC
        },
    }
    console = {
        "class": "logging.StreamHandler",
        "formatter": log_format,
        "filters": ["context"],
    }
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"context": {"()": ContextFilter}},
        "formatters": formatters,
        "handlers": {"console": console},
        "root": {"handlers": ["console"], "level": level},
        # Django's own console handler (DEBUG only) and runserver's would print a second,
        # unformatted copy: Django's lines go through the same handler instead.
        "loggers": {
            "django": {"handlers": ["console"], "level": level, "propagate": False},
            "django.server": {"handlers": ["console"], "level": level, "propagate": False},
        },
    }
