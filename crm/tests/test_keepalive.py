"""Keep-alive: a process reuses its connections to a portal (crm.outbound), counted by the
sandbox (``rest_connections``: connections that carried a REST request since it was cleared)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bitrix24_sandbox import SandboxPortal
from crm import client as b24
from crm import outbound
from crm.client import Bitrix24Client
from crm.errors import Bitrix24Error
from crm.limiter import PortalLimiter
from crm.models import Bitrix24Connection
from crm.outbound import keep_alive_close_all, outbound_request
from crm.session import Bitrix24Session
from crm.tests.conftest import top_level


def _forget_connections(portal: SandboxPortal) -> None:
    keep_alive_close_all()
    with portal.state.lock:
        portal.state.rest_connection_ids.clear()


def _rest_connections(portal: SandboxPortal) -> int:
    return int(portal.control.state()["rest_connections"])


def _lookup() -> None:
    assert Bitrix24Client().run(b24.entity_get("CONTACT", 12))["NAME"] == "Anna"


@pytest.fixture
def other_portal(portal: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A second portal (its own address and CA), trusted alongside the first."""
    with SandboxPortal(seed=True, drain_per_second=None, bucket_size=None) as other:
        bundle = tmp_path / "ca-bundle.pem"
        bundle.write_text(
            Path(portal.ca_cert_path).read_text() + Path(other.ca_cert_path).read_text()
        )
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(bundle))
        yield other
        keep_alive_close_all()
        PortalLimiter(other.domain, 2.0, 50).reset()


def test_requests_to_one_portal_share_a_connection_and_another_portal_has_its_own(
    portal: Any, other_portal: Any
) -> None:
    _forget_connections(portal)

    for _ in range(8):
        _lookup()

    assert len(top_level(portal, "crm.contact.get")) == 8
    assert _rest_connections(portal) == 1

    webhook = Bitrix24Connection.objects.get().webhook_url
    Bitrix24Connection.objects.update(webhook_url=other_portal.webhook_url(1))
    for _ in range(3):
        _lookup()
    assert _rest_connections(other_portal) == 1

    Bitrix24Connection.objects.update(webhook_url=webhook)
    _lookup()
    assert _rest_connections(portal) == 1  # the first portal's connection was kept meanwhile
    assert len(top_level(portal, "crm.contact.get")) == 9


def test_without_keep_alive_every_request_opens_a_connection(portal: Any, settings: Any) -> None:
    settings.SIMTRIX_BITRIX24_KEEPALIVE = False
    _forget_connections(portal)

    for _ in range(4):
        _lookup()

    assert _rest_connections(portal) == 4


def test_an_idle_connection_is_recycled(portal: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(outbound, "KEEPALIVE_IDLE", -1.0)  # every connection counts as idle
    _forget_connections(portal)

    for _ in range(3):
        _lookup()

    assert _rest_connections(portal) == 3


def test_a_broken_connection_is_dropped_and_the_next_request_connects_again(portal: Any) -> None:
    _forget_connections(portal)
    _lookup()
    portal.set_fault("down", mode="reset", method="crm.contact.get")
    with pytest.raises(Bitrix24Error):
        Bitrix24Client().run(b24.entity_get("CONTACT", 12), max_attempts=1)
    portal.clear_faults()

    _lookup()

    assert _rest_connections(portal) == 2


def test_a_stricter_address_policy_does_not_reuse_a_connection(portal: Any, settings: Any) -> None:
    _forget_connections(portal)
    session = Bitrix24Session.for_tenant()  # the address as written was checked: it may go on
    session.call("crm.contact.get", {"id": 12})
    settings.SIMTRIX_ALLOW_PRIVATE_ADDRESSES = False

    with pytest.raises(Bitrix24Error) as caught:
        session.call("crm.contact.get", {"id": 12}, max_attempts=1)

    assert caught.value.code == "CONNECTION_ERROR"
    assert len(top_level(portal, "crm.contact.get")) == 1  # the second never reached it


def test_threads_of_a_process_share_the_portals_connections(portal: Any) -> None:
    _forget_connections(portal)
    url = portal.webhook_url(1) + "crm.contact.get"
    statuses: list[int] = []

    def work() -> None:
        for _ in range(5):
            response = outbound_request("POST", url, json={"id": 12}, timeout=10, keep_alive=True)
            statuses.append(response.status_code)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert statuses == [200] * 20
    assert 1 <= _rest_connections(portal) <= outbound.KEEPALIVE_POOL_SIZE
