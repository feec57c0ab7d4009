from __future__ import annotations

import json
import socket
import time
from typing import Any

import pytest
from django.core import serializers

from crm import client as b24
from crm.client import Bitrix24Client
from crm.context import crm_call_context
from crm.errors import Bitrix24PermanentError, Bitrix24TransientError
from crm.limiter import PortalLimiter
from crm.models import Bitrix24Connection, RequestLog
from crm.services import crm_call_attach_record, crm_call_finish, crm_call_register
from crm.session import Bitrix24Session
from crm.tests.conftest import top_level


def _logged() -> list[RequestLog]:
    return list(RequestLog.objects.filter(parent__isnull=True).order_by("id"))


def test_transient_failure_is_retried(portal: Any) -> None:
    portal.set_fault("fail_next", count=1, method="crm.contact.get")

    contact = Bitrix24Client().run(b24.entity_get("CONTACT", 12))

    assert contact["NAME"] == "Anna"
    rows = _logged()
    assert [(r.attempt, r.http_status, r.error_code) for r in rows] == [
        (1, 500, "INTERNAL_SERVER_ERROR"),
        (2, 200, ""),
    ]


def test_transient_failures_give_up_after_the_attempts(portal: Any) -> None:
    portal.set_fault("fail_next", count=10, method="crm.contact.get")

    with pytest.raises(Bitrix24TransientError) as caught:
        Bitrix24Client().run(b24.entity_get("CONTACT", 12))

    assert caught.value.code == "INTERNAL_SERVER_ERROR"
    assert len(top_level(portal, "crm.contact.get")) == 4


def test_a_proxys_503_page_is_named_service_unavailable(portal: Any) -> None:
    portal.set_fault("down", mode="http503", method="crm.contact.get")

    with pytest.raises(Bitrix24TransientError) as caught:
        Bitrix24Client().run(b24.entity_get("CONTACT", 12), max_attempts=1)

    assert (caught.value.code, caught.value.http_status) == ("SERVICE_UNAVAILABLE", 503)


def test_permanent_failure_is_not_retried_and_keeps_bitrix24s_words(portal: Any) -> None:
    with pytest.raises(Bitrix24PermanentError) as caught:
        Bitrix24Client().run(b24.entity_get("CONTACT", 999999))

    assert caught.value.description == "Not found"
    assert caught.value.http_status == 400
    assert len(top_level(portal)) == 1
    assert _logged()[0].error_description == "Not found"


def test_unknown_method_is_permanent(portal: Any) -> None:
    with pytest.raises(Bitrix24PermanentError) as caught:
        Bitrix24Session.for_tenant().call("crm.nothing.here")
    assert (caught.value.code, caught.value.http_status) == ("ERROR_METHOD_NOT_FOUND", 404)


def test_wrong_webhook_secret_is_a_clear_permanent_error(portal: Any) -> None:
    Bitrix24Connection.objects.update(webhook_url=f"{portal.url}/rest/1/not-the-secret/")

    with pytest.raises(Bitrix24PermanentError) as caught:
        Bitrix24Client().run(b24.entity_get("CONTACT", 12))

    assert caught.value.code == "INVALID_CREDENTIALS"
    expected = "Invalid request credentials (INVALID_CREDENTIALS): check the webhook URL"
    assert str(caught.value) == expected
    connection = Bitrix24Connection.objects.get()
    assert connection.last_error == expected
    assert connection.last_error_at is not None
    assert len(top_level(portal)) == 1

    # The next successful request clears it.
    Bitrix24Connection.objects.update(webhook_url=portal.webhook_url(1))
    Bitrix24Client().run(b24.entity_get("CONTACT", 12))
    assert Bitrix24Connection.objects.get().last_error == ""


def test_query_limit_exceeded_is_backed_off_and_retried(portal: Any) -> None:
    # SIMtrix believes the portal allows 100/s; the portal allows a burst of 2 only.
    Bitrix24Connection.objects.update(rate_limit_per_second=100, rate_limit_burst=100)
    PortalLimiter(portal.domain, 100, 100).reset()
    portal.set_rate_limit(2.0, 1)
    client = Bitrix24Client()

    for _ in range(4):
        client.run(b24.entity_get("CONTACT", 12))

    assert portal.state.rate_limited_count >= 1
    errors = [r.error_code for r in _logged() if r.error_code]
    assert set(errors) == {"QUERY_LIMIT_EXCEEDED"}
    assert RequestLog.objects.filter(parent__isnull=True, http_status=200).count() == 4


def test_operation_time_limit_waits_until_the_reset(portal: Any) -> None:
    portal.set_operation_time_limit("crm.contact.get", 0.6)
    started = time.monotonic()

    Bitrix24Client().run(b24.entity_get("CONTACT", 12))

    assert time.monotonic() - started >= 0.5
    statuses = [r["status"] for r in top_level(portal, "crm.contact.get")]
    assert statuses == [429, 200]


def test_operation_time_limit_beyond_the_deadline_is_a_transient_error(portal: Any) -> None:
    portal.set_operation_time_limit("crm.contact.get", 30)

    with pytest.raises(Bitrix24TransientError) as caught:
        Bitrix24Client().run(b24.entity_get("CONTACT", 12), deadline=time.monotonic() + 1)

    assert caught.value.code == "OPERATION_TIME_LIMIT"
    assert caught.value.retry_after is not None
    assert caught.value.retry_after > 20


def test_timeout_within_a_deadline(portal: Any) -> None:
    portal.set_fault("slow", delay_ms=800, method="crm.contact.get")

    with pytest.raises(Bitrix24TransientError) as caught:
        Bitrix24Client().run(b24.entity_get("CONTACT", 12), deadline=time.monotonic() + 0.3)

    assert caught.value.code == "TIMEOUT"
    assert caught.value.ambiguous


def test_every_request_is_logged_with_the_call_it_served(portal: Any) -> None:
    client = Bitrix24Client()
    with crm_call_context(4242):
        client.run(b24.entity_get("CONTACT", 12))
        client.run_batch(
            {"a": b24.entity_get("CONTACT", 14), "b": b24.entity_get("CONTACT", 999999)}
        )
    client.run(b24.entity_get("CONTACT", 15))

    single, batch, outside = _logged()
    assert (single.method, single.call_id, single.http_status) == ("crm.contact.get", 4242, 200)
    assert single.duration_ms >= 0
    assert (batch.method, batch.is_batch, batch.call_id) == ("batch", True, 4242)
    assert batch.sub_methods == ["a: crm.contact.get", "b: crm.contact.get"]
    commands = {c.params["key"]: c for c in batch.commands.all()}
    assert commands["a"].error_code == ""
    assert (commands["b"].error_description, commands["b"].call_id) == ("Not found", 4242)
    assert outside.call_id is None


def test_request_log_never_holds_secrets(portal: Any, alpha: Any) -> None:
    secret = portal.webhook_url(1).rstrip("/").rsplit("/", 1)[1]
    # A closed port: the connection error's text names the URL, secret included.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    client = Bitrix24Client()
    client.run(b24.entity_get("CONTACT", 12))
    register = crm_call_register(
        intent_key="test:redact:register",
        user_id=5,
        phone="+48600111222",
        direction="incoming",
        started_at=_now(),
        line_number="+48500100200",
        external_call_id="redact-1",
        entity=("contact", 12),
        show=False,
    )
    crm_call_finish(
        intent_key="test:redact:finish",
        b24_call_id=register.b24_call_id,
        user_id=5,
        duration_s=5,
        outcome="answered",
    )
    crm_call_attach_record(
        b24_call_id=register.b24_call_id, filename="call.mp3", content=b"ID3" + b"x" * 5000
    )
    Bitrix24Connection.objects.update(
        webhook_url=f"https://127.0.0.1:{closed_port}/rest/1/{secret}/"
    )
    with pytest.raises(Bitrix24TransientError) as caught:
        Bitrix24Client().run(b24.entity_get("CONTACT", 12))
    assert secret not in str(caught.value)

    dump = serializers.serialize("json", RequestLog.objects.all())
    assert RequestLog.objects.count() >= 6
    assert secret not in dump
    assert "CONNECTION_ERROR" in dump
    attach = RequestLog.objects.get(method="telephony.externalcall.attachrecord")
    assert attach.params["FILE_CONTENT"] == "<6672 chars>"
    assert json.dumps(attach.params).count("x") < 100
    Bitrix24Connection.objects.update(webhook_url=portal.webhook_url(1))


def _now() -> Any:
    from django.utils import timezone

    return timezone.localtime()
