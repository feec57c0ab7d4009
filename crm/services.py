from __future__ import annotations

from crm.models import Bitrix24Connection


def connection_set_webhook(*, webhook_url: str) -> Bitrix24Connection:
    """Stores the tenant's inbound webhook (call inside the tenant's schema)."""
    url = webhook_url if webhook_url.endswith("/") else f"{webhook_url}/"
    connection, _ = Bitrix24Connection.objects.update_or_create(
        singleton=1,
        defaults={"auth_mode": Bitrix24Connection.AuthMode.WEBHOOK, "webhook_url": url},
    )
    return connection
