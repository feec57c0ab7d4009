"""An ASGI entry point, for comparison (`gunicorn simtrix.asgi:application -k
uvicorn_worker.UvicornWorker`).

Not the recommended web process: bench/commands_longpoll.py measured it against the WSGI entry
(simtrix.wsgi) under gthread, the one the README and docker-compose.yml run. Django runs the
project's sync middleware and views in a thread per request under ASGI, so a waiting long poll
holds a thread there too, and every request pays the thread and a new database connection: with
500 phones waiting, p99 from a command made to delivered was 5-7 s against 0.2-0.6 s under
gthread. Each request has a thread of its own, so a persistent database connection would never
be reused: they are closed at the end of each request here (Django's advice for ASGI).
"""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "simtrix.settings")
os.environ.setdefault("DATABASE_CONN_MAX_AGE", "0")

from django.core.asgi import get_asgi_application  # after the environment: settings read it

application = get_asgi_application()
