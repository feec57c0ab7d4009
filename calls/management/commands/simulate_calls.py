"""Plays one or more bridge apps over HTTP against a tenant: calls with a realistic mix of outcomes.

For demos (`make run` starts it against the demo tenant) and for support staff checking that a
tenant's setup works end to end: every request goes through the public bridge API with a real
device token, exactly as a phone would send it.

    python manage.py simulate_calls --base-url http://demo.localhost:8000 --token stx_... \\
        --calls 12 [--token stx_... (another device)] [--interval 2] [--seed 7] \\
        [--poll [--poll-seconds 600]]

With `--poll` each phone also keeps long-polling the commands channel, as the bridge app does
all day: a `dial` (a number clicked in Bitrix24) is acknowledged and placed as an outgoing call
with the command's `call_id`; a `send_sms` is acknowledged and reported sent, then delivered; a
command the simulator cannot carry out is acknowledged `failed`.
It polls until `--poll-seconds` run out (0: until stopped).
"""

from __future__ import annotations

import io
import json
import math
import random
import subprocess
import tempfile
import threading
import time
import uuid
import wave
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit
from zoneinfo import ZoneInfo

import imageio_ffmpeg
import requests
from django.core.management.base import CommandParser

from tenants.management.jsoncommand import JsonCommand

# Numbers of the Bitrix24 sandbox portal's seed (bitrix24_sandbox/seed.py), as a phone shows them.
KNOWN_NUMBERS = [
    "+48 600 111 222",  # contact Anna Kowalska (deal in "Contracts")
    "600 111 333",  # contact Piotr Nowicki
    "+48600111444",  # contact Katarzyna Wiśniewska
    "+48 600 111 555",  # contact Michał Dąbrowski
    "+48 22 123 45 67",  # company Kancelaria Lex
    "+48601222333",  # lead
]
INCOMING_OUTCOMES = [("answered", 60), ("missed", 25), ("rejected", 15)]
OUTGOING_OUTCOMES = [
    ("answered", 55),
    ("no_answer", 15),
    ("busy", 12),
    ("cancelled", 10),
    ("failed", 8),
]
NOTES = [
    "Asked for an offer by Friday.",
    "Call back after 3 pm, prefers e-mail.",
    "Wants to reschedule the meeting.",
    "Complaint about the last invoice - forwarded to accounting.",
]


class SimulationFailed(Exception):
    pass


@dataclass
class Tally:
    calls: int = 0
    events: int = 0
    recordings: int = 0
    notes: int = 0
    dials: int = 0
    sms: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    found: int = 0
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, **counts: int) -> None:
        with self.lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)


class BridgeClient:
    """One phone's bridge app: its token, its HTTP session."""

    def __init__(self, base_url: str, token: str) -> None:
        parts = urlsplit(base_url.rstrip("/"))
        self.headers = {"Authorization": f"Bearer {token}"}
        host = parts.hostname or ""
        if host.endswith(".localhost") or host == "localhost":
            # RFC 6761: *.localhost is this machine, but not every resolver knows it.
            netloc = f"127.0.0.1:{parts.port}" if parts.port else "127.0.0.1"
            self.headers["Host"] = parts.netloc
            parts = parts._replace(netloc=netloc)
        self.root = urlunsplit(parts) + "/api/bridge/v1/"
        self.session = requests.Session()

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        headers = {**self.headers, **kwargs.pop("headers", {})}
        for attempt in range(5):
            response = self.session.request(
                method, self.root + path, headers=headers, timeout=30, **kwargs
            )
            if response.status_code != 429:
                break
            time.sleep(float(response.headers.get("Retry-After", "1")) * (attempt + 1) / 5)
        if response.status_code >= 400:
            raise SimulationFailed(
                f"{method} {path}: HTTP {response.status_code} {response.text[:300]}"
            )
        return response


def _pick(rng: random.Random, weighted: list[tuple[str, int]]) -> str:
    return rng.choices([v for v, _ in weighted], weights=[w for _, w in weighted])[0]


def _tone_wav(seconds: float, frequency: int) -> bytes:
    """A short tone as WAV, made in pure Python (no ffmpeg needed for the simplest case)."""

    rate = 8000
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        frames = bytearray()
        for i in range(int(rate * seconds)):
            sample = int(8000 * math.sin(2 * math.pi * frequency * i / rate))
            frames += sample.to_bytes(2, "little", signed=True)
        out.writeframes(bytes(frames))
    return buffer.getvalue()


def _phone_recording(rng: random.Random) -> tuple[bytes, str]:
    """A recording the way phones make them: mostly AAC in m4a, sometimes AMR or WAV."""
    wav = _tone_wav(seconds=rng.uniform(1.0, 2.5), frequency=rng.choice([330, 440, 550]))
    kind = rng.choices(["m4a", "amr", "wav"], weights=[60, 25, 15])[0]
    if kind == "wav":
        return wav, "audio/wav"
    try:
        options = (
            ["-codec:a", "aac"]
            if kind == "m4a"
            else ["-ar", "8000", "-codec:a", "libopencore_amrnb", "-b:a", "12.2k"]
        )
        with tempfile.TemporaryDirectory() as workdir:
            source, target = Path(workdir) / "in.wav", Path(workdir) / f"out.{kind}"
            source.write_bytes(wav)
            subprocess.run(
                [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y",
                 "-i", str(source), *options, str(target)],
                check=True, capture_output=True, timeout=60,
            )  # fmt: skip
            return target.read_bytes(), "audio/mp4" if kind == "m4a" else "audio/amr"
    except (OSError, subprocess.SubprocessError):
        return wav, "audio/wav"


def _event(kind: str, call_id: str, at: datetime, **fields: Any) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "type": kind,
        "call_id": call_id,
        "occurred_at": at.isoformat(timespec="seconds"),
        **fields,
    }


# The calls a run opens with, whatever the seed, so every demo shows what SIMtrix does with
# each kind: (direction, a known caller, outcome). Random calls follow.
SHOWCASE = [
    ("incoming", True, "missed"),
    ("incoming", False, "missed"),  # an unknown number: a new lead
    ("incoming", True, "rejected"),
    ("incoming", True, "answered"),  # routed by the caller's CRM data
]


def simulate_call(
    client: BridgeClient,
    rng: random.Random,
    tally: Tally,
    tz: Any,
    kind: tuple[str, bool, str] | None = None,
) -> None:
    """One call; `kind` (direction, known, outcome) fixes what is otherwise drawn."""
    if kind is not None:
        direction, known, outcome = kind
    else:
        direction = "incoming" if rng.random() < 0.65 else "outgoing"
        known = rng.random() < 0.6
        outcome = _pick(rng, INCOMING_OUTCOMES if direction == "incoming" else OUTGOING_OUTCOMES)
    number = (
        rng.choice(KNOWN_NUMBERS)
        if known
        else f"+48 7{rng.randint(10, 99)} {rng.randint(100, 999)} {rng.randint(100, 999)}"
    )
    talk = rng.randint(15, 420) if outcome == "answered" else 0
    ring = rng.randint(3, 25)
    # The call happened just now: it ends at the moment it is reported.
    end = datetime.now(UTC).astimezone(tz)
    start = end - timedelta(seconds=ring + talk)
    call_id = f"sim-{uuid.uuid4().hex[:12]}"

    started = _event("call.started", call_id, start, direction=direction, phone_number=number)
    answered = _event("call.answered", call_id, start + timedelta(seconds=ring))
    ended = _event("call.ended", call_id, end, outcome=outcome, duration_seconds=talk)
    response = client.request("POST", "events/", json=started).json()
    tally.add(events=1, found=int(response.get("crm", {}).get("status") == "found"))
    later = [answered, ended] if outcome == "answered" else [ended]
    if rng.random() < 0.15:
        # The phone was offline: the rest comes as a replay, with the start sent once more.
        client.request("POST", "events/", json={"events": [started, *later]})
    else:
        for body in later:
            client.request("POST", "events/", json=body)
    tally.add(events=len(later))
    if outcome == "answered" and rng.random() < 0.7:
        audio, content_type = _phone_recording(rng)
        client.request(
            "PUT", f"calls/{call_id}/recording/", data=audio,
            headers={"Content-Type": content_type},
        )  # fmt: skip
        tally.add(recordings=1)
    if outcome == "answered" and rng.random() < 0.4:
        client.request("POST", f"calls/{call_id}/notes/", json={"text": rng.choice(NOTES)})
        tally.add(notes=1)
    with tally.lock:
        tally.calls += 1
        tally.outcomes[outcome] = tally.outcomes.get(outcome, 0) + 1


def simulate_dial(
    client: BridgeClient, command: dict[str, Any], rng: random.Random, tally: Tally, tz: Any
) -> None:
    """The agent's phone dials a number clicked in Bitrix24, with the command's call_id."""
    client.request("POST", f"commands/{command['command_id']}/ack/", json={"status": "done"})
    call_id, number = command["call_id"], command["phone_number"]
    outcome = _pick(rng, OUTGOING_OUTCOMES)
    talk = rng.randint(10, 120) if outcome == "answered" else 0
    ring = rng.randint(2, 8)
    start = datetime.now(UTC).astimezone(tz)
    started = _event("call.started", call_id, start, direction="outgoing", phone_number=number)
    client.request("POST", "events/", json=started)
    later = []
    if outcome == "answered":
        later.append(_event("call.answered", call_id, start + timedelta(seconds=ring)))
    end = start + timedelta(seconds=ring + talk)
    later.append(_event("call.ended", call_id, end, outcome=outcome, duration_seconds=talk))
    for body in later:
        client.request("POST", "events/", json=body)
    tally.add(events=1 + len(later), dials=1)
    with tally.lock:
        tally.calls += 1
        tally.outcomes[outcome] = tally.outcomes.get(outcome, 0) + 1


def simulate_sms(client: BridgeClient, command: dict[str, Any], tally: Tally, tz: Any) -> None:
    """The agent's phone texts the number: hands it to its radio, then reports it sent and,
    a moment later, delivered."""
    client.request("POST", f"commands/{command['command_id']}/ack/", json={"status": "done"})
    now = datetime.now(UTC).astimezone(tz)
    for type_, at in (("sms.sent", now), ("sms.delivered", now + timedelta(seconds=2))):
        body = {
            "event_id": str(uuid.uuid4()),
            "type": type_,
            "occurred_at": at.isoformat(),
            "sms_id": command["sms_id"],
        }
        client.request("POST", "sms/", json=body)
    tally.add(sms=1)


def poll_commands(
    client: BridgeClient, rng: random.Random, tally: Tally, tz: Any, *, until: float | None
) -> None:
    """Long-polls the commands channel like the bridge app, until `until` (monotonic)."""
    while until is None or time.monotonic() < until:
        wait = 25 if until is None else max(0, min(25, int(until - time.monotonic())))
        try:
            commands = client.request("GET", f"commands/?wait={wait}").json()["commands"]
            for command in commands:
                if command["type"] == "dial":
                    simulate_dial(client, command, rng, tally, tz)
                elif command["type"] == "send_sms":
                    simulate_sms(client, command, tally, tz)
                else:
                    client.request(
                        "POST",
                        f"commands/{command['command_id']}/ack/",
                        json={"status": "failed", "error": "the simulator cannot do this"},
                    )
        except (SimulationFailed, requests.RequestException) as exc:
            with tally.lock:
                tally.errors.append(str(exc))
            time.sleep(2)
        if wait == 0:
            return


class Command(JsonCommand):
    help = "Plays bridge apps over HTTP against a tenant: a mix of realistic calls."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--base-url", required=True, help="e.g. http://demo.localhost:8000")
        parser.add_argument(
            "--token", action="append", required=True, help="A device token (repeat for more)."
        )
        parser.add_argument("--calls", type=int, default=10, help="Calls in total.")
        parser.add_argument(
            "--interval", type=float, default=2.0, help="Seconds between calls of one device."
        )
        parser.add_argument("--seed", type=int, default=None)
        parser.add_argument("--timezone", default="Europe/Warsaw", help="The phones' time zone.")
        parser.add_argument("--schema", default="", help="Only echoed in the summary.")
        parser.add_argument(
            "--poll",
            action="store_true",
            help="Keep long-polling the commands channel and dial what Bitrix24 users click.",
        )
        parser.add_argument(
            "--poll-seconds",
            type=float,
            default=0,
            help="With --poll: stop polling after this long (0: until stopped).",
        )

    def run(self, **options: Any) -> dict[str, Any]:
        if options["calls"] < (0 if options["poll"] else 1):
            raise self.fail("--calls must be at least 1 (0 with --poll).")
        tz = ZoneInfo(options["timezone"])
        seed = options["seed"] if options["seed"] is not None else random.randrange(10**6)
        clients = [BridgeClient(options["base_url"], token) for token in options["token"]]
        tally = Tally()
        try:
            for client in clients:
                client.request("POST", "heartbeat/", json={"app_version": "simulator-1.0"})
        except (SimulationFailed, requests.RequestException) as exc:
            raise self.fail(f"The bridge API refused the simulator: {exc}") from exc

        shares = [options["calls"] // len(clients)] * len(clients)
        for i in range(options["calls"] % len(clients)):
            shares[i] += 1

        until = time.monotonic() + options["poll_seconds"] if options["poll_seconds"] else None

        # The showcase goes round the phones: the first call of each, then the second...
        showcase: list[list[tuple[str, bool, str]]] = [[] for _ in clients]
        for n, kind in enumerate(SHOWCASE[: options["calls"]]):
            showcase[n % len(clients)].append(kind)

        def play(index: int, client: BridgeClient, count: int) -> None:
            rng = random.Random(seed + index)
            kinds = showcase[index]
            for n in range(count):
                try:
                    simulate_call(client, rng, tally, tz, kinds[n] if n < len(kinds) else None)
                except (SimulationFailed, requests.RequestException) as exc:
                    with tally.lock:
                        tally.errors.append(str(exc))
                if n + 1 < count:
                    time.sleep(options["interval"])

        def poll(index: int, client: BridgeClient) -> None:
            poll_commands(client, random.Random(seed + 1000 + index), tally, tz, until=until)

        threads = [
            threading.Thread(target=play, args=(i, client, share), daemon=True)
            for i, (client, share) in enumerate(zip(clients, shares, strict=True))
        ]
        if options["poll"]:
            threads += [
                threading.Thread(target=poll, args=(i, client), daemon=True)
                for i, client in enumerate(clients)
            ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if tally.errors and not tally.calls and not options["poll"]:
            raise self.fail(f"No call got through: {tally.errors[0]}")
        summary = {
            "schema": options["schema"] or None,
            "devices": len(clients),
            "calls": tally.calls,
            "events": tally.events,
            "recordings": tally.recordings,
            "notes": tally.notes,
            "dials": tally.dials,
            "sms_sent": tally.sms,
            "known_callers_found": tally.found,
            "outcomes": dict(sorted(tally.outcomes.items())),
            "errors": tally.errors,
            "seed": seed,
        }
        json.dumps(summary)
        return summary
