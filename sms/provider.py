"""Bitrix24's SMS provider `simtrix`: a message a user or a robot sends through it becomes a
`send_sms` command for the phone of the user it is sent for.

Bitrix24 posts the message to /bitrix24/sms/ (crm.messageservice); crm.events stores it as the
event MESSAGESERVICE.SEND and runs this in the worker. The phone is the one of the CRM entity's
responsible (the card's binding, or the robot's document), else of the user who sent it, else
the tenant's default SMS line (a device setting); each user's own phone is picked as for a
click-to-call (commands.selection). A message no phone can take is reported `failed` at once.
"""

from __future__ import annotations

from typing import Any

from django.utils.translation import gettext_noop

from calls.models import Device
from commands.selection import line_choose
from common.phones import InvalidPhoneNumber, phone_to_e164
from crm.errors import Bitrix24PermanentError
from crm.events import event_handler
from crm.mapping import ENTITY_TYPES, domain_type
from crm.messageservice import SEND_EVENT, crm_entity_responsible
from crm.models import InboundEvent
from sms.models import SmsMessage
from sms.services import MAX_TEXT, sms_failed_unsent, sms_send
from tenants.context import tenant_country

_BY_OWNER_TYPE = {owner: name for name, (_, owner, _) in ENTITY_TYPES.items()}


def _entity(data: dict[str, Any]) -> tuple[str, int] | None:
    """The CRM entity the message is about: the card's first binding, or the robot's document
    (["crm", "CCrmDocumentDeal", "DEAL_5"])."""
    bindings = data.get("bindings")
    if isinstance(bindings, dict):
        first = bindings.get("0")
        if isinstance(first, dict):
            kind = _BY_OWNER_TYPE.get(_int(first.get("OWNER_TYPE_ID")) or 0)
            entity_id = _int(first.get("OWNER_ID"))
            if kind and entity_id:
                return kind, entity_id
    document = data.get("document_id")
    if isinstance(document, dict):
        prefix, _, number = str(document.get("2") or "").rpartition("_")
        kind = domain_type(prefix)
        if kind and number.isdigit():
            return kind, int(number)
    return None


def _int(value: Any) -> int | None:
    text = str(value or "").strip()
    return int(text) if text.isdigit() else None


def _text(data: dict[str, Any], name: str, property_name: str) -> str:
    properties = data.get("properties") if isinstance(data.get("properties"), dict) else {}
    return str(data.get(name) or (properties or {}).get(property_name) or "").strip()


@event_handler(SEND_EVENT)
def provider_message(event: InboundEvent) -> dict[str, Any]:
    data = event.data
    message_id = str(data.get("message_id") or "").strip()[:64]
    if not message_id:
        return {"skipped": "no message_id"}
    intent = f"b24:{message_id}"
    existing = SmsMessage.objects.filter(intent_key=intent).first()
    if existing is not None:
        return {"sms": existing.sms_id, "status": existing.status, "again": True}
    to = _text(data, "message_to", "phone_number")
    text = _text(data, "message_body", "message_text")[:MAX_TEXT]
    entity = _entity(data)
    sender = _int(data.get("auth_user_id"))
    common: dict[str, Any] = {
        "text": text,
        "source": SmsMessage.Source.BITRIX24,
        "intent_key": intent,
        "b24_message_id": message_id,
        "entity": entity,
    }
    try:
        number = phone_to_e164(to, country=tenant_country())
    except InvalidPhoneNumber:
        sms = sms_failed_unsent(
            phone_number=to, b24_user_id=sender, error=f"{to!r} is not a phone number", **common
        )
        return {"sms": sms.sms_id, "status": sms.status}
    if not text:
        sms = sms_failed_unsent(
            phone_number=number,
            b24_user_id=sender,
            error=gettext_noop("the message is empty"),
            **common,
        )
        return {"sms": sms.sms_id, "status": sms.status}
    device, user_id, reasons = _device_for(number=number, entity=entity, sender=sender)
    if device is None:
        sms = sms_failed_unsent(
            phone_number=number,
            b24_user_id=user_id,
            error=f"no phone to send it: {'; '.join(reasons)}"[:500],
            **common,
        )
        return {"sms": sms.sms_id, "status": sms.status}
    sms = sms_send(device=device, phone_number=number, b24_user_id=user_id, **common)
    return {"sms": sms.sms_id, "device": device.pk, "why": reasons[-1]}


def _device_for(
    *, number: str, entity: tuple[str, int] | None, sender: int | None
) -> tuple[Device | None, int | None, list[str]]:
    """The phone that sends it, the user it is sent for, and why (the last reason is the
    choice's)."""
    reasons: list[str] = []
    users: list[tuple[int, str]] = []
    if entity is not None:
        try:
            responsible = crm_entity_responsible(entity=entity)
        except Bitrix24PermanentError as exc:
            # Deleted meanwhile, or not the user's to read: the next phone in line sends it.
            responsible = None
            reasons.append(f"the {entity[0]} {entity[1]} could not be read ({exc.display()})")
        if responsible:
            users.append((responsible, f"the {entity[0]}'s responsible"))
        elif not reasons:
            reasons.append(f"the {entity[0]} {entity[1]} has no responsible")
    if sender and sender not in [user for user, _ in users]:
        users.append((sender, "the user who sent it"))
    for user_id, who in users:
        choice = line_choose(user_id=user_id, phone_e164=number)
        if choice.device is not None:
            reasons.append(f"{who}: {choice.reason}")
            return choice.device, user_id, reasons
        reasons.append(f"{who}: {choice.reason}")
    line = Device.objects.filter(sms_default=True, revoked_at__isnull=True).order_by("pk").first()
    if line is not None:
        reasons.append(f"the default SMS line ({line.name})")
        return line, users[0][0] if users else line.bitrix24_user_id, reasons
    reasons.append("no default SMS line is set")
    return None, users[0][0] if users else sender, reasons
