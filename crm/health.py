"""What is wrong with the tenant's Bitrix24 connection, in SIMtrix's terms (for the alerts).

The connection row keeps the last error about the connection itself (crm.session notes it, and
forgets it on the next success; connection_test refreshes it with the granted scopes). Which
Bitrix24 codes mean which trouble is crm's knowledge, so it is told here and nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from crm.connections import scopes_missing
from crm.errors import AUTH_CODES, DOWN_CODES
from crm.models import Bitrix24Connection

Trouble = Literal["auth", "scope", "telephony", "down"]

SCOPE_CODES = frozenset({"INSUFFICIENT_SCOPE"})
# Telephony methods refuse the connection's kind of authentication (a webhook).
TELEPHONY_CODES = frozenset({"WRONG_AUTH_TYPE"})
# Who is calling is refused, or the portal is gone: someone must fix the connection.
AUTH_TROUBLE_CODES = (AUTH_CODES - SCOPE_CODES - TELEPHONY_CODES) | {
    "APP_UNINSTALLED",
    "PORTAL_DELETED",
    "PORTAL_MOVED",
}


@dataclass(frozen=True)
class ConnectionHealth:
    """The connection as last seen: `configured` False means there is nothing to watch."""

    configured: bool
    trouble: Trouble | None = None
    code: str = ""
    error: str = ""
    missing_scopes: list[str] = field(default_factory=list)
    checked_at: datetime | None = None
    portal: str = ""  # host[:port]
    directory_synced_at: datetime | None = None


def connection_health() -> ConnectionHealth:
    """The current tenant's connection, from its row (no request to Bitrix24)."""
    conn = Bitrix24Connection.objects.filter(singleton=1).first()
    if conn is None or not (conn.webhook_url or conn.oauth_client_id):
        return ConnectionHealth(
            configured=False, directory_synced_at=conn.directory_synced_at if conn else None
        )
    code = (conn.last_error_code or "").upper()
    missing = scopes_missing(conn.scopes) if conn.scopes else []
    trouble: Trouble | None = None
    if conn.uninstalled_at is not None or code in AUTH_TROUBLE_CODES:
        trouble = "auth"
    elif code in SCOPE_CODES or missing:
        trouble = "scope"
    elif code in TELEPHONY_CODES:
        trouble = "telephony"
    elif code in DOWN_CODES:
        trouble = "down"
    return ConnectionHealth(
        configured=True,
        trouble=trouble,
        code=code,
        error=conn.last_error if trouble else "",
        missing_scopes=missing,
        checked_at=conn.checked_at,
        portal=conn.portal_domain,
        directory_synced_at=conn.directory_synced_at,
    )
