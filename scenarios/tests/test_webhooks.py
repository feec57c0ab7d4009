"""The webhook's delivery against a real local HTTP server: what is retried, what fails at once,
and what SIMtrix will not connect to (in this process; the worker's run is in
test_actions_engine)."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator

import pytest
from django.utils import timezone
from pytest_django import Settings

from calls.models import Device
from scenarios.models import ActionRun, ScenarioSettings
from scenarios.outbox import PermanentActionError, run_execute, run_plan
from scenarios.planning import _action_params
from scenarios.tests.conftest import call_make
from scenarios.tests.receiver import Receiver, webhook_receiver
from scenarios.webhooks import WebhookUnavailable, webhook_deliver, webhook_signature

Status = ActionRun.Status
PAYLOAD = {"delivery": "alpha:1", "call_id": "c-1", "number": "+48600111222"}


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with webhook_receiver() as receiver:
        yield receiver


def test_the_signature_is_the_hmac_of_the_exact_body(receiver: Receiver) -> None:
    result = webhook_deliver(url=receiver.url, secret="k", payload=PAYLOAD, allow_http=True)
    [received] = receiver.received()
    assert json.loads(received.body) == PAYLOAD
    expected = hmac.new(b"k", received.body, hashlib.sha256).hexdigest()
    assert (
        received.headers["X-SIMtrix-Signature"] == expected == webhook_signature(received.body, "k")
    )
    assert (result["status"], result["delivery"]) == (200, "alpha:1")


@pytest.mark.parametrize(
    ("answer", "error", "message"),
    [
        ((503, 0.0), WebhookUnavailable, "answered HTTP 503"),
        ((429, 0.0), WebhookUnavailable, "answered HTTP 429"),
        ((200, 2.0), WebhookUnavailable, "no answer within 0.5 s"),
        ((404, 0.0), PermanentActionError, "answered HTTP 404"),
        ((302, 0.0), PermanentActionError, "a redirect, which SIMtrix does not follow"),
    ],
)
def test_an_answer_that_may_change_is_retried_any_other_refusal_fails_at_once(
    receiver: Receiver,
    settings: Settings,
    answer: tuple[int, float],
    error: type[Exception],
    message: str,
) -> None:
    settings.SIMTRIX_WEBHOOK_TIMEOUT_SECONDS = 0.5
    receiver.answers = [answer]
    with pytest.raises(error) as raised:
        webhook_deliver(url=receiver.url, secret="k", payload=PAYLOAD, allow_http=True)
    assert message in str(raised.value)


def test_it_is_no_way_into_the_servers_network_nor_out_in_clear(
    receiver: Receiver, settings: Settings
) -> None:
    settings.SIMTRIX_ALLOW_PRIVATE_ADDRESSES = False
    with pytest.raises(PermanentActionError) as raised:
        webhook_deliver(url=receiver.url, secret="k", payload=PAYLOAD, allow_http=True)
    assert "refused: resolves to 127.0.0.1 (loopback address)" in str(raised.value)
    settings.SIMTRIX_ALLOW_PRIVATE_ADDRESSES = True
    with pytest.raises(PermanentActionError) as raised:
        webhook_deliver(url=receiver.url, secret="k", payload=PAYLOAD, allow_http=False)
    assert "http:// not allowed" in str(raised.value)
    assert receiver.received() == []


def test_a_run_retries_an_unavailable_receiver_and_fails_a_refusal_for_good(
    receiver: Receiver, device: Device, eager: None, settings: Settings
) -> None:
    ScenarioSettings.objects.create(webhooks_allow_http=True)
    call = call_make(device, call_id="wh-1")
    action = {"action_type": "webhook", "url": receiver.url, "secret": "k", "conditions": []}
    params = _action_params("incoming_missed", action, True)
    run = run_plan(
        call_id=call.pk, action_type="webhook", dedupe_key="wh", due_at=None, params=params
    )
    receiver.answers = [(500, 0.0), (400, 0.0)]
    ActionRun.objects.filter(pk=run.pk).update(due_at=timezone.now())
    assert run_execute(run.pk) == Status.SCHEDULED
    run.refresh_from_db()
    assert run.last_error == f"WebhookUnavailable: {receiver.url} answered HTTP 500: " + (
        '{"ok": false}'
    )
    ActionRun.objects.filter(pk=run.pk).update(due_at=timezone.now())
    assert run_execute(run.pk) == Status.FAILED
    run.refresh_from_db()
    assert run.last_error.startswith("PermanentActionError: ")
    assert run.attempts == 2
    assert len(receiver.received()) == 2
