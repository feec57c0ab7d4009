"""Waking the polls that wait for a device's commands: Redis pub/sub, one listener per process.

A new command publishes the device's channel once its transaction commits. Each web process has
one listener thread, subscribed to every device's channel by pattern, that wakes the polls of
that process waiting for the device: however many phones wait, a process holds one Redis
connection, and a waiting poll holds no database connection and no Redis connection of its own.

Redis only wakes; the database decides. A poll checks the database after registering its wait
(so a command created in between is not missed), after every wake, and every
SIMTRIX_COMMANDS_CHECK_SECONDS (by default never within one poll: a wake lost on its way waits
for the phone's next poll). While the listener is not subscribed (Redis down or restarting),
polls check the database every half second, and when it subscribes again it wakes every poll,
since wakes published meanwhile were lost.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import redis
from django.conf import settings

from common.metrics import COMMANDS_WAITING

logger = logging.getLogger(__name__)

# How often a waiting poll reads the database while the listener is not subscribed; with it,
# SIMTRIX_COMMANDS_CHECK_SECONDS (a publish lost on the way).
CHECK_EVERY_DEGRADED_S = 0.5
_RECONNECT_S = 1.0


def _prefix() -> str:
    # Pub/sub ignores Redis database numbers: the database name keeps two installations (or
    # two test runs) sharing a Redis from waking each other's polls.
    return f"simtrix:wake:{settings.DATABASES['default']['NAME']}:"


def wake_channel(schema: str, device_id: int) -> str:
    return f"{_prefix()}{schema}:{device_id}"


def wake_publish(*, schema: str, device_id: int) -> None:
    """Wakes the polls waiting for the device, in every process. Never fails: a lost wake only
    delays the command until the poll's next database check."""
    try:
        _publisher().publish(wake_channel(schema, device_id), b"1")
    except redis.RedisError as exc:
        logger.warning("command wake not published (the poll finds it in the database): %s", exc)


@functools.cache
def _publisher() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2)


@dataclass(eq=False)
class Watch:
    """One waiting poll's registration: set by a wake, by the listener's reconnect, or never."""

    channel: str
    _event: threading.Event = field(default_factory=threading.Event)

    def _wake(self) -> None:
        self._event.set()

    def _check_every(self) -> float:
        if not _listener.subscribed:
            return CHECK_EVERY_DEGRADED_S
        return float(settings.SIMTRIX_COMMANDS_CHECK_SECONDS)

    def wait(self, timeout: float) -> bool:
        """Blocks until woken or `timeout` (capped at the next database check); True if woken."""
        woken = self._event.wait(max(0.0, min(timeout, self._check_every())))
        self._event.clear()
        return woken


class _Listener:
    """The process's one subscription; started by the first poll that waits."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._watches: dict[str, set[Watch]] = {}
        self._thread: threading.Thread | None = None
        self._pid = 0
        self.subscribed = False

    def add(self, watch: Watch) -> None:
        with self._lock:
            self._watches.setdefault(watch.channel, set()).add(watch)
            self._ensure_started()

    def remove(self, watch: Watch) -> None:
        with self._lock:
            watches = self._watches.get(watch.channel)
            if watches is not None:
                watches.discard(watch)
                if not watches:
                    del self._watches[watch.channel]

    def _ensure_started(self) -> None:
        # A forked worker (gunicorn) inherits the object, not the thread: start its own.
        if self._thread is not None and self._thread.is_alive() and self._pid == os.getpid():
            return
        self._pid = os.getpid()
        self.subscribed = False
        self._thread = threading.Thread(target=self._run, name="command-wakeup", daemon=True)
        self._thread.start()

    def _wake(self, channel: str) -> None:
        with self._lock:
            watches = list(self._watches.get(channel, ()))
        for watch in watches:
            watch._wake()

    def _wake_all(self) -> None:
        with self._lock:
            watches = [watch for group in self._watches.values() for watch in group]
        for watch in watches:
            watch._wake()

    def _run(self) -> None:
        while True:
            try:
                client = redis.Redis.from_url(
                    settings.REDIS_URL, socket_connect_timeout=2, health_check_interval=15
                )
                pubsub = client.pubsub(ignore_subscribe_messages=True)
                pubsub.psubscribe(f"{_prefix()}*")
                # The subscription is confirmed by its first message.
                pubsub.get_message(timeout=2)
                self.subscribed = True
                # Wakes published while this was not subscribed are lost: everyone looks.
                self._wake_all()
                while True:
                    message = pubsub.get_message(timeout=5)
                    if message is not None and message.get("type") == "pmessage":
                        channel = message["channel"]
                        self._wake(channel.decode() if isinstance(channel, bytes) else channel)
            except Exception as exc:  # any failure: reconnect, polls use the database
                if self.subscribed:
                    logger.warning("command wake-up listener lost Redis, reconnecting: %s", exc)
                self.subscribed = False
                self._wake_all()
                time.sleep(_RECONNECT_S)


_listener = _Listener()


@contextmanager
def wake_watch(*, schema: str, device_id: int) -> Iterator[Watch]:
    """Registers a poll's wait for the device's commands while the block runs."""
    watch = Watch(channel=wake_channel(schema, device_id))
    _listener.add(watch)
    COMMANDS_WAITING.inc()
    try:
        yield watch
    finally:
        COMMANDS_WAITING.dec()
        _listener.remove(watch)
