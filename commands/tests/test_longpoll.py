"""The long poll over real HTTP (the project's WSGI app in a thread), with committed rows: woken
through Redis, found in the database when the wake is lost or Redis was flushed, holding no
database connection while it waits."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import requests
from django.conf import settings
from django.db import connection
from django_tenants.utils import schema_context
from pytest_django import Settings

from calls.models import Device
from calls.services import device_register
from commands import services, wakeup
from commands.models import Command, Dial
from commands.services import command_create
from crm.redis_client import get_redis


def _wipe() -> None:
    with schema_context("alpha"):
        Dial.objects.all().delete()
        Command.objects.all().delete()
        Device.objects.filter(name__startswith="poll-").delete()


def _device(committed_db: Callable, name: str = "poll-1") -> tuple[Device, str]:
    committed_db(_wipe)
    with schema_context("alpha"):
        return device_register(
            name=name, phone_number="+48500100200", bitrix24_user_id=5, country="PL"
        )


def _poll(port: int, token: str, wait: int) -> requests.Response:
    return requests.get(
        f"http://127.0.0.1:{port}/api/bridge/v1/commands/?wait={wait}",
        headers={"Host": "alpha.localhost", "Authorization": f"Bearer {token}"},
        timeout=wait + 10,
    )


class _Poll(threading.Thread):
    def __init__(self, port: int, token: str, wait: int) -> None:
        super().__init__(daemon=True)
        self.args = (port, token, wait)
        self.response: requests.Response | None = None
        self.elapsed = 0.0

    def run(self) -> None:
        started = time.monotonic()
        self.response = _poll(*self.args)
        self.elapsed = time.monotonic() - started

    def commands(self) -> list[dict[str, Any]]:
        self.join(timeout=40)
        assert self.response is not None
        assert self.response.status_code == 200
        return self.response.json()["commands"]


def _dial(device: Device, number: str = "+48600111222") -> Command:
    with schema_context("alpha"):
        return command_create(
            device=device,
            type=Command.Type.DIAL,
            phone_number=number,
            payload={"call_id": f"b24-{number[-4:]}", "crm": {"status": "not_found"}},
        )


def _backends() -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid()"
        )
        return int(cursor.fetchone()[0])


def _until(predicate: Callable[[], bool], within: float) -> bool:
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_a_waiting_poll_is_woken_by_a_new_command_and_holds_no_connection(
    committed_db: Callable, web_server: int
) -> None:
    device, token = _device(committed_db)
    before = _backends()
    poll = _Poll(web_server, token, wait=25)
    poll.start()
    channel = wakeup.wake_channel("alpha", device.pk)
    # Waiting, with the process's listener subscribed (until then polls read the database every
    # half second, as when Redis is down).
    assert _until(lambda: wakeup._listener.subscribed and channel in wakeup._listener._watches, 5)
    # A closed connection leaves pg_stat_activity when its backend has exited: a moment later.
    waiting = _until(lambda: _backends() <= before, 3)
    time.sleep(0.5)
    still_waiting = _backends() <= before
    created = time.monotonic()
    command = _dial(device)
    delivered = poll.commands()
    assert [c["command_id"] for c in delivered] == [str(command.command_id)]
    # Woken: the poll's own database check comes only every 30 s.
    assert time.monotonic() - created < 5
    assert waiting
    assert still_waiting


def test_a_lost_wake_is_found_by_the_polls_own_database_check(
    committed_db: Callable, web_server: int, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.SIMTRIX_COMMANDS_CHECK_SECONDS = 1
    monkeypatch.setattr(services, "wake_publish", lambda **kwargs: None)
    device, token = _device(committed_db)
    poll = _Poll(web_server, token, wait=25)
    poll.start()
    time.sleep(1)
    command = _dial(device)
    assert [c["command_id"] for c in poll.commands()] == [str(command.command_id)]
    assert poll.elapsed < 8


def test_redis_flushed_while_a_command_waits_still_delivers_it(
    committed_db: Callable, web_server: int
) -> None:
    device, token = _device(committed_db)
    command = _dial(device)
    get_redis().flushdb()
    response = _poll(web_server, token, wait=5)
    assert response.status_code == 200
    assert [c["command_id"] for c in response.json()["commands"]] == [str(command.command_id)]


def test_many_waiting_phones_each_get_only_their_own_command(
    committed_db: Callable, web_server: int
) -> None:
    committed_db(_wipe)
    phones = []
    with schema_context("alpha"):
        for i in range(8):
            phones.append(
                device_register(
                    name=f"poll-{i}",
                    phone_number=f"+4850010{i:04d}",
                    bitrix24_user_id=5,
                    country="PL",
                )
            )
    polls = [_Poll(web_server, token, wait=20) for _, token in phones]
    for poll in polls:
        poll.start()
    time.sleep(1.5)
    made = {device.pk: _dial(device, f"+4860011{i:04d}") for i, (device, _) in enumerate(phones)}
    for (device, _), poll in zip(phones, polls, strict=True):
        assert [c["command_id"] for c in poll.commands()] == [str(made[device.pk].command_id)]


def test_a_poll_with_wait_zero_answers_at_once(committed_db: Callable, web_server: int) -> None:
    _, token = _device(committed_db)
    started = time.monotonic()
    response = _poll(web_server, token, wait=0)
    assert response.status_code == 200
    assert response.json() == {"commands": []}
    assert time.monotonic() - started < 5
    assert settings.SIMTRIX_COMMANDS_CHECK_SECONDS == 30


def test_with_redis_gone_a_waiting_poll_finds_the_command_in_the_database_within_a_second(
    committed_db: Callable, web_server: int, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # This process's listener cannot reach Redis (nothing listens on port 9): polls read the
    # database every half second instead of waiting for a wake that cannot come.
    settings.REDIS_URL = "redis://127.0.0.1:9/0"
    monkeypatch.setattr(wakeup, "_listener", wakeup._Listener())
    monkeypatch.setattr(services, "wake_publish", lambda **kwargs: None)
    device, token = _device(committed_db)
    poll = _Poll(web_server, token, wait=25)
    poll.start()
    time.sleep(1.5)
    assert not wakeup._listener.subscribed
    command = _dial(device)
    made = time.monotonic()
    assert [c["command_id"] for c in poll.commands()] == [str(command.command_id)]
    assert time.monotonic() - made < 3
