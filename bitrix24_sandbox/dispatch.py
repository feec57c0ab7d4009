"""Runs one REST method call (top-level or inside ``batch``): scope, auth-type and operating-time
checks, execution under the state lock, and the ``time`` block of the envelope."""

from __future__ import annotations

import copy
import math
import sys
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

from .core import METHODS, Auth, Ctx, Page, RestError, iso
from .state import State

# Methods the docs call "application only"; a control switch makes them refuse webhooks (4.0).
APP_ONLY_TELEPHONY = {
    "telephony.externalcall.register",
    "telephony.externalcall.finish",
    "telephony.externalline.add",
    "telephony.externalline.get",
    "telephony.externalline.update",
    "telephony.externalline.delete",
}


@dataclass
class Outcome:
    status: int
    result: Any = None
    total: int | None = None
    next: int | None = None
    error: dict[str, Any] | None = None  # {"error": ..., "error_description": ...}
    time: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None

    def body(self) -> dict[str, Any]:
        if self.error is not None:
            return dict(self.error)
        body: dict[str, Any] = {"result": self.result}
        if self.next is not None:
            body["next"] = self.next
        if self.total is not None:
            body["total"] = self.total
        body["time"] = self.time
        return body


def time_block(
    start: float, finish: float, processing: float, operating: float, reset_at: int
) -> dict[str, Any]:
    return {
        "start": round(start, 6),
        "finish": round(finish, 6),
        "duration": round(finish - start, 6),
        "processing": round(processing, 6),
        "date_start": iso(start),
        "date_finish": iso(finish),
        "operating_reset_at": reset_at,
        "operating": round(operating, 6),
    }


def fail(status: int, code: str, description: str, **extra: Any) -> Outcome:
    return Outcome(status, error={"error": code, "error_description": description, **extra})


def execute(
    state: State,
    auth: Auth,
    method: str,
    params: dict[str, Any],
    *,
    request_id: int,
    base_url: str,
    in_batch: bool = False,
    started: float | None = None,
) -> Outcome:
    start = started if started is not None else time.time()
    spec = METHODS.get(method)
    if spec is None:
        return fail(404, "ERROR_METHOD_NOT_FOUND", "Method not found!")
    if in_batch and not spec.batchable:
        return fail(405, "ERROR_BATCH_METHOD_NOT_ALLOWED", "Method is not allowed for batch usage")
    if spec.scopes and not set(spec.scopes) & set(auth.scopes):
        holder = "webhook token" if auth.mode == "webhook" else "access token"
        return fail(
            401,
            "insufficient_scope",
            f"The request requires higher privileges than provided by the {holder}",
        )
    if method in APP_ONLY_TELEPHONY and auth.mode == "webhook" and state.webhook_telephony_denied:
        return fail(403, "WRONG_AUTH_TYPE", "Current authorization type is denied for this method")
    op_key = f"{auth.key}:{method}"
    with state.lock:
        blocked_until = state.op_limits.get(method)
        if blocked_until is not None and blocked_until <= time.time():
            del state.op_limits[method]
            blocked_until = None
    if blocked_until is not None:
        t = time.time()
        operating, _ = state.operating.summary(op_key, t)
        out = fail(429, "OPERATION_TIME_LIMIT", "Method is blocked due to operation time limit.")
        out.time = time_block(start, t, 0.0, operating, math.ceil(blocked_until))
        assert out.error is not None
        out.error["time"] = out.time
        return out

    ctx = Ctx(state=state, auth=auth, base_url=base_url, request_id=request_id, in_batch=in_batch)
    t0 = time.time()
    try:
        with state.lock:
            value = spec.func(ctx, params)
    except RestError as exc:
        out = Outcome(exc.status, error=exc.payload())
    except Exception as exc:  # a sandbox bug must be visible, but still answer like a portal
        traceback.print_exc(file=sys.stderr)
        out = fail(500, "INTERNAL_SERVER_ERROR", f"Sandbox error: {type(exc).__name__}: {exc}")
    else:
        if isinstance(value, Page):
            out = Outcome(200, result=value.result, total=value.total, next=value.next)
        else:
            out = Outcome(200, result=value)
    t1 = time.time()
    # The outer batch call is not counted in `operating`; its sub-calls are (REFERENCE 1.6).
    if method != "batch":
        with state.lock:
            state.operating.add(op_key, t0, t1 - t0)
    operating, reset_at = state.operating.summary(op_key, t1)
    out.time = time_block(start, t1, t1 - t0, operating, reset_at)
    return out


def record_call(
    state: State,
    *,
    request_id: int,
    started: float,
    method: str | None,
    auth: Auth | None,
    params: dict[str, Any],
    status: int | None,
    error: str | None,
    http_method: str | None = None,
    batch_id: int | None = None,
    path: str | None = None,
    extra: dict[str, Any] | None = None,
) -> None:
    entry: dict[str, Any] = {
        "id": request_id,
        "time": started,
        "method": method,
        "http_method": http_method,
        "path": path,
        "auth": auth.mode if auth else None,
        "user_id": auth.user_id if auth else None,
        "client_id": auth.client_id if auth else None,
        "params": copy.deepcopy(params),
        "status": status,
        "error": error,
        "in_batch": batch_id is not None,
        "batch_id": batch_id,
        "duration": round(time.time() - started, 6),
    }
    if extra:
        entry.update(extra)
    state.record(entry)
