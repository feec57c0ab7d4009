"""Commands: made in the transaction that decides them, delivered until acknowledged or expired.

What a command's type does when it closes (acknowledged or expired) is the business of the
module that made it: it registers with `on_command_closed` (commands.dialing for `dial`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.db.models import F, Q, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from calls.models import Device
from commands.models import Command, Dial
from commands.wakeup import wake_publish
from common.metrics import COMMANDS_CLOSED
from tenants.connection import tenant_connection
from tenants.wake import tenant_wake

logger = logging.getLogger(__name__)

# The contract: a dial expires 60 s after it was made, an SMS after 24 h; a poll gets 20 at most.
TTL = {Command.Type.DIAL: timedelta(seconds=60), Command.Type.SEND_SMS: timedelta(hours=24)}
POLL_LIMIT = 20
# Commands one dispatcher visit expires at most (more are left for the next visit, at once).
EXPIRE_BATCH = 500
# How long what the phones were told stays in the audit trail (the calls themselves stay).
RETENTION_DAYS = 90
ACK_STATUSES = (Command.Status.DONE, Command.Status.FAILED, Command.Status.REJECTED)

ClosedHandler = Callable[[Command], None]
_CLOSED: dict[str, ClosedHandler] = {}


class CommandNotFound(Exception):
    """No such command for this device (another device's is not found either)."""


class CommandConflict(Exception):
    """The command was already closed with another status."""

    def __init__(self, command: Command) -> None:
        super().__init__(f"The command is already {command.status}.")
        self.command = command


def on_command_closed(command_type: str) -> Callable[[ClosedHandler], ClosedHandler]:
    """Registers what happens, in the closing transaction, when a command of the type closes."""

    def register(handler: ClosedHandler) -> ClosedHandler:
        _CLOSED[command_type] = handler
        return handler

    return register


def command_create(
    *, device: Device, type: str, phone_number: str, payload: dict[str, Any]
) -> Command:
    """Makes a command for the device; its poll is woken once the caller's transaction commits."""
    now = timezone.now()
    with transaction.atomic():
        command = Command.objects.create(
            device=device,
            type=type,
            phone_number=phone_number,
            payload=payload,
            created_at=now,
            expires_at=now + TTL[Command.Type(type)],
        )
        # The dispatcher expires it if the phone never acknowledges it.
        tenant_wake(at=command.expires_at)
        schema = tenant_connection.schema_name
        transaction.on_commit(lambda: wake_publish(schema=schema, device_id=device.pk))
    return command


def commands_deliver(*, device_id: int) -> list[Command]:
    """The device's open commands, oldest first (at most 20), counted as delivered."""
    now = timezone.now()
    commands = list(
        Command.objects.filter(
            device_id=device_id, status=Command.Status.PENDING, expires_at__gt=now
        ).order_by("created_at", "pk")[:POLL_LIMIT]
    )
    if commands:
        Command.objects.filter(pk__in=[command.pk for command in commands]).update(
            delivery_count=F("delivery_count") + 1,
            first_delivered_at=Coalesce("first_delivered_at", Value(now)),
        )
    return commands


def command_ack(*, device: Device, command_id: str, status: str, error: str = "") -> Command:
    """The phone's answer: final the first time; the same answer again is a no-op."""
    with transaction.atomic():
        command = (
            Command.objects.select_for_update().filter(device=device, command_id=command_id).first()
        )
        if command is None:
            raise CommandNotFound(command_id)
        now = timezone.now()
        if command.status == Command.Status.PENDING and command.expires_at <= now:
            # Expired before this answer came: that stays, and the answer conflicts with it.
            _close(command, status=Command.Status.EXPIRED, at=now)
        elif command.status == Command.Status.PENDING:
            _close(command, status=status, at=now, error=error)
    if command.status != status:
        raise CommandConflict(command)
    return command


def _close(command: Command, *, status: str, at: datetime, error: str = "") -> None:
    command.status = status
    command.acked_at = at if status != Command.Status.EXPIRED else None
    command.error = error[:500]
    command.save(update_fields=["status", "acked_at", "error"])
    COMMANDS_CLOSED.labels(type=command.type, status=status).inc()
    handler = _CLOSED.get(command.type)
    if handler is not None:
        handler(command)


def commands_expire_due(now: datetime) -> datetime | None:
    """Expires the commands past `expires_at` (the dispatcher's visit); the next expiry."""
    with transaction.atomic():
        due = list(
            Command.objects.select_for_update(skip_locked=True).filter(
                status=Command.Status.PENDING, expires_at__lte=now
            )[:EXPIRE_BATCH]
        )
        for command in due:
            _close(command, status=Command.Status.EXPIRED, at=now)
    if len(due) == EXPIRE_BATCH:
        return now
    return (
        Command.objects.filter(status=Command.Status.PENDING)
        .order_by("expires_at")
        .values_list("expires_at", flat=True)
        .first()
    )


def commands_prune(*, older_than_days: int = RETENTION_DAYS) -> dict[str, int]:
    """Deletes the commands, and the click-to-calls, of more than `older_than_days` ago that
    are over (closed, acknowledged, expired); the calls they made stay. Hourly."""
    cutoff = timezone.now() - timedelta(days=older_than_days)
    dials, _ = (
        Dial.objects.filter(created_at__lt=cutoff)
        .filter(Q(closed_at__isnull=False) | Q(status=Dial.Status.DIALLED))
        .delete()
    )
    commands, _ = (
        Command.objects.filter(created_at__lt=cutoff, dial__isnull=True)
        .exclude(status=Command.Status.PENDING)
        .delete()
    )
    return {"dials": dials, "commands": commands}


def command_resource(command: Command) -> dict[str, Any]:
    """A command as the bridge receives it (contract: "Work the server gives the phone")."""
    body: dict[str, Any] = {
        "command_id": str(command.command_id),
        "type": command.type,
        "status": command.status,
        "created_at": command.created_at.isoformat(),
        "expires_at": command.expires_at.isoformat(),
        "phone_number": command.phone_number,
    }
    if command.type == Command.Type.DIAL:
        body["call_id"] = command.payload.get("call_id", "")
        body["crm"] = command.payload.get("crm") or {"status": "not_found"}
    else:
        body["sms_id"] = command.payload.get("sms_id", "")
        body["text"] = command.payload.get("text", "")
    return body
