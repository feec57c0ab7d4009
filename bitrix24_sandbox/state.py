"""In-memory state of one sandbox portal: CRM data, auth registry, limiter, faults, request log.

One re-entrant lock guards everything; the HTTP layer holds it while a method runs, so method
code can read and write freely. Everything persisted is plain JSON data (``--state-file``).
"""

from __future__ import annotations

import copy
import hashlib
import json
import secrets
import threading
from dataclasses import dataclass
from typing import Any

from . import crm_store, seed
from .core import ALL_SCOPES, OperatingLog, now
from .delivery import DeliveryQueue
from .seed import DAY

# Collections whose dict keys are ints in memory but strings in JSON.
_INT_KEYED = (
    "users",
    "departments",
    "categories",
    "activities",
    "comments",
    "tasks",
    "task_comments",
    "notifications",
    "records",
    "external_lines",
)
# Event handlers (event.bind rows, outbound webhooks) are configuration like the credentials:
# they survive reset() and are persisted with them.
_INT_KEYED_AUTH = ("event_handlers", "outbound_webhooks")
_DATA_ATTRS = (
    *_INT_KEYED,
    "statuses",
    "entities",
    "uf_fields",
    "triggers",
    "active_calls",
    "finished_calls",
    "upload_tokens",
    "counters",
    "sms_messages",
)
_AUTH_ATTRS = (
    "webhooks",
    "apps",
    "access_tokens",
    "refresh_tokens",
    *_INT_KEYED_AUTH,
    "sms_senders",
)


@dataclass
class LeakyBucket:
    """Portal-wide request counter: +1 per request, drains ``drain`` per second (REFERENCE 2)."""

    drain: float | None
    size: float | None
    level: float = 0.0
    stamp: float = 0.0

    def hit(self, at: float) -> bool:
        if self.drain is None or self.size is None:
            return True
        self.level = max(0.0, self.level - (at - self.stamp) * self.drain)
        self.stamp = at
        if self.level > self.size:
            return False  # rejected requests are not executed and do not fill the bucket
        self.level += 1
        return True

    def info(self) -> dict[str, Any]:
        return {"drain_per_second": self.drain, "bucket_size": self.size, "level": self.level}


class State:
    def __init__(
        self,
        seed_data: bool = True,
        drain_per_second: float | None = 2.0,
        bucket_size: float | None = 50,
        token_ttl: int = 3600,
    ) -> None:
        self.lock = threading.RLock()
        self.seed_data = seed_data
        self.base_url = ""
        self.domain = ""
        self.member_id = hashlib.md5(secrets.token_bytes(16)).hexdigest()
        self.token_ttl = token_ttl
        self.rate = LeakyBucket(drain_per_second, bucket_size)
        # Simulated network distance, like the rate limit a setting that survives reset():
        # connect_ms is paid once per new TCP connection (a TLS handshake's round trips),
        # request_ms on every REST request (its round trip).
        self.latency: dict[str, int] = {"connect_ms": 0, "request_ms": 0}
        self.connection_seq = 0  # not reset: numbers connections for rest_connection_ids
        # Auth survives reset() so URLs handed out to tests/the demo stay valid.
        self.webhooks: dict[str, dict[str, Any]] = {}
        self.apps: dict[str, dict[str, Any]] = {}
        self.access_tokens: dict[str, dict[str, Any]] = {}
        self.refresh_tokens: dict[str, dict[str, Any]] = {}
        self.admin_secret = secrets.token_hex(8)
        self.webhooks[self.admin_secret] = {
            "ID": 1,
            "USER_ID": 1,
            "SCOPES": list(ALL_SCOPES),
        }
        self.event_handlers: dict[int, dict[str, Any]] = {}
        self.outbound_webhooks: dict[int, dict[str, Any]] = {}
        # SMS providers (messageservice.sender.add) are the app's configuration, like its event
        # bindings: keyed "client_id|CODE" (Bitrix24's MESSAGE_FROM of their messages).
        self.sms_senders: dict[str, dict[str, Any]] = {}
        self.delivery_queue = DeliveryQueue(self.lock)
        self.delivery_seq = 0  # not reset: ids of deliveries still in the queue stay unique
        self.reset()

    # ----------------------------------------------------------------------------------------
    # Data lifecycle

    def reset(self, seed_data: bool | None = None) -> None:
        with self.lock:
            if seed_data is not None:
                self.seed_data = seed_data
            self.users: dict[int, dict[str, Any]] = {}
            self.departments: dict[int, dict[str, Any]] = {}
            self.categories: dict[int, dict[str, Any]] = {}
            self.statuses: list[dict[str, Any]] = []
            self.entities: dict[str, dict[int, dict[str, Any]]] = {
                t: {} for t in crm_store.ENTITY_TYPE_IDS
            }
            self.uf_fields: dict[str, dict[str, dict[str, Any]]] = {
                t: {} for t in crm_store.ENTITY_TYPE_IDS
            }
            self.activities: dict[int, dict[str, Any]] = {}
            self.comments: dict[int, dict[str, Any]] = {}
            self.tasks: dict[int, dict[str, Any]] = {}
            # task.commentitem.add: comments of tasks, by comment id.
            self.task_comments: dict[int, dict[str, Any]] = {}
            self.notifications: dict[int, dict[str, Any]] = {}
            self.records: dict[int, dict[str, Any]] = {}
            self.triggers: list[dict[str, Any]] = []
            self.active_calls: dict[str, dict[str, Any]] = {}
            self.finished_calls: dict[str, dict[str, Any]] = {}
            self.upload_tokens: dict[str, dict[str, Any]] = {}
            # External lines belong to the app that added them ("webhook" for webhook calls).
            self.external_lines: dict[int, dict[str, Any]] = {}
            # Messages sent through an app's SMS provider, by their 32-hex MESSAGE_ID.
            self.sms_messages: dict[str, dict[str, Any]] = {}
            self.counters: dict[str, int] = {
                "LEAD": 0,
                "DEAL": 0,
                "CONTACT": 0,
                "COMPANY": 0,
                "user": 1,
                "status": 0,
                "category": 0,
                "multifield": 155,
                "activity": 1000,
                "comment": 500,
                "task": 3700,
                "task_comment": 8000,
                "notification": 0,
                "statistic": 0,
                "file": 9000,
                "webhook": max([w["ID"] for w in self.webhooks.values()] or [1]),
                "app": max([a["APP_ID"] for a in self.apps.values()] or [0]),
            }
            self._reset_runtime()
            self._seed()

    def _reset_runtime(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.request_seq = 0
        self.faults: list[dict[str, Any]] = []
        # A renamed portal: every /rest/ request not addressed to this base URL's host is
        # redirected there (HTTP 302), as Bitrix24 cloud does after a rename.
        self.moved_to: str | None = None
        self.op_limits: dict[str, float] = {}
        self.operating = OperatingLog()
        self.webhook_telephony_denied = False
        self.rate_limited_count = 0
        self.refresh_count = 0
        # Connections accepted, and those that carried at least one REST request, since reset.
        self.connections_opened = 0
        self.rest_connection_ids: set[int] = set()
        self.rate.level = 0.0
        # Event deliveries (delivery.py) and every externalCall registration, portal's or REST.
        self.deliveries: list[dict[str, Any]] = []
        self.registrations: list[dict[str, Any]] = []

    def _seed(self) -> None:
        t = now()
        users = seed.USERS if self.seed_data else seed.USERS[:1]
        for u in users:
            self.add_user(dict(u), registered=t - 400 * DAY)
        depts = seed.DEPARTMENTS if self.seed_data else seed.DEPARTMENTS[:1]
        for d in depts:
            self.departments[d["ID"]] = dict(d)
        self.categories[0] = {
            "ID": 0,
            "NAME": "General",
            "SORT": 100,
            "IS_LOCKED": "N",
            "CREATED_DATE": t - 400 * DAY,
            "IS_DEFAULT": "Y",
        }
        rows = list(seed.STATUSES)
        if self.seed_data:
            self.categories[1] = {
                "ID": 1,
                "NAME": "Contracts",
                "SORT": 200,
                "IS_LOCKED": "N",
                "CREATED_DATE": t - 300 * DAY,
                "IS_DEFAULT": "N",
            }
            self.counters["category"] = 1
            rows += seed.CONTRACTS_STAGES
        for entity_id, status_id, name, sort, semantics, color in rows:
            self.add_status(
                entity_id, status_id, name, sort, semantics=semantics, color=color, system=True
            )
        if not self.seed_data:
            return
        for etype, uf in seed.UF_FIELDS.items():
            self.uf_fields[etype] = copy.deepcopy(uf)
        for etype, items in (
            ("COMPANY", seed.COMPANIES),
            ("CONTACT", seed.CONTACTS),
            ("LEAD", seed.LEADS),
            ("DEAL", seed.DEALS),
        ):
            for raw in items:
                fields = {k: copy.deepcopy(v) for k, v in raw.items() if not k.startswith("_")}
                eid = fields.pop("ID")
                created = t - raw["_age"] * DAY
                modified = t - raw.get("_modified", raw["_age"]) * DAY
                creator = fields.get("ASSIGNED_BY_ID", 1)
                crm_store.add_entity(
                    self, etype, fields, creator, entity_id=eid, created=created, modified=modified
                )
                self.counters[etype] = max(self.counters[etype], eid)

    # ----------------------------------------------------------------------------------------
    # Helpers used by methods and the control API

    def next_id(self, name: str) -> int:
        self.counters[name] = self.counters.get(name, 0) + 1
        return self.counters[name]

    def add_user(self, fields: dict[str, Any], registered: float | None = None) -> dict[str, Any]:
        with self.lock:
            uid = int(fields.get("ID") or 0) or self.counters["user"] + 1
            self.counters["user"] = max(self.counters["user"], uid)
            t = registered if registered is not None else now()
            user: dict[str, Any] = {
                "ID": uid,
                "ACTIVE": True,
                "NAME": "",
                "LAST_NAME": "",
                "SECOND_NAME": "",
                "EMAIL": "",
                "WORK_POSITION": "",
                "PERSONAL_MOBILE": "",
                "PERSONAL_PHONE": "",
                "WORK_PHONE": "",
                "UF_PHONE_INNER": "",
                "UF_DEPARTMENT": [1],
                "PERSONAL_GENDER": "",
                "IS_ONLINE": "Y",
                "USER_TYPE": "employee",
                "ADMIN": False,
                "TIMEMAN_STATUS": "OPENED",
                "TIME_ZONE": "Europe/Warsaw",
                "DATE_REGISTER": t,
                "LAST_ACTIVITY_DATE": now(),
            }
            user.update({k.upper(): v for k, v in fields.items() if k.upper() != "ID"})
            user["ACTIVE"] = bool(user["ACTIVE"]) and user["ACTIVE"] not in ("N", "0")
            user["UF_DEPARTMENT"] = [int(d) for d in user["UF_DEPARTMENT"] or []]
            if not user["ACTIVE"]:
                user["IS_ONLINE"] = "N"
            self.users[uid] = user
            return user

    def add_status(
        self,
        entity_id: str,
        status_id: str,
        name: str,
        sort: int,
        *,
        semantics: str | None = None,
        color: str = "",
        system: bool = False,
    ) -> dict[str, Any]:
        category = None
        if entity_id.startswith("DEAL_STAGE_"):
            category = int(entity_id.rsplit("_", 1)[1])
        row = {
            "ID": self.next_id("status"),
            "ENTITY_ID": entity_id,
            "STATUS_ID": status_id,
            "NAME": name,
            "NAME_INIT": name if system else "",
            "SORT": sort,
            "SYSTEM": "Y" if system else "N",
            "CATEGORY_ID": category,
            "COLOR": color,
            "SEMANTICS": semantics,
        }
        self.statuses.append(row)
        return row

    def active_user(self, user_id: Any) -> dict[str, Any] | None:
        try:
            user = self.users.get(int(user_id))
        except (TypeError, ValueError):
            return None
        return user if user and user["ACTIVE"] else None

    # ----------------------------------------------------------------------------------------
    # Auth registry

    def add_webhook(self, user_id: int, scopes: list[str] | None = None) -> str:
        with self.lock:
            secret = secrets.token_hex(8)
            self.webhooks[secret] = {
                "ID": self.next_id("webhook"),
                "USER_ID": int(user_id),
                "SCOPES": list(scopes if scopes is not None else ALL_SCOPES),
            }
            return secret

    def webhook_for_user(self, user_id: int) -> str:
        with self.lock:
            for secret, hook in self.webhooks.items():
                if hook["USER_ID"] == user_id and set(ALL_SCOPES) <= set(hook["SCOPES"]):
                    return secret
            return self.add_webhook(user_id, list(ALL_SCOPES))

    def add_app(self, scopes: list[str], user_id: int = 1, name: str = "SIMtrix") -> dict[str, Any]:
        with self.lock:
            app_id = self.next_id("app")
            client_id = f"local.{secrets.token_hex(7)}.{secrets.randbelow(10**8):08d}"
            app = {
                "APP_ID": app_id,
                "CLIENT_ID": client_id,
                "CLIENT_SECRET": secrets.token_urlsafe(36)[:50],
                "SCOPES": list(scopes),
                "USER_ID": int(user_id),
                "NAME": name,
                "APPLICATION_TOKEN": secrets.token_hex(16),
            }
            self.apps[client_id] = app
            tokens = self.issue_tokens(client_id)
            return {
                "client_id": client_id,
                "client_secret": app["CLIENT_SECRET"],
                "access_token": tokens["access_token"],
                "refresh_token": tokens["refresh_token"],
                "expires_in": self.token_ttl,
                "expires": tokens["expires"],
                "client_endpoint": f"{self.base_url}/rest/",
                "server_endpoint": f"{self.base_url}/oauth/rest/",
                "member_id": self.member_id,
                "domain": self.domain,
                "application_token": app["APPLICATION_TOKEN"],
                "scope": ",".join(scopes),
                "user_id": app["USER_ID"],
                "app_id": app_id,
            }

    def issue_tokens(self, client_id: str, user_id: int | None = None) -> dict[str, Any]:
        """A token pair of the app; ``user_id`` makes it act as that user (the tokens an SMS
        provider's handler gets are the sending user's), else as the user who installed it."""
        app = self.apps[client_id]
        access = secrets.token_hex(16) + f"{app['APP_ID']:08x}{secrets.token_hex(11)}"
        refresh = secrets.token_hex(16) + f"{app['APP_ID']:08x}{secrets.token_hex(11)}"
        expires = int(now()) + self.token_ttl
        owner: dict[str, Any] = {} if user_id is None else {"USER_ID": int(user_id)}
        self.access_tokens[access] = {"CLIENT_ID": client_id, "EXPIRES": expires, **owner}
        self.refresh_tokens[refresh] = {"CLIENT_ID": client_id, **owner}
        return {"access_token": access, "refresh_token": refresh, "expires": expires}

    def expire_tokens(self, access_token: str | None = None) -> int:
        with self.lock:
            count = 0
            for token, info in self.access_tokens.items():
                if access_token is None or token == access_token:
                    info["EXPIRES"] = int(now()) - 1
                    count += 1
            return count

    # ----------------------------------------------------------------------------------------
    # Request log

    def new_request_id(self) -> int:
        with self.lock:
            self.request_seq += 1
            return self.request_seq

    def record(self, entry: dict[str, Any]) -> None:
        with self.lock:
            self.requests.append(entry)

    def query_requests(
        self, method: str | None = None, in_batch: bool | None = None
    ) -> list[dict[str, Any]]:
        with self.lock:
            rows = list(self.requests)
        if method:
            rows = [r for r in rows if r.get("method") == method.lower()]
        if in_batch is not None:
            rows = [r for r in rows if bool(r.get("in_batch")) == in_batch]
        return rows

    # ----------------------------------------------------------------------------------------
    # Persistence

    def to_json(self) -> dict[str, Any]:
        with self.lock:
            data: dict[str, Any] = {}
            for attr in _DATA_ATTRS + _AUTH_ATTRS:
                value = getattr(self, attr)
                if attr in _INT_KEYED + _INT_KEYED_AUTH:
                    value = {str(k): v for k, v in value.items()}
                if attr == "entities":
                    value = {t: {str(k): v for k, v in rows.items()} for t, rows in value.items()}
                data[attr] = copy.deepcopy(value)
            data["admin_secret"] = self.admin_secret
            data["member_id"] = self.member_id
            data["seed_data"] = self.seed_data
            return data

    def load_json(self, data: dict[str, Any]) -> None:
        with self.lock:
            for attr in _DATA_ATTRS + _AUTH_ATTRS:
                if attr not in data:
                    continue
                value = data[attr]
                if attr in _INT_KEYED + _INT_KEYED_AUTH:
                    value = {int(k): v for k, v in value.items()}
                if attr == "entities":
                    value = {t: {int(k): v for k, v in rows.items()} for t, rows in value.items()}
                setattr(self, attr, value)
            self.admin_secret = data.get("admin_secret", self.admin_secret)
            self.member_id = data.get("member_id", self.member_id)
            self.seed_data = data.get("seed_data", self.seed_data)

    def dumps(self) -> str:
        return json.dumps(self.to_json(), ensure_ascii=False, default=str)
