"""Where SIMtrix connects on a tenant's behalf (crm.validators, crm.outbound).

The test run allows private addresses (the sandbox is on 127.0.0.1, crm/tests/portal.py); every
refusal here switches that off first. Names that must resolve to the sandbox go through an
injected resolver (no DNS is needed, and none is there offline); ``localhost`` goes through the
system's own.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.conf import settings as django_settings
from django.core.exceptions import ValidationError
from django.db import connection as db_connection
from pytest_django import Settings

from bitrix24_sandbox import SandboxPortal
from crm import client as b24
from crm.admin import ConnectionForm
from crm.client import Bitrix24Client
from crm.errors import Bitrix24Error, Bitrix24NotConfigured
from crm.models import DEFAULT_OAUTH_TOKEN_URL, Bitrix24Connection, RequestLog
from crm.outbound import OutboundAddressRefused, address_refusal, outbound_request
from crm.services import connection_set_oauth_app, connection_set_webhook, connection_test
from crm.session import Bitrix24Session, oauth_token_request
from crm.validators import mask_webhook_url, validate_oauth_token_url, validate_webhook_url
from tenants.services import ProvisioningError, TenantSpec, tenant_spec_validate

SECRET = "s3cr3tw3bh00k"
NAMES = ("portal.example.com", "moved.example.com")


@pytest.fixture
def public_only(settings: Settings) -> Settings:
    settings.SIMTRIX_ALLOW_PRIVATE_ADDRESSES = False
    settings.SIMTRIX_ALLOW_HTTP_PORTALS = False
    return settings


class Names:
    """A resolver with a fixed table, counting what it was asked (``crm.outbound.Resolver``)."""

    def __init__(self, table: dict[str, Sequence[str]]) -> None:
        self.table = table
        self.asked: list[str] = []

    def __call__(self, host: str, port: int) -> Sequence[str]:
        self.asked.append(host)
        if host not in self.table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return self.table[host]


@pytest.fixture(scope="module")
def named_portal() -> Iterator[SandboxPortal]:
    """A sandbox whose certificate also covers public-looking names (resolved by ``Names``)."""
    portal = SandboxPortal(seed=True, drain_per_second=None, bucket_size=None, hostnames=NAMES)
    portal.start()
    yield portal
    portal.stop()


@pytest.fixture
def trust_named_portal(
    named_portal: SandboxPortal,
    sandbox_portal: Any,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> SandboxPortal:
    """Both sandboxes' CAs trusted (crm.outbound reads REQUESTS_CA_BUNDLE per request)."""
    bundle = tmp_path / "ca.pem"
    bundle.write_text(
        Path(named_portal.ca_cert_path).read_text() + Path(sandbox_portal.ca_cert_path).read_text()
    )
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(bundle))
    named_portal.reset()
    return named_portal


def _hook(host: str, port: int, secret: str = SECRET) -> str:
    return f"https://{host}:{port}/rest/1/{secret}/"


# ----------------------------------------------------------------------------------------------
# The address as written


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        (f"https://user@portal.example.com/rest/1/{SECRET}/", "user@host"),
        (f"https://user:pw@portal.example.com/rest/1/{SECRET}/", "user@host"),
        (f"https://portal.example.com/rest/1/{SECRET}/?x=1", "query (?) or fragment (#)"),
        (f"https://evil.example.com/#@portal.example.com/rest/1/{SECRET}/", "fragment (#)"),
        (f"https://evil.example.com?/rest/1/{SECRET}/", "query (?)"),
        (f"https://2130706433/rest/1/{SECRET}/", "four decimal numbers"),
        (f"https://0x7f.1/rest/1/{SECRET}/", "four decimal numbers"),
        (f"https://017700000001/rest/1/{SECRET}/", "four decimal numbers"),
        (f"https://127.1/rest/1/{SECRET}/", "four decimal numbers"),
        (f"https://127.000.000.001/rest/1/{SECRET}/", "four decimal numbers"),
        (f"https://portal.0x10/rest/1/{SECRET}/", "four decimal numbers"),
        (f"https://127.0.0.1/rest/1/{SECRET}/", "loopback address"),
        (f"https://127.0.0.1:6379/rest/1/{SECRET}/", "loopback address"),
        (f"https://10.0.0.5/rest/1/{SECRET}/", "private address"),
        (f"https://192.168.1.10/rest/1/{SECRET}/", "private address"),
        (f"https://100.64.0.1/rest/1/{SECRET}/", "private address"),  # CGNAT
        (f"https://169.254.169.254/rest/1/{SECRET}/", "link-local address"),
        (f"https://0.0.0.0/rest/1/{SECRET}/", "unspecified address"),
        (f"https://224.0.0.1/rest/1/{SECRET}/", "multicast address"),
        (f"https://255.255.255.255/rest/1/{SECRET}/", "broadcast address"),
        (f"https://[::1]/rest/1/{SECRET}/", "loopback address"),
        (f"https://[::1]:8443/rest/1/{SECRET}/", "loopback address"),
        (f"https://[::ffff:127.0.0.1]/rest/1/{SECRET}/", "loopback address"),
        (f"https://[::ffff:7f00:1]/rest/1/{SECRET}/", "loopback address"),
        (f"https://[::]/rest/1/{SECRET}/", "unspecified address"),
        (f"https://[fc00::1]/rest/1/{SECRET}/", "private address"),
        (f"https://[fe80::1%25eth0]/rest/1/{SECRET}/", "zone"),
        (f"https://[fe80::1]/rest/1/{SECRET}/", "link-local address"),
        (f"https://[64:ff9b::7f00:1]/rest/1/{SECRET}/", "loopback address"),  # NAT64
        (f"https://[2002:7f00:1::]/rest/1/{SECRET}/", "loopback (tunnelled"),  # 6to4
        (f"https://[::1/rest/1/{SECRET}/", "not an IPv6 address"),
        (f"https://localhost/rest/1/{SECRET}/", "this server itself"),
        (f"https://LocalHost:8443/rest/1/{SECRET}/", "this server itself"),
        (f"https://portal.localhost/rest/1/{SECRET}/", "this server itself"),
        (f"https://portal.example.com./rest/1/{SECRET}/", "must not end with a dot"),
        (f"https://localhost./rest/1/{SECRET}/", "must not end with a dot"),
        (f"http://portal.example.com/rest/1/{SECRET}/", "must start with https://"),
        (f"ftp://portal.example.com/rest/1/{SECRET}/", "must start with https://"),
        (f"portal.example.com/rest/1/{SECRET}/", "must start with https://"),
        (f"https://portal.example.com:0/rest/1/{SECRET}/", "port"),
        (f"https://portal.example.com:65536/rest/1/{SECRET}/", "port"),
        (f"https://portal.example.com:https/rest/1/{SECRET}/", "port"),
        (f"https://portal.example.com:/rest/1/{SECRET}/", "port"),
        (f"https://portal.example.com\\@evil.example.com/rest/1/{SECRET}/", "backslashes"),
        (f"https://portal.example.com /rest/1/{SECRET}/", "spaces"),
        (f"https://portal.example.com/rest/1/{SECRET}/\n", "control characters"),
        (f"https://портал.рф/rest/1/{SECRET}/", "xn--"),
        (f"https://portal_1.example.com/rest/1/{SECRET}/", "not a valid host name"),
        (f"https://-portal.example.com/rest/1/{SECRET}/", "not a valid host name"),
        (f"https:///rest/1/{SECRET}/", "host is missing"),
        (f"https://portal.example.com/rest/1/{SECRET}/crm.contact.get", "expected https://"),
        (f"https://portal.example.com/rest/1/{SECRET}/../../x/", "expected https://"),
        (f"https://portal.example.com/rest/x/{SECRET}/", "expected https://"),
        (f"https://portal.example.com/api/1/{SECRET}/", "expected https://"),
    ],
)
def test_a_webhook_url_is_refused_with_what_is_wrong(
    public_only: Settings, url: str, problem: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        validate_webhook_url(url)

    message = caught.value.messages[0]
    assert problem in message
    assert message.startswith("Invalid Bitrix24 webhook URL")
    assert SECRET not in message
    assert "pw@" not in message


@pytest.mark.parametrize(
    "url",
    [
        f"https://portal.example.com/rest/1/{SECRET}/",
        f"https://portal.example.com/rest/12/{SECRET}",
        f"https://Portal.Bitrix24.RU:8443/rest/1/{SECRET}/",
        f"https://xn--80aa0a.xn--p1ai/rest/1/{SECRET}/",
        f"https://8.8.8.8/rest/1/{SECRET}/",
        f"https://[2606:4700::1111]:443/rest/1/{SECRET}/",
        f"https://[64:ff9b::808:808]/rest/1/{SECRET}/",  # NAT64 of a public address
        f"https://intranet/rest/1/{SECRET}/",  # what it resolves to is checked when connecting
    ],
)
def test_a_public_https_webhook_url_is_accepted(public_only: Settings, url: str) -> None:
    validate_webhook_url(url)


def test_private_addresses_are_accepted_only_when_the_operator_allows_them(
    public_only: Settings,
) -> None:
    private = [
        f"https://127.0.0.1:8443/rest/1/{SECRET}/",
        f"https://10.0.0.5/rest/1/{SECRET}/",
        f"https://100.64.0.1/rest/1/{SECRET}/",
        f"https://localhost:8443/rest/1/{SECRET}/",
        f"https://[::1]:8443/rest/1/{SECRET}/",
        f"https://[fd00::5]/rest/1/{SECRET}/",
    ]
    never = [
        f"https://169.254.169.254/rest/1/{SECRET}/",
        f"https://0.0.0.0/rest/1/{SECRET}/",
        f"https://224.0.0.1/rest/1/{SECRET}/",
        f"https://240.0.0.1/rest/1/{SECRET}/",
        f"https://2130706433/rest/1/{SECRET}/",
        f"https://[fe80::1]/rest/1/{SECRET}/",
        # The clouds' metadata services inside private ranges (Alibaba, AWS over IPv6, Oracle).
        f"https://100.100.100.200/rest/1/{SECRET}/",
        f"https://[fd00:ec2::254]/rest/1/{SECRET}/",
        f"https://192.0.0.192/rest/1/{SECRET}/",
        f"https://0.1.2.3/rest/1/{SECRET}/",
    ]
    for url in private + never:
        with pytest.raises(ValidationError):
            validate_webhook_url(url)

    public_only.SIMTRIX_ALLOW_PRIVATE_ADDRESSES = True

    for url in private:
        validate_webhook_url(url)
    for url in never:
        with pytest.raises(ValidationError):
            validate_webhook_url(url)


def test_http_portals_are_accepted_only_when_the_operator_allows_them(
    public_only: Settings,
) -> None:
    url = f"http://portal.example.com/rest/1/{SECRET}/"
    with pytest.raises(ValidationError, match="must start with https://"):
        validate_webhook_url(url)

    public_only.SIMTRIX_ALLOW_HTTP_PORTALS = True

    validate_webhook_url(url)
    with pytest.raises(ValidationError, match="loopback"):  # one setting does not imply the other
        validate_webhook_url(f"http://127.0.0.1/rest/1/{SECRET}/")


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("https://oauth.bitrix.info/oauth/token/?client_id=x", "query (?)"),
        ("https://oauth.bitrix.info/oauth/token/#x", "fragment (#)"),
        ("https://me@oauth.bitrix.info/oauth/token/", "user@host"),
        ("http://oauth.bitrix.info/oauth/token/", "must start with https://"),
        ("https://oauth.bitrix.info/rest/", "expected https://HOST/oauth/token/"),
        ("https://oauth.bitrix.info/", "expected https://HOST/oauth/token/"),
        ("https://127.0.0.1:6379/oauth/token/", "loopback address"),
        ("https://localhost/oauth/token/", "this server itself"),
        ("https://2130706433/oauth/token/", "four decimal numbers"),
        ("https://[::1]/oauth/token/", "loopback address"),
    ],
)
def test_an_oauth_token_url_is_refused_with_what_is_wrong(
    public_only: Settings, url: str, problem: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        validate_oauth_token_url(url)
    assert problem in caught.value.messages[0]
    assert caught.value.messages[0].startswith("Invalid OAuth token URL")


def test_the_default_and_an_on_premises_oauth_token_url_are_accepted(
    public_only: Settings,
) -> None:
    validate_oauth_token_url(DEFAULT_OAUTH_TOKEN_URL)
    validate_oauth_token_url("https://portal.example.com:8443/oauth/token")


def test_a_masked_webhook_url_hides_user_info_and_secret() -> None:
    masked = mask_webhook_url(f"https://user:pw@portal.example.com/rest/1/{SECRET}/?x")
    assert "pw" not in masked
    assert SECRET not in masked
    assert masked == "https://****@portal.example.com/rest/1/****"
    assert mask_webhook_url(f"https://portal.example.com/rest/1/{SECRET}") == (
        "https://portal.example.com/rest/1/****/"
    )


@pytest.mark.parametrize(
    ("address", "allowed", "refused"),
    [
        # Global unicast: always.
        ("8.8.8.8", True, None),
        ("2606:4700::1111", True, None),
        ("::ffff:8.8.8.8", True, None),
        ("64:ff9b::808:808", True, None),  # NAT64 of a public address
        ("2002:808:808::1", True, None),  # 6to4 of a public address
        ("192.0.1.1", True, None),  # next to the special ranges, not in one
        ("100.128.0.1", True, None),
        # A LAN or this host: only with SIMTRIX_ALLOW_PRIVATE_ADDRESSES.
        ("127.0.0.1", True, "loopback"),
        ("127.255.255.254", True, "loopback"),
        ("::1", True, "loopback"),
        ("10.1.2.3", True, "private"),
        ("172.16.0.1", True, "private"),
        ("172.31.255.254", True, "private"),
        ("192.168.1.10", True, "private"),
        ("100.64.0.1", True, "private"),  # CGNAT
        ("100.100.100.199", True, "private"),
        ("fc00::1", True, "private"),
        ("fd00:ec2::253", True, "private"),
        ("::ffff:10.0.0.1", True, "private"),
        ("64:ff9b::a00:1", True, "private"),
        ("2002:a00:1::", True, "private (tunnelled in 2002:a00:1::)"),  # 6to4 of 10.0.0.1
        # The clouds' metadata services: never, even where they sit in a private range.
        ("169.254.169.254", False, "link-local"),  # AWS, GCP, Azure, OpenStack, ...
        ("fe80::a9fe:a9fe", False, "link-local"),  # OpenStack over IPv6
        ("192.0.0.192", False, "cloud metadata"),  # Oracle (Python 3.11 calls it global)
        ("100.100.100.200", False, "cloud metadata"),  # Alibaba
        ("fd00:ec2::254", False, "cloud metadata"),  # AWS over IPv6
        ("fd20:ce::254", False, "cloud metadata"),  # GCP over IPv6
        ("::ffff:169.254.169.254", False, "link-local"),
        ("::ffff:100.100.100.200", False, "cloud metadata"),
        ("64:ff9b::6464:64c8", False, "cloud metadata"),  # NAT64 of 100.100.100.200
        ("2002:6464:64c8::", False, "cloud metadata (tunnelled in 2002:6464:64c8::)"),
        # Never: not an address a portal has.
        ("0.0.0.0", False, "unspecified"),  # noqa: S104 - an address to refuse, not a bind
        ("0.1.2.3", False, "unspecified"),  # Linux connects 0.0.0.0/8 to this host
        ("::", False, "unspecified"),
        ("fe80::1", False, "link-local"),
        ("192.0.0.8", False, "reserved"),
        ("192.0.0.170", False, "reserved"),  # NAT64 discovery, global in Python 3.11
        ("192.0.2.1", False, "documentation"),
        ("198.51.100.7", False, "documentation"),
        ("203.0.113.9", False, "documentation"),
        ("2001:db8::1", False, "documentation"),
        ("3fff::1", False, "documentation"),
        ("198.18.0.1", False, "benchmarking"),
        ("192.88.99.1", False, "reserved"),
        ("224.0.0.251", False, "multicast"),
        ("239.255.255.250", False, "multicast"),
        ("ff02::1", False, "multicast"),
        ("255.255.255.255", False, "broadcast"),
        ("240.0.0.1", False, "reserved"),
        ("::7f00:1", False, "reserved"),  # IPv4-compatible (deprecated)
        ("100::1", False, "reserved"),  # discard-only
        ("64:ff9b:1::1", False, "reserved"),  # local-use NAT64: prefix format unknown
        ("fec0::1", False, "site-local"),  # deprecated: Python calls it global
        ("4000::1", False, "reserved"),  # outside 2000::/3: not yet allocated
        ("2001:2::1", False, "reserved"),  # IETF protocol assignments
        (
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            False,
            "documentation (tunnelled in 2001:0:4136:e378:8000:63bf:3fff:fdd2)",
        ),  # Teredo for 192.0.2.45
        ("2001:0:4136:e378:8000:63bf:f7f7:f7f7", False, "reserved"),  # Teredo for 8.8.8.8
    ],
)
def test_address_policy(address: str, allowed: bool, refused: str | None) -> None:
    """``allowed``: whether SIMTRIX_ALLOW_PRIVATE_ADDRESSES=1 lets it through."""
    ip = ipaddress.ip_address(address)
    assert address_refusal(ip, allow_private=False) == refused
    assert address_refusal(ip, allow_private=True) == (None if allowed else refused)


def test_the_admin_form_refuses_a_private_webhook_and_oauth_server(
    alpha: Any, public_only: Settings
) -> None:
    form = ConnectionForm(
        data={
            "auth_mode": "webhook",
            "new_webhook_url": f"https://127.0.0.1:6379/rest/1/{SECRET}/",
            "oauth_client_id": "",
            "new_client_secret": "",
            "oauth_token_url": "https://[::1]/oauth/token/",
            "rate_plan": "standard",
            "lookup_budget_ms": "1500",
            "lookup_cache_ttl_s": "300",
        },
        instance=Bitrix24Connection(),
    )

    assert not form.is_valid()
    assert "127.0.0.1 is a loopback address" in form.errors["new_webhook_url"][0]
    assert SECRET not in str(form.errors)
    assert "[::1] is a loopback address" in form.errors["oauth_token_url"][0]
    assert not Bitrix24Connection.objects.exists()


def test_provisioning_refuses_a_private_webhook(alpha: Any, public_only: Settings) -> None:
    spec = TenantSpec(
        schema="gamma",
        name="Gamma",
        domain="gamma.localhost",
        bitrix24_webhook=f"https://user@portal.example.com/rest/1/{SECRET}/",
    )
    with pytest.raises(ProvisioningError, match=r"user name or password \(user@host\)"):
        tenant_spec_validate(spec)

    public_only.SIMTRIX_ALLOW_PRIVATE_ADDRESSES = True
    tenant_spec_validate(
        TenantSpec(
            schema="gamma",
            name="Gamma",
            domain="gamma.localhost",
            bitrix24_webhook=f"https://10.0.0.5/rest/1/{SECRET}/",
        )
    )


def test_a_stored_address_that_breaks_the_rules_is_not_used(
    alpha: Any, public_only: Settings
) -> None:
    # Written around the validators (an old row, a raw update): checked again before any use.
    conn = connection_set_webhook(webhook_url=f"https://[::1]:8443/rest/1/{SECRET}/")

    with pytest.raises(Bitrix24NotConfigured, match=r"\[::1\] is a loopback address"):
        Bitrix24Session(conn)


# ----------------------------------------------------------------------------------------------
# The address as resolved, and the connection pinned to it


def test_localhost_is_refused_when_connecting_whatever_the_url_says(
    sandbox_portal: Any, public_only: Settings
) -> None:
    def profiles() -> int:
        # This test's method only: the session's worker may still be talking to the portal.
        return len(sandbox_portal.state.query_requests(method="profile"))

    before = profiles()
    url = f"https://localhost:{sandbox_portal.port}/rest/1/{sandbox_portal.state.admin_secret}/"

    with pytest.raises(OutboundAddressRefused) as caught:
        outbound_request("POST", url + "profile.json", json={}, timeout=5)

    assert "resolves to" in caught.value.reason
    assert "loopback address" in caught.value.reason
    assert profiles() == before  # nothing reached the portal

    public_only.SIMTRIX_ALLOW_PRIVATE_ADDRESSES = True
    assert outbound_request("POST", url + "profile.json", json={}, timeout=5).status_code == 200
    assert profiles() == before + 1


def test_one_private_address_among_public_ones_is_refused(public_only: Settings) -> None:
    names = Names({"portal.example.com": ["8.8.8.8", "10.1.2.3"]})

    with pytest.raises(OutboundAddressRefused, match=r"10\.1\.2\.3 \(private address\)"):
        outbound_request("GET", "https://portal.example.com/", resolver=names, timeout=5)

    assert names.asked == ["portal.example.com"]


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("100.100.100.200", "cloud metadata"),
        ("fd00:ec2::254", "cloud metadata"),
        ("192.0.0.192", "cloud metadata"),
        ("169.254.169.254", "link-local"),
        ("0.0.0.0", "unspecified"),  # noqa: S104 - an address to refuse, not a bind
    ],
)
def test_a_name_resolving_to_a_metadata_service_is_refused_even_with_private_allowed(
    settings: Settings, address: str, kind: str
) -> None:
    settings.SIMTRIX_ALLOW_PRIVATE_ADDRESSES = True
    names = Names({"portal.example.com": [address]})

    with pytest.raises(OutboundAddressRefused) as caught:
        outbound_request("GET", "https://portal.example.com/", resolver=names, timeout=5)

    assert caught.value.reason == f"resolves to {address} ({kind} address)"


def test_plain_http_and_proxies_are_refused_by_the_transport(
    public_only: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = Names({"portal.example.com": ["8.8.8.8"]})
    with pytest.raises(OutboundAddressRefused, match="http:// not allowed"):
        outbound_request("GET", "http://portal.example.com/", resolver=names, timeout=5)
    # The environment's proxy is not used: the connection goes to the checked address itself.
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    names = Names({"portal.example.com": ["10.1.2.3"]})
    with pytest.raises(OutboundAddressRefused, match="private"):
        outbound_request("GET", "https://portal.example.com/", resolver=names, timeout=5)
    assert names.asked == ["portal.example.com"]


def test_the_connection_goes_to_the_checked_address_under_the_host_name(
    trust_named_portal: SandboxPortal, alpha: Any
) -> None:
    portal = trust_named_portal
    answers = iter([["127.0.0.1"], ["127.0.0.2"]])  # a second lookup would get another answer

    class Rebinding(Names):
        def __call__(self, host: str, port: int) -> Sequence[str]:
            self.asked.append(host)
            return next(answers)

    names = Rebinding({})
    # The portal serves only requests whose Host header is this name: it proves the header.
    portal.set_moved(f"https://portal.example.com:{portal.port}")
    conn = connection_set_webhook(
        webhook_url=_hook("portal.example.com", portal.port, portal.state.admin_secret)
    )

    profile: Any = Bitrix24Client(Bitrix24Session(conn, resolver=names)).run(b24.Req("profile"))

    assert profile["ID"] == "1"
    assert names.asked == ["portal.example.com"]  # one lookup, and its answer was used
    assert [(r["method"], r["status"]) for r in portal.state.requests] == [("profile", 200)]


def test_a_name_that_resolves_to_a_private_address_is_refused(
    trust_named_portal: SandboxPortal, alpha: Any, public_only: Settings, caplog: Any
) -> None:
    portal = trust_named_portal
    names = Names({"portal.example.com": ["127.0.0.1"]})
    conn = connection_set_webhook(
        webhook_url=_hook("portal.example.com", portal.port, portal.state.admin_secret)
    )

    with (
        caplog.at_level(logging.WARNING, logger="crm.session"),
        pytest.raises(Bitrix24Error) as caught,
    ):
        Bitrix24Client(Bitrix24Session(conn, resolver=names)).run(b24.Req("profile"))

    assert (caught.value.code, caught.value.description) == (
        "CONNECTION_ERROR",
        "Could not reach the portal",
    )
    assert caught.value.transient
    assert not caught.value.ambiguous
    assert portal.state.requests == []
    row = RequestLog.objects.latest("id")
    assert (row.error_code, row.error_description) == (
        "CONNECTION_ERROR",
        "Could not reach the portal",
    )
    assert "resolves to 127.0.0.1 (loopback address)" in caplog.text  # for operators only
    assert "127.0.0.1" not in Bitrix24Connection.objects.get().last_error


def test_the_oauth_server_is_checked_like_the_portal(
    trust_named_portal: SandboxPortal, alpha: Any, public_only: Settings, caplog: Any
) -> None:
    portal = trust_named_portal
    app = portal.add_oauth_app()
    conn = connection_set_oauth_app(
        client_id=app["client_id"],
        client_secret=app["client_secret"],
        token_url=f"https://portal.example.com:{portal.port}/oauth/token/",
    )
    names = Names({"portal.example.com": ["127.0.0.1"]})

    with (
        caplog.at_level(logging.WARNING, logger="crm.session"),
        pytest.raises(Bitrix24Error) as caught,
    ):
        oauth_token_request(conn, refresh_token=app["refresh_token"], resolver=names)

    assert caught.value.description == "Could not reach the OAuth server"
    assert portal.state.refresh_count == 0
    assert "loopback" in caplog.text
    assert RequestLog.objects.get(method="oauth.token").error_description == (
        "Could not reach the OAuth server"
    )

    public_only.SIMTRIX_ALLOW_PRIVATE_ADDRESSES = True
    data = oauth_token_request(conn, refresh_token=app["refresh_token"], resolver=names)
    assert data["access_token"]
    assert portal.state.refresh_count == 1


def test_a_plain_http_portal_works_only_when_the_operator_allows_it(
    alpha: Any, settings: Settings
) -> None:
    class Portal(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            body = b'{"result": {"ID": "1", "PATH": "%s"}, "time": {}}' % self.path.encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Portal)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        conn = connection_set_webhook(
            webhook_url=f"http://127.0.0.1:{server.server_address[1]}/rest/1/{SECRET}/"
        )
        settings.SIMTRIX_ALLOW_HTTP_PORTALS = False
        with pytest.raises(Bitrix24NotConfigured, match="must start with https://"):
            Bitrix24Session(conn)

        settings.SIMTRIX_ALLOW_HTTP_PORTALS = True
        profile: Any = Bitrix24Client(Bitrix24Session(conn)).run(b24.Req("profile"))
        assert profile == {"ID": "1", "PATH": f"/rest/1/{SECRET}/profile.json"}
    finally:
        server.shutdown()
        server.server_close()


def test_processes_started_by_the_tests_allow_private_addresses_too() -> None:
    # The Celery worker of the worker tests reaches the sandbox on 127.0.0.1 with this.
    env = {**os.environ, "DATABASE_URL": "postgres://nowhere.invalid/x"}
    code = "from django.conf import settings; print(settings.SIMTRIX_ALLOW_PRIVATE_ADDRESSES)"
    out = subprocess.run(
        [sys.executable, "-c", f"import django; django.setup(); {code}"],
        env={**env, "DJANGO_SETTINGS_MODULE": "simtrix.settings"},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert out.stdout.strip().splitlines()[-1] == "True"
    assert django_settings.SIMTRIX_ALLOW_PRIVATE_ADDRESSES is True


# ----------------------------------------------------------------------------------------------
# What a tenant admin is told: "could not reach the portal", whatever the port did


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_test_connection_tells_no_port_from_another(
    trust_named_portal: SandboxPortal, alpha: Any, caplog: Any
) -> None:
    """The probe's port scan: closed, open (Redis, PostgreSQL), TLS with another name, and a
    listener that never answers all read the same, in the admin and in the request log."""
    redis = urlsplit(django_settings.REDIS_URL)
    database = db_connection.settings_dict
    stalled = socket.socket()
    stalled.bind(("127.0.0.1", 0))
    stalled.listen(1)  # accepts TCP (the kernel does), never speaks TLS
    names = Names({"other.example.com": ["127.0.0.1"]})
    targets = {
        "closed": ("127.0.0.1", _closed_port(), None),
        "redis": (redis.hostname or "127.0.0.1", redis.port or 6379, None),
        "another certificate": ("other.example.com", trust_named_portal.port, names),
        "stalled": ("127.0.0.1", stalled.getsockname()[1], None),
    }
    if not str(database["HOST"] or "").startswith("/"):
        # The embedded PostgreSQL of `make test` listens on a Unix socket only: no port to try.
        targets["postgresql"] = (
            database["HOST"] or "127.0.0.1",
            int(database["PORT"] or 5432),
            None,
        )
    shown: dict[str, set[str]] = {}
    try:
        for name, (host, port, resolver) in targets.items():
            conn = connection_set_webhook(webhook_url=_hook(host, port))
            if resolver is None:
                check = connection_test()
                error = check.error
            else:  # a name only the test's resolver knows
                with pytest.raises(Bitrix24Error) as caught:
                    Bitrix24Client(Bitrix24Session(conn, resolver=resolver)).run(b24.scope())
                error = caught.value.display()
            row = RequestLog.objects.latest("id")
            conn.refresh_from_db()
            shown[name] = {error, row.error_code, row.error_description, conn.last_error}
    finally:
        stalled.close()

    expected = {
        "Could not reach the portal (CONNECTION_ERROR): the portal could not be reached",
        "CONNECTION_ERROR",
        "Could not reach the portal",
    }
    assert shown == dict.fromkeys(targets, expected)
    # Operators' logs keep the detail.
    assert "Connection refused" in caplog.text
    assert "SSL" in caplog.text
    assert "timed out" in caplog.text
    assert SECRET not in caplog.text
