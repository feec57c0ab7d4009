"""The tenant's Bitrix24 connection: webhook, local OAuth application, health check."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext, gettext_lazy

from crm import client as b24
from crm.cache import cache_clear
from crm.client import Bitrix24Client
from crm.directory import directory_sync_later
from crm.domain import ConnectionCheck
from crm.errors import Bitrix24Error, Bitrix24NotConfigured, Bitrix24PermanentError
from crm.events import events_bind_later
from crm.models import Bitrix24Connection
from crm.session import Bitrix24Session, apply_token_response, oauth_token_request

# What SIMtrix cannot work without (the README's "Bitrix24 scopes" lists what each is for).
REQUIRED_SCOPES = ("crm", "telephony", "user", "im", "task")
# Scopes that only one feature needs: without one, that feature is off and the rest works.
# ("bizproc" is not asked for: no action of this version starts a business process.)
OPTIONAL_SCOPES = {
    "department": gettext_lazy(
        "department names are not read (routing by department still works: users "
        "carry their departments)"
    ),
    "timeman": gettext_lazy("routing by work-day status is off (every user counts as available)"),
}
# Optional for an OAuth application only (a webhook cannot use them whatever it is granted).
OAUTH_OPTIONAL_SCOPES = {
    "messageservice": gettext_lazy(
        "Bitrix24's own SMS (robots, the CRM card) cannot go through the phones "
        "(SIMtrix is not registered as an SMS provider); scenario SMS still work"
    ),
}


def scopes_missing(scopes: list[str] | None) -> list[str]:
    """The scopes SIMtrix needs that `scopes` (as the portal reports them) lack, in order."""
    granted = scopes_granted(list(scopes or []))
    return [scope for scope in REQUIRED_SCOPES if scope not in granted]


def scopes_granted(scopes: list[str]) -> set[str]:
    """The scopes as SIMtrix counts them: the reduced user scopes stand for ``user``."""
    granted = set(scopes)
    if granted & {"user_basic", "user_brief"}:
        granted.add("user")
    return granted


def connection_set_webhook(*, webhook_url: str) -> Bitrix24Connection:
    """Stores the tenant's inbound webhook (call inside the tenant's schema)."""
    url = webhook_url if webhook_url.endswith("/") else f"{webhook_url}/"
    connection, _ = Bitrix24Connection.objects.update_or_create(
        singleton=1,
        defaults={"auth_mode": Bitrix24Connection.AuthMode.WEBHOOK, "webhook_url": url},
    )
    return connection


def connection_set_oauth_app(
    *, client_id: str, client_secret: str, token_url: str = ""
) -> Bitrix24Connection:
    """Stores the local application's credentials; its install then posts the tokens."""
    defaults: dict[str, Any] = {
        "auth_mode": Bitrix24Connection.AuthMode.OAUTH,
        "oauth_client_id": client_id.strip(),
        "oauth_client_secret": client_secret.strip(),
    }
    if token_url:
        defaults["oauth_token_url"] = token_url
    connection, _ = Bitrix24Connection.objects.update_or_create(singleton=1, defaults=defaults)
    return connection


def connection_set_events_token(*, token: str) -> Bitrix24Connection:
    """Stores the token Bitrix24's calls to SIMtrix carry (the portal's outbound webhook)."""
    connection, _ = Bitrix24Connection.objects.update_or_create(
        singleton=1, defaults={"events_token": token.strip()}
    )
    return connection


def connection_install_oauth(*, auth: dict[str, str]) -> Bitrix24Connection:
    """Stores the token pair Bitrix24 posts to the install callback (REFERENCE 1.2).

    The callback is public, so its tokens are not trusted as posted: they are exchanged once at
    the OAuth server with the tenant's own client secret, which only succeeds for a refresh
    token issued to this application. The rotated pair is what gets stored.
    """
    refresh_token = (auth.get("refresh_token") or "").strip()
    if not refresh_token or not auth.get("access_token"):
        raise Bitrix24PermanentError(
            gettext("The install request carries no tokens"), code="NO_AUTH_FOUND"
        )
    with transaction.atomic():
        conn = Bitrix24Connection.objects.select_for_update().filter(singleton=1).first()
        if conn is None or not (conn.oauth_client_id and conn.oauth_client_secret):
            raise Bitrix24NotConfigured(
                gettext(
                    "Enter the application's client id and secret in SIMtrix before installing it"
                )
            )
        data = oauth_token_request(conn, refresh_token=refresh_token)
        if not data.get("client_endpoint") and auth.get("client_endpoint"):
            data["client_endpoint"] = auth["client_endpoint"]
        apply_token_response(conn, data)
        conn.auth_mode = Bitrix24Connection.AuthMode.OAUTH
        conn.oauth_application_token = (auth.get("application_token") or "")[:64]
        conn.oauth_installed_at = timezone.now()
        conn.uninstalled_at = None
        conn.last_error_code = ""
        conn.last_error = ""
        conn.save()
    cache_clear()
    directory_sync_later()  # Bitrix24 waits on this callback: the sync runs in the background
    events_bind_later()  # and on the event.bind requests
    return conn


def connection_test() -> ConnectionCheck:
    """Calls the portal and checks the webhook/app has every scope SIMtrix needs."""
    conn = Bitrix24Connection.objects.filter(singleton=1).first()
    now = timezone.now()
    try:
        if conn is None:
            raise Bitrix24NotConfigured()
        scopes = Bitrix24Client(Bitrix24Session(conn)).run(b24.scope(), max_attempts=1)
    except Bitrix24Error as exc:
        if conn is not None:
            Bitrix24Connection.objects.filter(pk=conn.pk).update(
                checked_at=now,
                last_error_code=exc.code[:64],
                last_error=exc.display(),
                last_error_at=now,
            )
        return ConnectionCheck(ok=False, scopes=[], missing_scopes=[], error=exc.display())
    granted = scopes_granted(scopes)
    missing = scopes_missing(scopes)
    # In the language of whoever asked (the admin's); the admin shows these as they are.
    error = (
        gettext("Missing scopes: %(scopes)s") % {"scopes": ", ".join(missing)} if missing else ""
    )
    optional = dict(OPTIONAL_SCOPES)
    if conn.auth_mode == Bitrix24Connection.AuthMode.OAUTH:
        optional.update(OAUTH_OPTIONAL_SCOPES)
    warnings = [
        gettext("Optional scope %(scope)s is not granted: %(consequence)s")
        % {"scope": scope, "consequence": what}
        for scope, what in optional.items()
        if scope not in granted
    ]
    Bitrix24Connection.objects.filter(pk=conn.pk).update(
        scopes=sorted(scopes),
        checked_at=now,
        last_ok_at=now,
        last_error_code="INSUFFICIENT_SCOPE" if missing else "",
        last_error=gettext("Missing scopes: %(scopes)s: tick them on the webhook or application")
        % {"scopes": ", ".join(missing)}
        if missing
        else "",
        last_error_at=now if missing else None,
    )
    return ConnectionCheck(
        ok=not missing,
        scopes=sorted(scopes),
        missing_scopes=missing,
        error=error,
        warnings=warnings,
    )
