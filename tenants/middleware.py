from __future__ import annotations

from django_tenants.middleware.main import TenantMainMiddleware

from tenants.models import Domain, Tenant


class ActiveTenantMiddleware(TenantMainMiddleware):
    """Resolves the tenant from the Host; a deactivated tenant is served like none (404)."""

    def get_tenant(self, domain_model: type[Domain], hostname: str) -> Tenant:
        domain = domain_model.objects.select_related("tenant").get(
            domain=hostname, tenant__is_active=True
        )
        return domain.tenant
