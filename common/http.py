"""The client's address as the server can trust it, behind zero or more reverse proxies.

Used wherever an address is counted: failed device tokens (calls.api.auth), login lockout
(django-axes' AXES_CLIENT_IP_CALLABLE). Same answer for both, so an operator configures it once.
"""

from __future__ import annotations

import ipaddress

from django.conf import settings
from django.http import HttpRequest


def client_ip(request: HttpRequest) -> str:
    """REMOTE_ADDR, or the address the outermost trusted proxy saw.

    `SIMTRIX_TRUSTED_PROXY_COUNT` (N) is how many proxies of the operator's own stand in front
    of the server (a TLS terminator, a load balancer). Each appends the address it received the
    request from to X-Forwarded-For, so the Nth entry from the right is the one the first trusted
    proxy saw; anything left of it the client wrote itself and may be forged. With N = 0 (the
    default: no proxy) the header is ignored altogether, else anyone could pick an address to be
    counted under. A header with fewer than N entries (the request bypassed a proxy) falls back
    to REMOTE_ADDR, and so does an entry that is not an IP address.

    Axes calls this with its request (an HttpRequest, or DRF's Request, which proxies META).
    """
    remote = str(request.META.get("REMOTE_ADDR") or "")
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
        return str(ipaddress.ip_address(candidate))
    except ValueError:
        return remote  # "unknown", a host name, an address with a port: not an address to count
