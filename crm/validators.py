"""What a Bitrix24 address may look like when a tenant admin or an operator enters it.

Checked as written, before any DNS lookup (``crm.outbound`` checks what the name resolves to,
when it connects): https (http only when the operator allows it), a host and an optional port,
no user info, query or fragment, and the path each address has by definition:

- the inbound webhook: ``https://HOST[:PORT]/rest/USER_ID/SECRET/`` (REFERENCE 1.1);
- the OAuth server: ``https://HOST[:PORT]/oauth/token/`` (``oauth.bitrix.info`` for the cloud,
  the portal itself on premises);
- the portal's REST endpoint of an OAuth installation: ``https://HOST[:PORT]/rest/``.

A host is a DNS name in ASCII (international names in their ``xn--`` form) or an IP address
in its canonical form. The other spellings that resolvers accept (``2130706433``, ``0x7f.1``,
``017700000001``, ``127.1``) are refused: they exist to slip past checks like this one.
``localhost`` and ``*.localhost`` are this server, and private addresses are refused unless
the operator allows private networks (``SIMTRIX_ALLOW_PRIVATE_ADDRESSES``).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass

from django.core.exceptions import ValidationError
from django.utils.translation import gettext

from crm.outbound import address_refusal, http_portals_allowed, private_addresses_allowed

_HOST = r"(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?"
# https://PORTAL/rest/{USER_ID}/{SECRET}/ (REFERENCE 1.1); the trailing slash is optional on
# input. `host` is host[:port]. Parsing only: validate_webhook_url says what is allowed.
WEBHOOK_URL_RE = re.compile(
    rf"^(?P<scheme>https?)://(?P<host>{_HOST})/rest/(?P<user_id>\d+)/(?P<secret>[A-Za-z0-9_-]+)/?\Z"
)
_OAUTH_TOKEN_PATH = re.compile(r"^/oauth/token/?\Z")
_ENDPOINT_PATH = re.compile(r"^/rest/?\Z")
_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
_NUMERIC_LABEL = re.compile(r"^(?:[0-9]+|0[xX][0-9A-Fa-f]*)$")
_FORBIDDEN_CHARS = re.compile(r"[\s\\\x00-\x1f\x7f]")
_MASK_SPLIT = re.compile(r"^([^/?#]*(?://[^/?#]*)?)(.*)$", re.DOTALL)


@dataclass(frozen=True)
class Address:
    """An address that passed the checks: scheme, host (IPv6 in brackets) and port."""

    scheme: str
    host: str
    port: int | None
    path: str

    @property
    def netloc(self) -> str:
        return f"{self.host}:{self.port}" if self.port is not None else self.host

    @property
    def base(self) -> str:
        return f"{self.scheme}://{self.netloc}"


class AddressProblem(ValueError):
    """Why an address is refused, in words for the person who typed it (in the active language)."""


def address_parse(
    value: str, *, allow_http: bool | None = None, allow_query: bool = False
) -> Address:
    """Splits ``value`` into an ``Address``, or raises ``AddressProblem`` saying what is wrong.

    ``allow_http``: whether http:// may be written (None: as the operator allows it for
    portals, ``SIMTRIX_ALLOW_HTTP_PORTALS``); ``allow_query``: a query string may follow the
    path (an address of the tenant's own, such as a webhook receiver; it stays in ``path``)."""
    if allow_http is None:
        allow_http = http_portals_allowed()
    if _FORBIDDEN_CHARS.search(value):
        raise AddressProblem(gettext("spaces, control characters and backslashes are not allowed"))
    scheme, sep, rest = value.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in ("https", "http"):
        raise AddressProblem(_scheme_hint(allow_http))
    if scheme == "http" and not allow_http:
        raise AddressProblem(_scheme_hint(allow_http))
    if "#" in rest or ("?" in rest and not allow_query):
        raise AddressProblem(gettext("a query (?) or fragment (#) is not allowed"))
    netloc, slash, path = rest.partition("/")
    path = slash + path
    if "@" in netloc:
        raise AddressProblem(gettext("a user name or password (user@host) is not allowed"))
    host, port = _split_port(netloc)
    address_host_check(host)
    return Address(scheme=scheme, host=host.lower(), port=port, path=path)


def address_host_check(host: str) -> None:
    """Raises ``AddressProblem`` when ``host`` (without port; IPv6 in brackets) is refused."""
    if not host:
        raise AddressProblem(gettext("the host is missing"))
    if host.startswith("["):
        literal = host[1:-1] if host.endswith("]") else ""
        if "%" in literal:
            raise AddressProblem(gettext("an IPv6 zone (%) is not allowed"))
        try:
            ip = ipaddress.IPv6Address(literal)
        except ValueError:
            raise AddressProblem(
                gettext("%(host)s is not an IPv6 address") % {"host": host}
            ) from None
        _ip_check(ip, host)
        return
    if host.endswith("."):
        raise AddressProblem(gettext("the host must not end with a dot"))
    if not host.isascii():
        raise AddressProblem(
            gettext("write an international host name in its xn-- (punycode) form")
        )
    name = host.lower()
    labels = name.split(".")
    if _NUMERIC_LABEL.match(labels[-1]):
        # WHATWG URL: a host whose last label is a number is an IPv4 address.
        try:
            ip4 = ipaddress.IPv4Address(name)
        except ValueError:
            raise AddressProblem(
                gettext(
                    "write an IP address as four decimal numbers like 203.0.113.10, not %(host)s"
                )
                % {"host": host}
            ) from None
        _ip_check(ip4, host)
        return
    if len(name) > 253 or not all(_LABEL.match(label) for label in labels):
        raise AddressProblem(gettext("%(host)s is not a valid host name") % {"host": host})
    if (name == "localhost" or name.endswith(".localhost")) and not private_addresses_allowed():
        raise AddressProblem(
            gettext(
                "%(host)s is this server itself: SIMtrix only connects to public addresses (an "
                "operator can allow private networks with SIMTRIX_ALLOW_PRIVATE_ADDRESSES=1)"
            )
            % {"host": host}
        )


def _address_validate(
    value: str, *, shown: str, fits: Callable[[str, Address], object], refused: str, unfit: str
) -> None:
    """A ValidationError unless ``value`` is an allowed address that ``fits``.

    ``refused`` and ``unfit`` are the (translated) messages, with ``%(address)s`` (``shown``)
    and, for ``refused``, ``%(problem)s`` (what is wrong with it)."""
    try:
        address = address_parse(value)
    except AddressProblem as exc:
        raise ValidationError(refused % {"address": repr(shown), "problem": exc}) from None
    if not fits(value, address):
        raise ValidationError(unfit % {"address": repr(shown)})


def validate_webhook_url(value: str) -> None:
    _address_validate(
        value,
        shown=mask_webhook_url(value),  # never the secret
        fits=lambda raw, _: WEBHOOK_URL_RE.match(raw),
        refused=gettext("Invalid Bitrix24 webhook URL %(address)s: %(problem)s."),
        unfit=gettext(
            "Invalid Bitrix24 webhook URL %(address)s: expected "
            "https://PORTAL/rest/USER_ID/SECRET/ (Bitrix24 only accepts webhooks over HTTPS)."
        ),
    )


def validate_oauth_token_url(value: str) -> None:
    _address_validate(
        value,
        shown=value,
        fits=lambda _, address: _OAUTH_TOKEN_PATH.match(address.path),
        refused=gettext("Invalid OAuth token URL %(address)s: %(problem)s."),
        unfit=gettext(
            "Invalid OAuth token URL %(address)s: expected https://HOST/oauth/token/ "
            "(https://oauth.bitrix.info/oauth/token/ for Bitrix24 cloud)."
        ),
    )


def validate_rest_endpoint(value: str) -> None:
    """The portal's REST endpoint of an OAuth installation (``client_endpoint``)."""
    _address_validate(
        value,
        shown=value,
        fits=lambda _, address: _ENDPOINT_PATH.match(address.path),
        refused=gettext("Invalid portal REST endpoint %(address)s: %(problem)s."),
        unfit=gettext("Invalid portal REST endpoint %(address)s: expected https://PORTAL/rest/."),
    )


def mask_webhook_url(value: str) -> str:
    """The URL with its secret (and any user info) hidden, for display and logs."""
    match = WEBHOOK_URL_RE.match(value)
    if match:
        return f"{match['scheme']}://{match['host']}/rest/{match['user_id']}/****/"
    # Not a webhook URL: the host stays (it is what the message is about), any path may hold
    # the secret in a place we cannot guess.
    parts = _MASK_SPLIT.match(value)
    base, path = parts.groups() if parts else (value, "")
    base = re.sub(r"//[^/?#]*@", "//****@", base)
    user = re.match(r"/rest/(\d+)/", path)
    if user:
        return f"{base}/rest/{user[1]}/****"
    return f"{base}/****" if path.strip("/") else base + path


def _scheme_hint(allow_http: bool) -> str:
    if allow_http:
        return gettext("it must start with https:// (or http:// for a portal without TLS)")
    return gettext("it must start with https://")


def _split_port(netloc: str) -> tuple[str, int | None]:
    if netloc.startswith("["):
        end = netloc.find("]")
        host, rest = (netloc[: end + 1], netloc[end + 1 :]) if end >= 0 else (netloc, "")
        if rest and not rest.startswith(":"):
            raise AddressProblem(gettext("%(netloc)s is not a host and port") % {"netloc": netloc})
        port_text = rest[1:] if rest else None
    else:
        host, colon, port_text_raw = netloc.partition(":")
        port_text = port_text_raw if colon else None
    if port_text is None:
        return host, None
    if not (port_text.isascii() and port_text.isdigit()) or not 0 < int(port_text) < 65536:
        raise AddressProblem(gettext("the port must be a number from 1 to 65535"))
    return host, int(port_text)


def _ip_check(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, host: str) -> None:
    reason = address_refusal(ip)
    if reason is None:
        return
    # `kind` is the address range's technical name (loopback, private, link-local, ...).
    if reason in ("private", "loopback"):
        message = gettext(
            "%(host)s is a %(kind)s address: SIMtrix only connects to public addresses (an "
            "operator can allow private networks with SIMTRIX_ALLOW_PRIVATE_ADDRESSES=1)"
        )
    else:
        message = gettext("%(host)s is a %(kind)s address: not a portal")
    raise AddressProblem(message % {"host": host, "kind": reason})
