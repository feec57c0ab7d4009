"""Which of a user's phones dials a number clicked in Bitrix24, and why.

In order: the line the user chose in Bitrix24 (LINE_NUMBER), when it is one of SIMtrix's lines
and the phone is the user's own; else among the user's active phones: the one this number last
called or was called from; one whose number is in the same country as the number dialled; the
user's main phone (a device setting); the one seen most recently.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

import phonenumbers
from django.db.models import Exists, OuterRef
from django.utils import timezone

from calls.models import Call, CallEvent, Device
from tenants.context import tenant_timezone

_NOT_DIGITS = re.compile(r"\D")


@dataclass(frozen=True)
class LineChoice:
    device: Device | None
    rule: str  # chosen_line | last_call | same_country | main | most_recent | none
    reason: str


def _digits(value: str) -> str:
    return _NOT_DIGITS.sub("", value or "")


def _region(e164: str) -> str | None:
    try:
        return phonenumbers.region_code_for_number(phonenumbers.parse(e164, None))
    except phonenumbers.NumberParseException:
        return None


def _seen(device: Device) -> datetime:
    return device.last_seen_at or datetime.min.replace(tzinfo=timezone.get_current_timezone())


def _local(at: datetime) -> datetime:
    """On the tenant's clock, as its staff read it."""
    return timezone.localtime(at, ZoneInfo(tenant_timezone()))


def _best(devices: list[Device]) -> Device:
    """Among equals: the main phone, then the one seen most recently, then the newest."""
    return max(devices, key=lambda d: (d.main, _seen(d), d.created_at, d.pk))


def line_choose(*, user_id: int, phone_e164: str, line_number: str = "") -> LineChoice:
    devices = list(Device.objects.filter(bitrix24_user_id=user_id, revoked_at__isnull=True))
    notes: list[str] = []
    wanted = _digits(line_number)
    if wanted:
        # The user's own phones first: the line is one of them unless the user picked a
        # colleague's; only then are the others looked through, for the reason shown.
        line = next((d for d in devices if _digits(d.phone_number) == wanted), None)
        if line is not None:
            return LineChoice(line, "chosen_line", f"the line chosen in Bitrix24 ({line.name})")
        other = next(
            (
                device
                for device in Device.objects.filter(revoked_at__isnull=True)
                .exclude(bitrix24_user_id=user_id)
                .only("name", "phone_number")
                if _digits(device.phone_number) == wanted
            ),
            None,
        )
        if other is not None:
            notes.append(f"line {line_number} is another user's phone ({other.name})")
        else:
            notes.append(f"line {line_number} is not one of SIMtrix's phones")
    suffix = f" ({'; '.join(notes)})" if notes else ""
    if not devices:
        return LineChoice(None, "none", f"user {user_id} has no active phone in SIMtrix{suffix}")
    by_pk = {device.pk: device for device in devices}
    # Calls the phones reported (a click that never reached its phone is no call).
    reported = Exists(CallEvent.objects.filter(call=OuterRef("pk")))
    last = (
        Call.objects.filter(reported, device_id__in=by_pk, phone_number=phone_e164)
        .order_by("-started_at", "-pk")
        .values_list("device_id", "started_at")
        .first()
    )
    if last is not None:
        when = f" on {_local(last[1]):%Y-%m-%d %H:%M}" if last[1] else ""
        device = by_pk[last[0]]
        reason = f"{device.name} last spoke with this number{when}{suffix}"
        return LineChoice(device, "last_call", reason)
    region = _region(phone_e164)
    same = [d for d in devices if region and _region(d.phone_number) == region]
    if same:
        device = _best(same)
        reason = f"{device.name} has a number in the same country ({region}){suffix}"
        return LineChoice(device, "same_country", reason)
    mains = [d for d in devices if d.main]
    if mains:
        device = _best(mains)
        return LineChoice(device, "main", f"{device.name} is the user's main phone{suffix}")
    device = _best(devices)
    seen = (
        f"seen {_local(device.last_seen_at):%Y-%m-%d %H:%M}"
        if device.last_seen_at
        else "never seen"
    )
    return LineChoice(
        device, "most_recent", f"{device.name} was seen most recently ({seen}){suffix}"
    )
