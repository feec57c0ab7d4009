"""The client's address as the server can trust it, behind zero or more reverse proxies.

Used wherever an address is counted: failed device tokens (calls.api.auth), login lockout
(django-axes' AXES_CLIENT_IP_CALLABLE). Same answer for both, so an operator configures it once.

An IPv6 client is counted by its /64, not its own address: the /64 is what one subscriber (a
home, an office, a cloud VM) gets from its provider, and inside it a client picks any of 2**64
addresses at will (privacy extensions rotate them anyway), so counting single addresses would
give a guesser a fresh lockout and a fresh throttle per try. An IPv4 address is one subscriber
already (or one NAT, which is shared either way).
"""

from __future__ import annotations

import ipaddress

from django.conf import settings
from django.http import HttpRequest

IPV6_COUNTED_PREFIX = 64


def address_counted(address: str) -> str:
    """The address as counted: an IPv6 one's /64 network address (``2001:db8:1:2::``), an
    IPv4-mapped one's IPv4 address, an IPv4 one itself. Still a valid IP address, which axes'
    ``ip_address`` columns (PostgreSQL ``inet``) require. Anything else comes back unchanged."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv4Address):
        return str(ip)
    if ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    host_bits = 128 - IPV6_COUNTED_PREFIX
    # Through the integer: drops a zone (%eth0) as well as the host part.
    return str(ipaddress.IPv6Address(int(ip) >> host_bits << host_bits))


def client_ip(request: HttpRequest) -> str:
    """REMOTE_ADDR, or the address the outermost trusted proxy saw (as ``address_counted``).

    `SIMTRIX_TRUSTED_PROXY_COUNT` (N) is how many proxies of the operator's own stand in front
    of the server (a TLS terminator, a load balancer). Each appends the address it received the
    request from to X-Forwarded-For, so the Nth entry from the right is the one the first trusted
    proxy saw; anything left of it the client wrote itself and may be forged. With N = 0 (the
    default: no proxy) the header is ignored altogether, else anyone could pick an address to be
    counted under. A header with fewer than N entries (the request bypassed a proxy) falls back
    to REMOTE_ADDR, and so does an entry that is not an IP address.

    Axes calls this with its request (an HttpRequest, or DRF's Request, which proxies META).
    """
    remote = address_counted(str(request.META.get("REMOTE_ADDR") or ""))
    proxies = settings.SIMTRIX_TRUSTED_PROXY_COUNT
    if proxies <= 0:
        return remote
    forwarded = [
        hop.strip() for hop in str(request.META.get("HTTP_X_FORWARDED_FOR") or "").split(",")
    ]
    forwarded = [hop for hop in forwarded if hop]
    if len(forwarded) < proxies:
        return remote
    candidate = forwarded[-proxies]
    try:
        ipaddress.ip_address(candidate)
    except ValueError:
        return remote  # "unknown", a host name, an address with a port: not an address to count
    return address_counted(candidate)
