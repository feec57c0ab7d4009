"""Shared fixtures: real PostgreSQL (a test database made by pytest-django), real Redis.

Two tenants, `alpha` and `beta`, are provisioned once per session through the real provisioning
service and committed; each test's own writes are rolled back (the `db` fixture) unless it asks for
`committed_db`, which lets other processes (a Celery worker, a web server) see its rows.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from django.db import connection
from django_tenants.utils import schema_context
from pytest_django import DjangoDbBlocker, Settings

from calls.models import Call, Device
from calls.services import device_register
from tenants.connection import tenant_connection
from tenants.models import Tenant
from tenants.services import TenantSpec, tenant_provision

REPO = Path(__file__).resolve().parent

# Fixtures of the Bitrix24 sandbox portal (crm/tests/portal.py).
pytest_plugins = ["crm.tests.portal"]


def pytest_configure(config: pytest.Config) -> None:
    from django.conf import settings

    # Tests speak plain http (the test client, the threaded web server): with DEBUG off the
    # settings would redirect them to https. Production keeps the redirect (SIMTRIX_SSL_REDIRECT;
    # simtrix/tests/test_security.py checks the defaults in a process of their own). The
    # variable is for the servers tests start (test_simulate's gunicorn).
    os.environ["SIMTRIX_SSL_REDIRECT"] = "0"
    settings.SECURE_SSL_REDIRECT = False
    # A checkout has no collectstatic: whitenoise serves the apps' static files as they are, so
    # the browser tests run the admin's real scripts under the Content-Security-Policy.
    settings.WHITENOISE_USE_FINDERS = True


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings: Settings) -> None:
    # Real hashing costs ~0.3 s per login; what is tested here is which schema answers.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(scope="session")
def django_db_setup(
    request: pytest.FixtureRequest,
    django_test_environment: None,
    django_db_blocker: DjangoDbBlocker,
    django_db_modify_db_settings: None,
) -> Iterator[None]:
    """Always a test database, even when no selected test asks for `db`.

    pytest-django only creates it for tests marked for the database; a run of `committed_db`
    tests alone would otherwise write into the database DATABASE_URL names.
    """
    from django.test.utils import setup_databases, teardown_databases

    verbosity = request.config.option.verbose
    with django_db_blocker.unblock():
        config = setup_databases(
            verbosity=verbosity,
            interactive=False,
            aliases={"default": False},  # {alias: serialized}, as Django's test runner passes them
            serialized_aliases=set(),
        )
    yield
    with django_db_blocker.unblock():
        teardown_databases(config, verbosity=verbosity)


@pytest.fixture(scope="session")
def tenants(django_db_setup: None, django_db_blocker: DjangoDbBlocker) -> dict[str, Tenant]:
    if not connection.settings_dict["NAME"].startswith("test_"):
        raise RuntimeError(
            "Tests must run on a test database, not " + connection.settings_dict["NAME"]
        )
    with django_db_blocker.unblock():
        made = {}
        for schema in ("alpha", "beta"):
            existing = Tenant.objects.filter(schema_name=schema).first()
            made[schema] = existing or tenant_provision(
                TenantSpec(
                    schema=schema,
                    name=schema.title(),
                    domain=f"{schema}.localhost",
                    timezone="Europe/Warsaw",
                    country="PL",
                )
            )
        tenant_connection.set_schema_to_public()
    return made


@pytest.fixture
def alpha(tenants: dict[str, Tenant], db: None) -> Iterator[Tenant]:
    with schema_context("alpha"):
        yield tenants["alpha"]


@pytest.fixture
def beta(tenants: dict[str, Tenant]) -> Tenant:
    return tenants["beta"]


@pytest.fixture(autouse=True)
def _public_schema_between_tests() -> Iterator[None]:
    from tenants.memo import tenant_memo_clear
    from tenants.middleware import tenant_cache_clear

    # Rolled-back tests fire no signals: a host or a setting cached by one test must not
    # serve the next.
    tenant_cache_clear()
    tenant_memo_clear()
    yield
    tenant_connection.set_schema_to_public()


@pytest.fixture
def committed_db(
    tenants: dict[str, Tenant], django_db_blocker: DjangoDbBlocker
) -> Iterator[Callable[[Callable[[], None]], None]]:
    """Autocommit database access; register cleanups with the yielded function."""
    cleanups: list[Callable[[], None]] = []
    with django_db_blocker.unblock():
        yield cleanups.append
        for cleanup in reversed(cleanups):
            cleanup()
        tenant_connection.set_schema_to_public()


@pytest.fixture
def committed_call(
    committed_db: Callable[[Callable[[], None]], None],
) -> Callable[..., Call]:
    """Makes an incoming call of alpha's on a phone of its own, committed (other connections
    see it, as a worker's would) and removed after the test with its runs."""

    def make(call_id: str, phone_number: str) -> Call:
        with schema_context("alpha"):
            device, _ = device_register(
                name=f"Phone of {call_id}", phone_number=phone_number, bitrix24_user_id=5,
                country="PL",
            )  # fmt: skip
            call = Call.objects.create(device=device, call_id=call_id, direction="incoming")

        def wipe() -> None:
            with schema_context("alpha"):
                Call.objects.filter(pk=call.pk).delete()  # its runs with it (CASCADE)
                Device.objects.filter(pk=device.pk).delete()

        committed_db(wipe)
        return call

    return make


def subprocess_database_url() -> str:
    """The URL of the test database, for processes started by tests."""
    settings_dict = connection.settings_dict
    host = quote(settings_dict["HOST"] or "127.0.0.1", safe="")
    port = f":{settings_dict['PORT']}" if settings_dict["PORT"] else ""
    user = settings_dict["USER"] or "postgres"
    password = f":{quote(settings_dict['PASSWORD'])}" if settings_dict["PASSWORD"] else ""
    return f"postgres://{user}{password}@{host}{port}/{settings_dict['NAME']}"


@pytest.fixture(scope="session")
def celery_worker(tenants: dict[str, Tenant], django_db_blocker: DjangoDbBlocker) -> Iterator[str]:
    """A real Celery worker process on a queue of its own; yields the queue name."""
    from simtrix.celery import app

    queue = f"test-{uuid.uuid4().hex[:8]}"
    with django_db_blocker.unblock():
        env = {
            **os.environ,
            "DATABASE_URL": subprocess_database_url(),
            "CELERY_TASK_DEFAULT_QUEUE": queue,
        }
    process = subprocess.Popen(
        [
            sys.executable, "-m", "celery", "-A", "simtrix", "worker", "--pool=threads",
            "--concurrency=4", "-Q", queue, "--without-heartbeat", "--without-gossip",
            "--without-mingle", "-l", "WARNING",
        ],
        cwd=REPO,
        env=env,
    )  # fmt: skip
    previous_queue = app.conf.task_default_queue
    app.conf.task_default_queue = queue
    time.sleep(0.5)
    try:
        yield queue
    finally:
        app.conf.task_default_queue = previous_queue
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()


# --- The admin in a real browser -------------------------------------------------------------


@pytest.fixture(scope="session")
def web_server(tenants: dict[str, Tenant], django_db_blocker: DjangoDbBlocker) -> Iterator[int]:
    """The project's WSGI application on 127.0.0.1 in a thread of the test process (it sees
    what `committed_db` tests commit); yields the port. `<schema>.localhost:<port>` is a
    tenant's host: browsers resolve every `*.localhost` to the loopback address."""
    import threading

    from django.core.servers.basehttp import ThreadedWSGIServer, WSGIRequestHandler
    from django.core.wsgi import get_wsgi_application

    class OneRequestHandler(WSGIRequestHandler):
        """One request a connection: its thread then ends and closes its database connection
        (ThreadedWSGIServer.close_request), so none outlives the test database."""

        def handle(self) -> None:
            self.handle_one_request()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadedWSGIServer(("127.0.0.1", 0), OneRequestHandler, allow_reuse_address=False)
    server.set_app(get_wsgi_application())
    # Request threads are joined by server_close(), so their database connections are closed
    # before the test database is dropped.
    server.daemon_threads = False
    server.block_on_close = True
    thread = threading.Thread(target=server.serve_forever, name="web-server", daemon=True)
    with django_db_blocker.unblock():
        thread.start()
        try:
            yield server.server_address[1]
        finally:
            server.shutdown()
            server.server_close()


def chromium_path() -> str | None:
    """Debian's Chromium (`apt-get install chromium`; .ci/run installs it), or SIMTRIX_CHROMIUM."""
    import shutil

    return os.environ.get("SIMTRIX_CHROMIUM") or shutil.which("chromium")


@pytest.fixture
def browser() -> Callable[[], Any]:
    """`with browser() as page:` a headless Chromium page, driven by Playwright.

    Set data up before the block and check rows after it: Playwright's sync API runs an event
    loop in this thread while the block lasts, and Django refuses its ORM there (rightly: such
    calls would get database connections of their own that nobody closes).
    """
    path = chromium_path()
    if path is None:
        if os.environ.get("CI"):
            raise RuntimeError("no Chromium: .ci/run installs it (apt-get install chromium)")
        pytest.skip("no Chromium on this machine: apt-get install chromium (CI always has it)")

    @contextmanager
    def open_page() -> Iterator[Any]:
        from playwright.sync_api import sync_playwright

        with sync_playwright() as playwright:
            launched = playwright.chromium.launch(executable_path=path, args=["--no-sandbox"])
            try:
                yield launched.new_context(locale="en-GB").new_page()
            finally:
                launched.close()

    return open_page
