"""SandboxPortal: lifecycle of one fake Bitrix24 portal served over real HTTPS."""

from __future__ import annotations

import copy
import json
import os
import shutil
import ssl
import tempfile
import threading
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import trustme

from . import events as ev
from . import methods_messageservice as sms
from .control import SandboxControl
from .core import ALL_SCOPES, RestError
from .crm_store import add_entity, stage_entity_id, update_entity
from .methods_telephony import start_call
from .server import SandboxHTTPServer
from .state import State

_FAULT_KINDS = ("down", "slow", "fail_next")


class SandboxPortal:
    """A local Bitrix24 portal: ``SandboxPortal(...).start()`` then talk to ``portal.url``.

    ``drain_per_second``/``bucket_size`` configure the portal-wide leaky bucket (None = off).
    ``state_file`` makes the data, credentials and CA survive restarts (used by the demo).
    ``hostnames`` are more names its certificate covers (besides 127.0.0.1 and localhost), for
    a client that resolves them to this server itself (a portal under a public-looking name).
    ``event_timeout`` is the per-delivery timeout of the event queue (``delivery.py``).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        seed: bool = True,
        drain_per_second: float | None = 2.0,
        bucket_size: float | None = 50,
        *,
        state_file: str | None = None,
        cert_dir: str | None = None,
        token_ttl: int = 3600,
        hostnames: Sequence[str] = (),
        event_timeout: float = 10.0,
    ) -> None:
        self.host = host
        self.hostnames = list(hostnames)
        self.port = port
        self.state_file = state_file
        self.state = State(
            seed_data=seed,
            drain_per_second=drain_per_second,
            bucket_size=bucket_size,
            token_ttl=token_ttl,
        )
        self.state.delivery_queue.timeout = event_timeout
        self._cert_dir = cert_dir
        self._server: SandboxHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._saver: threading.Thread | None = None
        self._stopping = threading.Event()
        self._control: SandboxControl | None = None
        self.ca_cert_path = ""
        self._ca: trustme.CA | None = None
        self._saved_snapshot = ""
        self._temp_dir: str | None = None

    # Lifecycle -------------------------------------------------------------------------------

    def _load_state_file(self) -> None:
        if not self.state_file or not os.path.exists(self.state_file):
            return
        with open(self.state_file, encoding="utf-8") as fh:
            data = json.load(fh)
        ca = data.pop("_ca", None)
        if ca:
            self._ca = trustme.CA.from_pem(ca["cert"].encode(), ca["key"].encode())
        self.state.load_json(data)

    def start(self) -> SandboxPortal:
        self._load_state_file()
        if self._ca is None:
            self._ca = trustme.CA(organization_name="SIMtrix Bitrix24 sandbox")
        identities = ["127.0.0.1", "localhost", "*.localhost", *self.hostnames]
        if self.host not in identities and self.host not in ("0.0.0.0", "::", ""):
            identities.append(self.host)
        leaf = self._ca.issue_cert(*identities)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        leaf.configure_cert(context)
        cert_dir = self._cert_dir
        if cert_dir is None:
            cert_dir = self._temp_dir = tempfile.mkdtemp(prefix="b24sandbox-")
        os.makedirs(cert_dir, exist_ok=True)
        self.ca_cert_path = os.path.join(cert_dir, "sandbox-ca.pem")
        self._ca.cert_pem.write_to_path(self.ca_cert_path)

        self._server = SandboxHTTPServer((self.host, self.port), self, context)
        self.port = self._server.server_address[1]
        self.state.base_url = self.url
        self.state.domain = self.domain
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"b24-sandbox-{self.port}",
            daemon=True,
        )
        self._thread.start()
        self.state.delivery_queue.start()
        if self.state_file:
            self._saver = threading.Thread(
                target=self._autosave, name="b24-sandbox-saver", daemon=True
            )
            self._saver.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.close_all_connections()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.state.delivery_queue.stop()
        if self._saver is not None:
            self._saver.join(timeout=5)
        self.save_state()
        self._server = None
        if self._temp_dir:
            shutil.rmtree(self._temp_dir, ignore_errors=True)
            self._temp_dir = None

    def __enter__(self) -> SandboxPortal:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _autosave(self) -> None:
        while not self._stopping.wait(1.0):
            self.save_state()

    def save_state(self) -> bool:
        if not self.state_file or self._ca is None:
            return False
        data = self.state.to_json()
        data["_ca"] = {
            "cert": self._ca.cert_pem.bytes().decode(),
            "key": self._ca.private_key_pem.bytes().decode(),
        }
        text = json.dumps(data, ensure_ascii=False, default=str)
        if text == self._saved_snapshot:
            return True
        tmp = f"{self.state_file}.tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, self.state_file)
        self._saved_snapshot = text
        return True

    # Addresses and credentials ---------------------------------------------------------------

    @property
    def domain(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "", "::") else self.host
        return f"{host}:{self.port}"

    @property
    def url(self) -> str:
        return f"https://{self.domain}"

    @property
    def oauth_token_url(self) -> str:
        return f"{self.url}/oauth/token/"

    @property
    def control(self) -> SandboxControl:
        if self._control is None:
            self._control = SandboxControl(self.url, verify=self.ca_cert_path)
        return self._control

    def webhook_url(self, user_id: int = 1) -> str:
        secret = self.state.admin_secret if user_id == 1 else self.state.webhook_for_user(user_id)
        return f"{self.url}/rest/{user_id}/{secret}/"

    def add_webhook(self, user_id: int, scopes: list[str] | None = None) -> str:
        secret = self.state.add_webhook(user_id, scopes if scopes is not None else list(ALL_SCOPES))
        return f"{self.url}/rest/{user_id}/{secret}/"

    def add_oauth_app(self, scopes: list[str] | None = None, user_id: int = 1) -> dict[str, Any]:
        return self.state.add_app(list(scopes if scopes is not None else ALL_SCOPES), user_id)

    # Control operations (also exposed over HTTP by control_api) ------------------------------

    def reset(self, seed: bool | None = None) -> None:
        self.state.reset(seed)

    def summary(self) -> dict[str, Any]:
        s = self.state
        with s.lock:
            top = [
                r for r in s.requests if not r.get("in_batch") and r.get("method") != "oauth.token"
            ]
            return {
                "url": self.url,
                "domain": self.domain,
                "member_id": s.member_id,
                "seed": s.seed_data,
                "counts": {
                    "users": len(s.users),
                    "contacts": len(s.entities["CONTACT"]),
                    "companies": len(s.entities["COMPANY"]),
                    "leads": len(s.entities["LEAD"]),
                    "deals": len(s.entities["DEAL"]),
                    "activities": len(s.activities),
                    "comments": len(s.comments),
                    "tasks": len(s.tasks),
                    "notifications": len(s.notifications),
                    "triggers": len(s.triggers),
                    "active_calls": len(s.active_calls),
                    "finished_calls": len(s.finished_calls),
                    "records": len(s.records),
                    "external_lines": len(s.external_lines),
                    "event_handlers": len(s.event_handlers),
                    "outbound_webhooks": len(s.outbound_webhooks),
                    "deliveries": len(s.deliveries),
                    "pending_deliveries": s.delivery_queue.pending(),
                    "sms_senders": len(s.sms_senders),
                    "sms_messages": len(s.sms_messages),
                },
                "request_count": len(top),
                "subcall_count": len(s.requests) - len(top),
                "rate_limit": s.rate.info(),
                "rate_limited_count": s.rate_limited_count,
                "latency": dict(s.latency),
                "connections_opened": s.connections_opened,
                "rest_connections": len(s.rest_connection_ids),
                "refresh_count": s.refresh_count,
                "faults": list(s.faults),
                "moved_to": s.moved_to,
                "operation_limits": dict(s.op_limits),
                "webhook_telephony_denied": s.webhook_telephony_denied,
                "webhooks": len(s.webhooks),
                "apps": len(s.apps),
            }

    def set_fault(
        self,
        kind: str,
        mode: str | None = None,
        delay_ms: int | None = None,
        count: int | None = None,
        method: str | None = None,
    ) -> dict[str, Any]:
        if kind not in _FAULT_KINDS:
            raise ValueError(f"fault kind must be one of {_FAULT_KINDS}")
        fault: dict[str, Any] = {"kind": kind, "method": method.lower() if method else None}
        if kind == "down":
            fault["mode"] = mode or "http503"
            if fault["mode"] not in ("http503", "reset"):
                raise ValueError("down mode must be http503 or reset")
        elif kind == "slow":
            fault["delay_ms"] = int(delay_ms or 0)
        else:
            fault["remaining"] = int(count if count is not None else 1)
        with self.state.lock:
            # One fault per (kind, method): setting it again replaces the previous one.
            self.state.faults = [
                f for f in self.state.faults if (f["kind"], f["method"]) != (kind, fault["method"])
            ]
            self.state.faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        with self.state.lock:
            self.state.faults = []

    def set_moved(self, url: str | None) -> None:
        """Renames the portal: /rest/ requests to any other host get a 302 to ``url``.

        ``url`` is the new base (``https://new-name.example:8443``); the same server keeps
        answering under the new name (give it one its certificate covers, e.g. ``localhost``).
        ``None`` undoes it; ``reset()`` too.
        """
        if url is not None:
            parts = urlsplit(url)
            if (
                parts.scheme not in ("http", "https")
                or not parts.netloc
                or parts.path not in ("", "/")
            ):
                raise ValueError("moved_to must be a base URL like https://host:port")
            url = f"{parts.scheme}://{parts.netloc}"
        with self.state.lock:
            self.state.moved_to = url

    def take_fault(self, method: str) -> dict[str, Any] | None:
        """Pick the fault for this request: `slow` delays, then `down` wins over `fail_next`."""
        delay = 0.0
        chosen: dict[str, Any] | None = None
        with self.state.lock:
            for fault in self.state.faults:
                if fault["method"] and fault["method"] != method:
                    continue
                if fault["kind"] == "slow":
                    delay = max(delay, fault["delay_ms"] / 1000.0)
                elif fault["kind"] == "down" and (chosen is None or chosen["kind"] != "down"):
                    chosen = fault
            if chosen is None:
                for fault in self.state.faults:
                    if fault["kind"] == "fail_next" and fault["remaining"] > 0:
                        if fault["method"] and fault["method"] != method:
                            continue
                        fault["remaining"] -= 1
                        chosen = dict(fault)
                        break
            self.state.faults = [
                f for f in self.state.faults if f["kind"] != "fail_next" or f["remaining"] > 0
            ]
        if delay:
            time.sleep(delay)
        return chosen

    def set_latency(self, connect_ms: int | None = None, request_ms: int | None = None) -> None:
        """Added delay per new connection and per REST request (0 or None: none)."""
        values = {"connect_ms": connect_ms, "request_ms": request_ms}
        for name, value in values.items():
            if value is not None and (not isinstance(value, int) or value < 0):
                raise ValueError(f"{name} must be a whole number of milliseconds >= 0")
        with self.state.lock:
            self.state.latency = {name: int(value or 0) for name, value in values.items()}

    def set_rate_limit(
        self, drain_per_second: float | None, bucket_size: float | None, reset_counter: bool = True
    ) -> None:
        with self.state.lock:
            self.state.rate.drain = drain_per_second
            self.state.rate.size = bucket_size
            if reset_counter:
                self.state.rate.level = 0.0
                self.state.rate.stamp = time.time()

    def set_operation_time_limit(self, method: str, seconds: float | None) -> None:
        with self.state.lock:
            if seconds is None:
                self.state.op_limits.pop(method.lower(), None)
            else:
                self.state.op_limits[method.lower()] = time.time() + float(seconds)

    def add_user(self, **fields: Any) -> dict[str, Any]:
        return self.state.add_user(fields)

    def _user(self, user_id: int) -> dict[str, Any]:
        user = self.state.users.get(int(user_id))
        if user is None:
            raise RestError("User not found", "NOT_FOUND", 404)
        return user

    def deactivate_user(self, user_id: int) -> dict[str, Any]:
        with self.state.lock:
            user = self._user(user_id)
            user.update(ACTIVE=False, IS_ONLINE="N")
            return user

    def activate_user(self, user_id: int) -> dict[str, Any]:
        with self.state.lock:
            user = self._user(user_id)
            user.update(ACTIVE=True, IS_ONLINE="Y")
            return user

    def set_timeman_status(self, user_id: int, status: str) -> dict[str, Any]:
        with self.state.lock:
            user = self._user(user_id)
            user["TIMEMAN_STATUS"] = status
            return user

    def add_category(self, name: str, sort: int = 500, id: int | None = None) -> dict[str, Any]:
        with self.state.lock:
            cid = int(id) if id is not None else self.state.next_id("category")
            self.state.counters["category"] = max(self.state.counters["category"], cid)
            cat = {
                "ID": cid,
                "NAME": name,
                "SORT": sort,
                "IS_LOCKED": "N",
                "CREATED_DATE": time.time(),
                "IS_DEFAULT": "N",
            }
            self.state.categories[cid] = cat
            for suffix, title, srt, sem in (
                ("NEW", "New", 10, None),
                ("WON", "Won", 60, "S"),
                ("LOSE", "Lost", 70, "F"),
            ):
                self.state.add_status(
                    f"DEAL_STAGE_{cid}", f"C{cid}:{suffix}", title, srt, semantics=sem
                )
            return cat

    def add_stage(
        self,
        status_id: str,
        name: str,
        *,
        category_id: int | None = None,
        entity_id: str | None = None,
        sort: int = 50,
        semantics: str | None = None,
        color: str = "",
    ) -> dict[str, Any]:
        eid = entity_id or stage_entity_id(int(category_id or 0))
        with self.state.lock:
            return self.state.add_status(
                eid, status_id, name, sort, semantics=semantics, color=color
            )

    def delete_stage(
        self, status_id: str, category_id: int | None = None, entity_id: str | None = None
    ) -> int:
        """Remove a stage/status (simulates an admin editing pipelines under a running app)."""

        eid = entity_id or stage_entity_id(int(category_id or 0))
        with self.state.lock:
            before = len(self.state.statuses)
            self.state.statuses = [
                s
                for s in self.state.statuses
                if not (s["ENTITY_ID"] == eid and s["STATUS_ID"] == status_id)
            ]
            return before - len(self.state.statuses)

    def delete_category(self, category_id: int) -> int:
        if category_id == 0:
            raise ValueError("the default pipeline cannot be deleted")
        with self.state.lock:
            if self.state.categories.pop(category_id, None) is None:
                return 0
            eid = stage_entity_id(category_id)
            self.state.statuses = [s for s in self.state.statuses if s["ENTITY_ID"] != eid]
            return 1

    # CRM data as a user edits it in Bitrix24: the ONCRM* events fire like for REST writes.

    def add_entity(self, etype: str, fields: dict[str, Any], user_id: int = 1) -> int:
        with self.state.lock:
            eid = add_entity(self.state, etype, fields, user_id)
            ev.fire_crm(self.state, etype, "ADD", eid)
            return eid

    def _entity(self, etype: str, entity_id: int) -> dict[str, Any]:
        rec = self.state.entities[etype].get(int(entity_id))
        if rec is None:
            raise RestError("Not found", "NOT_FOUND", 404)
        return rec

    def update_entity(
        self, etype: str, entity_id: int, fields: dict[str, Any], user_id: int = 1
    ) -> None:
        """Same semantics as crm.*.update: multifield items without ID are added, items with
        the ID of an existing value change it (or delete it with an empty VALUE)."""
        with self.state.lock:
            self._entity(etype, entity_id)
            update_entity(self.state, etype, int(entity_id), fields, user_id)
            ev.fire_crm(self.state, etype, "UPDATE", int(entity_id))

    def delete_entity(self, etype: str, entity_id: int) -> None:
        with self.state.lock:
            self._entity(etype, entity_id)
            del self.state.entities[etype][int(entity_id)]
            ev.fire_crm(self.state, etype, "DELETE", int(entity_id))

    def calls(self) -> dict[str, Any]:
        with self.state.lock:
            return json.loads(
                json.dumps(
                    {
                        "active": list(self.state.active_calls.values()),
                        "finished": list(self.state.finished_calls.values()),
                        "registrations": list(self.state.registrations),
                    },
                    default=str,
                )
            )

    def registrations(self) -> list[dict[str, Any]]:
        """Every externalCall registration (REST and the portal's click-to-call) since reset."""
        with self.state.lock:
            return [dict(r) for r in self.state.registrations]

    def external_lines(self) -> list[dict[str, Any]]:
        with self.state.lock:
            return [dict(line) for _, line in sorted(self.state.external_lines.items())]

    # Events ----------------------------------------------------------------------------------

    def event_handlers(self) -> list[dict[str, Any]]:
        """The whole handler table: app bindings and the rows of outbound webhooks."""
        with self.state.lock:
            return [dict(r) for _, r in sorted(self.state.event_handlers.items())]

    def add_outbound_webhook(self, handler: str, events: list[str]) -> dict[str, Any]:
        """What an admin creates in Bitrix24's UI: handler URL + events; shows the token."""
        with self.state.lock:
            hook = ev.add_outbound_webhook(self.state, handler, events)
            return copy.deepcopy(hook)

    def outbound_webhooks(self) -> list[dict[str, Any]]:
        with self.state.lock:
            return [copy.deepcopy(h) for _, h in sorted(self.state.outbound_webhooks.items())]

    def delete_outbound_webhook(self, hook_id: int) -> bool:
        with self.state.lock:
            return ev.delete_outbound_webhook(self.state, int(hook_id))

    def deliveries(
        self, event: str | None = None, ids: Sequence[int] | None = None
    ) -> list[dict[str, Any]]:
        with self.state.lock:
            rows = self.state.deliveries
            if event:
                rows = [r for r in rows if r["event"] == event.upper()]
            if ids is not None:
                wanted = set(ids)
                rows = [r for r in rows if r["id"] in wanted]
            return copy.deepcopy(rows)

    def clear_deliveries(self) -> None:
        with self.state.lock:
            self.state.deliveries = []

    def wait_deliveries(
        self, timeout: float = 10.0, ids: Sequence[int] | None = None
    ) -> list[dict[str, Any]]:
        """Block until the event queue is empty (or ``ids`` are done); the deliveries then.
        Raises TimeoutError if the queue did not drain in time."""
        drained, deliveries = self._wait(ids, timeout)
        if not drained:
            raise TimeoutError(f"{self.state.delivery_queue.pending()} deliveries still pending")
        return deliveries

    def _wait(self, ids: Sequence[int] | None, timeout: float) -> tuple[bool, list[dict[str, Any]]]:
        drained = self.state.delivery_queue.wait(ids, timeout)
        return drained, self.deliveries(ids=ids)

    def click_to_call(
        self,
        user_id: int,
        phone_number: str,
        line_number: str | None = None,
        entity_type: str | None = None,
        entity_id: int | None = None,
        *,
        crm_create: bool | None = None,
        client_id: str | None = None,
        timeout: float = 30.0,
    ) -> dict[str, Any]:
        """A user clicked ``phone_number`` in the CRM: the portal registers the outgoing call
        itself, then sends ONEXTERNALCALLSTART with its CALL_ID (REFERENCE 4.7, pitfall 12).
        Waits for those deliveries; returns ``{"call_id", "call", "drained", "deliveries"}``
        (``drained`` false: a handler was still being called when ``timeout`` ran out)."""
        with self.state.lock:
            result, ids = start_call(
                self.state,
                user_id=int(user_id),
                phone_number=str(phone_number),
                line_number=line_number,
                entity_type=entity_type,
                entity_id=None if entity_id is None else int(entity_id),
                crm_create=crm_create,
                client_id=client_id,
            )
        drained, deliveries = self._wait(ids, timeout)
        return {
            "call_id": result["CALL_ID"],
            "call": result,
            "drained": drained,
            "deliveries": deliveries,
        }

    # SMS providers (messageservice) ---------------------------------------------------------

    def send_sms(
        self,
        code: str,
        phone_number: str,
        text: str,
        *,
        user_id: int = 1,
        module_id: str = "bizproc",
        entity_type: str | None = None,
        entity_id: int | None = None,
        client_id: str | None = None,
        timeout: float = 30.0,
    ) -> dict[str, Any]:
        """A user sends an SMS through the provider ``code`` (from a CRM card: ``module_id=
        "crm"``; from a workflow or automation rule: ``"bizproc"``). The provider is
        ``client_id``'s, else the first installed app's with that code. The portal creates the
        message (status ``queued``) and POSTs it to the provider's HANDLER through the event
        queue; waits for that delivery. Returns ``{"message_id", "message", "drained",
        "deliveries"}``."""
        with self.state.lock:
            message, ids = sms.send_message(
                self.state,
                code=str(code),
                phone_number=str(phone_number),
                text=str(text),
                user_id=int(user_id),
                module_id=str(module_id),
                entity_type=entity_type,
                entity_id=None if entity_id is None else int(entity_id),
                client_id=client_id,
            )
            message_id = message["MESSAGE_ID"]
        drained, deliveries = self._wait(ids, timeout)
        with self.state.lock:
            message = copy.deepcopy(self.state.sms_messages.get(message_id, message))
        return {
            "message_id": message_id,
            "message": message,
            "drained": drained,
            "deliveries": deliveries,
        }

    def sms_messages(self) -> list[dict[str, Any]]:
        """Every message sent through a provider since reset, oldest first; ``STATUS_HISTORY``
        lists its statuses in order (``STATUS_CHANGES``: the same with time and user)."""
        with self.state.lock:
            return copy.deepcopy(list(self.state.sms_messages.values()))

    def sms_senders(self) -> list[dict[str, Any]]:
        """Every registered provider of every app, in registration order."""
        with self.state.lock:
            rows = sorted(self.state.sms_senders.values(), key=lambda r: r["ID"])
            return copy.deepcopy(rows)

    def uninstall_app(
        self, client_id: str, clean: bool = False, timeout: float = 10.0
    ) -> dict[str, Any]:
        """The admin uninstalls the app: ONAPPUNINSTALL to its handlers (no tokens in it, like
        Bitrix24 sends it), then its bindings, SMS providers, lines and tokens are gone."""
        s = self.state
        with s.lock:
            app = s.apps.get(client_id)
            if app is None or not app.get("INSTALLED", True):
                raise RestError("Application not found", "NOT_FOUND", 404)
            ids = ev.fire(
                s,
                "ONAPPUNINSTALL",
                {"LANGUAGE_ID": "en", "CLEAN": 1 if clean else 0},
                client_id=client_id,
                include_outbound=False,
                send_auth=False,
            )
            removed = ev.remove_app_handlers(s, client_id)
            removed_senders = sms.remove_app_senders(s, client_id)
            revoked = 0
            for tokens in (s.access_tokens, s.refresh_tokens):
                for token in [t for t, info in tokens.items() if info["CLIENT_ID"] == client_id]:
                    del tokens[token]
                    revoked += 1
            for line_id in [
                i for i, line in s.external_lines.items() if line["APP_KEY"] == client_id
            ]:
                del s.external_lines[line_id]
            app["INSTALLED"] = False
        drained, deliveries = self._wait(ids, timeout)
        return {
            "removed_handlers": removed,
            "removed_senders": removed_senders,
            "revoked_tokens": revoked,
            "drained": drained,
            "deliveries": deliveries,
        }
