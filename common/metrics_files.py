"""Where each process keeps its metrics under PROMETHEUS_MULTIPROC_DIR, and what of them a
process that ended leaves behind.

prometheus-client names a process's files by its pid (`counter_<pid>.db`). The web and worker
containers share one directory (docker-compose.yml) and each has its own pid namespace: gunicorn's
first worker and the Celery worker's first pool process are both pid 7 or so, write the same
file, and the scrape loses one's counts. So a process is `<hostname>-<pid>` here (a container's
hostname is its own), with `-` inside: the collector splits file names on `_`.

No metric is created here: gunicorn's master imports this module without creating files of its
own (common.metrics creates the metrics, in the workers).
"""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path

from prometheus_client import multiprocess

ENVIRONMENT = "PROMETHEUS_MULTIPROC_DIR"


def multiprocess_directory() -> str | None:
    return os.environ.get(ENVIRONMENT) or None


def _host() -> str:
    return socket.gethostname().replace("_", "-") or "host"


def process_identifier(pid: int | None = None) -> str:
    """This process (or `pid`, of this host) as its metric files name it."""
    return f"{_host()}-{os.getpid() if pid is None else pid}"


def process_dead(pid: int) -> None:
    """`pid` (of this host) ended: its live gauges are not summed any more; its counters stay
    so that totals never go down."""
    if multiprocess_directory():
        multiprocess.mark_process_dead(process_identifier(pid))


def directory_prepare(path: str) -> None:
    """`path` exists and holds no files of this host's earlier processes (a restarted
    container's old pids, whose live gauges would be summed with this run's). Other hosts'
    files stay: they belong to processes still running in other containers."""
    directory = Path(path)
    directory.mkdir(parents=True, exist_ok=True)
    # counter_<host>-<pid>.db, gauge_livesum_<host>-<pid>.db, ...
    mine = re.compile(rf"[a-z]+(?:_[a-z]+)?_{re.escape(_host())}-\d+\.db")
    for entry in directory.iterdir():
        if mine.fullmatch(entry.name):
            entry.unlink()
