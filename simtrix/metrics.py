"""`GET /metrics`: Prometheus' text format, for the operators' scraper only.

- Without SIMTRIX_METRICS_TOKEN the endpoint does not exist (404); with it, only
  `Authorization: Bearer <token>` is served (compared in constant time), anything else is 401.
- Counters and histograms are recorded where things happen (common.metrics). Under gunicorn and
  in the Celery worker each process keeps its values in a file of PROMETHEUS_MULTIPROC_DIR and
  this view adds them up (MultiProcessCollector); without it, this process's own registry.
- The outbox and the dispatcher are read at scrape time (OutboxCollector): every tenant's due,
  late and failed runs (scenarios.monitoring, a statement per 200 tenants) and the age of the
  dispatcher's last pass. A database or Redis that does not answer leaves those series out
  (and logs why) rather than failing the whole scrape.
"""

from __future__ import annotations

import hmac
import logging
import os
from collections.abc import Iterator

from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseNotFound
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from scenarios.monitoring import outbox_counts_all
from scenarios.schedule import dispatcher_heartbeat

logger = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class OutboxCollector(Collector):
    """Gauges read when scraped, so every process reports the same numbers."""

    def collect(self) -> Iterator[Metric]:
        yield from self._outbox()
        yield from self._dispatcher()

    def _outbox(self) -> Iterator[Metric]:
        try:
            counts = outbox_counts_all()
        except Exception:
            logger.warning("metrics: the outbox could not be read", exc_info=True)
            return
        due = GaugeMetricFamily(
            "simtrix_outbox_due", "Runs due and not started, per tenant.", labels=["tenant"]
        )
        late = GaugeMetricFamily(
            "simtrix_outbox_late",
            "Runs due for more than a minute and not started, per tenant.",
            labels=["tenant"],
        )
        failed = GaugeMetricFamily(
            "simtrix_outbox_failed",
            "Runs that gave up (the admin lists them with a Retry action), per tenant.",
            labels=["tenant"],
        )
        oldest = GaugeMetricFamily(
            "simtrix_outbox_oldest_due_seconds",
            "Age of the oldest due run, per tenant (0: nothing due).",
            labels=["tenant"],
        )
        for row in counts:
            due.add_metric([row["schema"]], row["due"])
            late.add_metric([row["schema"]], row["late"])
            failed.add_metric([row["schema"]], row["failed"])
            oldest.add_metric([row["schema"]], row["oldest_due_seconds"] or 0.0)
        yield from (due, late, failed, oldest)

    def _dispatcher(self) -> Iterator[Metric]:
        try:
            heartbeat = dispatcher_heartbeat()
        except Exception:
            logger.warning("metrics: the dispatcher's heartbeat could not be read", exc_info=True)
            return
        age = heartbeat["age_seconds"]
        yield GaugeMetricFamily(
            "simtrix_dispatcher_last_pass_age_seconds",
            "Seconds since the outbox dispatcher finished a pass (+Inf: never, or Redis lost it).",
            value=float("inf") if age is None else age,
        )


def metrics_registry() -> CollectorRegistry:
    """What one scrape reports: every process's counters, and the gauges read now."""
    registry = CollectorRegistry(auto_describe=False)
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        MultiProcessCollector(registry)
    else:
        registry.register(_ProcessMetrics())
    registry.register(OutboxCollector())
    return registry


class _ProcessMetrics(Collector):
    """This process's own registry (development, the tests): common.metrics and the
    process/platform collectors prometheus-client registers by default."""

    def collect(self) -> Iterator[Metric]:
        yield from REGISTRY.collect()


def _authorized(request: HttpRequest, token: str) -> bool:
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode(), token.encode()
    )


@never_cache
@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    token = settings.SIMTRIX_METRICS_TOKEN
    if not token:
        # A plain answer, not Http404: simtrix.probes serves this before the URL resolver and
        # the host check, where Django's 404 page (and its DEBUG variant) cannot be rendered.
        return HttpResponseNotFound("Not Found\n", content_type="text/plain")
    if not _authorized(request, token):
        response = HttpResponse("Unauthorized\n", status=401, content_type="text/plain")
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    return HttpResponse(generate_latest(metrics_registry()), content_type=CONTENT_TYPE)
