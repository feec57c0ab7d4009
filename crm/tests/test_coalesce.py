"""Many threads' requests to one portal carried by shared batches (crm.coalesce), against the
sandbox over HTTPS, with committed rows (each thread has its own database connection)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection
from django_tenants.utils import schema_context

from crm import client as b24
from crm.client import Bitrix24Client, Req
from crm.coalesce import Coalescer, crm_portal_free_slots
from crm.context import crm_call_context, crm_live
from crm.errors import Bitrix24Error, Bitrix24TransientError
from crm.limiter import PortalLimiter, method_block_key
from crm.models import Bitrix24Connection, RequestLog
from crm.redis_client import get_redis
from crm.session import Bitrix24Session
from crm.tests.conftest import top_level

Work = Callable[[], Any]


def _together(coalescer: Coalescer, works: list[Work]) -> list[Any]:
    """Each work in its own thread, all members of the coalescer from the start; their results
    (or the error each raised)."""
    results: list[Any] = [None] * len(works)
    joined = threading.Barrier(len(works))

    def thread(index: int) -> None:
        try:
            with schema_context("alpha"), coalescer.member(), crm_call_context(index + 1):
                joined.wait()
                results[index] = works[index]()
        except Bitrix24Error as exc:
            results[index] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=thread, args=(i,)) for i in range(len(works))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return results


def _contact(contact_id: int) -> Work:
    return lambda: Bitrix24Client().run(b24.entity_get("CONTACT", contact_id))["NAME"]


def _chained() -> Any:
    """A request that is itself a batch, its second command reading the first's result."""
    results = Bitrix24Client().run_batch(
        {
            "first": b24.entity_get("CONTACT", 12),
            "second": Req("crm.contact.get", {"id": b24.batch_reference("first", "ID")}),
        }
    )
    return (results["first"]["NAME"], results["second"]["NAME"])


@pytest.fixture
def shared(alpha_portal: Any, committed_db: Callable[[Callable[[], None]], None]) -> Any:
    committed_db(lambda: _forget(alpha_portal))
    alpha_portal.control.clear_requests()
    return alpha_portal


def _forget(portal: Any) -> None:
    with schema_context("alpha"):
        RequestLog.objects.all().delete()
    portal.clear_faults()
    PortalLimiter(portal.domain, 2.0, 50).reset()


def test_the_requests_of_many_threads_ride_in_one_batch_each_with_its_own_answer(
    shared: Any,
) -> None:
    coalescer = Coalescer(shared.domain)
    works = [_contact(12), _contact(14), _contact(999_999), _chained, _contact(15)]

    results = _together(coalescer, works)

    assert [results[0], results[1], results[4]] == ["Anna", "Piotr", "Katarzyna"]
    assert isinstance(results[2], Bitrix24Error)  # that one command's error, only its own
    assert not results[2].transient
    assert results[3] == ("Anna", "Anna")  # its reference renamed with its commands
    sent = top_level(shared)
    assert [r["method"] for r in sent] == ["batch"]  # six commands, one request
    assert coalescer.batches == 1
    assert coalescer.commands == 6
    with schema_context("alpha"):
        parent = RequestLog.objects.get(parent__isnull=True)
        assert parent.method == "batch"
        assert parent.call_id is None
        rows = RequestLog.objects.filter(parent=parent)
        assert sorted(r.call_id or 0 for r in rows) == [1, 2, 3, 4, 4, 5]  # each one its call
        failed = rows.get(call_id=3)
        assert failed.error_code
        assert failed.error_description == results[2].description
        assert not rows.exclude(call_id=3).exclude(error_code="").exists()


def test_the_same_read_asked_by_several_threads_is_sent_once_and_answers_them_all(
    shared: Any,
) -> None:
    coalescer = Coalescer(shared.domain)
    marker = f"coalesce-{uuid.uuid4().hex[:8]}"

    def comment() -> Any:
        return Bitrix24Client().run(b24.timeline_comment_add("contact", 12, marker))

    results = _together(
        coalescer, [_contact(12), _chained, _contact(12), _chained, comment, comment]
    )

    assert results[:4] == ["Anna", ("Anna", "Anna"), "Anna", ("Anna", "Anna")]
    assert isinstance(results[4], int)
    assert isinstance(results[5], int)
    assert results[4] != results[5]  # a write is sent for itself, every time
    assert coalescer.batches == 1
    assert coalescer.commands == 5  # one get, the chained pair once, two comments
    assert coalescer.twins == 2
    assert len([c for c in shared.control.comments() if c.get("COMMENT") == marker]) == 2


def test_a_batch_whose_answer_is_lost_is_retried_by_the_idempotent_requests_only(
    shared: Any,
) -> None:
    shared.set_fault("fail_next", count=1, method="batch")  # a 500: it may have executed
    coalescer = Coalescer(shared.domain)
    marker = f"coalesce-{uuid.uuid4().hex[:8]}"

    def comment() -> Any:
        req = b24.timeline_comment_add("contact", 12, marker)
        return Bitrix24Client().run(req)

    results = _together(coalescer, [_contact(12), comment])

    assert results[0] == "Anna"  # a read: sent again, in the next batch
    assert isinstance(results[1], Bitrix24Error)
    assert results[1].ambiguous
    assert [r["status"] for r in top_level(shared)] == [500, 200]
    assert not [c for c in shared.control.comments() if c.get("COMMENT") == marker]


def test_a_method_bitrix24_blocks_for_now_is_left_out_of_the_shared_batch(shared: Any) -> None:
    # As the session records a 429 OPERATION_TIME_LIMIT: the method is blocked for a minute.
    get_redis().set(
        method_block_key(shared.domain, "crm.timeline.comment.add"), time.time() + 60, px=65_000
    )
    coalescer = Coalescer(shared.domain)

    def comment() -> Any:
        return Bitrix24Client().run(b24.timeline_comment_add("contact", 12, "blocked"))

    results = _together(coalescer, [_contact(12), comment])

    assert results[0] == "Anna"
    assert isinstance(results[1], Bitrix24Error)
    assert results[1].code == "OPERATION_TIME_LIMIT"  # its run retries later, as alone
    sent = [r for r in shared.state.query_requests() if r.get("method") != "oauth.token"]
    assert "crm.timeline.comment.add" not in {r["method"] for r in sent}


def test_an_unexpected_failure_of_the_shared_batch_leaves_no_request_waiting(
    shared: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the request log's table is gone")

    monkeypatch.setattr(Bitrix24Session, "_requests", broken)
    coalescer = Coalescer(shared.domain)

    results = _together(coalescer, [_contact(12), _contact(14)])

    assert [type(r) for r in results] == [Bitrix24TransientError] * 2
    assert all(r.ambiguous and r.code == "BATCH_FAILED" for r in results)


def test_what_a_ringing_phone_waits_for_is_never_held_back(shared: Any) -> None:
    coalescer = Coalescer(shared.domain, window=5.0)
    session_domain = shared.domain

    def live() -> Any:
        with crm_live():
            return _contact(12)()

    def with_deadline() -> Any:
        client = Bitrix24Client()
        assert client.session.domain == session_domain
        return client.run(b24.entity_get("CONTACT", 12), deadline=_soon())["NAME"]

    # A third member stays busy: a coalesced request would wait the whole window for it.
    busy = threading.Event()

    def idle() -> Any:
        busy.wait(3)
        return "idle"

    results = _together(coalescer, [live, with_deadline, idle])
    busy.set()

    assert results[:2] == ["Anna", "Anna"]
    assert [r["method"] for r in top_level(shared)] == ["crm.contact.get", "crm.contact.get"]
    assert coalescer.batches == 0


def _soon() -> float:
    return time.monotonic() + 5


def test_a_crowded_portal_has_more_due_work_than_free_slots_and_the_ringing_still_go_first(
    shared: Any,
) -> None:
    with schema_context("alpha"):
        Bitrix24Connection.objects.update(rate_limit_per_second=1.0, rate_limit_burst=10)
        connection_row = Bitrix24Connection.objects.get()
        limiter = PortalLimiter(connection_row.portal_domain, *connection_row.rate_limit)
        limiter.reset()
        free = crm_portal_free_slots()
        assert free == limiter.effective_burst - limiter.priority_slots
        assert not limiter.crowded(due=free)
        assert limiter.crowded(due=free + 1)  # more due work than goes through at once
        background = 0
        while limiter.acquire(max_wait=0) is not None:
            background += 1
        assert limiter.crowded()
        assert crm_portal_free_slots() == 0
        # The backlog stops short of the burst: the rest is kept for ringing phones.
        assert background == limiter.effective_burst - limiter.priority_slots
        assert limiter.priority_slots >= 1
        for _ in range(limiter.priority_slots):
            slot = limiter.acquire(max_wait=0, priority=True)
            assert slot is not None
            assert slot.wait == 0
        assert limiter.acquire(max_wait=0, priority=True) is None  # now the bucket is full
        limiter.reset()
        Bitrix24Connection.objects.update(rate_limit_per_second=None, rate_limit_burst=None)
