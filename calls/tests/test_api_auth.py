"""Wrong device tokens are throttled per client address; the address behind trusted proxies."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.test import Client, RequestFactory
from django.test.utils import CaptureQueriesContext
from pytest_django import Settings

from calls.api.auth import TOKEN_FAILURES_PER_WINDOW, device_token_failures_forget
from calls.models import Device
from common.http import client_ip


@pytest.fixture(autouse=True)
def _still_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """Failures count in fixed one-minute windows: one test's requests must not straddle two."""
    monkeypatch.setattr("calls.api.auth._clock", lambda: 1_800_000_030.0)  # 30 s into one


def _ping(token: str, **extra: Any) -> Any:
    client = Client(HTTP_HOST="alpha.localhost", HTTP_AUTHORIZATION=f"Bearer {token}", **extra)
    return client.get("/api/bridge/v1/ping/")


def _exhaust(**extra: Any) -> None:
    for _ in range(TOKEN_FAILURES_PER_WINDOW):
        assert _ping("stx_wrong", **extra).status_code == 401


# --- Throttling wrong tokens ------------------------------------------------------------------


def test_wrong_tokens_from_one_address_get_429_with_retry_after(device: Device) -> None:
    _exhaust()
    response = _ping("stx_wrong")
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "30"  # the rest of the still clock's minute
    assert "wrong device tokens" in response.json()["detail"]


def test_the_throttled_address_is_refused_before_any_token_lookup(
    device_and_token: tuple[Device, str],
) -> None:
    """Even a right token waits: the check runs before the database is asked about it."""
    _exhaust()
    with CaptureQueriesContext(connection) as queries:
        response = _ping(device_and_token[1])
    assert response.status_code == 429
    assert not [q for q in queries.captured_queries if "token_hash" in q["sql"]]


def test_other_addresses_are_not_affected(device_and_token: tuple[Device, str]) -> None:
    _exhaust()
    assert _ping(device_and_token[1], REMOTE_ADDR="10.0.0.7").status_code == 200
    assert _ping("stx_wrong", REMOTE_ADDR="10.0.0.7").status_code == 401


def test_successful_requests_are_not_counted(device_and_token: tuple[Device, str]) -> None:
    for _ in range(TOKEN_FAILURES_PER_WINDOW * 2):
        assert _ping(device_and_token[1]).status_code == 200
    _exhaust()  # all 20 failures still answer 401: the successes counted nothing
    assert _ping("stx_wrong").status_code == 429


@pytest.mark.parametrize("header", ["Token stx_abc", "Bearer", "Bearer a b", "Bearer not-stx"])
def test_every_kind_of_wrong_token_counts(device: Device, header: str) -> None:
    client = Client(HTTP_HOST="alpha.localhost", HTTP_AUTHORIZATION=header)
    for _ in range(TOKEN_FAILURES_PER_WINDOW):
        assert client.get("/api/bridge/v1/ping/").status_code == 401
    assert client.get("/api/bridge/v1/ping/").status_code == 429


def test_requests_without_a_token_are_not_counted(device: Device) -> None:
    anonymous = Client(HTTP_HOST="alpha.localhost")
    for _ in range(TOKEN_FAILURES_PER_WINDOW + 5):
        assert anonymous.get("/api/bridge/v1/ping/").status_code == 401
    assert _ping("stx_wrong").status_code == 401


def test_one_address_guessing_on_every_tenant_is_one_count(
    device_and_token: tuple[Device, str], beta: Any
) -> None:
    beta_client = Client(HTTP_HOST="beta.localhost", HTTP_AUTHORIZATION="Bearer stx_wrong")
    for _ in range(TOKEN_FAILURES_PER_WINDOW):
        assert beta_client.get("/api/bridge/v1/ping/").status_code == 401
    assert _ping(device_and_token[1]).status_code == 429


def test_forgetting_an_address_lifts_its_wait(device_and_token: tuple[Device, str]) -> None:
    _exhaust()
    _exhaust(REMOTE_ADDR="10.0.0.7")
    assert device_token_failures_forget(address="127.0.0.1") == 1
    assert _ping(device_and_token[1]).status_code == 200
    assert _ping(device_and_token[1], REMOTE_ADDR="10.0.0.7").status_code == 429


def test_an_ipv6_client_is_throttled_by_its_64(device_and_token: tuple[Device, str]) -> None:
    """A /64 holds 2**64 addresses a client may pick from: each must not be a fresh count."""
    _exhaust(REMOTE_ADDR="2001:db8:1:2::1")
    assert _ping("stx_wrong", REMOTE_ADDR="2001:db8:1:2:aaaa::7").status_code == 429
    assert _ping(device_and_token[1], REMOTE_ADDR="2001:db8:1:2::2").status_code == 429
    # The next /64 is another subscriber, and IPv4 clients are not concerned.
    assert _ping(device_and_token[1], REMOTE_ADDR="2001:db8:1:3::1").status_code == 200
    assert _ping(device_and_token[1]).status_code == 200

    assert device_token_failures_forget(address="2001:db8:1:2::9") == 1  # any address of it
    assert _ping(device_and_token[1], REMOTE_ADDR="2001:db8:1:2::1").status_code == 200


def test_an_ipv4_mapped_client_is_counted_as_its_ipv4_address(
    device_and_token: tuple[Device, str],
) -> None:
    _exhaust(REMOTE_ADDR="::ffff:198.51.100.4")
    assert _ping(device_and_token[1], REMOTE_ADDR="198.51.100.4").status_code == 429


def test_behind_a_proxy_each_client_is_counted_by_its_own_address(
    device_and_token: tuple[Device, str], settings: Settings
) -> None:
    settings.SIMTRIX_TRUSTED_PROXY_COUNT = 1
    _exhaust(HTTP_X_FORWARDED_FOR="203.0.113.9")
    assert _ping(device_and_token[1], HTTP_X_FORWARDED_FOR="203.0.113.9").status_code == 429
    # The same proxy (REMOTE_ADDR 127.0.0.1) relays another office: not blocked.
    assert _ping(device_and_token[1], HTTP_X_FORWARDED_FOR="198.51.100.4").status_code == 200
    # A forged entry left of the proxy's own does not change who is counted.
    forged = "198.51.100.4, 203.0.113.9"
    assert _ping(device_and_token[1], HTTP_X_FORWARDED_FOR=forged).status_code == 429


# --- client_ip --------------------------------------------------------------------------------


def _request(remote: str = "192.0.2.1", forwarded: str | None = None) -> Any:
    request = RequestFactory().get("/", REMOTE_ADDR=remote)
    if forwarded is not None:
        request.META["HTTP_X_FORWARDED_FOR"] = forwarded
    return request


def test_without_proxies_the_header_is_ignored(settings: Settings) -> None:
    settings.SIMTRIX_TRUSTED_PROXY_COUNT = 0
    assert client_ip(_request(forwarded="203.0.113.9")) == "192.0.2.1"


@pytest.mark.parametrize(
    ("proxies", "forwarded", "expected"),
    [
        (1, "203.0.113.9", "203.0.113.9"),
        (1, "10.9.9.9, 203.0.113.9", "203.0.113.9"),  # the client wrote the first entry
        (2, "10.9.9.9, 203.0.113.9, 10.0.0.2", "203.0.113.9"),
        (1, "2001:db8::1", "2001:db8::"),  # an IPv6 client: its /64
        (1, "::ffff:203.0.113.9", "203.0.113.9"),
        (1, " 203.0.113.9 ", "203.0.113.9"),
        (2, "203.0.113.9", "192.0.2.1"),  # fewer entries than proxies: a proxy was bypassed
        (1, "", "192.0.2.1"),
        (1, "unknown", "192.0.2.1"),
        (1, "203.0.113.9:4711", "192.0.2.1"),
    ],
)
def test_behind_proxies_the_nth_entry_from_the_right(
    settings: Settings, proxies: int, forwarded: str, expected: str
) -> None:
    settings.SIMTRIX_TRUSTED_PROXY_COUNT = proxies
    assert client_ip(_request(forwarded=forwarded)) == expected


@pytest.mark.parametrize(
    ("remote", "expected"),
    [
        ("192.0.2.1", "192.0.2.1"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::"),
        ("2001:DB8:1:2::FFFF", "2001:db8:1:2::"),
        ("fe80::1%eth0", "fe80::"),
        ("::ffff:192.0.2.1", "192.0.2.1"),
        ("", ""),
    ],
)
def test_the_remote_address_is_counted_by_subscriber(
    settings: Settings, remote: str, expected: str
) -> None:
    settings.SIMTRIX_TRUSTED_PROXY_COUNT = 0
    assert client_ip(_request(remote=remote)) == expected


def test_without_the_header_behind_a_proxy_it_is_the_remote_address(settings: Settings) -> None:
    settings.SIMTRIX_TRUSTED_PROXY_COUNT = 1
    assert client_ip(_request()) == "192.0.2.1"


def test_axes_is_pointed_at_the_same_function(settings: Settings) -> None:
    assert settings.AXES_CLIENT_IP_CALLABLE == "common.http.client_ip"
