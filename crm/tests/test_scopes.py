"""A portal that grants only the required scopes: what degrades, and what says so."""

from __future__ import annotations

from typing import Any

from crm.connections import OPTIONAL_SCOPES, REQUIRED_SCOPES
from crm.models import Bitrix24Connection, Bitrix24User, Department
from crm.services import connection_test, directory_sync, directory_timeman_refresh
from crm.tests.conftest import top_level

# The scopes the README (and the local application's instructions) ask for.
DOCUMENTED = list(REQUIRED_SCOPES)


def _connect(portal: Any, scopes: list[str]) -> None:
    Bitrix24Connection.objects.update(webhook_url=portal.add_webhook(1, scopes=scopes))


def test_test_connection_is_ok_without_optional_scopes_and_warns_of_each(portal: Any) -> None:
    _connect(portal, DOCUMENTED)

    check = connection_test()

    assert check.ok is True
    assert check.missing_scopes == []
    assert len(check.warnings) == len(OPTIONAL_SCOPES) == 2
    assert any(w.startswith("Optional scope department is not granted") for w in check.warnings)
    assert any(w.startswith("Optional scope timeman is not granted") for w in check.warnings)
    connection = Bitrix24Connection.objects.get()
    assert connection.last_error_code == ""  # a warning is not a broken connection


def test_test_connection_with_every_scope_has_no_warning(portal: Any) -> None:
    check = connection_test()
    assert (check.ok, check.warnings) == (True, [])


def test_directory_sync_without_department_scope_keeps_names_and_routing_membership(
    portal: Any,
) -> None:
    assert Department.objects.get(id=4).name == "Legal"  # read while the scope was granted
    Department.objects.filter(id=2).delete()  # one the directory has never seen
    _connect(portal, DOCUMENTED)

    result = directory_sync()

    assert result.missing_scopes == ["department"]
    assert result.users == 6  # everything else was read
    assert Bitrix24User.objects.get(id=5).department_ids == [2]
    assert Department.objects.get(id=2).name == "Department #2"  # known by the users' ids
    legal = Department.objects.get(id=4)
    assert (legal.name, legal.removed) == ("Legal", False)  # kept, not marked removed
    assert result.removed["departments"] == 0
    # The sync read the granted scopes too (one batch, no extra request).
    assert Bitrix24Connection.objects.get().scopes == sorted(DOCUMENTED)
    assert len(top_level(portal)) == 1


def test_work_day_status_is_not_asked_for_without_timeman_scope(portal: Any) -> None:
    Bitrix24User.objects.filter(id=5).update(timeman_status="OPENED")
    _connect(portal, DOCUMENTED)
    directory_sync()
    with portal.state.lock:
        portal.state.requests.clear()

    statuses = directory_timeman_refresh()

    assert len(statuses) == Bitrix24User.objects.filter(active=True).count() > 0
    assert set(statuses.values()) == {""}  # ...unknown: routing counts them available
    assert top_level(portal) == []
    assert Bitrix24User.objects.get(id=5).timeman_status == ""


def test_work_day_status_is_read_when_the_scope_is_granted(portal: Any) -> None:
    directory_sync()  # records the full list of scopes
    assert "timeman" in Bitrix24Connection.objects.get().scopes
    with portal.state.lock:
        portal.state.requests.clear()

    directory_timeman_refresh(user_ids=[5])

    assert [r["method"] for r in top_level(portal)] == ["batch"]
