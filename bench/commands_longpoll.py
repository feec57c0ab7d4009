"""The bridge's long poll for commands with hundreds of phones waiting at once.

    python -m bench.commands_longpoll [--devices 500] [--seconds 30] [--rate 20]
        [--model gthread|asgi|both] [--workers 2] [--threads 300] [--ramp 5]
        [--conn-max-age SECONDS]

Makes a throwaway PostgreSQL database (created and dropped on the server of DATABASE_URL) with a
tenant `bench` (no Bitrix24) and N devices, flushes Redis (BENCH_REDIS_URL, default
redis://127.0.0.1:6379/11), and for each serving model starts the web server as operations do,
`gunicorn -c gunicorn.conf.py` (GUNICORN_WORKERS, GUNICORN_THREADS):

- gthread: `gunicorn simtrix.wsgi:application -c gunicorn.conf.py` (--workers x --threads);
- asgi: `gunicorn simtrix.asgi:application -c gunicorn.conf.py -k uvicorn_worker.UvicornWorker`
  (--workers uvicorn workers; Django runs the sync view in a thread per request).

N simulated phones (asyncio, raw HTTP/1.1 keep-alive, one connection per phone, in two client
processes), started evenly over --ramp seconds, each loop: `GET commands/?wait=30` -> for each
command `POST commands/{id}/ack/` `{"status": "done"}` -> poll again, recording the wall time each
command arrived. Once every phone has a poll outstanding and the number of polls that reached the
view (devices whose `last_seen_at` the authentication wrote) has settled, the bench measures the
server (gunicorn's master and workers: RSS, USS, threads, the phones' connections per worker)
against its idle figures, and the PostgreSQL backends on the throwaway database. Then it makes
commands (`command_create`, in the tenant's schema) at --rate a second for random devices for
--seconds, recording when each returned (committed, its wake published), waits until every command
arrived (at most 35 s), and reports per model: latency created -> delivered (p50/p95/p99/max; the
target is p99 < 1 s), commands made / delivered once to the right device / duplicated / sent to
another device / missing, memory per waiting phone, threads, database connections (while waiting:
the poll holds none, the target is ~0; peak while producing), CPU (the server's, in % of one core,
and the whole machine's) while the phones wait and while commands are made, and the phones'
errors (non-200, timeouts, broken connections) and the server log's errors.

Client, server, PostgreSQL and Redis share the machine's cores, so the figures are a lower bound.

Why a ramp: a poll authenticates and reads the device's commands before it lets its database
connection go, so N phones arriving at the same instant (all reconnecting after a restart) open
up to N PostgreSQL connections at once; 500 are more than PostgreSQL's default max_connections
(100) and the surplus fails ("too many clients"), for everyone using that server. Use --ramp 0
only on a database server of your own.

--conn-max-age sets DATABASE_CONN_MAX_AGE for the server (the settings default to 60 s). Under
ASGI every request runs in a thread of its own, so a persistent connection is never reused and
stays open until its thread's objects are garbage-collected (Django's documentation: "When using
ASGI, persistent connections should be disabled"); compare `--model asgi` with and without
`--conn-max-age 0`.

A model takes about --seconds + 20 s; a server whose polls starve (gthread 4 x 4 with 500 phones)
takes up to 35 s more. Memory per phone is (RSS waiting - RSS idle) / N, idle meaning after a few
warm-up requests.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import queue
import random
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any, ClassVar

import psutil  # type: ignore[import-untyped]  # no stubs installed (types-psutil)

from bench._harness import (
    database_drop,
    free_port,
    percentile,
    server_wait_up,
    table,
    with_db,
)

REPO = Path(__file__).resolve().parent.parent
HOST = "bench.localhost"
WAIT_S = 30
# The phone gives up on a poll this long after the longest answer the server may take.
POLL_TIMEOUT_S = WAIT_S + 15
ACK_TIMEOUT_S = 30
# After the last command: how long its delivery may take (a poll answers within WAIT_S anyway).
DRAIN_S = WAIT_S + 5


# --- The database (the bench process) ---------------------------------------------------------


def _setup(devices: int) -> tuple[str, list[str], list[int]]:
    """A fresh database with tenant `bench` and its devices; (database name, tokens, pks)."""
    import psycopg

    server = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")
    name = f"simtrix_bench_longpoll_{secrets.token_hex(3)}"
    with psycopg.connect(with_db(server, "postgres"), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    os.environ.update(
        DATABASE_URL=with_db(server, name),
        REDIS_URL=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/11"),
        DJANGO_SECRET_KEY=os.environ.get("DJANGO_SECRET_KEY", "bench-secret"),
        # Settings require a key with DJANGO_DEBUG off; this one is base64 of 32 public bytes.
        SIMTRIX_ENCRYPTION_KEY=os.environ.get(
            "SIMTRIX_ENCRYPTION_KEY", "c2ltdHJpeC10ZXN0LW9ubHktZW5jcnlwdGlvbi1rZXk="
        ),
        DJANGO_DEBUG="0",
        SIMTRIX_LOG_LEVEL="WARNING",
        # Plain http on localhost, as in the tests (production redirects to https).
        SIMTRIX_SSL_REDIRECT="0",
        SIMTRIX_ALLOW_PRIVATE_ADDRESSES="1",
        # Not a line per request (gunicorn.conf.py logs every request by default).
        GUNICORN_ACCESSLOG="",
        # The bench's own metrics files: gunicorn.conf.py empties this host's files of the
        # directory at start, which would be another developer's server's on a shared machine.
        PROMETHEUS_MULTIPROC_DIR=tempfile.mkdtemp(prefix="simtrix-bench-metrics-"),
    )
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "simtrix.settings")
    sys.path.insert(0, str(REPO))
    import django

    django.setup()
    import redis
    from django.core.management import call_command
    from django.db import connection
    from django_tenants.utils import schema_context

    from calls.services import device_register
    from tenants.services import TenantSpec, tenant_provision

    redis.Redis.from_url(os.environ["REDIS_URL"]).flushdb()
    call_command("migrate_schemas", shared=True, interactive=False, verbosity=0)
    tenant_provision(
        TenantSpec(schema="bench", name="Bench", domain=HOST, timezone="Europe/Warsaw")
    )
    tokens, pks = [], []
    with schema_context("bench"):
        for index in range(devices):
            device, token = device_register(
                name=f"Phone {index}",
                phone_number=f"+48500{index:06d}",
                bitrix24_user_id=5,
                country="PL",
            )
            tokens.append(token)
            pks.append(device.pk)
    connection.close()
    return name, tokens, pks


def _fresh_start() -> None:
    """Before a model's run: no command left open by the last one, no device seen yet."""
    from django.db import connection
    from django_tenants.utils import schema_context

    from calls.models import Device
    from commands.models import Command

    with schema_context("bench"):
        Command.objects.filter(status=Command.Status.PENDING).update(status=Command.Status.EXPIRED)
        Device.objects.update(last_seen_at=None)
    connection.close()


class _Monitor:
    """A connection of the bench's own to the throwaway database, opened before the load (so
    never refused when the server's connections fill PostgreSQL up); the bench's connections
    are left out of the counts."""

    own: ClassVar[set[int]] = set()

    def __init__(self, database: str) -> None:
        import psycopg

        self.database = database
        self.conn = psycopg.connect(os.environ["DATABASE_URL"], autocommit=True)
        self.own.add(self.conn.info.backend_pid)

    def close(self) -> None:
        self.own.discard(self.conn.info.backend_pid)
        self.conn.close()

    def backends(self) -> int:
        """PostgreSQL backends connected to the throwaway database, the bench's left out."""
        row = self.conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND NOT pid = ANY(%s)",
            (self.database, list(self.own)),
        ).fetchone()
        return int(row[0]) if row else 0

    def held(self) -> list[str]:
        """What those backends last ran (state: query)."""
        rows = self.conn.execute(
            "SELECT state, left(query, 90) FROM pg_stat_activity"
            " WHERE datname = %s AND NOT pid = ANY(%s)",
            (self.database, list(self.own)),
        ).fetchall()
        return [f"{state}: {' '.join(str(query).split())}" for state, query in rows]

    def seen(self) -> int:
        """Devices whose poll got through authentication since _fresh_start (it writes
        last_seen_at), i.e. polls that reached the view rather than a queue in front of it."""
        from calls.models import Device

        table = Device._meta.db_table
        row = self.conn.execute(
            f'SELECT count(*) FROM bench."{table}" WHERE last_seen_at IS NOT NULL'
        ).fetchone()
        return int(row[0]) if row else 0


# --- The phones (client processes) ------------------------------------------------------------


class _Connection:
    """One phone's keep-alive HTTP/1.1 connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int) -> _Connection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()

    async def request(
        self, method: str, path: str, token: str, body: bytes = b""
    ) -> tuple[int, bytes, bool]:
        """(status, body, whether the server keeps the connection)."""
        head = [f"{method} {path} HTTP/1.1", f"Host: {HOST}", f"Authorization: Bearer {token}"]
        if method == "POST":
            head += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
        self.writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        await self.writer.drain()
        status_line = await self.reader.readline()
        if not status_line:
            raise ConnectionResetError("closed by the server")
        status = int(status_line.split()[1])
        length, chunked, keep = None, False, True
        while True:
            line = await self.reader.readline()
            if line in {b"\r\n", b""}:
                break
            name, _, value = line.decode("latin-1").partition(":")
            name, value = name.strip().lower(), value.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "transfer-encoding" and "chunked" in value:
                chunked = True
            elif name == "connection" and value == "close":
                keep = False
        if chunked:
            parts = []
            while size := int((await self.reader.readline()).split(b";")[0], 16):
                parts.append(await self.reader.readexactly(size))
                await self.reader.readline()
            await self.reader.readline()
            data = b"".join(parts)
        elif length is not None:
            data = await self.reader.readexactly(length)
        else:
            data, keep = await self.reader.read(), False
        return status, data, keep


class _Phones:
    """The phones of one client process and what they saw."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.in_flight = 0  # polls sent and not answered
        self.deliveries: list[tuple[int, str, float]] = []  # (phone, command_id, arrived)
        self.errors: Counter[str] = Counter()
        self.polls = 0
        self.acks = 0
        self.connects = 0
        self.stopping = False

    async def phone(self, index: int, token: str, delay: float) -> None:
        await asyncio.sleep(delay)
        conn: _Connection | None = None
        while not self.stopping:
            try:
                conn = await self.poll(conn, index, token)
            except Exception as exc:  # anything else the server's answer does: counted
                self.errors[f"poll {type(exc).__name__}"] += 1
                if conn is not None:
                    conn.close()
                conn = None
                await asyncio.sleep(1)

    async def poll(self, conn: _Connection | None, index: int, token: str) -> _Connection | None:
        """One poll and the acknowledgements of what it brought; the connection to go on with."""
        if conn is None:
            try:
                conn = await _Connection.open(self.port)
            except OSError:
                self.errors["connect failed"] += 1
                await asyncio.sleep(1)
                return None
            self.connects += 1
        self.in_flight += 1
        try:
            status, body, keep = await asyncio.wait_for(
                conn.request("GET", f"/api/bridge/v1/commands/?wait={WAIT_S}", token),
                POLL_TIMEOUT_S,
            )
        except TimeoutError:
            self.errors[f"poll timeout ({POLL_TIMEOUT_S} s)"] += 1
            conn.close()
            return None
        except (OSError, asyncio.IncompleteReadError) as exc:
            self.errors[f"poll {type(exc).__name__}"] += 1
            conn.close()
            await asyncio.sleep(0.2)
            return None
        finally:
            self.in_flight -= 1
        arrived = time.time()
        if not keep:
            conn.close()
        next_conn = conn if keep else None
        if status != 200:
            self.errors[f"poll {status}"] += 1
            await asyncio.sleep(1)
            return next_conn
        self.polls += 1
        for command in json.loads(body)["commands"]:
            self.deliveries.append((index, command["command_id"], arrived))
            next_conn = await self.ack(next_conn, token, command["command_id"])
            if next_conn is None:
                break  # the others come again with the next poll
        return next_conn

    async def ack(
        self, conn: _Connection | None, token: str, command_id: str
    ) -> _Connection | None:
        try:
            if conn is None:
                conn = await _Connection.open(self.port)
                self.connects += 1
            status, _, keep = await asyncio.wait_for(
                conn.request(
                    "POST", f"/api/bridge/v1/commands/{command_id}/ack/", token,
                    b'{"status": "done"}',
                ),
                ACK_TIMEOUT_S,
            )  # fmt: skip
        except TimeoutError:
            self.errors[f"ack timeout ({ACK_TIMEOUT_S} s)"] += 1
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            self.errors[f"ack {type(exc).__name__}"] += 1
        else:
            self.acks += status == 200
            if status != 200:
                self.errors[f"ack {status}"] += 1
            if keep:
                return conn
        if conn is not None:
            conn.close()
        return None


def _client_process(  # noqa: PLR0917 - a process target
    port: int,
    phones: list[tuple[int, str]],
    ramp: float,
    slot: int,
    shared: Any,
    stop: Any,
    out: Any,
) -> None:
    """Runs `phones` (index, token), started evenly over `ramp` seconds, until `stop`;
    `shared[slot]`: polls in flight, `shared[slot + 1]`: commands delivered; puts what the
    phones saw on `out`."""

    async def run() -> _Phones:
        state = _Phones(port)
        step = ramp / max(1, len(phones))
        tasks = [
            asyncio.create_task(state.phone(index, token, n * step))
            for n, (index, token) in enumerate(phones)
        ]
        while not stop.is_set():
            shared[slot], shared[slot + 1] = state.in_flight, len(state.deliveries)
            await asyncio.sleep(0.1)
        # The flag too: asyncio.wait_for of Python 3.11 may swallow a cancellation.
        state.stopping = True
        for task in tasks:
            task.cancel()
        await asyncio.wait(tasks, timeout=5)
        out.put(
            {
                "deliveries": state.deliveries,
                "errors": dict(state.errors),
                "polls": state.polls,
                "acks": state.acks,
                "connects": state.connects,
            }
        )
        return state

    asyncio.run(run())


# --- The server -------------------------------------------------------------------------------


def _server_start(model: str, port: int, options: argparse.Namespace, log: Any) -> Any:
    app = "simtrix.wsgi:application" if model == "gthread" else "simtrix.asgi:application"
    command = [sys.executable, "-m", "gunicorn", app, "-c", "gunicorn.conf.py"]
    if model == "asgi":
        command += ["-k", "uvicorn_worker.UvicornWorker"]
    env = dict(
        os.environ,
        GUNICORN_BIND=f"127.0.0.1:{port}",
        GUNICORN_WORKERS=str(options.workers),
        GUNICORN_THREADS=str(options.threads),
    )
    if options.conn_max_age is not None:
        env["DATABASE_CONN_MAX_AGE"] = str(options.conn_max_age)
    # A session of its own: stopping it ends its workers too, whatever they are doing.
    return subprocess.Popen(
        command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )


def _server_stop(server: Any) -> None:
    # Quick shutdown: a graceful one would wait for the polls still sleeping in the view.
    with contextlib.suppress(ProcessLookupError):
        server.send_signal(signal.SIGINT)
    try:
        server.wait(timeout=10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=10)


def _warm(port: int, token: str, requests: int) -> None:
    """A few requests on new connections, so that every worker has served one."""
    import http.client

    for _ in range(requests):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/api/bridge/v1/commands/?wait=0",
                     headers={"Host": HOST, "Authorization": f"Bearer {token}"})  # fmt: skip
        conn.getresponse().read()
        conn.close()


def _footprint(pid: int, port: int) -> dict[str, Any]:
    """gunicorn's master and workers: RSS, USS, threads, the phones' connections per worker."""
    master = psutil.Process(pid)
    workers = master.children()
    processes = [master, *workers]
    return {
        "rss": sum(p.memory_info().rss for p in processes),
        "uss": sum(p.memory_full_info().uss for p in processes),
        "threads": sum(p.num_threads() for p in processes),
        "connections": [
            sum(
                1
                for c in p.net_connections("tcp")
                if c.status == psutil.CONN_ESTABLISHED and c.laddr and c.laddr.port == port
            )
            for p in workers
        ],
    }


class _Cpu:
    """CPU from now on: the server's (% of one core) and the machine's (% of all cores busy)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.began = time.monotonic()
        self.server = self._server_seconds()
        self.machine = psutil.cpu_times()

    def _server_seconds(self) -> float:
        master = psutil.Process(self.pid)
        return sum(sum(p.cpu_times()[:2]) for p in [master, *master.children()])

    def used(self) -> str:
        elapsed = time.monotonic() - self.began
        server = 100 * (self._server_seconds() - self.server) / elapsed
        now = psutil.cpu_times()
        total = sum(now) - sum(self.machine)
        idle = (now.idle + now.iowait) - (self.machine.idle + self.machine.iowait)
        machine = 100 * (1 - idle / total) if total else float("nan")
        return f"{server:.0f} % / {machine:.0f} %"


class _Sampler(threading.Thread):
    """While commands are made: the peak of the server's backends, RSS and threads."""

    def __init__(self, pid: int, monitor: _Monitor) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.monitor = monitor
        self.stopped = threading.Event()
        self.backends = 0
        self.rss = 0
        self.threads = 0
        self.errors: Counter[str] = Counter()

    def run(self) -> None:
        while not self.stopped.wait(0.5):
            try:
                self.backends = max(self.backends, self.monitor.backends())
                master = psutil.Process(self.pid)
                processes = [master, *master.children()]
                self.rss = max(self.rss, sum(p.memory_info().rss for p in processes))
                self.threads = max(self.threads, sum(p.num_threads() for p in processes))
            except Exception as exc:
                self.errors[type(exc).__name__] += 1


def _produce(pks: list[int], rate: float, seconds: float) -> dict[str, tuple[int, float]]:
    """Commands for random devices at `rate` a second: command_id -> (device index, the wall
    time command_create returned, committed and its wake published)."""
    from django_tenants.utils import schema_context

    from calls.models import Device
    from commands.services import command_create

    rng = random.Random(7)
    made: dict[str, tuple[int, float]] = {}
    with schema_context("bench"):
        bulk = Device.objects.in_bulk(pks)
        devices = [bulk[pk] for pk in pks]
        started = next_at = time.monotonic()
        number = 0
        while time.monotonic() < started + seconds:
            index = rng.randrange(len(devices))
            device = devices[index]
            number += 1
            command = command_create(
                device=device,
                type="dial",
                phone_number="+48600111222",
                payload={"call_id": f"bench-{number}", "crm": {"status": "not_found"}},
            )
            made[str(command.command_id)] = (index, time.time())
            next_at += 1 / rate
            time.sleep(max(0.0, next_at - time.monotonic()))
    return made


def _run(
    model: str, options: argparse.Namespace, tokens: list[str], pks: list[int], database: str
) -> dict[str, Any]:
    devices = len(tokens)
    label = _label(model, options)
    print(f"\n== {label}: {devices} phones", flush=True)
    _fresh_start()
    port = free_port()
    handle, name = tempfile.mkstemp(prefix=f"simtrix-bench-{model}-", suffix=".log")
    os.close(handle)
    log_path = Path(name)
    result: dict[str, Any] = {"model": label, "devices": devices}
    context = multiprocessing.get_context("spawn")
    shared = context.Array("i", 4, lock=False)
    stop = context.Event()
    out = context.Queue()
    clients: list[Any] = []
    monitor = sampling = None
    with log_path.open("wb") as log:
        server = _server_start(model, port, options, log)
        try:
            server_wait_up(port, host=HOST, token=tokens[0])
            _warm(port, tokens[0], 4 * options.workers)
            _fresh_start()  # the warm-up's device is seen again only by its phone
            # The bench's connections, before the phones' load could leave none.
            monitor, sampling = _Monitor(database), _Monitor(database)
            _producer_connect()
            time.sleep(1)
            result["idle"] = _footprint(server.pid, port)
            clients = _clients_start(context, port, tokens, options.ramp, (shared, stop, out))
            result.update(_settle(devices, shared, monitor, clients))
            result.update(_waiting(server.pid, port, monitor))
            print(f"   {result['in_flight']} polls outstanding, {result['in_view']} in the "
                  f"view after {result['ramp_s']:.1f} s; making commands", flush=True)  # fmt: skip
            result.update(_load(server.pid, sampling, pks, options, shared))
            stop.set()
            try:
                seen_by = [out.get(timeout=60) for _ in clients]
            except queue.Empty:
                raise SystemExit("the client processes did not report") from None
        finally:
            for each in (monitor, sampling):
                if each is not None:
                    each.close()
            stop.set()
            for client in clients:
                client.join(timeout=10)
                if client.is_alive():
                    client.kill()
            _server_stop(server)
    result["log"] = _log_summary(log_path)
    result.update(_deliveries(result.pop("made"), seen_by))
    return result


def _label(model: str, options: argparse.Namespace) -> str:
    label = (
        f"gthread {options.workers}x{options.threads}"
        if model == "gthread"
        else f"uvicorn {options.workers} workers"
    )
    if options.conn_max_age is not None:
        label += f", CONN_MAX_AGE={options.conn_max_age}"
    return label


def _waiting(pid: int, port: int, monitor: _Monitor) -> dict[str, Any]:
    """The server with every phone waiting and no command made: CPU over 5 s, memory,
    threads, and the database backends (and what they last ran)."""
    time.sleep(1)
    cpu = _Cpu(pid)
    time.sleep(5)
    return {
        "cpu_waiting": cpu.used(),
        "waiting": _footprint(pid, port),
        "backends_waiting": monitor.backends(),
        "backends_held": monitor.held(),
    }


def _clients_start(
    context: Any, port: int, tokens: list[str], ramp: float, channels: tuple[Any, Any, Any]
) -> list[Any]:
    """Two client processes, half of the phones each."""
    shared, stop, out = channels
    indexed = list(enumerate(tokens))
    halves = [indexed[: len(indexed) // 2], indexed[len(indexed) // 2 :]]
    clients = [
        context.Process(target=_client_process, args=(port, half, ramp, 2 * i, shared, stop, out))
        for i, half in enumerate(halves)
    ]
    for client in clients:
        client.start()
    return clients


def _settle(devices: int, shared: Any, monitor: _Monitor, clients: list[Any]) -> dict[str, Any]:
    """Waits until every phone has a poll outstanding and the polls that reached the view
    stopped growing (all of them, or what the server's threads admit)."""
    began = time.monotonic()
    seen, stable, backends = -1, 0, 0
    while time.monotonic() < began + 90:
        time.sleep(0.5)
        if not all(client.is_alive() for client in clients):
            raise SystemExit("a client process died")
        backends = max(backends, monitor.backends())
        now_seen = monitor.seen()
        stable = stable + 1 if now_seen == seen else 0
        seen = now_seen
        if shared[0] + shared[2] == devices and (seen == devices or stable >= 4):
            break
    return {
        "ramp_s": time.monotonic() - began,
        "in_flight": shared[0] + shared[2],
        "in_view": seen,
        "backends_ramp": backends,
    }


def _producer_connect() -> None:
    """Opens the producer's (Django's) connection now and leaves it out of the counts."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        row = cursor.fetchone()
    if row:
        _Monitor.own.add(int(row[0]))


def _load(
    pid: int, monitor: _Monitor, pks: list[int], options: argparse.Namespace, shared: Any
) -> dict[str, Any]:
    """Makes the commands, then waits for their delivery; samples the server meanwhile."""
    from django.db import connection

    sampler = _Sampler(pid, monitor)
    sampler.start()
    cpu = _Cpu(pid)
    made = _produce(pks, options.rate, options.seconds)
    cpu_producing = cpu.used()
    connection.close()
    drain_began = time.monotonic()
    while time.monotonic() < drain_began + DRAIN_S and shared[1] + shared[3] < len(made):
        time.sleep(0.2)
    drain_s = time.monotonic() - drain_began
    time.sleep(0.5)  # a duplicate would come now
    sampler.stopped.set()
    sampler.join()
    return {
        "made": made,
        "asked": round(options.rate * options.seconds),
        "cpu_producing": cpu_producing,
        "drain_s": drain_s,
        "backends_peak": sampler.backends,
        "rss_peak": sampler.rss,
        "threads_peak": sampler.threads,
        "sampler_errors": dict(sampler.errors),
    }


def _deliveries(
    made: dict[str, tuple[int, float]], seen_by: list[dict[str, Any]]
) -> dict[str, Any]:
    """Latency created -> delivered of each command, and every delivery that should not be."""
    first: dict[str, float] = {}
    duplicates = wrong = unknown = 0
    for part in seen_by:
        for phone, command_id, arrived in part["deliveries"]:
            if command_id not in made:
                unknown += 1
            elif made[command_id][0] != phone:
                wrong += 1
            elif command_id in first:
                duplicates += 1
                first[command_id] = min(first[command_id], arrived)
            else:
                first[command_id] = arrived
    latencies = [first[cid] - created for cid, (_, created) in made.items() if cid in first]
    errors: Counter[str] = Counter()
    for part in seen_by:
        errors.update(part["errors"])
    return {
        "made": len(made),
        "delivered": len(first),
        "duplicates": duplicates,
        "wrong": wrong,
        "unknown": unknown,
        "missing": len(made) - len(first),
        "latencies": latencies,
        "errors": dict(errors),
        "polls": sum(part["polls"] for part in seen_by),
        "acks": sum(part["acks"] for part in seen_by),
        "connects": sum(part["connects"] for part in seen_by),
    }


def _log_summary(path: Path) -> dict[str, Any]:
    """The worker class gunicorn says it uses, and its log's error lines."""
    worker, errors, refused = "?", [], 0
    for line in path.read_text(errors="replace").splitlines():
        refused += "too many clients" in line
        if "Using worker:" in line:
            worker = line.split("Using worker:", 1)[1].strip().split()[0].strip('",}')
        elif any(mark in line for mark in ("Traceback", "ERROR", "CRITICAL", "WORKER TIMEOUT")):
            errors.append(line.strip()[:200])
    if not errors:
        path.unlink()
    return {"worker": worker, "errors": errors, "refused": refused, "path": path}


# --- The report -------------------------------------------------------------------------------


def _per_phone(result: dict[str, Any], key: str) -> str:
    grown = result["waiting"][key] - result["idle"][key]
    return f"{grown / result['devices'] / 1024:.0f} KB"


def _cells(result: dict[str, Any]) -> dict[str, Any]:
    """A model's column of the report."""

    def mb(value: float) -> str:
        return f"{value / 2**20:.1f} MB"

    latencies = result["latencies"]

    def ms(fraction: float) -> str:
        return f"{1000 * percentile(latencies, fraction):.0f}" if latencies else "-"

    idle, waiting = result["idle"], result["waiting"]
    errors = ", ".join(f"{k}: {v}" for k, v in sorted(result["errors"].items()))
    return {
        "worker class (gunicorn's log)": result["log"]["worker"],
        "polls outstanding / in the view": f"{result['in_flight']} / {result['in_view']}",
        "  ...reached after": f"{result['ramp_s']:.1f} s",
        "phones' connections per worker": str(waiting["connections"]),
        "commands made (asked)": f"{result['made']} ({result['asked']})",
        "  delivered (to the right phone)": result["delivered"],
        "  missing": result["missing"],
        "  duplicate deliveries": result["duplicates"],
        "  to another phone / unknown": f"{result['wrong']} / {result['unknown']}",
        "latency p50 ms": ms(0.5),
        "latency p95 ms": ms(0.95),
        "latency p99 ms (target < 1000)": ms(0.99),
        "latency max ms": f"{1000 * max(latencies):.0f}" if latencies else "-",
        "drain after the last command": f"{result['drain_s']:.1f} s",
        "RSS idle": mb(idle["rss"]),
        "RSS, N polls outstanding": mb(waiting["rss"]),
        "  per phone (RSS)": _per_phone(result, "rss"),
        "  per phone (USS)": _per_phone(result, "uss"),
        "RSS peak while producing": mb(result["rss_peak"]),
        "CPU server / machine, N waiting": result["cpu_waiting"],
        "CPU server / machine, producing": result["cpu_producing"],
        "threads idle / waiting / peak": (
            f"{idle['threads']} / {waiting['threads']} / {result['threads_peak']}"
        ),
        "DB backends peak, phones arriving": result["backends_ramp"],
        "DB backends while waiting": result["backends_waiting"],
        "DB backends peak, producing": result["backends_peak"],
        "polls answered 200 / acks 200": f"{result['polls']} / {result['acks']}",
        "connections opened": result["connects"],
        "phones' errors": errors or "none",
        "server log error lines": len(result["log"]["errors"]),
        "server log lines 'too many clients'": result["log"]["refused"],
        "bench's sampler errors": ", ".join(
            f"{k}: {v}" for k, v in sorted(result["sampler_errors"].items())
        )
        or "none",
    }


def _report(options: argparse.Namespace, results: list[dict[str, Any]], load: float) -> None:
    columns = [_cells(result) for result in results]
    rows = [[name, *[column[name] for column in columns]] for name in columns[0]]
    print(f"\n{options.devices} phones long-polling (wait={WAIT_S}), {options.rate:g} commands/s "
          f"for {options.seconds:g} s, {os.cpu_count()} CPUs shared with the client, PostgreSQL "
          f"and Redis; load average {load:.1f} at start\n")  # fmt: skip
    print(table(rows, ["", *[result["model"] for result in results]]))
    for result in results:
        if result["backends_held"]:
            print(f"\n{result['model']}: backends while the polls wait (state: last query):")
            for line in result["backends_held"][:8]:
                print(f"  {line}")
        distinct = list(dict.fromkeys(result["log"]["errors"]))
        if distinct:
            path = result["log"]["path"]
            print(f"\n{result['model']}: the server log's first error lines (kept: {path}):")
            for line in distinct[:8]:
                print(f"  {line}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--devices", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=30.0, help="how long commands are made")
    parser.add_argument("--rate", type=float, default=20.0, help="commands per second")
    parser.add_argument("--model", choices=["gthread", "asgi", "both"], default="both")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn worker processes")
    parser.add_argument("--threads", type=int, default=300, help="threads per gthread worker")
    parser.add_argument(
        "--ramp",
        type=float,
        default=5.0,
        help="seconds over which the phones start (0: all at once; see the module's doc)",
    )
    parser.add_argument(
        "--conn-max-age",
        type=int,
        default=None,
        help="DATABASE_CONN_MAX_AGE for the server (default: the settings' own, 60 s)",
    )
    options = parser.parse_args()

    models = ["gthread", "asgi"] if options.model == "both" else [options.model]
    load = os.getloadavg()[0]
    database, tokens, pks = _setup(options.devices)
    results = []
    try:
        for model in models:
            results.append(_run(model, options, tokens, pks, database))
    finally:
        database_drop(database)
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)
    _report(options, results, load)
    return 0


if __name__ == "__main__":
    sys.exit(main())
