"""Probes for load balancers and orchestrators, on every host, unauthenticated.

- `/healthz`: the process answers (nothing else is touched).
- `/readyz`: PostgreSQL and Redis answer and the dispatcher of durable work has finished a pass
  recently; 503 otherwise. Late runs are reported, not failed on: a web process taken out of
  rotation would not start them. Nothing sensitive is shown (no host names, no errors' text).
"""

from __future__ import annotations

import logging
from typing import Any

from django.core.cache import cache
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from scenarios.schedule import dispatcher_heartbeat, outbox_late_overall

logger = logging.getLogger(__name__)


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


def _check(name: str, probe: Any) -> bool:
    try:
        probe()
    except Exception:
        logger.warning("readiness: %s does not answer", name, exc_info=True)
        return False
    return True


def _database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def _redis() -> None:
    cache.get("readyz")


@never_cache
@require_GET
def readyz(request: HttpRequest) -> JsonResponse:
    checks: dict[str, Any] = {
        "database": "ok" if _check("the database", _database) else "unavailable",
        "redis": "ok" if _check("redis", _redis) else "unavailable",
    }
    dispatcher: dict[str, Any] = {"last_pass_at": None, "age_seconds": None, "stale": True}
    if checks["redis"] == "ok":
        dispatcher = dispatcher_heartbeat()
    checks["dispatcher"] = {**dispatcher, "status": "stale" if dispatcher["stale"] else "ok"}
    if checks["database"] == "ok":
        checks["outbox"] = outbox_late_overall()
    ready = checks["database"] == checks["redis"] == "ok" and not dispatcher["stale"]
    return JsonResponse(
        {"status": "ready" if ready else "unavailable", "checks": checks},
        status=200 if ready else 503,
    )
