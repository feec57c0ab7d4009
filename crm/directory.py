"""The portal's users, departments, pipelines, stages, lead statuses, sources and CRM fields,
mirrored.

``directory_sync`` fetches everything with as few requests as the portal allows: one ``batch``
with the first page of each list and the field lists of contacts, companies, leads and deals,
then one more batch with every remaining page (the first answers tell how many rows there
are). Rows that disappeared from the portal are kept and marked ``removed``, so a setting can
tell that the user, stage or field it names no longer exists. Once a sync is committed the
``crm.signals.directory_synced`` signal tells the settings that name such rows to check them.

``directory_timeman_refresh`` reads users' work-day status (``timeman.status``), which
``user.get`` does not return, for routing by availability.

A portal that did not grant an optional scope loses only what needs it: without ``department``
the departments are known by the ids users carry ("Department #7") and keep the names an
earlier sync read; without ``timeman`` no work-day status is asked for. The sync also reads
the granted scopes, so the connection's list stays current without a "Test connection".
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import transaction
from django.utils import timezone

from crm import client as b24
from crm.cache import once_per
from crm.client import Bitrix24Client, Req
from crm.domain import DirectorySyncResult
from crm.errors import Bitrix24Error, Bitrix24NotConfigured
from crm.mapping import (
    ENTITY_TYPES,
    as_int,
    b24_type,
    stage_category,
    stage_semantics,
    user_name,
)
from crm.models import (
    Bitrix24Connection,
    Bitrix24User,
    Department,
    EntityField,
    LeadSource,
    LeadStatus,
    Pipeline,
    Stage,
)
from crm.phones import InvalidPhoneNumber, phone_to_e164
from crm.signals import directory_synced
from tenants.context import tenant_country
from tenants.memo import tenant_memo_forget

logger = logging.getLogger(__name__)

PAGE = 50
_LISTS: dict[str, Any] = {
    "users": lambda start: b24.user_get(start=start),
    "departments": lambda start: b24.department_get(start=start),
    "categories": lambda start: b24.category_list(entity_type_id=2, start=start),
    "statuses": lambda start: b24.status_list(start=start),
}
USER_PHONE_FIELDS = ("WORK_PHONE", "PERSONAL_MOBILE", "PERSONAL_PHONE")
# Field lists travel in the first batch; the key of each is "fields:<domain type>".
_FIELDS_PREFIX = "fields:"
# Lists a portal may refuse for want of an optional scope (crm.connections.OPTIONAL_SCOPES).
_OPTIONAL_LISTS = {"departments": "department"}
_SCOPES = "scopes"

# The name under which other apps memoise what they read of the directory (tenants.memo);
# forgotten whenever a sync writes it.
DIRECTORY_MEMO = "crm.directory"


def directory_fetch(client: Bitrix24Client) -> tuple[dict[str, Any], int]:
    """Every row of every directory list, and how many HTTP requests that took.

    Field lists are under ``"fields"`` by domain entity type; a type whose list could not be
    read is absent (its fields are then left as they were, not marked removed). A list refused
    for want of an optional scope is ``None`` and its scope is in ``"missing_scopes"``;
    ``"scopes"`` is what the portal granted (``None`` if it would not say).
    """
    field_reqs = {
        f"{_FIELDS_PREFIX}{entity_type}": b24.entity_fields(b24_type(entity_type))
        for entity_type in ENTITY_TYPES
    }
    first = client.run_batch(
        {
            **{name: build(0) for name, build in _LISTS.items()},
            **field_reqs,
            _SCOPES: b24.scope(),
        }
    )
    requests = 1
    rows: dict[str, Any] = {"fields": {}, "missing_scopes": [], _SCOPES: None}
    more: dict[str, Req[Any]] = {}
    for name, value in first.items():
        _first_answer(rows, name, value)
    totals = client.last_totals
    for name, build in _LISTS.items():
        if rows[name] is None:
            continue
        for start in range(PAGE, totals.get(name, 0), PAGE):
            more[f"{name}:{start}"] = build(start)
    keys = list(more)
    for offset in range(0, len(keys), 50):
        chunk = {k: more[k] for k in keys[offset : offset + 50]}
        page = client.run_batch(chunk)
        requests += 1
        for key, value in page.items():
            if isinstance(value, Bitrix24Error):
                raise value
            rows[key.split(":", 1)[0]].extend(value)
    return rows, requests


def _first_answer(rows: dict[str, Any], name: str, value: Any) -> None:
    """One command of the first batch into ``rows`` (see directory_fetch)."""
    if name.startswith(_FIELDS_PREFIX):
        if isinstance(value, Bitrix24Error):
            logger.warning("Field list %s not synced: %s", name, value)
        else:
            rows["fields"][name.removeprefix(_FIELDS_PREFIX)] = value
    elif name == _SCOPES:
        rows[_SCOPES] = None if isinstance(value, Bitrix24Error) else sorted(value)
    elif not isinstance(value, Bitrix24Error):
        rows[name] = list(value)
    elif name in _OPTIONAL_LISTS and value.code.upper() == "INSUFFICIENT_SCOPE":
        logger.info("Directory: %s not read (no %s scope)", name, _OPTIONAL_LISTS[name])
        rows[name] = None
        rows["missing_scopes"].append(_OPTIONAL_LISTS[name])
    else:
        raise value


def directory_sync(client: Bitrix24Client | None = None) -> DirectorySyncResult:
    client = client or Bitrix24Client()
    data, requests = directory_fetch(client)
    now = timezone.now()
    country = tenant_country()
    removed: dict[str, int] = {}
    with transaction.atomic():
        users = [_user(row, country, now) for row in data["users"] if as_int(row.get("ID"))]
        # user.get does not return the work-day status (timeman.status does, see
        # directory_timeman_refresh): keep what that found unless this portal sent it.
        keep = () if any("TIMEMAN_STATUS" in row for row in data["users"]) else ("timeman_status",)
        removed["users"] = _upsert(Bitrix24User, users, ["id"], now, keep=keep)
        if data["departments"] is None:
            departments = _departments_of_users(users, now)
            removed["departments"] = 0
        else:
            departments = [
                _department(r, now) for r in data["departments"] if as_int(r.get("ID")) is not None
            ]
            removed["departments"] = _upsert(Department, departments, ["id"], now)
        pipelines = [_pipeline(r, now) for r in data["categories"]]
        if not any(p.id == 0 for p in pipelines):
            # The default pipeline always exists; crm.category.list may omit it on old portals.
            pipelines.append(Pipeline(id=0, name="General", sort=0, is_default=True, seen_at=now))
        removed["pipelines"] = _upsert(Pipeline, pipelines, ["id"], now)
        known_pipelines = {p.id for p in pipelines}
        stages, statuses, sources = [], [], []
        for row in data["statuses"]:
            entity_id = str(row.get("ENTITY_ID") or "")
            category = stage_category(entity_id)
            if category is not None and category in known_pipelines:
                stages.append(
                    Stage(
                        stage_id=str(row["STATUS_ID"]),
                        pipeline_id=category,
                        name=str(row.get("NAME") or row["STATUS_ID"]),
                        semantics=stage_semantics(row),
                        sort=as_int(row.get("SORT")) or 0,
                        seen_at=now,
                        removed=False,
                    )
                )
            elif entity_id == "STATUS":
                statuses.append(
                    LeadStatus(
                        status_id=str(row["STATUS_ID"]),
                        name=str(row.get("NAME") or row["STATUS_ID"]),
                        semantics=stage_semantics(row),
                        sort=as_int(row.get("SORT")) or 0,
                        seen_at=now,
                        removed=False,
                    )
                )
            elif entity_id == "SOURCE":
                sources.append(
                    LeadSource(
                        source_id=str(row["STATUS_ID"]),
                        name=str(row.get("NAME") or row["STATUS_ID"]),
                        sort=as_int(row.get("SORT")) or 0,
                        seen_at=now,
                        removed=False,
                    )
                )
        removed["stages"] = _upsert(Stage, stages, ["stage_id"], now)
        removed["lead_statuses"] = _upsert(LeadStatus, statuses, ["status_id"], now)
        removed["lead_sources"] = _upsert(LeadSource, sources, ["source_id"], now)
        fields = [
            _entity_field(entity_type, name, info, now)
            for entity_type, described in data["fields"].items()
            for name, info in described.items()
        ]
        removed["fields"] = _upsert(
            EntityField,
            fields,
            ["entity_type", "name"],
            now,
            scope={"entity_type__in": list(data["fields"])},
        )
        synced: dict[str, Any] = {"directory_synced_at": now}
        if data[_SCOPES] is not None:
            synced["scopes"] = data[_SCOPES]
        Bitrix24Connection.objects.filter(singleton=1).update(**synced)

    # After the commit: receivers read the new directory (and may write their own rows).
    tenant_memo_forget(DIRECTORY_MEMO)
    directory_synced.send(sender=directory_sync, removed=removed)
    return DirectorySyncResult(
        users=len(users),
        departments=len(departments),
        pipelines=len(pipelines),
        stages=len(stages),
        lead_statuses=len(statuses),
        lead_sources=len(sources),
        removed=removed,
        requests=requests,
        fields=len(fields),
        missing_scopes=data["missing_scopes"],
    )


def _upsert(
    model: Any,
    rows: list[Any],
    unique: list[str],
    now: Any,
    *,
    keep: tuple[str, ...] = (),
    scope: dict[str, Any] | None = None,
) -> int:
    """Insert or update ``rows``; mark every row not seen in this sync removed.

    ``keep``: columns an existing row keeps (this sync does not know them); ``scope``: only
    rows matching it can be marked removed (the part of the table this sync did read).
    """
    fields = [
        f.name
        for f in model._meta.concrete_fields
        if not f.primary_key
        and f.name not in unique
        and f.name != "id"
        and f.name not in keep
        and f.editable
    ]
    # Two rows with one unique key would make the upsert fail; the last one wins.
    by_key = {tuple(getattr(r, u) for u in unique): r for r in rows}
    if by_key:
        model.objects.bulk_create(
            list(by_key.values()),
            update_conflicts=True,
            unique_fields=unique,
            update_fields=[f if f != "pipeline" else "pipeline_id" for f in fields],
        )
    stale = model.objects.filter(seen_at__lt=now, removed=False)
    return stale.filter(**(scope or {})).update(removed=True)


def _user(row: dict[str, Any], country: str, now: Any) -> Bitrix24User:
    phones = []
    for kind in USER_PHONE_FIELDS:
        value = str(row.get(kind) or "").strip()
        if not value:
            continue
        try:
            e164 = phone_to_e164(value, country=country)
        except InvalidPhoneNumber:
            e164 = ""
        phones.append({"kind": kind, "value": value, "e164": e164})
    active = row.get("ACTIVE")
    return Bitrix24User(
        id=int(row["ID"]),
        name=user_name(row),
        first_name=str(row.get("NAME") or "")[:100],
        last_name=str(row.get("LAST_NAME") or "")[:100],
        email=str(row.get("EMAIL") or "")[:255],
        position=str(row.get("WORK_POSITION") or "")[:255],
        active=active is True or active in ("Y", "1", 1, "true"),
        inner_phone=str(row.get("UF_PHONE_INNER") or "")[:32],
        phones=phones,
        department_ids=[int(d) for d in row.get("UF_DEPARTMENT") or [] if as_int(d) is not None],
        timeman_status=str(row.get("TIMEMAN_STATUS") or "")[:16],
        seen_at=now,
        removed=False,
    )


def _entity_field(entity_type: str, name: str, info: dict[str, Any], now: Any) -> EntityField:
    # For user fields `title` is the UF_* name; the label people know is listLabel/formLabel.
    label = info.get("listLabel") or info.get("formLabel") or info.get("title") or ""
    return EntityField(
        entity_type=entity_type,
        name=name[:100],
        title=str(label)[:255],
        type=str(info.get("type") or "")[:32],
        multiple=bool(info.get("isMultiple")),
        custom=name.startswith("UF_"),
        seen_at=now,
        removed=False,
    )


def _departments_of_users(users: list[Bitrix24User], now: Any) -> list[Department]:
    """Without the department scope: the departments users belong to, by id.

    One the directory already has keeps its name (read while the scope was granted); none is
    marked removed, since the portal was not asked.
    """
    ids = sorted({d for user in users for d in user.department_ids})
    known = set(Department.objects.filter(id__in=ids).values_list("id", flat=True))
    Department.objects.filter(id__in=known).update(seen_at=now, removed=False)
    new = [Department(id=d, name=f"Department #{d}", seen_at=now, removed=False) for d in ids]
    Department.objects.bulk_create([d for d in new if d.id not in known], ignore_conflicts=True)
    return new


def _department(row: dict[str, Any], now: Any) -> Department:
    return Department(
        id=int(row["ID"]),
        name=str(row.get("NAME") or f"Department #{row['ID']}")[:255],
        parent_id=as_int(row.get("PARENT")),
        head_user_id=as_int(row.get("UF_HEAD")),
        seen_at=now,
        removed=False,
    )


def _pipeline(row: dict[str, Any], now: Any) -> Pipeline:
    is_default = row.get("isDefault", row.get("IS_DEFAULT"))
    pipeline_id: Any = row.get("id", row.get("ID"))  # the portal's JSON: a number or a string
    return Pipeline(
        id=int(pipeline_id),
        name=str(row.get("name") or row.get("NAME") or "")[:255],
        sort=as_int(row.get("sort", row.get("SORT"))) or 0,
        is_default=is_default in ("Y", True, 1, "1"),
        seen_at=now,
        removed=False,
    )


def names_for(
    *, user_ids: list[int], stage_ids: list[str], pipeline_ids: list[int]
) -> tuple[dict[int, str], dict[str, str], dict[int, str]]:
    """Display names from the directory; schedules a sync when an id is unknown."""
    users = (
        dict(Bitrix24User.objects.filter(id__in=user_ids).values_list("id", "name"))
        if user_ids
        else {}
    )
    stages = (
        dict(Stage.objects.filter(stage_id__in=stage_ids).values_list("stage_id", "name"))
        if stage_ids
        else {}
    )
    pipelines = (
        dict(Pipeline.objects.filter(id__in=pipeline_ids).values_list("id", "name"))
        if pipeline_ids
        else {}
    )
    unknown = (
        set(user_ids) - set(users)
        or set(stage_ids) - set(stages)
        or set(pipeline_ids) - set(pipelines)
    )
    if unknown and once_per("directory-sync", 600):
        logger.info("Directory lacks %s; syncing it in the background", unknown)
        directory_sync_later()
    return users, stages, pipelines


def directory_sync_after_connect() -> DirectorySyncResult | None:
    """A connection was just stored: mirror the directory now, so the first call has names.

    A portal that does not answer (or refuses) does not stop what is being set up: the sync
    is queued and retried in the background, and the hourly one follows anyway.
    """
    try:
        return directory_sync()
    except Bitrix24NotConfigured:
        return None
    except Bitrix24Error as exc:
        logger.warning("Directory not synced after connecting (%s); queued for later", exc)
    except Exception:
        # Not Bitrix24's answer but this host (a CA bundle missing, say): the tenant still
        # comes to exist, and the operator's log says what to fix.
        logger.exception("Directory not synced after connecting; queued for later")
    directory_sync_later()
    return None


def directory_sync_later() -> None:
    """Queues a directory sync of the current tenant once the transaction commits."""
    from crm.tasks import directory_sync_task  # noqa: PLC0415 — Celery's loop: the task calls back here

    transaction.on_commit(directory_sync_task.delay)


# Statuses timeman.status answers; anything else (UNAVAILABLE, NOT_INSTALLED, an error) is kept
# as unknown, which routing treats as available.
TIMEMAN_STATUSES = frozenset({"OPENED", "CLOSED", "PAUSED", "EXPIRED"})


def directory_timeman_refresh(
    *, user_ids: list[int] | None = None, client: Bitrix24Client | None = None
) -> dict[int, str]:
    """Reads the work-day status of ``user_ids`` (default: every active user) into the directory.

    One ``timeman.status`` command per user, 50 to a batch. A user whose status cannot be read
    (no ``timeman`` scope, time tracking off) gets an empty status. Returns id -> status.
    """
    ids = list(
        dict.fromkeys(
            user_ids
            if user_ids is not None
            else Bitrix24User.objects.filter(active=True, removed=False).values_list(
                "id", flat=True
            )
        )
    )
    if not ids:
        return {}
    scopes = Bitrix24Connection.objects.filter(singleton=1).values_list("scopes", flat=True).first()
    if scopes and "timeman" not in scopes:
        # Not granted: asking would cost a request per 50 users a minute for nothing.
        logger.info("Work-day status not read: the portal did not grant the timeman scope")
        statuses = dict.fromkeys(ids, "")
    else:
        statuses = _timeman_read(ids, client or Bitrix24Client())
    now = timezone.now()
    with transaction.atomic():
        for status in set(statuses.values()):
            Bitrix24User.objects.filter(
                id__in=[user for user, value in statuses.items() if value == status]
            ).update(timeman_status=status, timeman_checked_at=now)
    tenant_memo_forget(DIRECTORY_MEMO)
    return statuses


def _timeman_read(ids: list[int], client: Bitrix24Client) -> dict[int, str]:
    statuses: dict[int, str] = {}
    for offset in range(0, len(ids), 50):
        chunk = ids[offset : offset + 50]
        results = client.run_batch({f"u{user}": b24.timeman_status(user) for user in chunk})
        for user in chunk:
            value = results.get(f"u{user}")
            statuses[user] = value if isinstance(value, str) and value in TIMEMAN_STATUSES else ""
    return statuses
