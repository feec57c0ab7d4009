"""HTTP client of the sandbox control API, for portals running in another process."""

from __future__ import annotations

from typing import Any

import requests


class SandboxControlError(RuntimeError):
    pass


class SandboxControl:
    """``SandboxControl("https://127.0.0.1:8443", verify="/tmp/.../sandbox-ca.pem")``."""

    def __init__(self, base_url: str, verify: str | bool = True, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.verify = verify
        self.timeout = timeout
        self.session = requests.Session()

    def _call(
        self,
        verb: str,
        route: str,
        body: dict[str, Any] | None = None,
        _timeout: float | None = None,
        **query: Any,
    ) -> Any:
        params = {k: v for k, v in query.items() if v is not None}
        resp = self.session.request(
            verb,
            f"{self.base_url}/_sandbox/{route}",
            json=body if body is not None else ({} if verb != "GET" else None),
            params=params or None,
            verify=self.verify,
            timeout=_timeout if _timeout is not None else self.timeout,
        )
        if resp.status_code >= 400:
            raise SandboxControlError(f"{verb} {route}: HTTP {resp.status_code} {resp.text}")
        return resp.json()

    # State ------------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        return self._call("GET", "state")

    def dump(self) -> dict[str, Any]:
        return self._call("GET", "dump")

    def save(self) -> bool:
        return bool(self._call("POST", "save")["saved"])

    def reset(self, seed: bool | None = None) -> None:
        self._call("POST", "reset", {"seed": seed})

    def requests(
        self, method: str | None = None, in_batch: bool | None = None
    ) -> list[dict[str, Any]]:
        flag = None if in_batch is None else ("1" if in_batch else "0")
        return self._call("GET", "requests", method=method, in_batch=flag)["requests"]

    def clear_requests(self) -> None:
        self._call("DELETE", "requests")

    # Faults and limits ------------------------------------------------------------------------

    def set_fault(
        self,
        kind: str,
        mode: str | None = None,
        delay_ms: int | None = None,
        count: int | None = None,
        method: str | None = None,
    ) -> dict[str, Any]:
        body = {"kind": kind, "mode": mode, "delay_ms": delay_ms, "count": count, "method": method}
        return self._call("POST", "faults", body)["fault"]

    def faults(self) -> list[dict[str, Any]]:
        return self._call("GET", "faults")["faults"]

    def clear_faults(self) -> None:
        self._call("DELETE", "faults")

    def set_rate_limit(
        self, drain_per_second: float | None, bucket_size: float | None, reset_counter: bool = True
    ) -> dict[str, Any]:
        body = {
            "drain_per_second": drain_per_second,
            "bucket_size": bucket_size,
            "reset_counter": reset_counter,
        }
        return self._call("POST", "rate_limit", body)["rate_limit"]

    def set_latency(self, connect_ms: int = 0, request_ms: int = 0) -> dict[str, int]:
        """Added delay per new connection and per REST request, in milliseconds."""
        body = {"connect_ms": connect_ms, "request_ms": request_ms}
        return self._call("POST", "latency", body)["latency"]

    def expire_tokens(self, access_token: str | None = None) -> int:
        return int(self._call("POST", "expire_tokens", {"access_token": access_token})["expired"])

    def set_webhook_telephony_denied(self, denied: bool) -> None:
        self._call("POST", "webhook_telephony_denied", {"denied": denied})

    def set_moved(self, url: str | None) -> None:
        self._call("POST", "moved", {"url": url})

    def set_operation_time_limit(self, method: str, seconds: float | None) -> None:
        self._call("POST", "operation_limit", {"method": method, "seconds": seconds})

    # Directory data ---------------------------------------------------------------------------

    def add_user(self, **fields: Any) -> dict[str, Any]:
        return self._call("POST", "users", fields)["user"]

    def users(self) -> list[dict[str, Any]]:
        return self._call("GET", "users")["users"]

    def deactivate_user(self, user_id: int) -> dict[str, Any]:
        return self._call("POST", f"users/{user_id}/deactivate")["user"]

    def activate_user(self, user_id: int) -> dict[str, Any]:
        return self._call("POST", f"users/{user_id}/activate")["user"]

    def set_timeman_status(self, user_id: int, status: str) -> dict[str, Any]:
        return self._call("POST", f"users/{user_id}/timeman", {"status": status})["user"]

    def add_category(self, name: str, sort: int = 500, id: int | None = None) -> dict[str, Any]:
        return self._call("POST", "categories", {"name": name, "sort": sort, "id": id})["category"]

    def delete_category(self, category_id: int) -> int:
        return int(self._call("POST", "categories/delete", {"id": category_id})["deleted"])

    def add_stage(
        self, status_id: str, name: str, category_id: int | None = None, **extra: Any
    ) -> dict[str, Any]:
        body = {"status_id": status_id, "name": name, "category_id": category_id, **extra}
        return self._call("POST", "stages", body)["stage"]

    def delete_stage(
        self, status_id: str, category_id: int | None = None, entity_id: str | None = None
    ) -> int:
        body = {"status_id": status_id, "category_id": category_id, "entity_id": entity_id}
        return int(self._call("POST", "stages/delete", body)["deleted"])

    # CRM data ---------------------------------------------------------------------------------

    def add_contact(self, **fields: Any) -> int:
        return int(self._call("POST", "contacts", fields)["id"])

    def add_entity(self, entity_type: str, **fields: Any) -> int:
        return int(self._call("POST", f"entities/{entity_type.lower()}", fields)["id"])

    def entities(self, entity_type: str) -> list[dict[str, Any]]:
        return self._call("GET", f"entities/{entity_type.lower()}")["items"]

    def entity(self, entity_type: str, entity_id: int) -> dict[str, Any]:
        return self._call("GET", f"entities/{entity_type.lower()}/{entity_id}")

    def update_entity(
        self, entity_type: str, entity_id: int, user_id: int | None = None, **fields: Any
    ) -> None:
        """A user edits the record in Bitrix24 (fires ONCRM{TYPE}UPDATE)."""
        self._call("POST", f"entities/{entity_type.lower()}/{entity_id}", fields, user_id=user_id)

    def delete_entity(self, entity_type: str, entity_id: int) -> None:
        self._call("DELETE", f"entities/{entity_type.lower()}/{entity_id}")

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
        body = {
            "user_id": user_id,
            "phone_number": phone_number,
            "line_number": line_number,
            "entity_type": entity_type,
            "entity_id": entity_id,
            "crm_create": crm_create,
            "client_id": client_id,
            "timeout": timeout,
        }
        return self._call("POST", "click_to_call", body, _timeout=timeout + 10)

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
        """A user sends an SMS through provider ``code``: ``{"message_id", "message",
        "drained", "deliveries"}`` once the POST to its HANDLER is done."""
        body = {
            "code": code,
            "phone_number": phone_number,
            "text": text,
            "user_id": user_id,
            "module_id": module_id,
            "entity_type": entity_type,
            "entity_id": entity_id,
            "client_id": client_id,
            "timeout": timeout,
        }
        return self._call("POST", "send_sms", body, _timeout=timeout + 10)

    def sms_senders(self) -> list[dict[str, Any]]:
        return self._call("GET", "sms_senders")["sms_senders"]

    def sms_messages(self) -> list[dict[str, Any]]:
        return self._call("GET", "sms_messages")["sms_messages"]

    def external_lines(self) -> list[dict[str, Any]]:
        return self._call("GET", "external_lines")["external_lines"]

    def calls(self) -> dict[str, Any]:
        return self._call("GET", "calls")

    def activities(self) -> list[dict[str, Any]]:
        return self._call("GET", "activities")["activities"]

    def notifications(self) -> list[dict[str, Any]]:
        return self._call("GET", "notifications")["notifications"]

    def tasks(self) -> list[dict[str, Any]]:
        return self._call("GET", "tasks")["tasks"]

    def comments(self) -> list[dict[str, Any]]:
        return self._call("GET", "comments")["comments"]

    def triggers(self) -> list[dict[str, Any]]:
        return self._call("GET", "triggers")["triggers"]

    def records(self) -> list[dict[str, Any]]:
        return self._call("GET", "records")["records"]

    def file(self, file_id: int) -> dict[str, Any]:
        return self._call("GET", f"files/{file_id}")

    # Credentials ------------------------------------------------------------------------------

    def add_webhook(self, user_id: int = 1, scopes: list[str] | None = None) -> str:
        return str(self._call("POST", "webhooks", {"user_id": user_id, "scopes": scopes})["url"])

    def add_oauth_app(self, scopes: list[str] | None = None, user_id: int = 1) -> dict[str, Any]:
        return self._call("POST", "apps", {"scopes": scopes, "user_id": user_id})

    def uninstall_app(
        self, client_id: str, clean: bool = False, timeout: float = 10.0
    ) -> dict[str, Any]:
        body = {"clean": clean, "timeout": timeout}
        return self._call("POST", f"apps/{client_id}/uninstall", body, _timeout=timeout + 10)

    # Events -----------------------------------------------------------------------------------

    def event_handlers(self) -> list[dict[str, Any]]:
        return self._call("GET", "events/handlers")["handlers"]

    def add_outbound_webhook(self, handler: str, events: list[str]) -> dict[str, Any]:
        return self._call("POST", "outbound_webhooks", {"handler": handler, "events": events})

    def outbound_webhooks(self) -> list[dict[str, Any]]:
        return self._call("GET", "outbound_webhooks")["outbound_webhooks"]

    def delete_outbound_webhook(self, hook_id: int) -> None:
        self._call("DELETE", f"outbound_webhooks/{hook_id}")

    def deliveries(self, event: str | None = None) -> list[dict[str, Any]]:
        return self._call("GET", "events/deliveries", event=event)["deliveries"]

    def clear_deliveries(self) -> None:
        self._call("DELETE", "events/deliveries")

    def wait_deliveries(self, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Block until the portal's event queue is empty; TimeoutError if it is not in time."""
        body = self._call("POST", "events/wait", {"timeout": timeout}, _timeout=timeout + 10)
        if not body["drained"]:
            raise TimeoutError(f"{body['pending']} deliveries still pending")
        return body["deliveries"]
