"""simulate_calls against a real web server (gunicorn on the test database) and the sandbox."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from django.core.management import call_command
from django.core.management.base import CommandError
from django_tenants.utils import schema_context

from calls.models import Call, CallEvent, CallNote, CallRecording
from calls.services import device_register
from calls.tests.test_worker import _wipe_alpha
from conftest import REPO, subprocess_database_url


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def web_server(committed_db: Callable, tmp_path: Path) -> Iterator[str]:
    """gunicorn serving the project on the (committed) test database; yields its port."""
    port = _free_port()
    env = {
        **os.environ,
        "DATABASE_URL": subprocess_database_url(),
        "SIMTRIX_MEDIA_ROOT": str(tmp_path / "media"),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "simtrix.wsgi:application", "-b", f"127.0.0.1:{port}",
         "-w", "2", "--threads", "2", "--log-level", "warning"],
        cwd=REPO, env=env,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                requests.get(f"http://127.0.0.1:{port}/api/bridge/v1/ping/", timeout=5,
                             headers={"Host": "alpha.localhost"})  # fmt: skip
                break
            except (requests.ConnectionError, requests.Timeout):
                time.sleep(0.2)
        yield str(port)
    finally:
        process.terminate()
        process.wait(timeout=15)


def test_simulator_plays_realistic_calls_through_the_http_api(
    committed_db: Callable, alpha_portal: Any, web_server: str
) -> None:
    committed_db(_wipe_alpha)
    with schema_context("alpha"):
        _, marta = device_register(
            name="Marta's phone", phone_number="+48500100200", bitrix24_user_id=5, country="PL"
        )
        _, ewa = device_register(
            name="Ewa's phone", phone_number="+48500100300", bitrix24_user_id=9, country="PL"
        )
    out = io.StringIO()
    call_command(
        "simulate_calls", "--base-url", f"http://alpha.localhost:{web_server}", "--token", marta,
        "--token", ewa, "--calls", "10", "--interval", "0", "--seed", "4", stdout=out,
    )  # fmt: skip
    summary = json.loads(out.getvalue())
    assert summary["calls"] == 10
    assert summary["errors"] == []
    assert sum(summary["outcomes"].values()) == 10
    assert len(summary["outcomes"]) >= 2  # a mix, not one kind of call
    # Whatever the seed, a run shows each kind of call SIMtrix treats differently.
    assert summary["outcomes"].get("missed", 0) >= 2
    assert summary["outcomes"].get("rejected", 0) >= 1
    assert summary["outcomes"].get("answered", 0) >= 1
    assert summary["known_callers_found"] >= 1
    with schema_context("alpha"):
        calls = list(Call.objects.select_related("device"))
        assert len(calls) == 10
        assert {c.device.name for c in calls} == {"Marta's phone", "Ewa's phone"}
        assert all(c.status == "ended" and c.outcome for c in calls)
        assert {c.crm_status for c in calls} <= {"found", "not_found"}
        assert {"found", "not_found"} <= {
            c.crm_status for c in calls if c.outcome == "missed"
        }  # a known caller missed, and an unknown number
        assert CallEvent.objects.count() == summary["events"]
        assert CallRecording.objects.count() == summary["recordings"]
        assert CallNote.objects.count() == summary["notes"]


def test_simulator_with_a_bad_token_fails_with_one_line(
    committed_db: Callable, web_server: str
) -> None:
    with pytest.raises(CommandError, match=r"refused the simulator.*401"):
        call_command(
            "simulate_calls", "--base-url", f"http://alpha.localhost:{web_server}",
            "--token", "stx_nope", "--calls", "1",
        )  # fmt: skip
