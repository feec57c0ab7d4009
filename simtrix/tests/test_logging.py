"""Log lines carry time, level, logger, tenant, call and request ids, as text or as JSON."""

from __future__ import annotations

import io
import json
import logging
import logging.config
import re
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.conf import settings
from django.test import Client
from django.utils import timezone
from django_tenants.utils import schema_context
from rest_framework.test import APIClient

from calls.services import device_register
from common.logcontext import bridge_call_context
from crm.context import crm_call_context
from simtrix.celery import REQUEST_ID_HEADER, _django_logging, _request_id_publish, app
from simtrix.logs import ContextFilter, logging_config
from simtrix.request_id import current_request_id, request_id_reset, request_id_set
from tenants.models import Tenant

logger = logging.getLogger("simtrix.tests.logging")


@app.task(name="simtrix.tests.log_a_line")
def log_a_line() -> None:
    logger.warning("inside a task")


@pytest.fixture
def log_output() -> Iterator[Callable[[str], io.StringIO]]:
    """`log_output("json")` configures the project's logging as settings.LOGGING does, writing
    into the returned buffer; the settings' own configuration is put back afterwards."""

    def configure(log_format: str) -> io.StringIO:
        stream = io.StringIO()
        config = logging_config(log_format=log_format, level="INFO")
        config["handlers"]["console"]["stream"] = stream
        logging.config.dictConfig(config)
        return stream

    yield configure
    logging.config.dictConfig(settings.LOGGING)


def json_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line]


def test_json_lines_have_time_level_logger_tenant_call_and_request(
    log_output: Callable[[str], io.StringIO], tenants: dict[str, Tenant], db: None
) -> None:
    stream = log_output("json")
    with schema_context("alpha"), crm_call_context(4242):
        logger.warning("Bitrix24 %s failed", "crm.contact.list")
    logger.info("between calls")

    first, second = json_lines(stream)
    assert first["message"] == "Bitrix24 crm.contact.list failed"
    assert (first["level"], first["logger"]) == ("WARNING", "simtrix.tests.logging")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+\+00:00", first["time"])
    assert (first["tenant"], first["call_id"], first["request_id"]) == ("alpha", 4242, None)
    assert (second["tenant"], second["call_id"]) == ("public", None)


def test_an_exception_is_part_of_its_json_line(
    log_output: Callable[[str], io.StringIO], tenants: dict[str, Tenant], db: None
) -> None:
    stream = log_output("json")
    try:
        raise ValueError("the portal said no")
    except ValueError:
        logger.exception("could not log the call")
    (line,) = json_lines(stream)
    assert line["level"] == "ERROR"
    assert "ValueError: the portal said no" in line["exc_info"]


def test_text_lines_have_time_level_and_the_known_context(
    log_output: Callable[[str], io.StringIO], tenants: dict[str, Tenant], db: None
) -> None:
    stream = log_output("text")
    with schema_context("alpha"), crm_call_context(7):
        logger.warning("a line")
    logger.error("another")
    first, second = stream.getvalue().splitlines()
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} WARNING simtrix\.tests\.logging "
        r"tenant=alpha call=7: a line",
        first,
    )
    assert second.endswith(" ERROR simtrix.tests.logging tenant=public: another")


@pytest.mark.parametrize("host", ["localhost", "alpha.localhost"])
def test_a_requests_lines_carry_its_id_and_tenant(
    host: str,
    log_output: Callable[[str], io.StringIO],
    tenants: dict[str, Tenant],
    db: None,
    settings: Any,
) -> None:
    # /readyz logs a warning when Redis does not answer: a line written inside the request.
    settings.CACHES = {
        name: {**config, "LOCATION": "redis://127.0.0.1:1/0"}
        for name, config in settings.CACHES.items()
    }
    stream = log_output("json")
    response = Client(HTTP_HOST=host).get("/readyz", HTTP_X_REQUEST_ID="lb-7f3a9c")
    assert response.status_code == 503
    assert response["X-Request-ID"] == "lb-7f3a9c"
    lines = [line for line in json_lines(stream) if line["logger"] == "simtrix.health"]
    assert lines
    # The probes run in the public schema on every host (simtrix.probes).
    assert {(line["request_id"], line["tenant"]) for line in lines} == {("lb-7f3a9c", "public")}


@pytest.mark.parametrize(
    "given",
    [
        None,
        "",
        "has space",
        "new\nline",
        'quote"d',
        "x" * 129,
        "-starts-with-a-dash",
        "zażółć",
    ],
)
def test_an_absent_or_insane_request_id_is_replaced_by_a_new_one(
    given: str | None, tenants: dict[str, Tenant], db: None
) -> None:
    headers = {} if given is None else {"X-Request-ID": given}
    first = Client(HTTP_HOST="localhost").get("/healthz", headers=headers)["X-Request-ID"]
    second = Client(HTTP_HOST="localhost").get("/healthz", headers=headers)["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", first)
    assert first != second


@pytest.mark.parametrize(
    "given", ["7f3a9c1e-5b2d-4c8a-9e6f-1a2b3c4d5e6f", "Root=1-67891233-abcdef012345678912345678"]
)
def test_a_sane_request_id_is_kept(given: str, tenants: dict[str, Tenant], db: None) -> None:
    response = Client(HTTP_HOST="unknown.example").get("/admin/", HTTP_X_REQUEST_ID=given)
    assert response.status_code == 404  # no tenant owns that host ...
    assert response["X-Request-ID"] == given  # ... and the answer still carries the id


def test_a_celery_tasks_lines_carry_the_tenant_it_was_queued_for(
    log_output: Callable[[str], io.StringIO], tenants: dict[str, Tenant], db: None
) -> None:
    stream = log_output("json")
    # The header tenant-schemas-celery puts on every message; its task_prerun handler switches
    # the connection to that schema, which is where ContextFilter reads the tenant.
    log_a_line.apply(headers={"_schema_name": "beta"})
    (line,) = [line for line in json_lines(stream) if line["message"] == "inside a task"]
    assert line["tenant"] == "beta"


def test_celery_logs_through_the_projects_configuration_at_its_own_level() -> None:
    try:
        _django_logging(loglevel=logging.WARNING)
        root = logging.getLogger()
        assert root.level == logging.WARNING
        (handler,) = root.handlers
        assert any(isinstance(f, ContextFilter) for f in handler.filters)
    finally:
        logging.config.dictConfig(settings.LOGGING)


def test_a_caller_given_context_is_kept() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "m", None, None)
    record.tenant = "given"
    ContextFilter().filter(record)
    context = tuple(
        getattr(record, name) for name in ("tenant", "call_id", "bridge_call_id", "request_id")
    )
    assert context == ("given", None, None, None)


def test_an_unknown_format_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="SIMTRIX_LOG_FORMAT is 'text' or 'json', not 'xml'"):
        logging_config(log_format="xml", level="INFO")


def test_the_bridge_call_id_is_in_the_text_format(
    log_output: Callable[[str], io.StringIO], tenants: dict[str, Tenant], db: None
) -> None:
    stream = log_output("text")
    with schema_context("alpha"), bridge_call_context("c-77"):
        logger.warning("a line")
    assert stream.getvalue().endswith(" tenant=alpha bridge_call=c-77: a line\n")


def test_a_bridge_events_lines_carry_its_call_and_request(
    log_output: Callable[[str], io.StringIO], alpha: Tenant, alpha_portal: Any
) -> None:
    # Bitrix24 fails during the caller lookup: crm.session logs while the event is handled.
    alpha_portal.set_fault("fail_next", count=20)
    with schema_context("alpha"):
        _, device_token = device_register(
            name="Log phone", phone_number="+48500100998", bitrix24_user_id=5, country="PL"
        )
    client = APIClient(HTTP_HOST="alpha.localhost")
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {device_token}")
    call_id = f"log-{uuid.uuid4().hex[:8]}"
    stream = log_output("json")
    response = client.post(
        "/api/bridge/v1/events/",
        {
            "event_id": str(uuid.uuid4()),
            "type": "call.started",
            "call_id": call_id,
            "occurred_at": timezone.now().isoformat(),
            "direction": "incoming",
            "phone_number": "+48600111222",
        },
        format="json",
        HTTP_X_REQUEST_ID="bridge-req-1",
    )
    assert response.status_code in (200, 201), response.content
    lines = [line for line in json_lines(stream) if line["logger"].startswith("crm.")]
    assert lines
    assert {(line["bridge_call_id"], line["request_id"]) for line in lines} == {
        (call_id, "bridge-req-1")
    }


def test_a_task_queued_by_a_request_logs_with_its_request_id(
    log_output: Callable[[str], io.StringIO], tenants: dict[str, Tenant], db: None
) -> None:
    headers: dict[str, Any] = {"_schema_name": "alpha"}
    token = request_id_set("req-7f3a")
    try:
        _request_id_publish(headers=headers)  # what Celery sends when the request queues it
    finally:
        request_id_reset(token)
    assert headers[REQUEST_ID_HEADER] == "req-7f3a"

    stream = log_output("json")
    log_a_line.apply(headers=headers)  # as the worker runs it: no request around
    (line,) = [line for line in json_lines(stream) if line["message"] == "inside a task"]
    assert (line["request_id"], line["tenant"]) == ("req-7f3a", "alpha")
    assert current_request_id() is None  # put back when the task is over


def test_a_task_no_request_queued_logs_with_its_own_task_id(
    log_output: Callable[[str], io.StringIO], tenants: dict[str, Tenant], db: None
) -> None:
    headers: dict[str, Any] = {}
    _request_id_publish(headers=headers)
    assert REQUEST_ID_HEADER not in headers
    stream = log_output("json")
    result = log_a_line.apply()
    (line,) = [line for line in json_lines(stream) if line["message"] == "inside a task"]
    assert line["request_id"] == result.id
