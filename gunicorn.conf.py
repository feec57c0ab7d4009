"""gunicorn's settings for the web process (`gunicorn -c gunicorn.conf.py simtrix.wsgi`).

Threads: every phone keeps a long poll for commands open (commands.api.views), and a waiting
poll holds a thread (not a database connection); a ringing call's lookup waits for Bitrix24 (up
to the tenant's lookup budget) in a thread too. Threads cost memory only when used (about 160 KB
a waiting phone), so the default is 4 workers x 150 threads: 600 phones waiting at once with room
for the calls' requests. Size GUNICORN_THREADS as phones / GUNICORN_WORKERS plus a margin: with
fewer threads than waiting phones, polls take every thread and the bridge's events queue behind
them (bench/commands_longpoll.py: 4 x 4 delivered 61 of 600 commands to 500 phones; 2 x 300 all
of them, p99 0.2-0.6 s). bench/bridge_events.py measured the calls' requests at 4 x 4.

Metrics: each worker keeps its values in files of PROMETHEUS_MULTIPROC_DIR, named by host and pid
(common.metrics_files), which /metrics adds up. The directory must be known before
prometheus-client is first imported (it decides then how values are stored), so it is defaulted
here, first; docker-compose.yml sets it to a tmpfs shared with the Celery worker. At start the
directory is created and this host's files of earlier runs are removed (the worker's, on another
host name, are not: emptying a shared directory would erase a running worker's counts). A dead
worker's live gauges are dropped; its counters stay so that totals never go down.

Logs: gunicorn's own lines (start, workers, timeouts) and its access lines go through the
project's formatter (simtrix.logs), as JSON when SIMTRIX_LOG_FORMAT=json. An access line has
the path without its query string: a token in a query never reaches the log.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

os.environ.setdefault(
    "PROMETHEUS_MULTIPROC_DIR",
    os.path.join(tempfile.gettempdir(), f"simtrix-metrics-{os.getuid()}"),
)
# Already here, not only in on_starting: `--preload` and `--check-config` load the application
# (and its metrics) in the master before that hook.
os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)

from common.metrics_files import directory_prepare, process_dead  # noqa: E402 — after the env
from simtrix.logs import logging_config  # noqa: E402

bind = os.environ.get("GUNICORN_BIND", "0.0.0.0:8000")
workers = int(os.environ.get("GUNICORN_WORKERS", "4"))
worker_class = "gthread"
threads = int(os.environ.get("GUNICORN_THREADS", "150"))
# A bridge request is over in a few seconds (the lookup budget); a recording upload may take
# longer on a slow phone line.
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "60"))
graceful_timeout = 30
# Heartbeat files in memory: a container's /tmp may be a slow overlay filesystem.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None  # noqa: S108 — gunicorn's advice
# Behind a TLS proxy: whose X-Forwarded-* headers gunicorn believes (Django decides the scheme
# from SECURE_PROXY_SSL_HEADER).
forwarded_allow_ips = os.environ.get("GUNICORN_FORWARDED_ALLOW_IPS", "127.0.0.1")
# One access line per request, with the id Django's lines carry (simtrix.request_id). %(U)s is
# the path alone: the request line (%(r)s) would log the query string.
accesslog = os.environ.get("GUNICORN_ACCESSLOG", "-") or None
access_log_format = (
    '%(h)s "%(m)s %(U)s" %(s)s %(B)s %(M)sms request=%({x-request-id}o)s agent="%(a)s"'
)


def _logconfig() -> dict[str, Any]:
    config = logging_config(
        log_format=os.environ.get("SIMTRIX_LOG_FORMAT", "text"),
        level=os.environ.get("SIMTRIX_LOG_LEVEL", "INFO"),
    )
    for name in ("gunicorn.error", "gunicorn.access"):
        config["loggers"][name] = {"handlers": ["console"], "level": "INFO", "propagate": False}
    return config


logconfig_dict = _logconfig()


def on_starting(server: Any) -> None:
    """The master, before any worker: the metrics directory exists, without stale files."""
    directory_prepare(os.environ["PROMETHEUS_MULTIPROC_DIR"])


def child_exit(server: Any, worker: Any) -> None:
    """A worker ended (crashed, timed out, recycled): its live gauges must not be summed."""
    process_dead(worker.pid)
