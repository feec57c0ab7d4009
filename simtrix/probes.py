"""`/healthz`, `/readyz` and `/metrics` answered by path, before anything looks at the Host.

A load balancer, an orchestrator or a scraper asks by an address of its own (`10.0.3.7:8000`,
the container's name), which is rarely a tenant's domain and often not in ALLOWED_HOSTS; on a
fresh install (`migrate_schemas` only) there is no tenant or public domain at all. Routed
through the URL configuration those probes would answer 404 (no tenant owns the host) or 400
(DisallowedHost), and a healthy process would be taken out of rotation. So this middleware,
placed before them (after the request id and the security headers, which read no Host of a
probe), answers exactly these three paths itself, in the public schema, with the same views,
which read no Host either. Any other path goes on to the host check and the tenant lookup. (The
URL configurations keep their entries for `reverse()`; requests never reach them.)
"""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponseBase
from django_tenants.utils import get_public_schema_name, schema_context

from simtrix.health import healthz, readyz
from simtrix.metrics import metrics

PROBES: dict[str, Callable[[HttpRequest], HttpResponseBase]] = {
    "/healthz": healthz,
    "/readyz": readyz,
    "/metrics": metrics,
}


class ProbeMiddleware:
    """After the request id and the security headers (none reads a probe's Host), before the
    host check and the tenant lookup."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        probe = PROBES.get(request.path_info)
        if probe is None:
            return self.get_response(request)
        # The thread's connection may still point at the last request's tenant.
        with schema_context(get_public_schema_name()):
            return probe(request)
