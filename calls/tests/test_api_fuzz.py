"""Schemathesis against the live bridge API: whatever it sends, no answer is a 5xx.

The project's WSGI application serves real HTTP on 127.0.0.1 (the root conftest's `web_server`);
the OpenAPI schema is the one that server serves on alpha's host; a real device token of alpha
authenticates every request. Bounded and repeatable: a fixed number of examples per operation
and generation mode, derandomized (the same cases every run), no example database, no
shrinking beyond Hypothesis' own on a failure. Besides "no server error", each status code and
Content-Type must be one the schema documents for the operation.

The tenant has no Bitrix24 connection here: lookups answer `unavailable` at once, so the run
spends its time on input handling (the sandbox's 2 requests/s would make it minutes).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import requests
import schemathesis
from django_tenants.utils import schema_context
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from calls.models import Call
from calls.services import device_register
from calls.tests.conftest import started
from calls.tests.test_worker import _wipe_alpha

EXAMPLES_PER_OPERATION = 20
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@dataclass(frozen=True)
class Target:
    base_url: str
    headers: dict[str, str]
    call_id: str  # a call of the device, so the call's endpoints get past their 404


@pytest.fixture
def target(committed_db: Callable, web_server: int) -> Target:
    committed_db(_wipe_alpha)
    with schema_context("alpha"):
        _, token = device_register(
            name="Fuzzed phone", phone_number="+48500100900", bitrix24_user_id=5, country="PL"
        )
    headers = {"Host": f"alpha.localhost:{web_server}", "Authorization": f"Bearer {token}"}
    base_url = f"http://127.0.0.1:{web_server}"
    response = requests.post(
        f"{base_url}/api/bridge/v1/events/",
        json=started("fuzz-1"),
        headers=headers,
        timeout=30,
    )
    assert response.status_code == 201, response.content
    return Target(base_url, headers, "fuzz-1")


def _schema(target: Target) -> Any:
    response = requests.get(
        f"{target.base_url}/api/schema/?format=json", headers=target.headers, timeout=30
    )
    assert response.status_code == 200
    return schemathesis.openapi.from_dict(response.json())


def _operations(target: Target) -> list[Any]:
    operations = [result.ok() for result in _schema(target).get_all_operations()]
    assert {op.label for op in operations} >= {
        "POST /api/bridge/v1/events/",
        "POST /api/bridge/v1/lookup/",
        "GET /api/bridge/v1/calls/{call_id}/",
        "PUT /api/bridge/v1/calls/{call_id}/recording/",
        "POST /api/bridge/v1/calls/{call_id}/notes/",
        "POST /api/bridge/v1/heartbeat/",
        "GET /api/bridge/v1/ping/",
    }
    return operations


def _fuzz(target: Target, operation: Any, mode: GenerationMode, *, own_call: bool) -> int:
    """Sends EXAMPLES_PER_OPERATION cases of `operation`; returns how many were sent."""
    path_parameters = (
        {"call_id": target.call_id} if own_call and "{call_id}" in operation.path else None
    )
    strategy = operation.as_strategy(
        generation_mode=mode, path_parameters=path_parameters, headers=target.headers
    )
    sent = []

    @given(case=strategy)
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any) -> None:
        response = case.call(base_url=target.base_url, headers=target.headers, timeout=30)
        sent.append(response.status_code)
        case.validate_response(response, checks=CHECKS, headers=target.headers)

    run()
    return len(sent)


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_input_makes_the_bridge_api_fail(target: Target, mode: GenerationMode) -> None:
    fuzzed = []
    for operation in _operations(target):
        # Negative cases need something to spoil: a body, or a call_id left to generate.
        if mode.is_positive or operation.body:
            assert _fuzz(target, operation, mode, own_call=True) > 0, operation.label
            fuzzed.append(operation.label)
        if "{call_id}" in operation.path:
            # Other call_ids too (negative: ones no call can have): 404 like an unknown call.
            assert _fuzz(target, operation, mode, own_call=False) > 0, operation.label
    assert len(fuzzed) >= (7 if mode.is_positive else 4)  # events, lookup, notes, heartbeat...
    with schema_context("alpha"):
        assert Call.objects.filter(call_id="fuzz-1").exists()
