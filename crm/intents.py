"""Never send a non-idempotent Bitrix24 request twice for one intent.

A caller names each intended write with an intent key (e.g. ``"call:42:lead"``). The key is a
unique row in ``crm.Intent``:

- ``done``: the stored result is returned and nothing is sent;
- ``sending`` (claimed by another worker less than ``CLAIM_SECONDS`` ago): the caller gets
  ``Bitrix24IntentInProgress`` (transient: its task retries later);
- ``new`` / ``failed``: the previous attempt certainly did not execute (it was refused, or never
  left), so it is sent;
- ``ambiguous`` (or a claim that expired, i.e. a worker died mid-request): the request may have
  been executed without us hearing the answer. Before sending again, ``find_existing`` asks the
  portal for the object the first attempt would have created. Each method's docstring in
  ``crm.services`` says how that search works (an origin marker on CRM objects and activities,
  Bitrix24's own 30-minute de-duplication for ``telephony.externalCall.register``, ...).

The claim is a conditional ``UPDATE`` that must return 1, so two workers never send the same
intent at once. Keys live in the tenant's schema. Call these services outside
``transaction.atomic`` (as Celery tasks do): a rolled-back transaction would forget that an
intent was done.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from django.db.models import F, Q
from django.utils import timezone

from common.sql import instance_insert
from crm.errors import Bitrix24Error, Bitrix24IntentInProgress, Bitrix24PermanentError
from crm.models import Intent

CLAIM_SECONDS = 120
SEND_ATTEMPTS = 3

Json = Any


def intent_run(
    *,
    key: str,
    method: str,
    send: Callable[[], Json],
    find_existing: Callable[[], Json | None] | None = None,
    resend_window: timedelta | None = None,
) -> Json:
    """The intent's result: stored, found on the portal, or obtained by sending ``send()``.

    ``resend_window``: after an ambiguous attempt, resending is only safe for this long after
    the intent was first sent (Bitrix24's de-duplication window); later it fails permanently.
    """
    claim = intent_claim(key=key, method=method)
    if isinstance(claim, Done):
        return claim.result
    intent, uncertain = claim

    for attempt in range(1, SEND_ATTEMPTS + 1):
        if uncertain:
            if resend_window is not None and timezone.now() - intent.created_at > resend_window:
                error = Bitrix24PermanentError(
                    f"{method} may have been executed more than "
                    f"{int(resend_window.total_seconds() // 60)} min ago; it is not resent",
                    code="INTENT_EXPIRED",
                    method=method,
                )
                _set(intent, Intent.Status.FAILED, error=error.display())
                raise error
            if find_existing is not None:
                found = find_existing()
                if found is not None:
                    _set(intent, Intent.Status.DONE, result=found)
                    return found
        try:
            result = send()
        except Bitrix24Error as exc:
            if exc.ambiguous and attempt < SEND_ATTEMPTS:
                uncertain = True
                # Recorded at once, so a worker that takes over after a crash searches first.
                _set(intent, Intent.Status.AMBIGUOUS, error=exc.display(), keep_claim=True)
                time.sleep(0.2 * attempt + random.uniform(0, 0.2))
                continue
            intent_finish(intent, error=exc)
            raise
        _set(intent, Intent.Status.DONE, result=result)
        return result
    raise AssertionError("unreachable")  # pragma: no cover


class Done:
    """An intent that was already done, with its stored result."""

    def __init__(self, result: Json) -> None:
        self.result = result


def intent_claim(*, key: str, method: str) -> Done | tuple[Intent, bool]:
    """Claims the intent for this worker: ``Done`` or (intent, whether it may have executed)."""
    if not key:
        raise ValueError("A non-idempotent Bitrix24 request needs an intent key")
    if len(key) > 200:
        raise ValueError("Intent keys are at most 200 characters")
    now = timezone.now()
    claim_until = now + timedelta(seconds=CLAIM_SECONDS)
    intent = Intent(
        key=key, method=method, status=Intent.Status.SENDING, claimed_until=claim_until, attempts=1
    )
    # The usual case, a first try, claimed in one statement; a row that exists is read.
    if instance_insert(intent, unique=("key",)):
        return intent, False
    intent = Intent.objects.get(key=key)
    if intent.status == Intent.Status.DONE:
        return Done(intent.result)
    free = Q(claimed_until__isnull=True) | Q(claimed_until__lt=now)
    claimed = (
        Intent.objects.filter(pk=intent.pk)
        .exclude(status=Intent.Status.DONE)
        .filter(free)
        .update(
            status=Intent.Status.SENDING,
            claimed_until=claim_until,
            attempts=F("attempts") + 1,
            updated_at=now,
        )
    )
    if claimed != 1:
        intent.refresh_from_db()
        if intent.status == Intent.Status.DONE:
            return Done(intent.result)
        raise Bitrix24IntentInProgress(
            f"{intent.method} for intent {intent.key!r} is being sent by another worker",
            code="INTENT_IN_PROGRESS",
            method=intent.method,
            retry_after=5.0,
        )
    # SENDING with an expired claim: a worker died after sending, before recording the answer.
    uncertain = intent.status in (Intent.Status.AMBIGUOUS, Intent.Status.SENDING)
    intent.status = Intent.Status.SENDING
    return intent, uncertain


def intent_finish(
    intent: Intent, *, result: Json = None, error: Bitrix24Error | None = None
) -> None:
    """Records the outcome of a claimed intent."""
    if error is None:
        _set(intent, Intent.Status.DONE, result=result)
    elif error.ambiguous:
        _set(intent, Intent.Status.AMBIGUOUS, error=error.display())
    else:
        # Refused or never sent: nothing was created, a later retry may send it again.
        status = Intent.Status.NEW if error.transient else Intent.Status.FAILED
        _set(intent, status, error=error.display())


def intent_mark_found(intent: Intent, result: Json) -> None:
    _set(intent, Intent.Status.DONE, result=result)


def _set(
    intent: Intent,
    status: str,
    *,
    result: Json = None,
    error: str = "",
    keep_claim: bool = False,
) -> None:
    update: dict[str, Any] = {"status": status, "error": error[:2000], "updated_at": timezone.now()}
    if status == Intent.Status.DONE:
        update["result"] = result
    if not keep_claim:
        update["claimed_until"] = None
    Intent.objects.filter(pk=intent.pk).update(**update)
    for name, value in update.items():
        setattr(intent, name, value)
