"""/metrics: only with the operators' token; what it counts is what really happened.

Every count is read through the endpoint itself (Prometheus' text format, parsed) before and
after the thing it counts, so other tests' traffic in the same process does not matter.
"""

from __future__ import annotations

import os
import runpy
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.core.cache import caches
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django_tenants.utils import schema_context
from prometheus_client.parser import text_string_to_metric_families
from rest_framework.test import APIClient

from calls.models import Call, Device
from calls.services import device_register
from common import metrics as m
from crm.errors import Bitrix24Error
from crm.limiter import PortalLimiter
from crm.session import Bitrix24Session
from scenarios import outbox, schedule
from scenarios.models import ActionRun
from scenarios.monitoring import outbox_counts_all
from tenants.models import Tenant

REPO = Path(__file__).resolve().parents[2]
HOSTS = ["localhost", "alpha.localhost"]
TOKEN = "scrape-me-" + "x" * 24

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture
def token(settings: Any) -> str:
    settings.SIMTRIX_METRICS_TOKEN = TOKEN
    return TOKEN


def scrape(host: str = "localhost") -> Samples:
    response = Client(HTTP_HOST=host).get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


# --- Who may read it --------------------------------------------------------------------------


@pytest.mark.parametrize("host", HOSTS)
def test_without_a_configured_token_there_is_no_endpoint(
    host: str, tenants: dict[str, Tenant], db: None, settings: Any
) -> None:
    settings.SIMTRIX_METRICS_TOKEN = ""
    client = Client(HTTP_HOST=host)
    assert client.get("/metrics").status_code == 404
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer ").status_code == 404


@pytest.mark.parametrize("host", HOSTS)
@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer",
        "Bearer wrong",
        f"Bearer {TOKEN[:-1]}",  # a prefix of the token
        f"Bearer {TOKEN}x",
        f"Basic {TOKEN}",
        TOKEN,
    ],
)
def test_a_missing_or_wrong_token_is_refused(
    host: str, authorization: str | None, tenants: dict[str, Tenant], db: None, token: str
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    response = Client(HTTP_HOST=host).get("/metrics", headers=headers)
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert b"simtrix_" not in response.content


@pytest.mark.parametrize("host", HOSTS)
def test_the_token_gets_prometheus_text_with_every_metric_named_simtrix(
    host: str, tenants: dict[str, Tenant], db: None, token: str
) -> None:
    response = Client(HTTP_HOST=host).get("/metrics", HTTP_AUTHORIZATION=f"bearer {TOKEN}")
    assert response.status_code == 200
    assert response["Cache-Control"].startswith("max-age=0")
    families = {f.name for f in text_string_to_metric_families(response.content.decode())}
    ours = {
        "simtrix_bridge_events",
        "simtrix_lookups",
        "simtrix_lookup_duration_seconds",
        "simtrix_bitrix24_requests",
        "simtrix_bitrix24_rate_limit_waits",
        "simtrix_bitrix24_rate_limit_wait_seconds",
        "simtrix_outbox_due",
        "simtrix_outbox_late",
        "simtrix_outbox_failed",
        "simtrix_outbox_oldest_due_seconds",
        "simtrix_dispatcher_last_pass_age_seconds",
    }
    assert ours <= families
    # The project's own series all start with simtrix_ (the rest is prometheus-client's process
    # and platform collectors, which exist only outside multiprocess mode).
    foreign = {f for f in families if not f.startswith(("simtrix_", "process_", "python_"))}
    assert foreign == set()


def test_post_is_not_allowed(tenants: dict[str, Tenant], db: None, token: str) -> None:
    response = Client(HTTP_HOST="localhost").post("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 405


# --- What it counts ---------------------------------------------------------------------------


def _bridge(tenant_schema: str = "alpha") -> APIClient:
    with schema_context(tenant_schema):
        _, device_token = device_register(
            name="Metrics phone", phone_number="+48500100999", bitrix24_user_id=5, country="PL"
        )
    client = APIClient(HTTP_HOST=f"{tenant_schema}.localhost")
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {device_token}")
    return client


def _started(phone: str) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "type": "call.started",
        "call_id": f"m-{uuid.uuid4().hex[:8]}",
        "occurred_at": timezone.now().isoformat(),
        "direction": "incoming",
        "phone_number": phone,
    }


def test_bridge_events_are_counted_by_type_and_result(
    tenants: dict[str, Tenant], db: None, token: str
) -> None:
    client = _bridge()
    event = _started("+48 699 000 111")
    before = scrape()

    first = client.post("/api/bridge/v1/events/", event, format="json")
    assert first.status_code == 201
    assert (
        client.post("/api/bridge/v1/events/", event, format="json").status_code == 201
    )  # a resend
    reused = {**event, "phone_number": "+48 699 000 222"}
    assert client.post("/api/bridge/v1/events/", reused, format="json").status_code == 409

    after = scrape()
    for result, count in [("accepted", 1), ("duplicate", 1), ("conflict", 1)]:
        labels = {"type": "call.started", "result": result}
        assert (
            value(after, "simtrix_bridge_events_total", **labels)
            - value(before, "simtrix_bridge_events_total", **labels)
            == count
        ), result


def test_lookups_are_counted_hit_or_miss_with_their_latency(
    alpha: Tenant, alpha_portal: Any, token: str
) -> None:
    client = _bridge()
    before = scrape()

    for phone in ("+48 600 111 222", "+48 699 000 333"):  # Anna Kowalska; nobody
        response = client.post("/api/bridge/v1/events/", _started(phone), format="json")
        assert response.status_code == 201

    after = scrape()
    for result in ("hit", "miss"):
        assert (
            value(after, "simtrix_lookups_total", result=result)
            - value(before, "simtrix_lookups_total", result=result)
            == 1
        ), result
        assert (
            value(after, "simtrix_lookup_duration_seconds_count", result=result)
            - value(before, "simtrix_lookup_duration_seconds_count", result=result)
            == 1
        )
        assert value(after, "simtrix_lookup_duration_seconds_sum", result=result) > value(
            before, "simtrix_lookup_duration_seconds_sum", result=result
        )
    # Each lookup was one Bitrix24 request, counted by method and outcome.
    ok = {"method": "batch", "outcome": "ok"}
    assert value(after, "simtrix_bitrix24_requests_total", **ok) > value(
        before, "simtrix_bitrix24_requests_total", **ok
    )


def test_a_bitrix24_error_is_counted_by_its_documented_code(
    alpha: Tenant, alpha_portal: Any, token: str
) -> None:
    before = scrape()
    with schema_context("alpha"), pytest.raises(Bitrix24Error):
        Bitrix24Session.for_tenant().call("crm.nonexistent.method", {})
    after = scrape()
    labels = {"method": "crm.nonexistent.method", "outcome": "error_method_not_found"}
    assert (
        value(after, "simtrix_bitrix24_requests_total", **labels)
        - value(before, "simtrix_bitrix24_requests_total", **labels)
        == 1
    )


def test_rate_limit_waits_are_counted_with_their_seconds(
    tenants: dict[str, Tenant], db: None, token: str
) -> None:
    limiter = PortalLimiter(domain=f"metrics-{uuid.uuid4().hex[:8]}.test", per_second=2, burst=1)
    try:
        before = scrape()
        assert limiter.reserve(max_wait=5) == 0  # the first goes at once
        waited = limiter.reserve(max_wait=5)  # the next must wait its turn
        assert waited is not None
        assert waited > 0
        assert limiter.reserve(max_wait=0) is None  # no slot now: gave up
        after = scrape()
    finally:
        limiter.reset()

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("simtrix_bitrix24_rate_limit_waits_total", outcome="waited") == 1
    assert delta("simtrix_bitrix24_rate_limit_waits_total", outcome="gave_up") == 1
    assert delta("simtrix_bitrix24_rate_limit_wait_seconds_total") == pytest.approx(waited)


def _run(call: Call, key: str, *, due_minutes_ago: float, status: str) -> None:
    run = outbox.run_plan(
        call_id=call.pk,
        action_type="test_action",
        dedupe_key=key,
        due_at=timezone.now() + timedelta(minutes=10),
    )
    ActionRun.objects.filter(pk=run.pk).update(
        status=status, due_at=timezone.now() - timedelta(minutes=due_minutes_ago)
    )


def test_outbox_gauges_are_per_tenant_and_read_when_scraped(
    alpha: Tenant, beta: Tenant, token: str
) -> None:
    device = (
        Device.objects.first()
        or device_register(
            name="Phone", phone_number="+48600000001", bitrix24_user_id=5, country="PL"
        )[0]
    )
    call = Call.objects.create(device=device, call_id="metrics-1", direction="incoming")
    _run(call, "due-now", due_minutes_ago=0.1, status=ActionRun.Status.SCHEDULED)
    _run(call, "late", due_minutes_ago=5, status=ActionRun.Status.SCHEDULED)
    _run(call, "gave-up", due_minutes_ago=30, status=ActionRun.Status.FAILED)
    _run(call, "done", due_minutes_ago=30, status=ActionRun.Status.DONE)

    samples = scrape("alpha.localhost")

    assert value(samples, "simtrix_outbox_due", tenant="alpha") == 2
    assert value(samples, "simtrix_outbox_late", tenant="alpha") == 1
    assert value(samples, "simtrix_outbox_failed", tenant="alpha") == 1
    assert 290 < value(samples, "simtrix_outbox_oldest_due_seconds", tenant="alpha") < 330
    # Another tenant's outbox is its own series (and this test wrote nothing there).
    assert ("simtrix_outbox_due", frozenset({("tenant", "beta")})) in samples
    assert value(samples, "simtrix_outbox_due", tenant="beta") == 0
    # Nothing of the public schema: it has no outbox.
    assert value(samples, "simtrix_outbox_due", tenant="public") == 0
    assert ("simtrix_outbox_due", frozenset({("tenant", "public")})) not in samples


def test_outbox_counts_take_one_statement_for_many_tenants(alpha: Tenant, beta: Tenant) -> None:
    with CaptureQueriesContext(connection) as queries:
        counts = outbox_counts_all()
    assert {row["schema"] for row in counts} >= {"alpha", "beta"}
    runs = [q["sql"] for q in queries.captured_queries if '"scenarios_actionrun"' in q["sql"]]
    assert len(runs) == 1
    assert '"alpha"."scenarios_actionrun"' in runs[0]
    assert '"beta"."scenarios_actionrun"' in runs[0]


def test_a_schema_without_the_outbox_table_leaves_the_other_tenants_counted(
    alpha: Tenant, beta: Tenant, token: str
) -> None:
    # A tenant whose migrations did not run: its schema exists, the table does not. (Both are
    # rolled back with the test; bulk_create skips the schema creation save() would do.)
    with connection.cursor() as cursor:
        cursor.execute('CREATE SCHEMA "unmigrated"')
    Tenant.objects.bulk_create([Tenant(schema_name="unmigrated", name="Unmigrated")])

    counts = outbox_counts_all()

    assert {row["schema"] for row in counts} >= {"alpha", "beta"}
    assert "unmigrated" not in {row["schema"] for row in counts}
    samples = scrape()
    assert ("simtrix_outbox_due", frozenset({("tenant", "alpha")})) in samples


def test_the_dispatcher_age_is_infinite_when_it_never_ran(
    tenants: dict[str, Tenant], db: None, token: str
) -> None:
    caches["shared"].delete(schedule._HEARTBEAT)
    samples = scrape()
    assert value(samples, "simtrix_dispatcher_last_pass_age_seconds") == float("inf")


# --- Bounded labels ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "label"),
    [
        ("crm.contact.list", "crm.contact.list"),
        ("CRM.Contact.List", "crm.contact.list"),
        ("batch", "batch"),
        ("crm.contact.list?x=1", "other"),
        ("../../etc", "other"),
        ("a" * 65, "other"),
        ("", "other"),
    ],
)
def test_method_labels_are_the_clients_names_or_other(method: str, label: str) -> None:
    assert m.bitrix24_method_label(method) == label


@pytest.mark.parametrize(
    ("code", "label"),
    [
        (None, "ok"),
        ("QUERY_LIMIT_EXCEEDED", "query_limit_exceeded"),
        ("expired_token", "expired_token"),
        ("TIMEOUT", "timeout"),
        ("SOMETHING_A_PORTAL_MADE_UP_1234", "error"),
        ("", "error"),
    ],
)
def test_outcome_labels_are_documented_codes_or_error(code: str | None, label: str) -> None:
    error = None if code is None else Bitrix24Error("failed", code=code)
    assert ("ok" if error is None else error.outcome) == label


# --- Many processes (gunicorn workers, the Celery worker) ----------------------------------


_RECORD = textwrap.dedent(
    """
    from common import metrics
    metrics.bitrix24_request_record(method="crm.contact.list", outcome="ok")
    metrics.rate_limit_wait_record(0.25)
    """
)


def test_the_counts_of_every_process_in_the_multiprocess_directory_are_added_up(
    tenants: dict[str, Tenant],
    db: None,
    token: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    for _ in range(2):  # two processes, as two gunicorn workers or a worker and a web
        subprocess.run([sys.executable, "-c", _RECORD], cwd=REPO, env=env, check=True)
    assert len(list(tmp_path.glob("counter_*.db"))) == 2

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    samples = scrape()

    ok = {"method": "crm.contact.list", "outcome": "ok"}
    assert value(samples, "simtrix_bitrix24_requests_total", **ok) == 2
    assert value(samples, "simtrix_bitrix24_rate_limit_wait_seconds_total") == 0.5
    # This process's own registry is not reported in multiprocess mode (its values are not
    # in the directory: it started without it), the gauges read at scrape time still are.
    assert ("process_cpu_seconds_total", frozenset()) not in samples
    assert ("simtrix_outbox_due", frozenset({("tenant", "alpha")})) in samples


def test_gunicorn_drops_a_dead_workers_live_gauges_and_keeps_its_counters(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = textwrap.dedent(
        """
        import os
        from prometheus_client import Gauge
        from common import metrics
        from common.metrics_files import process_identifier
        metrics.rate_limit_wait_record(1.0)
        Gauge("simtrix_test_live", "x", multiprocess_mode="livesum").set(1)
        print(os.getpid(), process_identifier())
        """
    )
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, env=env, check=True, capture_output=True
    )
    pid, identifier = done.stdout.decode().split()
    assert identifier == f"{socket.gethostname().replace('_', '-')}-{pid}"
    assert (tmp_path / f"gauge_livesum_{identifier}.db").exists()

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    config = runpy.run_path(str(REPO / "gunicorn.conf.py"))

    class Worker:
        def __init__(self, pid: int) -> None:
            self.pid = pid

    config["child_exit"](None, Worker(int(pid)))

    assert not (tmp_path / f"gauge_livesum_{identifier}.db").exists()
    assert (tmp_path / f"counter_{identifier}.db").exists()
    assert config["worker_class"] == "gthread"


# Two containers (web, worker) whose processes have the same pid write into one directory. Each
# process opens its files, waits until the other has too, then counts: with files named by the
# pid alone both would write one file and one's counts would be lost.
_SAME_PID = textwrap.dedent(
    """
    import os, socket, sys, time
    from pathlib import Path
    socket.gethostname = lambda: sys.argv[1]
    os.getpid = lambda: 7  # every container's first process
    from common import metrics
    ok = metrics.BITRIX24_REQUESTS.labels("crm.contact.list", "ok")
    sync = Path(sys.argv[2])
    (sync / f"ready-{sys.argv[1]}").touch()
    while not (sync / "go").exists():
        time.sleep(0.01)
    ok.inc(3)
    metrics.rate_limit_wait_record(0.5)
    """
)


def test_processes_of_two_containers_with_the_same_pid_are_both_counted(
    tenants: dict[str, Tenant],
    db: None,
    token: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    directory, sync = tmp_path / "metrics", tmp_path / "sync"
    directory.mkdir()
    sync.mkdir()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)}
    hosts = ["web_1a2b", "worker-3c4d"]
    processes = [
        subprocess.Popen([sys.executable, "-c", _SAME_PID, host, str(sync)], cwd=REPO, env=env)
        for host in hosts
    ]
    while len(list(sync.glob("ready-*"))) < 2 and all(p.poll() is None for p in processes):
        time.sleep(0.01)
    (sync / "go").touch()
    assert [p.wait(timeout=60) for p in processes] == [0, 0]
    names = sorted(path.name for path in directory.glob("counter_*.db"))
    assert names == ["counter_web-1a2b-7.db", "counter_worker-3c4d-7.db"]

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(directory))
    samples = scrape()
    ok = {"method": "crm.contact.list", "outcome": "ok"}
    assert value(samples, "simtrix_bitrix24_requests_total", **ok) == 6
    assert value(samples, "simtrix_bitrix24_rate_limit_wait_seconds_total") == 1.0


def test_gunicorn_defaults_the_directory_before_prometheus_and_prepares_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = tmp_path / "metrics"
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(directory))
    host = socket.gethostname().replace("_", "-")
    config = runpy.run_path(str(REPO / "gunicorn.conf.py"))
    assert directory.is_dir()  # made when the configuration is read
    stale = [f"counter_{host}-41.db", f"gauge_livesum_{host}-41.db", f"histogram_{host}-9.db"]
    others = ["counter_otherhost-41.db", "notes.txt"]
    for name in stale + others:
        (directory / name).write_bytes(b"")

    config["on_starting"](None)

    assert sorted(p.name for p in directory.iterdir()) == sorted(others)
    config_text = (REPO / "gunicorn.conf.py").read_text()
    assert config_text.index("PROMETHEUS_MULTIPROC_DIR") < config_text.index("prometheus")
    # Without the variable, gunicorn sets one before anything imports prometheus-client.
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR")
    probe = (
        "import os, runpy; runpy.run_path('gunicorn.conf.py'); "
        "from prometheus_client import values; "
        "print(os.environ['PROMETHEUS_MULTIPROC_DIR'], values.ValueClass.__name__)"
    )
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, env=env, check=True, capture_output=True, text=True
    )
    default, value_class = done.stdout.split()
    assert default.endswith(f"simtrix-metrics-{os.getuid()}")
    assert value_class == "MmapedValue"  # prometheus-client saw the directory when imported
