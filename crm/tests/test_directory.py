from __future__ import annotations

import io
import json
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from crm.models import (
    Bitrix24Connection,
    Bitrix24User,
    Department,
    LeadSource,
    LeadStatus,
    Pipeline,
    Stage,
)
from crm.selectors import (
    directory_missing,
    directory_user,
    directory_user_by_phone,
    directory_users,
    lead_status_first,
    stage_choices,
    user_choices,
)
from crm.services import directory_sync
from crm.tests.conftest import top_level


def test_sync_mirrors_the_portal_in_one_request(portal: Any) -> None:
    Bitrix24User.objects.all().delete()

    result = directory_sync()

    assert result.requests == 1
    assert len(top_level(portal)) == 1
    assert (result.users, result.pipelines, result.lead_statuses) == (6, 2, 5)
    marta = directory_user(user_id=5)
    assert marta is not None
    assert (marta.name, marta.active, marta.department_ids) == ("Marta Nowak", True, [2])
    assert {p["e164"] for p in marta.phones} == {"+48221000005", "+48501000005"}
    left = directory_user(user_id=7)
    assert left is not None
    assert left.active is False  # left the company: kept, inactive
    assert Department.objects.get(id=4).name == "Legal"
    assert dict(Pipeline.objects.values_list("id", "name")) == {0: "General", 1: "Contracts"}
    stage = Stage.objects.get(stage_id="C1:NEGOTIATION")
    assert (stage.pipeline_id, stage.name, stage.semantics) == (
        1,
        "Contract negotiation",
        "process",
    )
    assert Stage.objects.get(stage_id="C1:WON").semantics == "success"
    assert LeadStatus.objects.get(status_id="JUNK").semantics == "failure"
    assert LeadSource.objects.get(source_id="CALL").name == "Call"
    assert Bitrix24Connection.objects.get().directory_synced_at is not None


def test_what_disappears_is_marked_removed_not_deleted(portal: Any) -> None:
    portal.control.delete_stage("C1:NEGOTIATION", category_id=1)
    portal.control.deactivate_user(9)

    result = directory_sync()

    assert result.removed["stages"] == 1
    assert Stage.objects.get(stage_id="C1:NEGOTIATION").removed is True
    gone = directory_user(user_id=9)
    assert gone is not None
    assert gone.active is False
    assert 9 not in dict(user_choices())
    assert "C1:NEGOTIATION" not in dict(stage_choices())
    assert directory_missing(
        user_ids=[5, 9, 404], stage_ids=["C1:NEW", "C1:NEGOTIATION"], lead_status_ids=["NEW"]
    ) == {"users": [9, 404], "stages": ["C1:NEGOTIATION"]}

    # Back in the portal: back in the directory.
    portal.control.add_stage("C1:NEGOTIATION", "Contract negotiation", category_id=1, sort=20)
    directory_sync()
    assert Stage.objects.get(stage_id="C1:NEGOTIATION").removed is False


def test_pipeline_deleted_in_bitrix24(portal: Any) -> None:
    portal.control.delete_category(1)
    result = directory_sync()
    assert result.removed["pipelines"] == 1
    assert Pipeline.objects.get(id=1).removed is True
    assert directory_missing(pipeline_ids=[0, 1]) == {"pipelines": [1]}


def test_large_directories_are_paged_in_one_more_request(portal: Any) -> None:
    for index in range(60):
        portal.control.add_user(NAME="Agent", LAST_NAME=f"No{index}", UF_DEPARTMENT=[2])

    result = directory_sync()

    assert result.users == 66
    assert result.requests == 2
    assert directory_users().count() == 65  # one seed user is inactive


def test_directory_selectors(portal: Any) -> None:
    assert lead_status_first() == "NEW"
    marta = directory_user_by_phone(phone="501 000 005")
    assert marta is not None
    assert marta.id == 5
    assert directory_user_by_phone(phone="+48 999 999 999") is None


def test_sync_command_prints_json(portal: Any) -> None:
    out = io.StringIO()
    call_command("sync_bitrix24", "--schema", "alpha", stdout=out)
    data = json.loads(out.getvalue())
    assert (data["schema"], data["users"], data["stages"]) == ("alpha", 6, 9)


def test_sync_command_fails_with_one_line(portal: Any) -> None:
    Bitrix24Connection.objects.update(webhook_url=f"{portal.url}/rest/1/wrong/")
    with pytest.raises(CommandError) as caught:
        call_command("sync_bitrix24", "--schema", "alpha", stdout=io.StringIO())
    assert "INVALID_CREDENTIALS" in str(caught.value)
    assert "\n" not in str(caught.value)
    with pytest.raises(CommandError, match="No tenant"):
        call_command("sync_bitrix24", "--schema", "nobody", stdout=io.StringIO())


def test_history_older_than_the_retention_is_pruned(portal: Any) -> None:
    from datetime import timedelta

    from django.utils import timezone

    from crm.models import InboundEvent, Intent, RequestLog
    from crm.services import history_prune

    directory_sync()
    old = timezone.now() - timedelta(days=31)
    RequestLog.objects.update(created_at=old)
    Intent.objects.create(key="old-done", method="crm.lead.add", status="done")
    Intent.objects.create(key="old-ambiguous", method="crm.lead.add", status="ambiguous")
    Intent.objects.update(updated_at=old)
    for status in ("done", "ignored", "pending"):
        InboundEvent.objects.create(event="ONCRMCONTACTUPDATE", status=status)
    InboundEvent.objects.update(received_at=old)
    InboundEvent.objects.create(event="ONCRMCONTACTUPDATE", status="done")
    directory_sync()

    # One batch request and its nine commands (four lists, four field lists, the scopes) are
    # old; the second sync's ten rows stay.
    assert history_prune() == {"requests": 10, "intents": 1, "events": 2}
    assert RequestLog.objects.count() == 10
    assert list(Intent.objects.values_list("key", flat=True)) == ["old-ambiguous"]
    # A pending event stays whatever its age; a recent one stays.
    assert sorted(InboundEvent.objects.values_list("status", flat=True)) == ["done", "pending"]


def test_crm_field_lists_are_mirrored_in_the_same_request(portal: Any) -> None:
    from crm.models import EntityField
    from crm.selectors import directory_entity_fields, directory_fields_synced

    result = directory_sync()

    assert result.requests == 1
    assert directory_fields_synced() == {"contact", "company", "lead", "deal"}
    sim = EntityField.objects.get(entity_type="contact", name="UF_CRM_PREFERRED_SIM")
    assert (sim.title, sim.type, sim.custom) == ("Preferred SIM", "string", True)
    assert sim.removed is False
    assert directory_entity_fields(entity_types=["deal"]).filter(name="STAGE_ID").exists()
    assert result.fields == EntityField.objects.count()

    with portal.state.lock:
        del portal.state.uf_fields["CONTACT"]["UF_CRM_PREFERRED_SIM"]
    result = directory_sync()
    assert result.removed["fields"] == 1
    sim.refresh_from_db()
    assert sim.removed is True


def test_directory_sync_tells_the_listeners_once_committed(portal: Any) -> None:
    from crm.signals import directory_synced

    heard: list[dict[str, int]] = []

    def listener(**kwargs: Any) -> None:
        heard.append(kwargs["removed"])

    directory_synced.connect(listener, dispatch_uid="test-listener")
    try:
        portal.control.delete_stage("C1:NEGOTIATION", category_id=1)
        directory_sync()
    finally:
        directory_synced.disconnect(dispatch_uid="test-listener")
    assert [removed["stages"] for removed in heard] == [1]


def test_work_day_statuses_are_read_in_one_batch_and_kept(portal: Any) -> None:
    from crm.services import directory_timeman_refresh
    from crm.tests.conftest import top_level

    portal.control.set_timeman_status(3, "EXPIRED")
    statuses = directory_timeman_refresh()

    assert statuses == {1: "OPENED", 3: "EXPIRED", 5: "OPENED", 9: "PAUSED", 11: "CLOSED"}
    assert [r["method"] for r in top_level(portal)] == ["batch"]
    piotr = directory_user(user_id=3)
    assert piotr is not None
    assert (piotr.timeman_status, piotr.timeman_checked_at is not None) == ("EXPIRED", True)
    # A user timeman.status does not know gets no status (unknown), not an error.
    assert directory_timeman_refresh(user_ids=[404]) == {404: ""}
