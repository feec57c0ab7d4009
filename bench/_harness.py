"""What the scenario benchmarks share: a throwaway database with tenants on a sandbox portal.

Nothing here is faked: real PostgreSQL (a database created for the run and dropped after),
real Redis (a DB number of its own), the HTTPS Bitrix24 sandbox in this process, and Celery
worker/beat processes started like the operations contract says.

Environment: DATABASE_URL (the server to create the throwaway database on; default
postgres://postgres@127.0.0.1:5432/postgres), BENCH_REDIS_URL (default redis://127.0.0.1:6379/9;
it is flushed).
"""

from __future__ import annotations

import http.client
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg

REPO = Path(__file__).resolve().parent.parent


def _server_url() -> str:
    return os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")


def with_db(url: str, name: str) -> str:
    """The database URL `url` with another database name."""
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def database_drop(name: str) -> None:
    """Drops a benchmark's throwaway database on DATABASE_URL's server, connections and all."""
    from django.db import connections

    connections.close_all()
    with psycopg.connect(with_db(os.environ["DATABASE_URL"], "postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def server_wait_up(port: int, *, host: str, token: str, timeout: float = 60) -> None:
    """Waits until the web server on `port` answers the bridge's ping for `host`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/api/bridge/v1/ping/",
                         headers={"Host": host, "Authorization": f"Bearer {token}"})  # fmt: skip
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.3)
    raise SystemExit("gunicorn did not come up")


@contextmanager
def throwaway_environment(
    *, tenants: int, rate_limited: bool = False, bare_tenants: int = 0
) -> Iterator[Any]:
    """Creates the database, provisions `tenants` tenants connected to a sandbox (and
    `bare_tenants` more with no Bitrix24: then all made by _schemas_clone); yields it."""
    name = f"simtrix_bench_{secrets.token_hex(4)}"
    admin_url = with_db(_server_url(), "postgres")
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    ca_bundle = os.path.join(tempfile.gettempdir(), f"simtrix-bench-ca-{os.getpid()}.pem")
    os.environ.update(
        DATABASE_URL=with_db(_server_url(), name),
        REDIS_URL=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/9"),
        DJANGO_SECRET_KEY=os.environ.get("DJANGO_SECRET_KEY", "bench"),
        # Settings require a key with DJANGO_DEBUG off; this one is base64 of 32 public bytes.
        SIMTRIX_ENCRYPTION_KEY=os.environ.get(
            "SIMTRIX_ENCRYPTION_KEY", "c2ltdHJpeC10ZXN0LW9ubHktZW5jcnlwdGlvbi1rZXk="
        ),
        DJANGO_SETTINGS_MODULE="simtrix.settings",
        REQUESTS_CA_BUNDLE=ca_bundle,
        SIMTRIX_LOG_LEVEL="WARNING",
        # The sandbox portal listens on 127.0.0.1 (crm/outbound.py refuses it otherwise).
        SIMTRIX_ALLOW_PRIVATE_ADDRESSES="1",
    )
    sys.path.insert(0, str(REPO))
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    from bitrix24_sandbox import SandboxPortal

    portal = None
    try:
        import redis

        redis.Redis.from_url(os.environ["REDIS_URL"]).flushdb()
        call_command("migrate_schemas", shared=True, interactive=False, verbosity=0)
        portal = SandboxPortal(
            seed=True,
            drain_per_second=2.0 if rate_limited else None,
            bucket_size=50 if rate_limited else None,
        ).start()
        shutil.copyfile(portal.ca_cert_path, ca_bundle)
        schemas = [f"bench{index:02d}" for index in range(tenants)]
        bare = [f"idle{index:04d}" for index in range(bare_tenants)]
        if bare:
            # Many tenants: schemas made from the template's DDL (see _schemas_clone).
            _schemas_clone(schemas + bare)
        for schema in schemas:
            _tenant_make(schema, portal, rate_limited=rate_limited, provisioned=bool(bare))
        connection.close()
        yield Environment(portal=portal, schemas=schemas, database=name, bare=bare)
    finally:
        if portal is not None:
            portal.stop()
        from django.db import connections

        connections.close_all()
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class Environment:
    def __init__(
        self, *, portal: Any, schemas: list[str], database: str, bare: list[str] | None = None
    ) -> None:
        self.portal = portal
        self.schemas = schemas
        self.bare = bare or []
        self.database = database
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self, *args: str, log: str | None = None) -> subprocess.Popen[bytes]:
        """`celery -A simtrix ARGS...` (worker, beat), in the environment's settings."""
        return self.start_module("celery", "-A", "simtrix", *args, log=log)

    def start_module(
        self, module: str, *args: str, log: str | None = None
    ) -> subprocess.Popen[bytes]:
        """`python -m MODULE ARGS...`; its output appended to `log` (else dropped)."""
        with open(log, "ab") if log else nullcontext(None) as out:
            target = out if out is not None else subprocess.DEVNULL
            process = subprocess.Popen(
                [sys.executable, "-m", module, *args],
                cwd=REPO,
                env=dict(os.environ),
                stdout=target,
                stderr=target,
            )
        self.processes.append(process)
        return process

    def stop_all(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()


def _tenant_make(schema: str, portal: Any, *, rate_limited: bool, provisioned: bool) -> None:
    """A tenant connected to the sandbox with a device (`provisioned`: its schema and rows exist
    already, made by _schemas_clone; its defaults are installed here)."""
    from django_tenants.utils import schema_context

    from calls.services import device_register
    from crm.models import Bitrix24Connection
    from crm.services import directory_sync
    from tenants.services import TenantSpec, tenant_defaults_install, tenant_provision

    if provisioned:
        with schema_context(schema):
            tenant_defaults_install(bitrix24_webhook=portal.webhook_url(1))
    else:
        tenant_provision(
            TenantSpec(
                schema=schema,
                name=schema,
                domain=f"{schema}.localhost",
                bitrix24_webhook=portal.webhook_url(1),
                timezone="Europe/Warsaw",
                country="PL",
            )
        )
    with schema_context(schema):
        if not rate_limited:
            # One sandbox serves every tenant here; a real portal per tenant would not share.
            Bitrix24Connection.objects.filter(singleton=1).update(
                rate_limit_per_second=10000, rate_limit_burst=10000
            )
        directory_sync()
        device_register(
            name=f"{schema} phone", phone_number="+48500100300", bitrix24_user_id=9, country="PL"
        )


def _schemas_clone(schemas: list[str]) -> None:
    """Tenants' schemas and rows, made fast: django-tenants' clone reads the catalog, which
    grows with every schema (8 s a clone at 90 tenants, and climbing), so the template's DDL is
    dumped once and replayed under each name; the rows (tenant, domain, schedule) are the ORM's.
    Provisioning itself is not what these benchmarks measure."""
    import re
    import subprocess

    from django.conf import settings
    from django.db import connection

    from tenants.models import Domain, Tenant, TenantSchedule
    from tenants.services import tenant_public_ensure, tenant_template_ensure

    tenant_public_ensure()
    tenant_template_ensure()
    template = settings.TENANT_BASE_SCHEMA
    ddl = subprocess.run(
        ["pg_dump", "--schema-only", "--no-owner", "-n", template, os.environ["DATABASE_URL"]],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    # psql's meta-commands (\restrict ... in recent pg_dump) are not SQL.
    ddl = "\n".join(line for line in ddl.splitlines() if not line.startswith("\\"))
    pattern = re.compile(rf"\b{re.escape(template)}\b")
    with psycopg.connect(os.environ["DATABASE_URL"], autocommit=True) as conn:
        for done, schema in enumerate(schemas, start=1):
            conn.execute(pattern.sub(schema, ddl))
            migrations = f'"{schema}".django_migrations'
            conn.execute(f'INSERT INTO {migrations} SELECT * FROM "{template}".django_migrations')
            if done % 200 == 0:
                print(f"  {done} schemas made", flush=True)
    tenants = Tenant.objects.bulk_create(
        [Tenant(schema_name=schema, name=schema, timezone="Europe/Warsaw") for schema in schemas]
    )
    Domain.objects.bulk_create(
        [Domain(tenant=t, domain=f"{t.schema_name}.localhost", is_primary=True) for t in tenants]
    )
    TenantSchedule.objects.bulk_create([TenantSchedule(tenant=t) for t in tenants])
    connection.close()


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def lateness_table(named: list[tuple[str, list[float]]], *, digits: int = 2) -> str:
    """p50/p90/p99/max of each named list of seconds."""

    def cell(value: float) -> str:
        return f"{value:.{digits}f}"

    rows = [
        [
            name, len(values), cell(percentile(values, 0.5)), cell(percentile(values, 0.9)),
            cell(percentile(values, 0.99)), cell(max(values)) if values else "-",
        ]
        for name, values in named
    ]  # fmt: skip
    return table(rows, ["lateness", "runs", "p50", "p90", "p99", "max"])


def table(rows: list[list[Any]], header: list[str]) -> str:
    cells = [header, *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = [" | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)
