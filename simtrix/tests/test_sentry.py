"""Error tracking: off without SENTRY_DSN; with it, events leave without phone numbers."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import sentry_sdk

from simtrix.sentry import FILTERED, scrub_phones, sentry_init

REPO = Path(__file__).resolve().parents[2]

NUMBERS = ["+48 600 111 222", "+48600111222", "600111222", "600 111 222", "48600111222"]


def _no_number_left(text: str) -> None:
    for number in [*NUMBERS, "111 222", "111222"]:
        assert number not in text, number


def test_an_event_is_scrubbed_everywhere_it_can_hold_a_number() -> None:
    event: dict[str, Any] = {
        "event_id": "0123456789abcdef0123456789abcdef",
        "timestamp": "2026-11-21T14:32:05.123456Z",
        "message": "Lookup of +48600111222: found",
        "request": {
            "url": "https://alpha.example/api/bridge/v1/lookup/",
            "query_string": "phone=600111222&lang=pl",
            "data": {"phone_number": "600 111 222", "direction": "incoming", "duration": 95},
        },
        "extra": {"body": '{"phone_number": "600 111 222", "type": "call.started"}'},
        "exception": {
            "values": [
                {
                    "type": "Bitrix24PermanentError",
                    "value": "No entity for +48 600 111 222",
                    "stacktrace": {
                        "frames": [
                            {
                                "function": "crm_find_by_phone",
                                "lineno": 120,
                                "vars": {
                                    "phone": "'+48600111222'",
                                    "e164": "'+48600111222'",
                                    "budget_s": "0.8",
                                    "forms": "['600111222', '48600111222']",
                                },
                            }
                        ]
                    },
                }
            ]
        },
        "contexts": {"crm": {"PHONE": [{"VALUE": "600111222", "VALUE_TYPE": "WORK"}]}},
        "breadcrumbs": {
            "values": [{"category": "query", "message": "SELECT ... WHERE phone = '600111222'"}]
        },
    }

    scrubbed = scrub_phones(event)

    _no_number_left(json.dumps(scrubbed))
    assert scrubbed["event_id"] == event["event_id"]  # Sentry's bookkeeping is intact
    assert scrubbed["timestamp"] == event["timestamp"]
    assert scrubbed["request"]["data"] == {
        "phone_number": FILTERED,
        "direction": "incoming",
        "duration": 95,
    }
    assert scrubbed["request"]["query_string"] == f"phone={FILTERED}&lang=pl"
    assert scrubbed["request"]["url"] == event["request"]["url"]
    frame = scrubbed["exception"]["values"][0]["stacktrace"]["frames"][0]
    assert frame["vars"]["budget_s"] == "0.8"
    assert frame["lineno"] == 120
    assert scrubbed["exception"]["values"][0]["type"] == "Bitrix24PermanentError"
    assert scrubbed["contexts"]["crm"]["PHONE"] == FILTERED
    assert '"type": "call.started"' in scrubbed["extra"]["body"]
    assert event["request"]["data"]["phone_number"] == "600 111 222"  # the original is untouched


@pytest.mark.parametrize(
    "text",
    [
        "call 2026-11-21 14:32:05 lasted 95 s",
        "event 6f1c7c3e-8d0c-4a43-9a57-1d9f3f2f0a11",
        "HTTP 503 after 3 attempts (call #12345)",
    ],
)
def test_text_without_numbers_is_left_alone(text: str) -> None:
    assert scrub_phones(text) == text


def test_without_a_dsn_nothing_is_started() -> None:
    assert sentry_init(dsn="") is False
    assert not sentry_sdk.get_client().is_active()


class _Collector(BaseHTTPRequestHandler):
    received: list[bytes]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        type(self).received.append(body)
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def sentry_server() -> Iterator[tuple[int, list[bytes]]]:
    """A stand-in for Sentry's ingest on 127.0.0.1: records every envelope it is sent."""
    received: list[bytes] = []
    handler = type("Collector", (_Collector,), {"received": received})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], received
    finally:
        server.shutdown()
        server.server_close()


_REPORT = textwrap.dedent(
    """
    import sys
    import sentry_sdk
    from simtrix.sentry import sentry_init

    assert sentry_init(dsn=sys.argv[1], environment="test")

    def look_up(phone_number):
        raise LookupError(f"nobody at {phone_number}")

    try:
        look_up("+48 600 111 222")
    except LookupError:
        sentry_sdk.capture_exception()
    sentry_sdk.flush(timeout=10)
    """
)


def test_with_a_dsn_errors_are_sent_without_phone_numbers(
    sentry_server: tuple[int, list[bytes]],
) -> None:
    port, received = sentry_server
    dsn = f"http://publickey@127.0.0.1:{port}/1"
    subprocess.run(
        [sys.executable, "-c", _REPORT, dsn],
        cwd=REPO,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "simtrix.settings"},
        check=True,
        timeout=60,
    )
    sent = b"".join(received).decode()
    assert "LookupError" in sent
    assert "look_up" in sent
    assert FILTERED in sent
    _no_number_left(sent)
