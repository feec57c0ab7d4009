"""Each active phone's number as a Bitrix24 external line, kept in step with the devices."""

from __future__ import annotations

from typing import Any

from calls.models import Device
from calls.services import device_register, device_revoke, device_rotate_token
from commands.lines import lines_sync_devices
from crm import client as b24
from crm.client import Bitrix24Client
from crm.models import Bitrix24Connection
from tenants.models import Tenant


def _portal_lines() -> dict[str, str]:
    rows = Bitrix24Client().run(b24.externalline_get())
    return {str(row["NUMBER"]): str(row["NAME"]) for row in rows}


def _requests(portal: Any, prefix: str = "telephony.externalLine") -> list[str]:
    return [
        entry["method"]
        for entry in portal.state.query_requests()
        if entry["method"].lower().startswith(prefix.lower())
    ]


def test_lines_follow_devices_added_renamed_and_revoked(alpha: Tenant, alpha_portal: Any) -> None:
    marta, _ = device_register(
        name="Marta's phone", phone_number="+48500100200", bitrix24_user_id=5, country="PL"
    )
    ewa, _ = device_register(
        name="Ewa's phone", phone_number="+48500100300", bitrix24_user_id=9, country="PL"
    )
    added = lines_sync_devices()
    assert sorted(added.added) == ["+48500100200", "+48500100300"]
    assert _portal_lines() == {
        "+48500100200": "SIMtrix: Marta's phone",
        "+48500100300": "SIMtrix: Ewa's phone",
    }

    Device.objects.filter(pk=marta.pk).update(name="Marta (office)")
    renamed = lines_sync_devices()
    assert renamed.renamed == ["+48500100200"]
    assert _portal_lines()["+48500100200"] == "SIMtrix: Marta (office)"

    device_revoke(device=ewa)
    removed = lines_sync_devices()
    assert removed.removed == ["+48500100300"]
    assert "+48500100300" not in _portal_lines()
    assert Bitrix24Connection.objects.get().lines == {"+48500100200": "SIMtrix: Marta (office)"}

    device_rotate_token(device=ewa)  # reinstated
    assert lines_sync_devices().added == ["+48500100300"]


def test_a_sync_with_nothing_to_change_makes_no_request(alpha: Tenant, alpha_portal: Any) -> None:
    device_register(name="Marta", phone_number="+48500100200", bitrix24_user_id=5, country="PL")
    lines_sync_devices()
    alpha_portal.state.requests.clear()
    assert lines_sync_devices().unchanged
    assert _requests(alpha_portal) == []


def test_a_line_another_integration_registered_is_left_alone(
    alpha: Tenant, alpha_portal: Any
) -> None:
    Bitrix24Client().run(b24.externalline_add("+48221112233", "Office PBX"))
    device_register(name="Marta", phone_number="+48500100200", bitrix24_user_id=5, country="PL")
    lines_sync_devices()
    assert _portal_lines()["+48221112233"] == "Office PBX"


def test_a_saved_device_queues_the_sync_on_commit_and_a_heartbeat_does_not(
    alpha: Tenant, django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks() as queued:
        device, _ = device_register(
            name="Marta", phone_number="+48500100200", bitrix24_user_id=5, country="PL"
        )
    assert len(queued) == 1
    with django_capture_on_commit_callbacks() as queued:
        Device.objects.get(pk=device.pk).save(update_fields=["last_seen_at"])
    assert queued == []
    with django_capture_on_commit_callbacks() as queued:
        device_revoke(device=device)
    assert len(queued) == 1
