"""SIMtrix as the portal's SMS provider (messageservice.*, an application's only).

Registered once per portal by `sms_provider_register` (at installation, with the events): code
`simtrix`, handler `https://<tenant-domain>/bitrix24/sms/`. A message a user or a robot sends
through it is posted to that handler (crm.events stores it as the event `MESSAGESERVICE.SEND`),
and its progress is told back with `messageservice.message.status.update`. A webhook-connected
portal cannot have a provider: messageservice works in an application's context only.
"""

from __future__ import annotations

from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from crm import client as b24
from crm.client import Bitrix24Client
from crm.errors import Bitrix24Error, Bitrix24NotConfigured, Bitrix24PermanentError
from crm.events import events_handler_url
from crm.mapping import as_int, b24_type
from crm.models import Bitrix24Connection

PROVIDER_CODE = "simtrix"
PROVIDER_NAME = "SIMtrix (the agents' phones)"
PROVIDER_DESCRIPTION = (
    "Sends each SMS through the SIM of the phone of the user it is sent for, so the customer "
    "sees the number they know."
)
# The event name a message posted to the provider's handler is stored under (crm.events).
SEND_EVENT = "MESSAGESERVICE.SEND"
# What Bitrix24 can be told of a message (messageservice.message.status.update).
STATUSES = ("queued", "sent", "delivered", "undelivered", "failed")
# Shown in the admin (the connection's "SMS provider"), in the admin user's language.
WEBHOOK_EXPLANATION = _(
    "Bitrix24 lets only an application register an SMS provider: connect this tenant through "
    "the SIMtrix application (OAuth) instead of an inbound webhook to send Bitrix24's SMS "
    "through the phones. Scenario SMS work either way."
)


def sms_handler_url() -> str:
    """Where Bitrix24 posts the messages sent through SIMtrix: next to the events handler."""
    url = events_handler_url()
    return url.removesuffix("/bitrix24/events/") + "/bitrix24/sms/" if url else ""


def sms_provider_register() -> bool:
    """Registers the provider unless the portal has it already; True when it is there.

    False for a webhook-connected tenant (the admin explains why) and for a portal that refused
    (recorded for the admin; a transient failure is raised, for a retry)."""
    conn = Bitrix24Connection.objects.filter(singleton=1).first()
    if conn is None:
        raise Bitrix24NotConfigured()
    if conn.auth_mode != Bitrix24Connection.AuthMode.OAUTH:
        return False
    client = Bitrix24Client()
    try:
        if PROVIDER_CODE not in client.run(b24.messageservice_sender_list()):
            try:
                client.run(
                    b24.messageservice_sender_add(
                        PROVIDER_CODE, sms_handler_url(), PROVIDER_NAME, PROVIDER_DESCRIPTION
                    )
                )
            except Bitrix24PermanentError as exc:
                # Registered meanwhile (a second install callback): it is there.
                if exc.code != "ERROR_SENDER_ALREADY_INSTALLED":
                    raise
    except Bitrix24Error as exc:
        Bitrix24Connection.objects.filter(pk=conn.pk).update(sms_provider_error=exc.display()[:500])
        if exc.transient:
            raise
        # A permanent refusal (the application lacks the messageservice scope, the user is
        # no administrator) is the admin's to fix; the events stay bound.
        return False
    Bitrix24Connection.objects.filter(pk=conn.pk).update(
        sms_provider_at=timezone.now(), sms_provider_error=""
    )
    return True


def crm_sms_status_update(*, message_id: str, status: str) -> None:
    """Tells Bitrix24 where a message sent through the provider is (one of STATUSES)."""
    if status not in STATUSES:
        raise ValueError(f"not a messageservice status: {status!r}")
    Bitrix24Client().run(
        b24.messageservice_message_status_update(PROVIDER_CODE, message_id, status)
    )


def crm_entity_responsible(*, entity: tuple[str, int]) -> int | None:
    """The entity's responsible (ASSIGNED_BY_ID): whose phone sends its SMS; None if unknown."""
    fields = Bitrix24Client().run(b24.entity_get(b24_type(entity[0]), int(entity[1])))
    return as_int(fields.get("ASSIGNED_BY_ID")) if isinstance(fields, dict) else None
