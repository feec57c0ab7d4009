from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.conf import settings
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django_tenants.middleware.main import TenantMainMiddleware

from tenants.models import Domain, Tenant

# Host -> (tenant, fetched at). Every bridge request would otherwise pay two round trips (a
# search_path switch and the domain query) before doing any work.
_tenants_by_host: dict[str, tuple[Tenant, float]] = {}
_lock = threading.Lock()


def tenant_cache_clear() -> None:
    with _lock:
        _tenants_by_host.clear()


@receiver(post_save, sender=Tenant)
@receiver(post_delete, sender=Tenant)
@receiver(post_save, sender=Domain)
@receiver(post_delete, sender=Domain)
def _tenant_changed(**_: object) -> None:
    # Other processes see a change (e.g. a deactivation) after SIMTRIX_TENANT_CACHE_SECONDS.
    tenant_cache_clear()


class ActiveTenantMiddleware(TenantMainMiddleware):
    """Resolves the tenant from the Host; a deactivated tenant is served like none (404)."""

    def get_tenant(self, domain_model: type[Domain], hostname: str) -> Tenant:
        ttl = settings.SIMTRIX_TENANT_CACHE_SECONDS
        now = time.monotonic()
        cached = _tenants_by_host.get(hostname)
        if cached is not None and now - cached[1] < ttl:
            # A copy per request: the middleware sets attributes (domain_url) on it.
            return copy.copy(cached[0])
        domain = domain_model.objects.select_related("tenant").get(
            domain=hostname, tenant__is_active=True
        )
        if ttl > 0:
            with _lock:
                _tenants_by_host[hostname] = (domain.tenant, now)
        return copy.copy(domain.tenant)


class TenantClockMiddleware:
    """The tenant's pages on the tenant's clock: every time the admin shows or reads (lists,
    forms, date filters, exports) is in the tenant's time zone. The bridge API keeps its
    offsets as they are (ISO 8601 in UTC), whatever the tenant's zone."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        tenant = getattr(request, "tenant", None)
        zone = getattr(tenant, "timezone", "") if tenant is not None else ""
        if zone and not request.path.startswith("/api/"):
            try:
                timezone.activate(ZoneInfo(zone))
            except (ZoneInfoNotFoundError, ValueError):
                timezone.deactivate()
        else:
            timezone.deactivate()
        try:
            return self.get_response(request)
        finally:
            timezone.deactivate()
