"""The tenant admin: devices with tokens shown once, and the read-only call log for support."""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from django.contrib.auth.models import Group, User
from django.test import Client
from django.utils import timezone
from pytest_django import Settings

from calls.models import Call, CallEvent, CallNote, Device
from calls.services import SUPPORT_GROUP, SUPPORT_VIEW_MODELS, call_note_add, support_group_ensure
from calls.tests.conftest import T0, Bridge, ended, started
from calls.tests.test_audio import make_audio
from tenants.models import Tenant


def _login(user: User) -> Client:
    client = Client(HTTP_HOST="alpha.localhost")
    client.force_login(user)
    return client


@pytest.fixture
def admin_client_alpha(alpha: Tenant) -> Client:
    return _login(User.objects.create_superuser("boss", password="pw"))


@pytest.fixture
def support_client(alpha: Tenant) -> Client:
    support_group_ensure()
    user = User.objects.create_user("helpdesk", password="pw", is_staff=True)
    user.groups.add(Group.objects.get(name=SUPPORT_GROUP))
    return _login(user)


@pytest.fixture
def calls_made(bridge: Bridge) -> None:
    """Three calls of Marta's phone and one of Ewa's."""
    bridge.send(
        ended("a", direction="incoming", phone_number="+48 600 111 222", outcome="answered")
    )
    bridge.send(ended("m", direction="incoming", phone_number="601222333", outcome="missed",
                      duration_seconds=0, at=T0 + timedelta(days=3)))  # fmt: skip
    bridge.send(ended("o", direction="outgoing", phone_number="+48602333444", outcome="busy",
                      duration_seconds=0, at=T0 + timedelta(days=5)))  # fmt: skip
    Call.objects.filter(call_id="a").update(crm_status="found")
    Call.objects.filter(call_id="m").update(crm_status="not_found")
    from calls.services import device_register

    _, token = device_register(
        name="Ewa's phone", phone_number="+48500100300", bitrix24_user_id=9, country="PL"
    )
    Bridge(token).send(ended("e", direction="incoming", phone_number="+48603444555"))


def _listed(client: Client, query: str = "") -> list[str]:
    response = client.get(f"/admin/calls/call/{query}")
    assert response.status_code == 200, response.content[:500]
    ids = [c.pk for c in response.context["cl"].result_list]
    return sorted(Call.objects.filter(pk__in=ids).values_list("call_id", flat=True))


# --- Devices ------------------------------------------------------------------------------


def test_adding_a_device_shows_its_token_once_with_a_qr_code(admin_client_alpha: Client) -> None:
    response = admin_client_alpha.post(
        "/admin/calls/device/add/",
        {"name": "Anna's phone", "phone_number": "600 700 800", "bitrix24_user_id": 3},
    )
    assert response.status_code == 200
    html = response.content.decode()
    match = re.search(r'value="(stx_[^"]+)"', html)
    assert match is not None
    token = match.group(1)
    assert "<svg" in html
    assert "simtrix://connect?server=http%3A%2F%2Falpha.localhost%2Fapi%2Fbridge%2Fv1%2F" in html
    # alpha.localhost is this computer's own name: the page says a phone cannot reach it.
    assert 'id="qr-unreachable"' in html
    assert "no-store" in response["Cache-Control"]
    device = Device.objects.get(name="Anna's phone")
    assert device.phone_number == "+48600700800"
    assert token not in str(Device.objects.filter(pk=device.pk).values().get())
    assert Bridge(token).get("ping/").json() == {"device": "Anna's phone"}
    # The device's page never shows it again.
    assert token not in admin_client_alpha.get(f"/admin/calls/device/{device.pk}/change/")\
        .content.decode()  # fmt: skip


def test_rotating_shows_the_new_token_and_kills_the_old(
    admin_client_alpha: Client, device_and_token: tuple[Device, str]
) -> None:
    device, old = device_and_token
    response = admin_client_alpha.post(
        "/admin/calls/device/", {"action": "rotate_tokens", "_selected_action": [device.pk]}
    )
    match = re.search(r'value="(stx_[^"]+)"', response.content.decode())
    assert match is not None
    new = match.group(1)
    assert Bridge(old).get("ping/").status_code == 401
    assert Bridge(new).get("ping/").status_code == 200


def test_revoking_from_the_admin(admin_client_alpha: Client, device_and_token: tuple) -> None:
    device, token = device_and_token
    admin_client_alpha.post(
        "/admin/calls/device/", {"action": "revoke_tokens", "_selected_action": [device.pk]}
    )
    assert Bridge(token).get("ping/").status_code == 401


def test_silent_devices_are_shown(admin_client_alpha: Client, device: Device) -> None:
    quiet = Device.objects.create(
        name="Quiet", phone_number="+48500000001", bitrix24_user_id=3, token_hash="q" * 64,
        last_seen_at=timezone.now() - timedelta(hours=2),
    )  # fmt: skip
    Device.objects.filter(pk=device.pk).update(last_seen_at=timezone.now())
    response = admin_client_alpha.get("/admin/calls/device/?heartbeat=silent")
    assert [d.pk for d in response.context["cl"].result_list] == [quiet.pk]
    assert "silent" in response.content.decode()
    alive = admin_client_alpha.get("/admin/calls/device/?heartbeat=alive")
    assert [d.pk for d in alive.context["cl"].result_list] == [device.pk]


# --- Call log -----------------------------------------------------------------------------


@pytest.mark.usefixtures("calls_made")
@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", ["a", "e", "m", "o"]),
        ("?direction__exact=outgoing", ["o"]),
        ("?outcome__exact=missed", ["m"]),
        ("?agent=9", ["e"]),
        ("?caller=known", ["a"]),
        ("?caller=unknown", ["m"]),
        ("?started_from=2026-11-23&started_to=2026-11-24", ["m"]),
        ("?started_from=2026-11-25", ["o"]),
        ("?started_to=2026-11-21", ["a", "e"]),
        ("?q=600+111+222", ["a"]),
        ("?q=0048600111222", ["a"]),
        ("?q=%2B48+601-222-333", ["m"]),
        ("?q=602333", ["o"]),
    ],
)
def test_call_log_filters_and_number_search(
    admin_client_alpha: Client, query: str, expected: list[str]
) -> None:
    assert _listed(admin_client_alpha, query) == expected


@pytest.mark.usefixtures("calls_made")
def test_device_filter(admin_client_alpha: Client, device: Device) -> None:
    assert _listed(admin_client_alpha, f"?device__id__exact={device.pk}") == ["a", "m", "o"]


@pytest.mark.usefixtures("calls_made")
def test_csv_export_of_the_filtered_list(admin_client_alpha: Client) -> None:
    response = admin_client_alpha.get("/admin/calls/call/export.csv?direction__exact=incoming")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    content = response.getvalue()
    assert content.startswith(b"\xef\xbb\xbf")  # UTF-8 BOM: Excel (Polish too) reads it right
    rows = list(csv.reader(io.StringIO(content.decode("utf-8-sig"))))
    assert rows[0][:3] == ["Started", "Direction", "Number"]
    assert "Caller" in rows[0]
    assert "CRM lookup" in rows[0]
    assert sorted(row[-1] for row in rows[1:]) == ["a", "e", "m"]
    assert "+48600111222" in {row[2] for row in rows[1:]}


@pytest.mark.usefixtures("calls_made")
def test_call_page_shows_the_whole_audit_trail(
    admin_client_alpha: Client, bridge: Bridge, settings: Settings, tmp_path: Path
) -> None:
    from crm.models import RequestLog

    settings.MEDIA_ROOT = tmp_path
    call = Call.objects.get(call_id="a")
    bridge.send(started("a"))
    call_note_add(call=call, text="Call back about the invoice")
    wav = make_audio(tmp_path, "wav", ["-codec:a", "pcm_s16le"])
    assert bridge.put("calls/a/recording/", wav.read_bytes(), content_type="audio/wav")\
        .status_code == 201  # fmt: skip
    RequestLog.objects.create(method="telephony.externalcall.register", http_status=200,
                              call_id=call.pk, params={"TYPE": 2})  # fmt: skip
    response = admin_client_alpha.get(f"/admin/calls/call/{call.pk}/change/")
    assert response.status_code == 200
    html = response.content.decode()
    first_event = CallEvent.objects.filter(call=call).first()
    assert first_event is not None
    for needle in [
        "Bridge events as received (2)",
        str(first_event.event_id),
        "State transitions",
        "call.ended created the call",
        "telephony.externalcall.register",
        "Call back about the invoice",
        f'<audio controls preload="none" src="/admin/calls/call/{call.pk}/recording/"',
    ]:
        assert needle in html, needle
    audio = admin_client_alpha.get(f"/admin/calls/call/{call.pk}/recording/")
    assert audio.status_code == 200
    assert audio["Content-Type"] == "audio/wav"
    assert audio.getvalue() == wav.read_bytes()


@pytest.mark.usefixtures("calls_made")
def test_nothing_in_the_call_log_can_be_edited_or_deleted(admin_client_alpha: Client) -> None:
    call = Call.objects.get(call_id="a")
    before = list(Call.objects.values())
    page = admin_client_alpha.get(f"/admin/calls/call/{call.pk}/change/").content.decode()
    assert 'name="_save"' not in page
    assert admin_client_alpha.post(f"/admin/calls/call/{call.pk}/change/", {"outcome": "missed"})\
        .status_code == 403  # fmt: skip
    assert admin_client_alpha.post(f"/admin/calls/call/{call.pk}/delete/", {"post": "yes"})\
        .status_code == 403  # fmt: skip
    assert admin_client_alpha.get("/admin/calls/call/add/").status_code == 403
    changelist = admin_client_alpha.get("/admin/calls/call/")
    assert "delete_selected" not in changelist.content.decode()
    event = CallEvent.objects.first()
    assert event is not None
    assert admin_client_alpha.post(f"/admin/calls/callevent/{event.pk}/delete/", {"post": "yes"})\
        .status_code == 403  # fmt: skip
    assert list(Call.objects.values()) == before


@pytest.mark.usefixtures("calls_made")
def test_support_group_can_look_but_not_touch(support_client: Client, device: Device) -> None:
    call = Call.objects.get(call_id="a")
    assert support_client.get("/admin/calls/call/").status_code == 200
    assert support_client.get(f"/admin/calls/call/{call.pk}/change/").status_code == 200
    assert support_client.get("/admin/calls/call/export.csv").status_code == 200
    assert support_client.get("/admin/calls/device/").status_code == 200
    assert (
        support_client.post(
            f"/admin/calls/device/{device.pk}/change/",
            {"name": "hacked", "phone_number": "+48500100200", "bitrix24_user_id": 5},
        ).status_code
        == 403
    )
    assert support_client.get("/admin/calls/device/add/").status_code == 403
    assert Device.objects.get(pk=device.pk).name == "Marta's phone"


def test_support_group_has_view_rights_on_every_audit_model(alpha: Tenant) -> None:
    support_group_ensure()
    group = Group.objects.get(name=SUPPORT_GROUP)
    granted = set(group.permissions.values_list("content_type__app_label", "codename"))
    assert {(app, f"view_{model}") for app, model in SUPPORT_VIEW_MODELS} <= granted
    assert all(codename.startswith("view_") for _, codename in granted)


def test_data_migration_gave_the_provisioned_tenant_its_support_rights(alpha: Tenant) -> None:
    group = Group.objects.get(name=SUPPORT_GROUP)
    assert group.permissions.filter(content_type__app_label="calls", codename="view_call").exists()


def test_call_settings_are_one_editable_row(admin_client_alpha: Client) -> None:
    response = admin_client_alpha.get("/admin/calls/callsettings/")
    assert response.status_code == 302
    page = admin_client_alpha.get(response["Location"])
    assert page.status_code == 200
    assert "retention_days" in page.content.decode()
    assert admin_client_alpha.get("/admin/calls/callsettings/add/").status_code == 403


def test_notes_are_visible_in_the_admin_only_as_part_of_the_call(alpha: Tenant) -> None:
    assert CallNote._meta.app_label == "calls"


def test_the_admin_is_on_the_tenants_clock_and_the_api_on_utc(
    admin_client_alpha: Client, bridge: Bridge, alpha: Tenant
) -> None:
    from tenants.middleware import tenant_cache_clear

    Tenant.objects.filter(pk=alpha.pk).update(timezone="Europe/Warsaw")
    tenant_cache_clear()
    # 13:32:05 UTC: 14:32 in Warsaw (CET, +01:00).
    assert bridge.send(started("clock-1", at=T0)).status_code == 201
    listing = admin_client_alpha.get("/admin/calls/call/").content.decode()
    assert "Times in Europe/Warsaw" in listing
    assert "2:32 p.m." in listing  # Django's English format of 14:32
    assert "1:32 p.m." not in listing
    content = admin_client_alpha.get("/admin/calls/call/export.csv").getvalue()
    rows = list(csv.reader(io.StringIO(content.decode("utf-8-sig"))))
    assert rows[1][0] == "2026-11-21T14:32:05+01:00"
    # The bridge API is not the admin: its times stay ISO 8601 on UTC.
    detail = bridge.get("calls/clock-1/").json()
    assert detail["started_at"] in ("2026-11-21T13:32:05Z", "2026-11-21T13:32:05+00:00")


def test_a_device_is_given_to_a_bitrix24_user_picked_by_name_never_an_unknown_one(
    admin_client_alpha: Client,
) -> None:
    from crm.models import Bitrix24User

    seen = timezone.now()
    Bitrix24User.objects.create(id=5, name="Marta Nowak", active=True, seen_at=seen)
    Bitrix24User.objects.create(id=7, name="Jan Odszedł", active=False, seen_at=seen)
    form = admin_client_alpha.get("/admin/calls/device/add/").content.decode()
    assert "Marta Nowak (#5)" in form
    assert "Jan Odszedł" not in form  # deactivated users are not offered
    for user_id in (7, 42):  # deactivated, unknown: not among the choices
        refused = admin_client_alpha.post(
            "/admin/calls/device/add/",
            {"name": "Phone", "phone_number": "600 700 800", "bitrix24_user_id": user_id},
        )
        assert refused.status_code == 200
        assert "Select a valid choice" in refused.content.decode()
        assert not Device.objects.filter(name="Phone").exists()
    added = admin_client_alpha.post(
        "/admin/calls/device/add/",
        {"name": "Phone", "phone_number": "600 700 800", "bitrix24_user_id": 5},
    )
    assert added.status_code == 200
    assert Device.objects.get(name="Phone").bitrix24_user_id == 5
    listing = admin_client_alpha.get("/admin/calls/device/").content.decode()
    assert "Marta Nowak (#5)" in listing


def test_issue_device_token_refuses_a_user_bitrix24_does_not_have(alpha: Tenant) -> None:
    from django.core.management import CommandError, call_command

    from crm.models import Bitrix24User

    Bitrix24User.objects.create(id=7, name="Jan Odszedł", active=False, seen_at=timezone.now())
    with pytest.raises(CommandError, match="is deactivated in Bitrix24"):
        call_command(
            "issue_device_token", "--schema", "alpha", "--name", "Reception",
            "--phone-number", "600 111 222", "--bitrix24-user-id", "7",
        )  # fmt: skip
    with pytest.raises(CommandError, match="has no user #42"):
        call_command(
            "issue_device_token", "--schema", "alpha", "--name", "Reception",
            "--phone-number", "600 111 222", "--bitrix24-user-id", "42",
        )  # fmt: skip
    assert not Device.objects.filter(name="Reception").exists()


def test_the_qr_carries_the_public_address_the_operator_set(
    admin_client_alpha: Client, settings: Settings
) -> None:
    settings.SIMTRIX_BRIDGE_PUBLIC_URL = "https://{host}.example.com/api/bridge/v1/"
    html = admin_client_alpha.post(
        "/admin/calls/device/add/",
        {"name": "Anna's phone", "phone_number": "600 700 800", "bitrix24_user_id": 3},
    ).content.decode()
    assert "server=https%3A%2F%2Falpha.localhost.example.com%2Fapi%2Fbridge%2Fv1%2F" in html
    assert 'id="qr-unreachable"' not in html


def test_the_call_page_says_at_the_top_what_happened_to_the_call(
    admin_client_alpha: Client, bridge: Bridge, alpha: Tenant
) -> None:
    from scenarios.models import ActionRun
    from tenants.middleware import tenant_cache_clear

    Tenant.objects.filter(pk=alpha.pk).update(timezone="Europe/Warsaw")
    tenant_cache_clear()
    bridge.send(started("st-1"))
    bridge.send(ended("st-1", outcome="missed", duration_seconds=0))
    call = Call.objects.get(call_id="st-1")
    # Planned once the caller is known (alpha has no portal here): the log run, as planned.
    log = ActionRun.objects.create(call=call, action_type="log_call", due_at=timezone.now())

    def status() -> str:
        page = admin_client_alpha.get(f"/admin/calls/call/{call.pk}/change/").content.decode()
        match = re.search(
            r'id="call-status" data-kind="(\w+)"[^>]*>\s*<strong>([^<]*)</strong>', page
        )
        assert match is not None, "no status line"
        return f"{match.group(1)}: {match.group(2)}"

    assert status().startswith("waiting: Waiting for Bitrix24")
    ActionRun.objects.filter(pk=log.pk).update(
        attempts=2, last_error="HTTP 503", due_at=datetime(2026, 11, 21, 13, 40, tzinfo=UTC)
    )
    assert status() == "waiting: Waiting for Bitrix24: retry 3 of 12 at 14:40 (last: HTTP 503)"
    ActionRun.objects.filter(pk=log.pk).update(status="failed", last_error="Access denied")
    assert status() == "failed: Not logged in Bitrix24: failed: Access denied"
    page = admin_client_alpha.get(f"/admin/calls/call/{call.pk}/change/").content.decode()
    assert 'id="call-retry"' in page
    admin_client_alpha.post(
        "/admin/scenarios/actionrun/", {"action": "retry", "_selected_action": log.pk}
    )
    assert ActionRun.objects.get(pk=log.pk).status == "scheduled"
    Call.objects.filter(pk=call.pk).update(
        b24_finished_at=datetime(2026, 11, 21, 13, 33, tzinfo=UTC),
        b24_call_id="externalCall.1",
        b24_log_mode="telephony",
        b24_activity_id=123,
    )
    assert status() == (
        "logged: Logged in Bitrix24 at 14:33 as a telephony call (externalCall.1), activity #123."
    )


def test_a_new_tenant_sees_the_onboarding_checklist_ticked_from_real_state(
    admin_client_alpha: Client, bridge: Bridge
) -> None:
    def steps() -> dict[str, str]:
        page = admin_client_alpha.get("/admin/").content.decode()
        assert 'id="onboarding"' in page
        found = re.findall(
            r'class="step" data-done="(yes|no)">.*?<a href="[^"]*">(?:<strong>)?([^<]+)', page
        )
        return {label: done for done, label in found}

    first = steps()
    assert first["Connect Bitrix24"] == "no"
    assert first["First device"] == "yes"  # the bridge fixture's phone
    assert first["A test call"] == "no"
    bridge.send(started("ob-1"))
    assert steps()["A test call"] == "yes"


def test_a_set_up_tenant_sees_its_state_at_a_glance(
    admin_client_alpha: Client, bridge: Bridge, device: Device
) -> None:
    from crm.models import Bitrix24Connection

    now = timezone.now()
    assert bridge.send(started("g-1")).status_code == 201  # before the portal: no lookup
    Bitrix24Connection.objects.update_or_create(
        singleton=1,
        defaults={
            "webhook_url": "https://portal.example/rest/1/secret/",
            "last_ok_at": now,
            "directory_synced_at": now,
        },
    )
    Call.objects.filter(call_id="g-1").update(
        b24_finished_at=now, started_at=now - timedelta(minutes=5), outcome="missed"
    )
    Device.objects.filter(pk=device.pk).update(last_seen_at=now - timedelta(days=1))
    page = admin_client_alpha.get("/admin/").content.decode()
    assert 'id="onboarding"' not in page, re.findall(r'data-done="no">[^\n]*', page)
    assert 'id="glance"' in page
    assert "1 missed" in page
    assert f"silent: {device.name}" in page.replace("&#x27;", "'")
    assert "/admin/calls/device/?heartbeat=silent" in page

    # A failed run is told once, in the background work box, with its link.
    from scenarios.models import ActionRun

    ActionRun.objects.create(
        call=Call.objects.get(call_id="g-1"), action_type="notify", status="failed"
    )
    page = admin_client_alpha.get("/admin/").content.decode()
    assert page.count("status__exact=failed") == 1
    assert "1 run failed</a> for good" in page

    # An open alert, past its grace time, is on the glance with the way to it.
    from alerts.models import Incident

    Incident.objects.create(
        kind="device_silent", subject_key="device:1", subject="Reception phone silent",
        opened_at=now, alert_at=now,
    )  # fmt: skip
    Incident.objects.create(
        kind="bitrix24_down", subject_key="portal", subject="Portal down",
        opened_at=now, alert_at=now + timedelta(minutes=10),  # not yet: a short outage
    )  # fmt: skip
    page = admin_client_alpha.get("/admin/").content.decode()
    assert "1 open alert: Reception phone silent" in page
    assert "/admin/alerts/incident/?state=open" in page


def test_the_home_is_sectioned_by_job_and_the_system_is_for_superusers(
    admin_client_alpha: Client, support_client: Client
) -> None:
    boss = admin_client_alpha.get("/admin/").content.decode()
    for section in ("Calls", "Setup", "System"):
        assert f">{section}</a>" in boss or f">{section}<" in boss
    assert "Bitrix24 requests" in boss
    helpdesk = support_client.get("/admin/").content.decode()
    assert ">Calls<" in helpdesk or ">Calls</a>" in helpdesk
    assert "System" not in helpdesk
    # Hidden from the menu, not forbidden: the call page links to its requests.
    assert support_client.get("/admin/crm/requestlog/").status_code == 200


def test_a_device_page_has_its_token_buttons(admin_client_alpha: Client, device: Device) -> None:
    page = admin_client_alpha.get(f"/admin/calls/device/{device.pk}/change/").content.decode()
    assert 'id="action-rotate_tokens"' in page
    assert 'id="action-revoke_tokens"' in page
    before = Device.objects.get(pk=device.pk).token_hash
    response = admin_client_alpha.post(
        "/admin/calls/device/", {"action": "rotate_tokens", "_selected_action": device.pk}
    )
    assert response.status_code == 200
    assert "shown once" in response.content.decode()
    assert Device.objects.get(pk=device.pk).token_hash != before


def test_the_connection_page_has_its_test_button(admin_client_alpha: Client) -> None:
    from crm.models import Bitrix24Connection

    conn, _ = Bitrix24Connection.objects.get_or_create(singleton=1)
    page = admin_client_alpha.get(
        f"/admin/crm/bitrix24connection/{conn.pk}/change/"
    ).content.decode()
    assert 'id="action-test_connection"' in page
