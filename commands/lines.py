"""Each active phone's number as a Bitrix24 external line, named after the phone.

Users pick a line as their outgoing line in Bitrix24; the click-to-call then names it
(LINE_NUMBER) and commands.selection dials from that phone. Kept in step when a device is added,
renamed, given another number, revoked or reinstated (post_save), and once an hour in case a
sync failed (a sync with nothing to change makes no request).
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.db.models.signals import post_save
from django.dispatch import receiver

from calls.models import Device
from crm.lines import LinesSynced, lines_sync
from tenants.fanout import task_queue


def lines_wanted() -> dict[str, str]:
    """number -> name of every active device (the first device of a number names its line)."""
    wanted: dict[str, str] = {}
    for number, name in (
        Device.objects.filter(revoked_at__isnull=True)
        .order_by("created_at", "pk")
        .values_list("phone_number", "name")
    ):
        wanted.setdefault(number, f"SIMtrix: {name}"[:100])
    return wanted


def lines_sync_devices(*, force: bool = False) -> LinesSynced:
    return lines_sync(wanted=lines_wanted(), force=force)


def lines_sync_later() -> None:
    from commands.tasks import lines_sync_task  # noqa: PLC0415 — Celery's loop: the task calls back here

    # The hourly sync catches up if this is lost.
    transaction.on_commit(lambda: task_queue(lines_sync_task, what="external lines", countdown=2))


@receiver(post_save, sender=Device, dispatch_uid="commands.lines.device_saved")
def _device_saved(*, instance: Device, update_fields: Any = None, **kwargs: Any) -> None:
    fields = set(update_fields or ())
    if fields and not fields & {"name", "phone_number", "revoked_at"}:
        return  # a heartbeat, a token: nothing a line shows
    lines_sync_later()
