"""The portal's event queue: one background thread POSTs queued events to their handlers.

Bitrix24 hands events to a queue server that calls the handlers later (REFERENCE 4.7), so a
REST method that fires an event never waits for its handler; neither does the sandbox. Each
delivery is one POST (``application/x-www-form-urlencoded``, PHP-style nested keys), 10 s
timeout, no retries, recorded in ``State.deliveries`` with what was sent and what came back.
SMS providers' handler calls (``messageservice``) go through the same queue, as in Bitrix24;
their records carry a ``payload`` of top-level fields instead of ``event``/``data``.

Handlers may be ``http://`` or ``https://`` (verified against the system CAs, ``SSL_CERT_FILE``
included). ``localhost`` and ``*.localhost`` (RFC 6761) are connected on 127.0.0.1 with the
original Host header and TLS server name, so ``http://alpha.localhost:8000/...`` reaches a
local server without a resolver that knows the name.
"""

from __future__ import annotations

import http.client
import queue
import socket
import ssl
import threading
import time
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlencode, urlsplit

DELIVERY_TIMEOUT = 10.0
_RESPONSE_LIMIT = 65536
_USER_AGENT = "Bitrix24 sandbox event queue"


def form_fields(payload: dict[str, Any]) -> dict[str, str]:
    """Flatten a payload the way PHP's ``http_build_query`` does: ``data[FIELDS][ID]=12``,
    lists as ``[0]``, ``[1]``, true/false as ``1``/``0``; ``None`` and empty arrays send nothing."""
    out: dict[str, str] = {}

    def walk(key: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{key}[{k}]", v)
        elif isinstance(value, (list, tuple)):
            for i, v in enumerate(value):
                walk(f"{key}[{i}]", v)
        elif value is None:
            return
        elif isinstance(value, bool):
            out[key] = "1" if value else "0"
        else:
            out[key] = str(value)

    for top, value in payload.items():
        walk(str(top), value)
    return out


def _local_name(host: str) -> bool:
    host = host.lower().rstrip(".")
    return host == "localhost" or host.endswith(".localhost")


class _HTTPConnection(http.client.HTTPConnection):
    def __init__(self, host: str, port: int, connect_to: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._connect_to = connect_to

    def connect(self) -> None:
        self.sock = socket.create_connection((self._connect_to, self.port), self.timeout)


class _HTTPSConnection(http.client.HTTPSConnection):
    def __init__(
        self, host: str, port: int, connect_to: str, timeout: float, context: ssl.SSLContext
    ) -> None:
        super().__init__(host, port, timeout=timeout, context=context)
        self._connect_to = connect_to
        self._tls = context

    def connect(self) -> None:
        sock = socket.create_connection((self._connect_to, self.port), self.timeout)
        self.sock = self._tls.wrap_socket(sock, server_hostname=self.host)


def post_form(
    url: str, fields: dict[str, str], timeout: float = DELIVERY_TIMEOUT
) -> tuple[int | None, str | None, str]:
    """POST ``fields`` to ``url``: (HTTP status or None, error text or None, response body)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        return None, f"unsupported handler URL {url!r}", ""
    host = parts.hostname
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError as exc:
        return None, f"bad port in {url!r}: {exc}", ""
    connect_to = "127.0.0.1" if _local_name(host) else host
    conn: http.client.HTTPConnection
    if scheme == "https":
        conn = _HTTPSConnection(host, port, connect_to, timeout, ssl.create_default_context())
    else:
        conn = _HTTPConnection(host, port, connect_to, timeout)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    body = urlencode(list(fields.items())).encode("ascii")
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "User-Agent": _USER_AGENT,
        "Connection": "close",
    }
    try:
        conn.request("POST", target, body=body, headers=headers)
        resp = conn.getresponse()
        text = resp.read(_RESPONSE_LIMIT).decode("utf-8", "replace")
        return resp.status, None, text
    except (OSError, http.client.HTTPException) as exc:
        return None, f"{type(exc).__name__}: {exc}", ""
    finally:
        conn.close()


class DeliveryQueue:
    """FIFO of delivery records (dicts shared with ``State.deliveries``) and its worker thread.

    ``lock`` is the state lock: records are only mutated under it. The queue's own condition is
    never held while taking the state lock, so ``put`` may be called with the state lock held.
    """

    def __init__(self, lock: threading.RLock, timeout: float = DELIVERY_TIMEOUT) -> None:
        self.lock = lock
        self.timeout = timeout
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._cond = threading.Condition()
        self._pending: set[int] = set()
        self._thread: threading.Thread | None = None
        self._stopping = False

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="b24-sandbox-events", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping = True
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join(timeout=2)
        self._thread = None

    def put(self, record: dict[str, Any]) -> None:
        with self._cond:
            self._pending.add(int(record["id"]))
        self._queue.put(record)

    def pending(self) -> int:
        with self._cond:
            return len(self._pending)

    def wait(self, ids: Iterable[int] | None = None, timeout: float = DELIVERY_TIMEOUT) -> bool:
        """Block until the given deliveries (all when None) are done; False on timeout."""
        wanted = None if ids is None else set(ids)

        def done() -> bool:
            return not (self._pending if wanted is None else self._pending & wanted)

        with self._cond:
            return self._cond.wait_for(done, timeout=timeout)

    def _run(self) -> None:
        while True:
            record = self._queue.get()
            if record is None:
                if self._stopping:
                    return
                continue
            try:
                if self._stopping:
                    with self.lock:
                        record.update(
                            state="failed", error="sandbox stopped", finished_at=time.time()
                        )
                else:
                    self._deliver(record)
            finally:
                with self._cond:
                    self._pending.discard(int(record["id"]))
                    self._cond.notify_all()

    def _deliver(self, record: dict[str, Any]) -> None:
        with self.lock:
            sent = time.time()
            # ts is when the queue sends the event (docs: "sent from the event queue").
            ts = str(int(sent))
            if record.get("payload") is not None:
                # Not an event: a call with its own top-level fields (an SMS provider's
                # handler gets type, code, message_id, ... then ts and auth).
                payload = {**record["payload"], "ts": ts, "auth": record["auth"]}
            else:
                payload = {
                    "event": record["event"],
                    "event_handler_id": record["event_handler_id"],
                    "data": record["data"],
                    "ts": ts,
                    "auth": record["auth"],
                }
            fields = form_fields(payload)
            record.update(state="sending", sent_at=sent, ts=ts, fields=fields)
            url = str(record["handler"])
        status, error, body = post_form(url, fields, self.timeout)
        finished = time.time()
        with self.lock:
            record.update(
                state="delivered" if status is not None else "failed",
                status_code=status,
                error=error,
                response=body,
                finished_at=finished,
                duration=round(finished - sent, 6),
            )
