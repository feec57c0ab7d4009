"""Who an action is for: the strategies, and round-robin that is fair under concurrency."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection
from django_tenants.utils import schema_context

from calls.models import Device
from calls.services import device_register, device_revoke
from scenarios.models import RoundRobinCursor
from scenarios.planning import CallFacts
from scenarios.routing.services import round_robin_pick
from scenarios.selectors import Directory
from scenarios.services import Unresolvable, responsible_resolve
from tenants.models import Tenant

FACTS = CallFacts(
    direction="incoming",
    phone_number="+48600111222",
    ended=True,
    crm={"status": "found", "responsible": {"id": 5, "name": "Marta"}},
    route={"user": {"id": 3, "name": ""}},
    agent_id=9,
)
# Users 3, 5, 9 and 11 work here; 7 left the company (inactive).
SYNCED = Directory(synced=True, users={3: True, 5: True, 7: False, 9: True, 11: True})


def resolve(strategy: str, users: list[int] | None = None, **kwargs: Any) -> tuple[int, str]:
    config = {"responsible": strategy, "users": users or []}
    return responsible_resolve(
        config=config, facts=kwargs.get("facts", FACTS), known=kwargs.get("known", SYNCED),
        peek=kwargs.get("peek", False),
    )  # fmt: skip


def test_each_strategy_names_its_user(alpha: Tenant) -> None:
    assert resolve("crm") == (5, "CRM responsible")
    assert resolve("agent") == (9, "device's agent")
    assert resolve("routed") == (3, "routed user")
    assert resolve("fixed", [11]) == (11, "fixed user")


def test_an_inactive_crm_responsible_falls_back_to_the_agent(alpha: Tenant) -> None:
    facts = CallFacts(**{**FACTS.__dict__, "crm": {"status": "found", "responsible": {"id": 7}}})
    assert resolve("crm", facts=facts) == (9, "device's agent (Bitrix24 user 7 is inactive)")


def test_a_fixed_user_who_left_cannot_be_used(alpha: Tenant) -> None:
    with pytest.raises(Unresolvable, match="user 7 is inactive"):
        resolve("fixed", [7])
    with pytest.raises(Unresolvable, match="user 8 no longer exists"):
        resolve("fixed", [8])


def test_round_robin_takes_turns_skips_inactive_users_and_remembers(alpha: Tenant) -> None:
    picks = [resolve("round_robin", [9, 7, 3, 5])[0] for _ in range(7)]
    assert picks == [3, 5, 9, 3, 5, 9, 3]
    cursor = RoundRobinCursor.objects.get(key="users:3,5,7,9")
    assert (cursor.last_user_id, cursor.assignments) == (3, 7)
    # Peeking (the simulator) shows whose turn it is without taking it.
    assert resolve("round_robin", [9, 7, 3, 5], peek=True)[0] == 5
    assert resolve("round_robin", [9, 7, 3, 5])[0] == 5


def test_round_robin_without_users_goes_round_the_agents_with_devices(alpha: Tenant) -> None:
    for name, user in (("A", 11), ("B", 3), ("C", 5)):
        device_register(name=name, phone_number=f"+4850010010{user % 10}", bitrix24_user_id=user,
                        country="PL")  # fmt: skip
    device_revoke(device=Device.objects.get(name="C"))
    picks = [resolve("round_robin")[0] for _ in range(4)]
    assert picks == [3, 11, 3, 11]


def test_round_robin_with_nobody_active_cannot_choose(alpha: Tenant) -> None:
    with pytest.raises(Unresolvable, match="no active user"):
        resolve("round_robin", [7])


def test_round_robin_is_fair_across_concurrent_calls(
    committed_db: Callable, django_db_blocker: Any
) -> None:
    key = "test:concurrent"
    committed_db(lambda: _drop_cursor(key))
    picks: list[int | None] = []
    barrier = threading.Barrier(12)

    def worker() -> None:
        try:
            with schema_context("alpha"):
                barrier.wait()
                for _ in range(5):
                    picks.append(round_robin_pick(key=key, candidates=[3, 5, 9]))
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert Counter(picks) == {3: 20, 5: 20, 9: 20}
    with schema_context("alpha"):
        assert RoundRobinCursor.objects.get(key=key).assignments == 60


def _drop_cursor(key: str) -> None:
    with schema_context("alpha"):
        RoundRobinCursor.objects.filter(key=key).delete()
