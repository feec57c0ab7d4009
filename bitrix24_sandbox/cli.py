"""Run a sandbox portal in the foreground (``python -m bitrix24_sandbox``, the Django command)."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from typing import TextIO

from .portal import SandboxPortal


def serve(
    *,
    host: str = "127.0.0.1",
    port: int = 8443,
    seed: bool = True,
    state_file: str | None = None,
    drain_per_second: float | None = 2.0,
    bucket_size: float | None = 50,
    out: TextIO | None = None,
) -> int:
    """Start the portal, print one JSON line with its coordinates, serve until SIGINT/SIGTERM."""
    stream = out or sys.stdout
    portal = SandboxPortal(
        host=host,
        port=port,
        seed=seed,
        drain_per_second=drain_per_second,
        bucket_size=bucket_size,
        state_file=state_file,
    ).start()
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        info = {
            "url": portal.url,
            "webhook_url": portal.webhook_url(1),
            "ca_cert_path": portal.ca_cert_path,
        }
        stream.write(json.dumps(info) + "\n")
        stream.flush()
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        portal.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8443)
    parser.add_argument("--no-seed", action="store_true", help="start without demo CRM data")
    parser.add_argument("--state-file", default=None, help="persist data/credentials/CA here")
    parser.add_argument("--drain-per-second", type=float, default=2.0)
    parser.add_argument("--bucket-size", type=float, default=50)
    parser.add_argument("--no-rate-limit", action="store_true")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bitrix24_sandbox", description=__doc__)
    add_arguments(parser)
    args = parser.parse_args(argv)
    return serve(
        host=args.host,
        port=args.port,
        seed=not args.no_seed,
        state_file=args.state_file,
        drain_per_second=None if args.no_rate_limit else args.drain_per_second,
        bucket_size=None if args.no_rate_limit else args.bucket_size,
    )
