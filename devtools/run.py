"""`make run`: the demo tenant on the sandbox portal, with web, worker and scheduler.

Idempotent: a second run reuses the database, the demo tenant and its credentials; only the
sandbox portal starts afresh from its seed (the demo tenant is re-pointed at it every run).
Ctrl-C stops every process it started, then the embedded services.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from bitrix24_sandbox.control import SandboxControl
from devtools.services import DATA, REPO, database_create_if_missing, services_env

WEB_PORT = int(os.environ.get("SIMTRIX_WEB_PORT", "8000"))
SANDBOX_PORT = int(os.environ.get("SIMTRIX_SANDBOX_PORT", "8443"))
# What the demo portal's outbound webhook sends the demo tenant.
DEMO_EVENTS = ["ONEXTERNALCALLSTART", "ONCRMCONTACTUPDATE", "ONCRMCOMPANYUPDATE", "ONCRMLEADUPDATE"]


def _log(message: str) -> None:
    print(f"[run] {message}", flush=True)


def _manage(env: dict[str, str], *args: str, capture: bool = False) -> str:
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=REPO,
        env=env,
        check=True,
        text=True,
        stdout=subprocess.PIPE if capture else None,
    )
    return result.stdout or ""


def _start_sandbox(env: dict[str, str]) -> tuple[subprocess.Popen[str], dict[str, str]]:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bitrix24_sandbox",
            "--host",
            "127.0.0.1",
            "--port",
            str(SANDBOX_PORT),
            # The portal keeps its CRM (leads, calls, activities) from one run to the next, as
            # the demo tenant keeps its calls: old work does not fail with "Not found".
            "--state-file",
            str(DATA / "sandbox.json"),
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line:
        raise SystemExit(f"the Bitrix24 sandbox did not start (port {SANDBOX_PORT} busy?)")
    return process, json.loads(line)


def _ca_bundle(sandbox_ca: str) -> Path:
    """The usual public CAs plus the sandbox's own, so real portals keep working too."""
    import certifi

    DATA.mkdir(exist_ok=True)  # absent on a fresh clone when DATABASE_URL/REDIS_URL are given
    bundle = DATA / "ca-bundle.pem"
    bundle.write_text(Path(certifi.where()).read_text() + "\n" + Path(sandbox_ca).read_text())
    return bundle


def _wait_for_web(timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            # The operators' admin answers on the public host, localhost.
            request = urllib.request.Request(
                f"http://127.0.0.1:{WEB_PORT}/admin/login/", headers={"Host": "localhost"}
            )
            urllib.request.urlopen(request, timeout=1)
            return
        except OSError:
            time.sleep(0.3)
    raise SystemExit("the web server did not come up")


def _click_once(control: SandboxControl, banner: str) -> None:
    """A user clicks a number in the portal once the phones are polling: the demo's dial.
    Then the start-up's lines once more, the simulated calls' logs having scrolled them away."""
    time.sleep(20)
    try:
        result = control.click_to_call(5, "+48600111222")
    except Exception as exc:  # the demo goes on without it
        _log(f"the demo's click-to-call did not go through: {exc}")
        return
    codes = [delivery.get("status_code") for delivery in result.get("deliveries", [])]
    _log(f"Marta clicked +48600111222 in Bitrix24 (call {result['call_id']}): SIMtrix said {codes}")
    time.sleep(10)
    _log(banner)


def _banner(demo: dict[str, str], portal_url: str) -> str:
    """Where everything is; kept in .devdata/demo.json too (the log scrolls it away)."""
    banner = (
        "\n\n  SIMtrix is running. Ctrl-C stops everything.\n"
        f"  Operators' admin:  http://localhost:{WEB_PORT}/admin/\n"
        f"  Demo tenant admin: http://demo.localhost:{WEB_PORT}/admin/\n"
        f"  Bridge API docs:   http://demo.localhost:{WEB_PORT}/api/docs/\n"
        f"  Log in as {demo['username']} / {demo['password']} on both.\n"
        "  Click-to-call: Marta clicks Anna Kowalska's number in 20 s; click again with\n"
        f"    curl -sk -X POST {portal_url}/_sandbox/click_to_call \\\n"
        '      -d \'{"user_id": 5, "phone_number": "+48600111222"}\'\n'
        f"  These lines are in {DATA / 'demo.json'} too; the demo's commands:\n"
        '    make manage ARGS="export_config --schema demo"\n'
    )
    state_file = DATA / "demo.json"
    state = json.loads(state_file.read_text()) if state_file.exists() else {}
    state_file.write_text(json.dumps({**state, "banner": banner.strip()}))
    return banner


def _stop_with_parent(parent: int) -> None:
    """make stopped by a signal sent to it alone (not to its process group, as Ctrl-C does)
    leaves this process orphaned: it stops everything then, as for Ctrl-C."""
    while os.getppid() == parent:
        time.sleep(0.5)
    os.kill(os.getpid(), signal.SIGTERM)


def main() -> int:
    children: list[subprocess.Popen[str]] = []

    def stop(*_: object) -> None:
        raise KeyboardInterrupt

    # Explicit for SIGINT too: a shell starts background jobs with SIGINT ignored.
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    threading.Thread(target=_stop_with_parent, args=(os.getppid(),), daemon=True).start()
    with services_env() as env:
        env.setdefault("DJANGO_DEBUG", "1")
        env.setdefault("DJANGO_SETTINGS_MODULE", "simtrix.settings")
        # The demo's portal is the sandbox on 127.0.0.1: a private address (crm/outbound.py).
        env.setdefault("SIMTRIX_ALLOW_PRIVATE_ADDRESSES", "1")
        try:
            database_create_if_missing(env["DATABASE_URL"])
            _log("migrating the shared schema and the tenants")
            _manage(env, "migrate_schemas", "--shared", "-v", "0")
            _manage(env, "migrate_schemas", "--tenant", "-v", "0")

            sandbox, portal = _start_sandbox(env)
            children.append(sandbox)
            _log(f"Bitrix24 sandbox portal at {portal['url']}")
            bundle = str(_ca_bundle(portal["ca_cert_path"]))
            env["REQUESTS_CA_BUNDLE"] = env["SSL_CERT_FILE"] = bundle

            # Click-to-call: the portal's outbound webhook posts ONEXTERNALCALLSTART (and CRM
            # edits) to the demo tenant; its token verifies them (README, "Click-to-call").
            control = SandboxControl(portal["url"], verify=portal["ca_cert_path"])
            events_url = f"http://demo.localhost:{WEB_PORT}/bitrix24/events/"
            # One webhook: an earlier run's (kept in the portal's state) would post every
            # event a second time, with a token the tenant no longer has.
            for old in control.outbound_webhooks():
                hook_id = old.get("ID") or old.get("id")
                if str(old.get("HANDLER") or old.get("handler")) == events_url and hook_id:
                    control.delete_outbound_webhook(int(hook_id))
            hook = control.add_outbound_webhook(events_url, DEMO_EVENTS)
            # The secrets travel in the environment, never in `ps`.
            demo_env = {
                **env,
                "SIMTRIX_BITRIX24_WEBHOOK": portal["webhook_url"],
                "SIMTRIX_BITRIX24_EVENTS_TOKEN": hook["application_token"],
            }
            demo = json.loads(_manage(demo_env, "demo_setup", capture=True))

            processes = {
                "web": [sys.executable, "manage.py", "runserver", f"0.0.0.0:{WEB_PORT}",
                        "--noreload"],
                "worker": [sys.executable, "-m", "celery", "-A", "simtrix", "worker", "-l", "INFO",
                           "--concurrency", "2"],
                "beat": [sys.executable, "-m", "celery", "-A", "simtrix", "beat", "-l", "INFO"],
            }  # fmt: skip
            for name, command in processes.items():
                _log(f"starting {name}")
                children.append(subprocess.Popen(command, cwd=REPO, env=env, text=True))
            _wait_for_web()
            # Both demo phones keep polling for commands, as the bridge app does all day.
            simulate = [
                sys.executable, "manage.py", "simulate_calls", "--schema", "demo",
                "--base-url", f"http://demo.localhost:{WEB_PORT}", "--calls", "12", "--poll",
                *[arg for token in demo["device_tokens"] for arg in ("--token", token)],
            ]  # fmt: skip
            children.append(subprocess.Popen(simulate, cwd=REPO, env=env, text=True))
            banner = _banner(demo, portal["url"])
            _log(banner)
            threading.Thread(target=_click_once, args=(control, banner), daemon=True).start()
            while all(child.poll() is None for child in children[:-1]):
                time.sleep(0.5)
            _log("a process stopped; shutting down")
            return 1
        except KeyboardInterrupt:
            _log("stopping")
            return 0
        finally:
            for child in reversed(children):
                if child.poll() is None:
                    child.terminate()
            for child in children:
                try:
                    child.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    child.kill()


if __name__ == "__main__":
    sys.exit(main())
