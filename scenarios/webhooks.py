"""The webhook action: a JSON description of the call POSTed to the tenant's URL, signed.

The body (compact JSON, UTF-8) carries the tenant, the call (id, direction, outcome, number,
times, duration), its CRM entity, its route and its agent. The header ``X-SIMtrix-Signature``
is the HMAC-SHA256 of the exact body bytes with the action's secret as the key, in hex; the
receiver computes the same over what it received and compares (in constant time).
``X-SIMtrix-Delivery`` names the delivery: a retry of the same run sends the same one, so a
receiver can drop a repeat.

It goes through crm.outbound's transport, like every request to an address a tenant chose:
no redirect followed, no proxy, and every address the name resolves to must be public
(private and loopback ones only when the operator allows them,
``SIMTRIX_ALLOW_PRIVATE_ADDRESSES``), so it is no way into the server's network. https only,
unless the tenant allows http (scenario settings). An answer that may change on a retry (no
answer within the timeout, 408, 425, 429, 5xx) is retried like every run; any other refusal
fails the run at once.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

import requests
from django.conf import settings

from calls.models import Call
from calls.selectors import agent_names, route_public
from common.crypto import secret_decrypt
from crm.outbound import OutboundAddressRefused, outbound_request
from scenarios.choices import ActionType
from scenarios.handlers import Situation, call_entity, scenario_action
from scenarios.models import ActionRun, scenario_settings_get
from scenarios.outbox import PermanentActionError
from tenants.connection import tenant_connection

SIGNATURE_HEADER = "X-SIMtrix-Signature"
DELIVERY_HEADER = "X-SIMtrix-Delivery"
# Seconds to wait for the receiver's answer (setting SIMTRIX_WEBHOOK_TIMEOUT_SECONDS).
TIMEOUT_SECONDS = 10.0
_RETRIED_STATUSES = frozenset({408, 425, 429})


class WebhookUnavailable(Exception):
    """The receiver did not answer, or answered that a later try may work: retried."""


def webhook_signature(body: bytes, secret: str) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _iso(moment: Any) -> str | None:
    return moment.isoformat() if moment else None


def webhook_payload(*, call: Call, run: ActionRun) -> dict[str, Any]:
    """What a webhook tells about a call (docs/configuration.md lists the keys)."""
    entity = call_entity(call)
    agent = call.device.bitrix24_user_id
    return {
        "event": "call",
        "tenant": tenant_connection.schema_name,
        "delivery": f"{tenant_connection.schema_name}:{run.pk}",
        "trigger": run.params.get("trigger") or None,
        "scenario": run.params.get("scenario") or None,
        "call_id": call.call_id,
        "direction": call.direction or None,
        "outcome": call.outcome or None,
        "number": call.phone_number,
        "started_at": _iso(call.started_at),
        "answered_at": _iso(call.answered_at),
        "ended_at": _iso(call.ended_at),
        "duration_seconds": call.duration_seconds or 0,
        "entity": (
            {
                "type": entity.get("type"),
                "id": entity.get("id"),
                "name": entity.get("name") or "",
                "url": entity.get("url") or "",
            }
            if entity
            else None
        ),
        "route": route_public(call.route or None),
        "agent": {
            "id": agent,
            "name": agent_names(user_ids=[agent]).get(agent, ""),
            "device": call.device.name,
            "line": call.device.phone_number,
        },
    }


def _shown(url: str) -> str:
    """The URL for the run's result and errors: a query may hold a token, so it is hidden."""
    base, mark, _ = url.partition("?")
    return f"{base}?…" if mark else base


def webhook_deliver(
    *, url: str, secret: str, payload: dict[str, Any], allow_http: bool
) -> dict[str, Any]:
    """POSTs `payload` to `url` once; what the receiver answered, for the run's result."""
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
    headers = {
        "Content-Type": "application/json; charset=utf-8",
        "User-Agent": "SIMtrix-webhook/1",
        SIGNATURE_HEADER: webhook_signature(body, secret),
        DELIVERY_HEADER: str(payload["delivery"]),
    }
    timeout = float(getattr(settings, "SIMTRIX_WEBHOOK_TIMEOUT_SECONDS", TIMEOUT_SECONDS))
    started = time.monotonic()
    try:
        response = outbound_request(
            "POST",
            url,
            data=body,
            headers=headers,
            timeout=(min(timeout, 5.0), timeout),
            allow_http=allow_http,
        )
    except OutboundAddressRefused as exc:
        raise PermanentActionError(f"{_shown(url)} refused: {exc.reason}") from None
    except requests.Timeout:
        raise WebhookUnavailable(f"{_shown(url)}: no answer within {timeout:g} s") from None
    except requests.RequestException as exc:
        raise WebhookUnavailable(f"{_shown(url)}: {type(exc).__name__}") from None
    elapsed = round((time.monotonic() - started) * 1000)
    status = response.status_code
    answer = response.text[:200]
    if 300 <= status < 400:
        raise PermanentActionError(
            f"{_shown(url)} answered HTTP {status} (a redirect, which SIMtrix does not follow: "
            "give the final address)"
        )
    if status in _RETRIED_STATUSES or status >= 500:
        raise WebhookUnavailable(f"{_shown(url)} answered HTTP {status}: {answer}")
    if status >= 400:
        raise PermanentActionError(f"{_shown(url)} answered HTTP {status}: {answer}")
    return {
        "url": _shown(url),
        "status": status,
        "ms": elapsed,
        "signature": SIGNATURE_HEADER,
        "delivery": payload["delivery"],
        "answer": answer,
    }


@scenario_action(ActionType.WEBHOOK)
def webhook(run: ActionRun, situation: Situation) -> dict[str, Any]:
    config = situation.config
    # The planned run keeps the secret encrypted (scenarios.planning).
    secret = secret_decrypt(str(config.get("secret") or ""))
    if not secret:
        raise PermanentActionError("The webhook has no secret to sign with.")
    return webhook_deliver(
        url=str(config["url"]),
        secret=secret,
        payload=webhook_payload(call=situation.call, run=run),
        allow_http=scenario_settings_get().webhooks_allow_http,
    )
