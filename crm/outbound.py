"""Where SIMtrix connects on a tenant's behalf: the address policy and a transport pinned to it.

A tenant admin chooses the portal (its webhook URL) and the OAuth server (its token URL), so
without a policy the server connects wherever they say: its own Redis, PostgreSQL, the cloud's
metadata service. Two checks stand in the way:

- the address as written (``crm.validators``, when it is saved and again when a session is
  built): https only, host only, an IP address only in its canonical form, no ``localhost``;
- the address as resolved (this module, when a connection is opened): every address the name
  resolves to must be public, and the socket is connected to exactly the addresses that were
  checked, so a second DNS answer cannot swap in another one (DNS rebinding). TLS still runs
  against the host name (SNI and certificate), and the ``Host`` header is the name.

An operator may allow private and loopback networks (``SIMTRIX_ALLOW_PRIVATE_ADDRESSES``: a
portal on the LAN, the demo's sandbox) and plain http portals (``SIMTRIX_ALLOW_HTTP_PORTALS``).
The clouds' metadata services (link-local 169.254/16 and fe80::/10, and the few that live inside
private ranges: 100.100.100.200, 192.0.0.192, fd00:ec2::254, fd20:ce::254), multicast,
broadcast, unspecified, documentation and reserved addresses are never allowed
(``_ADDRESS_TABLE``).

The transport follows no redirect (``crm.session`` decides about a moved portal) and ignores
the environment's proxies and ``.netrc``: a proxy would resolve the name itself, past the check,
and ``.netrc`` would hand the operator's credentials to a tenant's host.

Requests to a portal (``keep_alive=True``) reuse its connections within a process: one
``requests.Session`` per portal address and address policy (``_KeptSessions``), so a lookup
does not pay a TCP and TLS handshake each time. The addresses are checked when a connection is
opened, so a kept session is recycled after ``KEEPALIVE_MAX_AGE`` (the name is resolved and
checked again) and after ``KEEPALIVE_IDLE`` unused (before the portal's web server closes it
under a request), and dropped after a transport error; a forked process starts with none.
``SIMTRIX_BITRIX24_KEEPALIVE = False`` gives every request a fresh connection (benchmarks).
Everything else (the OAuth server, tenants' own webhooks) gets a fresh connection per request.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from http.cookiejar import DefaultCookiePolicy
from typing import Any, cast
from urllib.parse import urlsplit

import requests
from django.conf import settings
from requests.adapters import HTTPAdapter
from urllib3 import PoolManager
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError
from urllib3.util import connection as urllib3_connection

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# host, port -> the addresses to connect to, in order (socket.getaddrinfo's answer by default).
Resolver = Callable[[str, int], Sequence[str]]

# IPv6 prefixes that carry an IPv4 address the packets end up at.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


class OutboundAddressRefused(Exception):
    """SIMtrix will not connect to this host. ``reason`` is for operators' logs only.

    Deliberately not an ``OSError``: urllib3 and requests let it through unwrapped, so it can
    never be mistaken for (and retried as) an ordinary network failure.
    """

    def __init__(self, host: str, reason: str) -> None:
        super().__init__(f"{host}: {reason}")
        self.host = host
        self.reason = reason


def private_addresses_allowed() -> bool:
    return bool(getattr(settings, "SIMTRIX_ALLOW_PRIVATE_ADDRESSES", False))


def http_portals_allowed() -> bool:
    return bool(getattr(settings, "SIMTRIX_ALLOW_HTTP_PORTALS", False))


@dataclass(frozen=True)
class AddressKind:
    name: str  # what the operators' log says: "<address> is a <name> address"
    private_ok: bool  # SIMTRIX_ALLOW_PRIVATE_ADDRESSES lets it through


_LOOPBACK = AddressKind("loopback", private_ok=True)
_PRIVATE = AddressKind("private", private_ok=True)
_METADATA = AddressKind("cloud metadata", private_ok=False)
_RESERVED = AddressKind("reserved", private_ok=False)
_DOCUMENTATION = AddressKind("documentation", private_ok=False)

# The address policy, as a table rather than ipaddress' is_global/is_private: those change
# between Python versions (3.11 calls 192.0.0.192, Oracle's metadata service, global) and lump
# a LAN together with the cloud's metadata services. The most specific network that holds an
# address decides; an address in none of them must be global unicast: any other IPv4 address,
# and IPv6 inside 2000::/3 (IANA's special-purpose registries, RFC 6890 and its updates).
_ADDRESS_TABLE: tuple[tuple[IPNetwork, AddressKind], ...] = tuple(
    (ipaddress.ip_network(network), kind)
    for network, kind in (
        # Never, whatever the operator allows.
        ("0.0.0.0/8", AddressKind("unspecified", private_ok=False)),  # Linux: 0.x is this host
        ("169.254.0.0/16", AddressKind("link-local", private_ok=False)),  # 169.254.169.254
        ("192.0.0.0/24", _RESERVED),  # IETF protocol assignments
        ("192.0.0.192/32", _METADATA),  # Oracle Cloud
        ("100.100.100.200/32", _METADATA),  # Alibaba Cloud, inside CGNAT space
        ("192.0.2.0/24", _DOCUMENTATION),
        ("198.51.100.0/24", _DOCUMENTATION),
        ("203.0.113.0/24", _DOCUMENTATION),
        ("198.18.0.0/15", AddressKind("benchmarking", private_ok=False)),
        ("192.88.99.0/24", _RESERVED),  # the withdrawn 6to4 relay anycast
        ("224.0.0.0/4", AddressKind("multicast", private_ok=False)),
        ("240.0.0.0/4", _RESERVED),
        ("255.255.255.255/32", AddressKind("broadcast", private_ok=False)),
        ("::/128", AddressKind("unspecified", private_ok=False)),
        ("::/8", _RESERVED),  # IPv4-compatible and other leftovers (mapped: see address_refusal)
        ("fe80::/10", AddressKind("link-local", private_ok=False)),
        ("fec0::/10", AddressKind("site-local", private_ok=False)),  # deprecated (RFC 3879)
        ("fd00:ec2::254/128", _METADATA),  # Amazon EC2, inside unique-local space
        ("fd20:ce::254/128", _METADATA),  # Google Compute Engine, likewise
        ("ff00::/8", AddressKind("multicast", private_ok=False)),
        ("2001::/23", _RESERVED),  # IETF protocol assignments (Teredo, ORCHID, ...)
        ("2001:db8::/32", _DOCUMENTATION),
        ("3fff::/20", _DOCUMENTATION),
        # Only with SIMTRIX_ALLOW_PRIVATE_ADDRESSES: a portal on the LAN, the demo's sandbox.
        ("10.0.0.0/8", _PRIVATE),
        ("172.16.0.0/12", _PRIVATE),
        ("192.168.0.0/16", _PRIVATE),
        ("100.64.0.0/10", _PRIVATE),  # shared address space (CGNAT)
        ("127.0.0.0/8", _LOOPBACK),
        ("::1/128", _LOOPBACK),
        ("fc00::/7", _PRIVATE),  # unique-local
    )
)
_IPV6_GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")


def address_refusal(ip: IPAddress, *, allow_private: bool | None = None) -> str | None:
    """Why SIMtrix must not connect to ``ip`` (e.g. ``"loopback"``), or None when it may."""
    if allow_private is None:
        allow_private = private_addresses_allowed()
    if isinstance(ip, ipaddress.IPv6Address):
        # Mapped and NAT64 addresses are IPv4 addresses in IPv6 clothes: judge the IPv4 one.
        if ip.ipv4_mapped is not None:
            return address_refusal(ip.ipv4_mapped, allow_private=allow_private)
        if ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
            return address_refusal(embedded, allow_private=allow_private)
        tunnelled = ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if tunnelled is not None:
            reason = address_refusal(tunnelled, allow_private=allow_private)
            if reason is not None:
                return f"{reason} (tunnelled in {ip})"
    kind = _address_kind(ip)
    if kind is None or (allow_private and kind.private_ok):
        return None
    return kind.name


def _address_kind(ip: IPAddress) -> AddressKind | None:
    """The table's verdict on ``ip``: None for a global unicast address."""
    matches = [
        (network.prefixlen, kind)
        for network, kind in _ADDRESS_TABLE
        if network.version == ip.version and ip in network
    ]
    if matches:
        return max(matches, key=lambda match: match[0])[1]
    if isinstance(ip, ipaddress.IPv6Address) and ip not in _IPV6_GLOBAL_UNICAST:
        return _RESERVED
    return None


def system_resolver(host: str, port: int) -> list[str]:
    """The addresses ``host`` resolves to, in the order the system prefers them."""
    family = urllib3_connection.allowed_gai_family()
    addresses: list[str] = []
    for *_, sockaddr in socket.getaddrinfo(host, port, family, socket.SOCK_STREAM):
        address = str(sockaddr[0])
        if address not in addresses:
            addresses.append(address)
    return addresses


def checked_addresses(host: str, port: int, *, resolver: Resolver | None = None) -> list[str]:
    """Resolves ``host`` once and returns its addresses if every one of them is allowed.

    Raises ``OutboundAddressRefused`` when any is not (a name with one private address among
    public ones is refused: which one the system picks is not ours to know), and
    ``socket.gaierror`` when the name does not resolve.
    """
    addresses = list((resolver or system_resolver)(host, port))
    if not addresses:
        raise OutboundAddressRefused(host, "resolves to no address")
    allow_private = private_addresses_allowed()
    for address in addresses:
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            raise OutboundAddressRefused(host, f"resolves to {address!r}, not an address") from None
        reason = address_refusal(ip, allow_private=allow_private)
        if reason is not None:
            raise OutboundAddressRefused(host, f"resolves to {address} ({reason} address)")
    return addresses


# ----------------------------------------------------------------------------------------------
# The pinned transport: urllib3 connections that connect to the checked addresses only


class _PinnedConnectionMixin:
    """Replaces urllib3's ``_new_conn`` (resolve, then connect) with resolve-check-connect."""

    host: str
    port: int
    timeout: Any
    source_address: tuple[str, int] | None
    socket_options: Any
    _dns_host: str

    def __init__(self, *args: Any, resolver: Resolver | None = None, **kwargs: Any) -> None:
        self._resolver = resolver
        super().__init__(*args, **kwargs)

    def _new_conn(self) -> socket.socket:
        this = cast(HTTPConnection, self)
        try:
            addresses = checked_addresses(
                self._dns_host.rstrip("."), self.port, resolver=self._resolver
            )
        except socket.gaierror as exc:
            raise NameResolutionError(self.host, this, exc) from exc
        failure: OSError | None = None
        for address in addresses:
            try:
                # A literal address: create_connection's getaddrinfo does no DNS lookup.
                return urllib3_connection.create_connection(
                    (address, self.port),
                    self.timeout,
                    source_address=self.source_address,
                    socket_options=self.socket_options,
                )
            except OSError as exc:
                failure = exc
        if isinstance(failure, TimeoutError):
            raise ConnectTimeoutError(
                this, f"Connection to {self.host} timed out. (connect timeout={self.timeout})"
            ) from failure
        raise NewConnectionError(
            this, f"Failed to establish a new connection: {failure}"
        ) from failure


class _PinnedHTTPConnection(_PinnedConnectionMixin, HTTPConnection):
    pass


class _PinnedHTTPSConnection(_PinnedConnectionMixin, HTTPSConnection):
    def connect(self) -> None:
        try:
            super().connect()
        except TimeoutError as exc:
            # A TLS handshake that stalls is a connection that was never made (nothing was
            # sent): left alone, urllib3 reports it as a read timeout, i.e. "maybe executed".
            raise ConnectTimeoutError(self, f"TLS handshake with {self.host} timed out") from exc


class _PinnedHTTPConnectionPool(HTTPConnectionPool):
    ConnectionCls = _PinnedHTTPConnection


class _PinnedHTTPSConnectionPool(HTTPSConnectionPool):
    ConnectionCls = _PinnedHTTPSConnection


class _PinnedPoolManager(PoolManager):
    def __init__(self, *args: Any, resolver: Resolver | None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._resolver = resolver
        self.pool_classes_by_scheme = {
            "http": _PinnedHTTPConnectionPool,
            "https": _PinnedHTTPSConnectionPool,
        }

    def _new_pool(
        self,
        scheme: str,
        host: str,
        port: int,
        request_context: dict[str, Any] | None = None,
    ) -> HTTPConnectionPool:
        pool = super()._new_pool(scheme, host, port, request_context)
        pool.conn_kw["resolver"] = self._resolver
        return pool


class PinnedAdapter(HTTPAdapter):
    """A requests adapter whose connections go only to checked addresses, never via a proxy."""

    def __init__(
        self,
        *,
        resolver: Resolver | None = None,
        allow_http: bool | None = None,
        pool_size: int = 1,
    ) -> None:
        self._resolver = resolver
        # None: plain http as the operator allows it for portals (SIMTRIX_ALLOW_HTTP_PORTALS).
        self._allow_http = allow_http
        super().__init__(max_retries=0, pool_connections=1, pool_maxsize=pool_size)

    def init_poolmanager(
        self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any
    ) -> None:
        self._pool_connections = connections
        self._pool_maxsize = maxsize
        self._pool_block = block
        self.poolmanager = _PinnedPoolManager(
            num_pools=connections,
            maxsize=maxsize,
            block=block,
            resolver=self._resolver,
            **pool_kwargs,
        )

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> Any:
        scheme = (request.url or "").split(":", 1)[0].lower()
        allow_http = http_portals_allowed() if self._allow_http is None else self._allow_http
        if scheme != "https" and not (scheme == "http" and allow_http):
            raise OutboundAddressRefused(
                urlsplit(request.url or "").hostname or "?", f"{scheme}:// not allowed"
            )
        kwargs["proxies"] = {}
        return super().send(request, *args, **kwargs)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        raise OutboundAddressRefused(proxy, "outbound connections never go through a proxy")


def outbound_session(
    *, resolver: Resolver | None = None, allow_http: bool | None = None, pool_size: int = 1
) -> requests.Session:
    """A ``requests.Session`` for requests to a tenant-chosen address (close it after).

    ``allow_http``: whether plain http may be used (None: as the operator allows it for
    portals); the address policy is the same either way. ``pool_size``: connections kept per
    host."""
    session = requests.Session()
    session.trust_env = False  # no proxies, no .netrc from the environment (see the docstring)
    # What trust_env would have given: the CA bundle the operator points requests at.
    session.verify = (
        os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
    )
    session.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))
    adapter = PinnedAdapter(resolver=resolver, allow_http=allow_http, pool_size=pool_size)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


# A kept connection older than this is not reused (its addresses are checked again), nor one
# idle for longer than this (web servers close idle keep-alive connections: nginx after 75 s).
KEEPALIVE_MAX_AGE = 300.0
KEEPALIVE_IDLE = 30.0
# Connections kept per portal: concurrent requests of one process beyond it get fresh ones.
KEEPALIVE_POOL_SIZE = 4


def keep_alive_enabled() -> bool:
    return bool(getattr(settings, "SIMTRIX_BITRIX24_KEEPALIVE", True))


@dataclass
class _Kept:
    session: requests.Session
    created: float
    last_used: float


class _KeptSessions:
    """One pinned ``requests.Session`` per portal address and policy, shared by the threads of
    a process (urllib3's pool hands each request its own connection; cookies are refused)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._kept: dict[tuple[Any, ...], _Kept] = {}

    def session(self, key: tuple[Any, ...], allow_http: bool | None) -> requests.Session:
        now = time.monotonic()
        stale: requests.Session | None = None
        with self._lock:
            if self._pid != os.getpid():
                # A forked child: the parent's sockets are not ours to use (nor to close).
                self._pid, self._kept = os.getpid(), {}
            kept = self._kept.get(key)
            if kept is not None and (
                now - kept.created > KEEPALIVE_MAX_AGE or now - kept.last_used > KEEPALIVE_IDLE
            ):
                stale, kept = kept.session, None
                del self._kept[key]
            if kept is None:
                kept = _Kept(outbound_session(allow_http=allow_http, pool_size=KEEPALIVE_POOL_SIZE),
                             created=now, last_used=now)  # fmt: skip
                self._kept[key] = kept
            kept.last_used = now
        if stale is not None:
            stale.close()  # connections still serving a request are closed when they return
        return kept.session

    def discard(self, key: tuple[Any, ...]) -> None:
        with self._lock:
            kept = self._kept.pop(key, None) if self._pid == os.getpid() else None
        if kept is not None:
            kept.session.close()

    def close_all(self) -> None:
        with self._lock:
            kept = list(self._kept.values()) if self._pid == os.getpid() else []
            self._kept = {}
        for item in kept:
            item.session.close()


_kept_sessions = _KeptSessions()


def keep_alive_close_all() -> None:
    """Closes every kept connection of this process (tests, shutdown)."""
    _kept_sessions.close_all()


def _keep_alive_key(url: str, allow_http: bool | None) -> tuple[Any, ...]:
    parts = urlsplit(url)
    # The policy is part of the key: a connection opened under a laxer one is not reused.
    return (
        parts.scheme.lower(),
        (parts.hostname or "").lower(),
        parts.port,
        private_addresses_allowed(),
        http_portals_allowed() if allow_http is None else allow_http,
        os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or "",
    )


def outbound_request(
    method: str,
    url: str,
    *,
    resolver: Resolver | None = None,
    allow_http: bool | None = None,
    keep_alive: bool = False,
    **kwargs: Any,
) -> requests.Response:
    """``requests.request`` through the pinned transport, redirects never followed.

    ``keep_alive``: reuse this process' connections to the address (a portal's requests); not
    with a ``resolver`` of the caller's (tests), which always gets fresh connections."""
    kwargs["allow_redirects"] = False
    if not (keep_alive and resolver is None and keep_alive_enabled()):
        with outbound_session(resolver=resolver, allow_http=allow_http) as session:
            return session.request(method, url, **kwargs)
    key = _keep_alive_key(url, allow_http)
    session = _kept_sessions.session(key, allow_http)
    try:
        return session.request(method, url, **kwargs)
    except (requests.RequestException, OutboundAddressRefused):
        _kept_sessions.discard(key)  # the next request starts on a fresh connection
        raise
