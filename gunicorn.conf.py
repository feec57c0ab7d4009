"""gunicorn's settings for the web process (`gunicorn -c gunicorn.conf.py simtrix.wsgi`).

Threads: a ringing call's lookup waits for Bitrix24 (up to the tenant's lookup budget) without
holding a whole worker; bench/bridge_events.py measured 4 workers x 4 threads. Each worker keeps
its metrics in a file of PROMETHEUS_MULTIPROC_DIR (set it in the environment, an empty directory
shared with the Celery worker: a tmpfs in docker-compose.yml); a dead worker's live gauges are
dropped here, its counters stay so that totals never go down.
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import multiprocess

bind = os.environ.get("GUNICORN_BIND", "0.0.0.0:8000")
workers = int(os.environ.get("GUNICORN_WORKERS", "4"))
worker_class = "gthread"
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
# A bridge request is over in a few seconds (the lookup budget); a recording upload may take
# longer on a slow phone line.
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "60"))
graceful_timeout = 30
# Heartbeat files in memory: a container's /tmp may be a slow overlay filesystem.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None  # noqa: S108 — gunicorn's advice
# Behind a TLS proxy: whose X-Forwarded-* headers gunicorn believes (Django decides the scheme
# from SECURE_PROXY_SSL_HEADER).
forwarded_allow_ips = os.environ.get("GUNICORN_FORWARDED_ALLOW_IPS", "127.0.0.1")
# One access line per request, with the id Django's lines carry (simtrix.request_id).
accesslog = os.environ.get("GUNICORN_ACCESSLOG", "-") or None
access_log_format = '%(h)s "%(r)s" %(s)s %(B)s %(M)sms request=%({x-request-id}o)s agent="%(a)s"'


def child_exit(server: Any, worker: Any) -> None:
    """A worker ended (crashed, timed out, recycled): its live gauges must not be summed."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(worker.pid)
