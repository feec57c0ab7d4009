"""HTTPS front of the sandbox: routing, auth, faults, rate limit, envelope, OAuth token endpoint.

Request pipeline for ``/rest/...`` (mirrors what a client can observe on a real portal):
parse params -> injected faults -> leaky-bucket limit -> auth -> method (dispatch.execute) -> log.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import ssl
import struct
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from . import control_api
from . import methods_activity as _activity  # noqa: F401  (registers methods)
from . import methods_crm as _crm  # noqa: F401
from . import methods_events as _events  # noqa: F401
from . import methods_messageservice as _messageservice  # noqa: F401
from . import methods_misc as _misc  # noqa: F401
from . import methods_telephony as telephony
from .core import Auth, RestError
from .dispatch import Outcome, execute, fail, record_call
from .params import ParsedRequest, parse_php_query, parse_request

if TYPE_CHECKING:
    from .portal import SandboxPortal
    from .state import State

WEBHOOK_ROUTE = re.compile(r"^/rest/(\d+)/([^/]+)/([^/]+?)(?:\.(?:json|xml))?/?$")
OAUTH_ROUTE = re.compile(r"^/rest/([^/]+?)(?:\.(?:json|xml))?/?$")
UPLOAD_ROUTE = re.compile(r"^/rest/upload(?:\.json)?/?$")
TOKEN_ROUTE = re.compile(r"^/oauth/token/?$")

PROXY_503 = (
    b"<html>\r\n<head><title>503 Service Temporarily Unavailable</title></head>\r\n<body>\r\n"
    b"<center><h1>503 Service Temporarily Unavailable</h1></center>\r\n"
    b"<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)


MOVED_302 = (
    b"<html>\r\n<head><title>302 Found</title></head>\r\n<body>\r\n"
    b"<center><h1>302 Found</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)


def _json_bytes(body: Any) -> bytes:
    return json.dumps(body, ensure_ascii=False, default=str).encode("utf-8")


class SandboxHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], portal: SandboxPortal, context: ssl.SSLContext):
        self.portal = portal
        self.ssl_context = context
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, SandboxHandler)

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, addr = self.socket.accept()
        # The TLS handshake runs lazily in the handler thread so a slow or plain-HTTP client
        # cannot block the accept loop.
        conn = self.ssl_context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        with self.connections_lock:
            self.connections.add(conn)
        return conn, addr

    def shutdown_request(self, request: Any) -> None:
        with self.connections_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def close_all_connections(self) -> None:
        with self.connections_lock:
            conns = list(self.connections)
            self.connections.clear()
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                conn.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, (OSError, ssl.SSLError, ValueError)):
            return  # handshake failures, resets, plain-HTTP clients: expected noise
        super().handle_error(request, client_address)


class SandboxHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "nginx"
    sys_version = ""
    timeout = 60
    server: SandboxHTTPServer
    connection_number = 0  # this connection's number (state.connection_seq), set in setup()

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes; without NODELAY, Nagle + delayed ACK
        # add ~40 ms to every keep-alive request.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        state = self.server.portal.state
        with state.lock:
            state.connection_seq += 1
            state.connections_opened += 1
            self.connection_number = state.connection_seq
            connect_delay = state.latency["connect_ms"] / 1000.0
        if connect_delay:
            time.sleep(connect_delay)  # a new connection's handshake round trips
        self.connection.settimeout(30)
        self.connection.do_handshake()  # an ssl.SSLSocket: get_request wraps every socket
        self.connection.settimeout(self.timeout)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the request log in the state is the record of truth

    # HTTP verbs -----------------------------------------------------------------------------

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    # Plumbing --------------------------------------------------------------------------------

    @property
    def portal(self) -> SandboxPortal:
        return self.server.portal

    @property
    def state(self) -> State:
        return self.server.portal.state

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _send(
        self,
        status: int,
        body: bytes,
        content_type: str = "application/json; charset=utf-8",
        headers: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, _json_bytes(body), headers=headers)

    def _reset_connection(self) -> None:
        """Abort the TCP connection with RST, like a crashed upstream or a dropped proxy."""
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        with contextlib.suppress(OSError):
            self.connection.close()
        self.close_connection = True

    def _dispatch(self) -> None:
        url = urlsplit(self.path)
        path = url.path
        body = self._read_body()
        try:
            if path.startswith("/_sandbox/") or path == "/_sandbox":
                status, payload = control_api.handle(
                    self.portal, self.command, path, url.query, body
                )
                self._send_json(status, payload)
            elif TOKEN_ROUTE.match(path):
                self._oauth_token(url.query, body)
            elif path.startswith("/rest/") and self._moved(path, url.query):
                pass
            elif UPLOAD_ROUTE.match(path):
                self._upload(url.query, body)
            elif path.startswith("/rest/"):
                self._rest(path, url.query, body)
            elif path in ("", "/"):
                self._send(200, b"<html><body>Bitrix24 sandbox portal</body></html>", "text/html")
            else:
                self._send(404, b"<html><body>404 Not Found</body></html>", "text/html")
        except (ConnectionError, ssl.SSLError, TimeoutError):
            self.close_connection = True

    # /rest ----------------------------------------------------------------------------------

    def _moved(self, path: str, query: str) -> bool:
        """A renamed portal's old name: 302 to the same path under the new one (no JSON body,
        like the front web server of a cloud portal). True when it answered."""
        state = self.state
        with state.lock:
            moved_to = state.moved_to
        new_host = urlsplit(moved_to).netloc.lower() if moved_to else ""
        if moved_to is None or self.headers.get("Host", "").lower() == new_host:
            return False
        location = f"{moved_to}{path}" + (f"?{query}" if query else "")
        webhook = WEBHOOK_ROUTE.match(path)
        oauth = None if webhook else OAUTH_ROUTE.match(path)
        method = (webhook.group(3) if webhook else oauth.group(1) if oauth else "").lower()
        record_call(state, request_id=state.new_request_id(), started=time.time(),
                    method=method or None, auth=None, params={}, status=302, error="MOVED",
                    http_method=self.command, path=path, extra={"moved_to": moved_to})  # fmt: skip
        self._send(302, MOVED_302, "text/html", headers={"Location": location})
        return True

    def _round_trip(self) -> None:
        """Counts this connection as a REST one and waits the simulated round trip."""
        state = self.state
        with state.lock:
            state.rest_connection_ids.add(self.connection_number)
            request_delay = state.latency["request_ms"] / 1000.0
        if request_delay:
            time.sleep(request_delay)

    def _rest(self, path: str, query: str, body: bytes) -> None:
        self._round_trip()
        state = self.state
        started = time.time()
        request_id = state.new_request_id()
        parsed = parse_request(self.command, query, self.headers.get("Content-Type", ""), body)
        params = parsed.params
        webhook = WEBHOOK_ROUTE.match(path)
        oauth = None if webhook else OAUTH_ROUTE.match(path)
        method = (webhook.group(3) if webhook else oauth.group(1) if oauth else "").lower()
        auth: Auth | None = None

        def log(status: int | None, error: str | None, **extra: Any) -> None:
            record_call(
                state,
                request_id=request_id,
                started=started,
                method=method or None,
                auth=auth,
                params=params,
                status=status,
                error=error,
                http_method=self.command,
                path=path,
                extra={**extra, **({"body_error": parsed.body_error} if parsed.body_error else {})},
            )

        # Injected faults come first: they model the network/proxy in front of the portal.
        fault = self.portal.take_fault(method)
        if fault is not None:
            kind = fault["kind"]
            if kind == "down" and fault.get("mode") == "reset":
                log(None, "CONNECTION_RESET", fault="down")
                self._reset_connection()
                return
            if kind == "down":
                log(503, "PROXY_503", fault="down")
                self._send(503, PROXY_503, "text/html")
                return
            if kind == "fail_next":
                body_500 = {
                    "error": "INTERNAL_SERVER_ERROR",
                    "error_description": "Internal server error",
                }
                log(500, "INTERNAL_SERVER_ERROR", fault="fail_next")
                self._send_json(500, body_500)
                return

        with state.lock:
            allowed = state.rate.hit(time.time())
            if not allowed:
                state.rate_limited_count += 1
        if not allowed:
            log(503, "QUERY_LIMIT_EXCEEDED")
            self._send_json(
                503, {"error": "QUERY_LIMIT_EXCEEDED", "error_description": "Too many requests"}
            )
            return

        if webhook:
            auth, denied = self._webhook_auth(int(webhook.group(1)), webhook.group(2))
        elif oauth:
            auth, denied = self._oauth_auth(params)
        else:
            auth, denied = None, fail(404, "ERROR_METHOD_NOT_FOUND", "Method not found!")
        params.pop("auth", None)  # the token is not a method parameter
        if denied is not None:
            assert denied.error is not None
            log(denied.status, str(denied.error["error"]))
            self._send_json(denied.status, denied.body())
            return
        assert auth is not None
        out = execute(
            state,
            auth,
            method,
            params,
            request_id=request_id,
            base_url=self.portal.url,
            started=started,
        )
        log(out.status, None if out.error is None else str(out.error.get("error")))
        self._send_json(out.status, out.body())

    def _webhook_auth(self, user_id: int, secret: str) -> tuple[Auth | None, Outcome | None]:
        state = self.state
        with state.lock:
            hook = state.webhooks.get(secret)
            user = state.active_user(user_id)
        if hook is None or hook["USER_ID"] != user_id or user is None:
            return None, fail(401, "INVALID_CREDENTIALS", "Invalid request credentials")
        auth = Auth(
            mode="webhook",
            user_id=user_id,
            scopes=list(hook["SCOPES"]),
            key=f"webhook:{hook['ID']}",
            webhook_id=hook["ID"],
        )
        return auth, None

    def _oauth_auth(self, params: dict[str, Any]) -> tuple[Auth | None, Outcome | None]:
        token = params.get("auth")
        if not token:
            bearer = self.headers.get("Authorization", "")
            token = bearer[7:].strip() if bearer.lower().startswith("bearer ") else None
        if not token or not isinstance(token, str):
            return None, fail(401, "NO_AUTH_FOUND", "Wrong authorization data")
        state = self.state
        with state.lock:
            info = state.access_tokens.get(token)
            app = state.apps.get(info["CLIENT_ID"]) if info else None
        if info is None or app is None:
            return None, fail(401, "invalid_token", "The access token provided is invalid.")
        if info["EXPIRES"] <= time.time():
            return None, fail(401, "expired_token", "The access token provided has expired.")
        auth = Auth(
            mode="oauth",
            user_id=int(info.get("USER_ID") or app["USER_ID"]),
            scopes=list(app["SCOPES"]),
            key=f"app:{app['CLIENT_ID']}",
            app_id=app["APP_ID"],
            client_id=app["CLIENT_ID"],
            access_token=token,
        )
        return auth, None

    # /oauth/token/ (stands in for https://oauth.bitrix.info/oauth/token/) ---------------------

    def _oauth_token(self, query: str, body: bytes) -> None:
        parsed: ParsedRequest = parse_request(
            self.command, query, self.headers.get("Content-Type", ""), body
        )
        p = parsed.params
        state = self.state
        with state.lock:
            grant = p.get("grant_type")
            app = state.apps.get(str(p.get("client_id") or ""))
            if grant != "refresh_token":
                self._send_json(
                    400, {"error": "invalid_request", "error_description": "Invalid grant_type"}
                )
                return
            if app is None or app["CLIENT_SECRET"] != p.get("client_secret"):
                self._send_json(
                    401,
                    {"error": "invalid_client", "error_description": "Invalid client credentials"},
                )
                return
            info = state.refresh_tokens.get(str(p.get("refresh_token") or ""))
            if info is None or info["CLIENT_ID"] != app["CLIENT_ID"]:
                self._send_json(
                    400, {"error": "invalid_grant", "error_description": "Invalid refresh token"}
                )
                return
            # Each refresh rotates the refresh token: the old one is burnt (REFERENCE 1.2).
            del state.refresh_tokens[str(p["refresh_token"])]
            token_user = info.get("USER_ID")
            tokens = state.issue_tokens(app["CLIENT_ID"], token_user)
            state.refresh_count += 1
            state.requests.append(
                {
                    "id": state.new_request_id(),
                    "time": time.time(),
                    "method": "oauth.token",
                    "auth": None,
                    "client_id": app["CLIENT_ID"],
                    "params": {"grant_type": grant},
                    "status": 200,
                    "error": None,
                    "in_batch": False,
                    "batch_id": None,
                }
            )
        self._send_json(
            200,
            {
                "access_token": tokens["access_token"],
                "expires": tokens["expires"],
                "expires_in": state.token_ttl,
                "scope": ",".join(app["SCOPES"]),
                "domain": "oauth.bitrix.info",
                "server_endpoint": f"{self.portal.url}/oauth/rest/",
                "status": "L",
                "client_endpoint": f"{self.portal.url}/rest/",
                "member_id": state.member_id,
                "user_id": token_user or app["USER_ID"],
                "refresh_token": tokens["refresh_token"],
            },
        )

    # Second step of attachRecord -------------------------------------------------------------

    def _upload(self, query: str, body: bytes) -> None:
        parsed = parse_request(self.command, query, self.headers.get("Content-Type", ""), body)
        token = str(parse_php_query(query).get("token") or parsed.params.get("token") or "")
        upload = next((f for f in parsed.files if f.field == "file"), None)
        started = time.time()
        state = self.state
        request_id = state.new_request_id()
        logged = {"token": token, "file": None if upload is None else len(upload.content)}
        try:
            with state.lock:
                if upload is None:
                    raise RestError("File is not uploaded (form field 'file' is missing)")
                result = telephony.complete_upload(state, token, upload.filename, upload.content)
        except RestError as exc:
            record_call(state, request_id=request_id, started=started, method="upload",
                        auth=None, params=logged, status=exc.status, error=exc.code,
                        http_method=self.command, path="/rest/upload.json")  # fmt: skip
            self._send_json(exc.status, exc.payload())
            return
        record_call(state, request_id=request_id, started=started, method="upload", auth=None,
                    params=logged, status=200, error=None, http_method=self.command,
                    path="/rest/upload.json")  # fmt: skip
        finish = time.time()
        self._send_json(
            200,
            {"result": result, "time": {"start": started, "finish": finish,
                                        "duration": finish - started}},
        )  # fmt: skip
