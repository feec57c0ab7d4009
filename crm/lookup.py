"""Finding a caller in Bitrix24: while a phone rings, with one HTTP request (one ``batch``);
in the background, with the search first and then only what it found (``lookup_remote``).

The batch, in order:

- ``crm.duplicate.findbycomm`` once per entity type (contact, company, lead), each with every
  plausible typed form of the number (``crm.phones.lookup_forms``). Querying per type avoids
  the rule that 20 or more hits of one type silently drop the other types (REFERENCE 3.1);
- ``crm.{contact,company,lead}.list`` of the matched ids (``$result[...]`` references), newest
  activity first, with all fields incl. UF_*;
- ``crm.deal.list`` of the open deals of the matched contacts and companies.

When a type had no hit its reference cannot resolve; what the portal then returns for that
list is not trusted: every row is checked against the ids the search returned.

Pipeline, stage and user names come from the synced directory (``crm.directory``), which costs
no request; an id the directory does not know yet is shown as such and a directory sync is
scheduled.
"""

from __future__ import annotations

import logging
from typing import Any, cast

from crm import client as b24
from crm.client import Bitrix24Client, Req
from crm.directory import names_for
from crm.domain import CallerLookup, CrmDeal, CrmEntity, CrmUser
from crm.errors import Bitrix24Error
from crm.mapping import (
    CLIENT_TYPES,
    as_int,
    b24_type,
    date_key,
    display_name,
    entity_url,
    is_open_lead,
)

logger = logging.getLogger(__name__)

ENTITY_SELECT = ["*", "UF_*", "PHONE"]
DEAL_SELECT = ["*", "UF_*"]
_FIND_KEYS = {"contact": "find_contact", "company": "find_company", "lead": "find_lead"}
_LIST_KEYS = {"contact": "contacts", "company": "companies", "lead": "leads"}
_DEAL_KEYS = {
    "contact": ("deals_of_contacts", "@CONTACT_ID"),
    "company": ("deals_of_companies", "@COMPANY_ID"),
}


def _find_requests(forms: list[str]) -> dict[str, Req[Any]]:
    return {
        _FIND_KEYS[entity_type]: b24.duplicate_findbycomm(forms, b24_type(entity_type))
        for entity_type in CLIENT_TYPES
    }


def _list_requests(ids_of: dict[str, Any]) -> dict[str, Req[Any]]:
    """The entities (and the open deals of contacts and companies) of `ids_of[entity_type]`:
    references to the search's results, or the ids it found."""
    reqs: dict[str, Req[Any]] = {}
    for entity_type in (t for t in CLIENT_TYPES if t in ids_of):
        reqs[_LIST_KEYS[entity_type]] = b24.entity_list(
            b24_type(entity_type),
            filter={"@ID": ids_of[entity_type]},
            select=ENTITY_SELECT,
            order={"DATE_MODIFY": "DESC"},
        )
    for entity_type, (key, field) in _DEAL_KEYS.items():
        if entity_type in ids_of:
            reqs[key] = b24.entity_list(
                "DEAL",
                filter={field: ids_of[entity_type], "STAGE_SEMANTIC_ID": "P"},
                select=DEAL_SELECT,
                order={"DATE_MODIFY": "DESC"},
            )
    return reqs


def lookup_requests(forms: list[str]) -> dict[str, Req[Any]]:
    """The whole lookup in one batch: the search, and the lists by reference to its results."""
    references = {
        entity_type: b24.batch_reference(_FIND_KEYS[entity_type], b24_type(entity_type))
        for entity_type in CLIENT_TYPES
    }
    return {**_find_requests(forms), **_list_requests(references)}


def lookup_remote(
    client: Bitrix24Client, *, e164: str, forms: list[str], deadline: float | None
) -> CallerLookup:
    """With a deadline (a phone rings), one request. Without (background work: a backlog's
    lookups, a refresh), the search first, then only the lists of the types it found: an
    unknown number costs 3 commands rather than 8, a known one 4 or 5, for a second round trip
    when found (a portal's 2 requests a second carry 50 commands each: commands are what a
    backlog spends)."""
    portal_url = client.session.connection.portal_url
    if deadline is not None:
        results = client.run_batch(lookup_requests(forms), deadline=deadline)
        return lookup_parse(results, e164=e164, portal_url=portal_url)
    results = client.run_batch(_find_requests(forms))
    for key in _FIND_KEYS.values():
        if isinstance(results.get(key), Bitrix24Error):
            raise results[key]
    ids_of = {
        entity_type: hits
        for entity_type in CLIENT_TYPES
        if (hits := results[_FIND_KEYS[entity_type]].get(b24_type(entity_type)))
    }
    if ids_of:
        results.update(client.run_batch(_list_requests(ids_of)))
    return lookup_parse(results, e164=e164, portal_url=portal_url)


def lookup_parse(results: dict[str, Any], *, e164: str, portal_url: str) -> CallerLookup:
    for key in _FIND_KEYS.values():
        if isinstance(results.get(key), Bitrix24Error):
            raise results[key]
    for entity_type in CLIENT_TYPES:
        hits = set(results[_FIND_KEYS[entity_type]].get(b24_type(entity_type), []))
        if not hits:
            continue
        # run_batch answers every request it was given: the entity list's rows, or its error.
        rows = cast(list[dict[str, Any]] | Bitrix24Error, results.get(_LIST_KEYS[entity_type]))
        if isinstance(rows, Bitrix24Error):
            raise rows
        rows = [r for r in rows if as_int(r.get("ID")) in hits]
        if not rows:
            continue
        best = _most_recent(entity_type, rows)
        entity_id = int(best["ID"])
        deals = _deals_of(entity_type, entity_id, results)
        responsible_id = as_int(best.get("ASSIGNED_BY_ID"))
        users, stages, pipelines = names_for(
            user_ids=[responsible_id] if responsible_id else [],
            stage_ids=[str(d.get("STAGE_ID") or "") for d in deals],
            pipeline_ids=[as_int(d.get("CATEGORY_ID")) or 0 for d in deals],
        )
        return CallerLookup(
            status="found",
            phone_e164=e164,
            entity=CrmEntity(
                type=entity_type,
                id=entity_id,
                name=display_name(entity_type, best),
                url=entity_url(portal_url, entity_type, entity_id),
            ),
            responsible=(
                CrmUser(
                    id=responsible_id, name=users.get(responsible_id) or f"User #{responsible_id}"
                )
                if responsible_id
                else None
            ),
            deals=[_deal(d, stages, pipelines) for d in deals],
            entity_fields=best,
        )
    return CallerLookup(status="not_found", phone_e164=e164)


def _most_recent(entity_type: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The most recently active row; for leads, open leads before converted or junk ones."""
    ordered = sorted(rows, key=date_key, reverse=True)
    if entity_type == "lead":
        ordered.sort(key=lambda r: not is_open_lead(r))
    return ordered[0]


def _deals_of(entity_type: str, entity_id: int, results: dict[str, Any]) -> list[dict[str, Any]]:
    if entity_type not in _DEAL_KEYS:
        return []
    key, _ = _DEAL_KEYS[entity_type]
    rows = results.get(key)
    if isinstance(rows, Bitrix24Error):
        logger.warning("Open deals of %s %s not loaded: %s", entity_type, entity_id, rows)
        return []
    link = "CONTACT_ID" if entity_type == "contact" else "COMPANY_ID"
    mine = []
    for row in rows or []:
        linked = {as_int(row.get(link))}
        if entity_type == "contact":
            linked |= {as_int(i) for i in row.get("CONTACT_IDS") or []}
        if entity_id in linked and row.get("STAGE_SEMANTIC_ID", "P") in ("P", None, ""):
            mine.append(row)
    return sorted(mine, key=date_key, reverse=True)


def _deal(row: dict[str, Any], stages: dict[str, str], pipelines: dict[int, str]) -> CrmDeal:
    category_id = as_int(row.get("CATEGORY_ID")) or 0
    stage_id = str(row.get("STAGE_ID") or "")
    return CrmDeal(
        id=int(row["ID"]),
        title=str(row.get("TITLE") or ""),
        pipeline=pipelines.get(category_id) or f"Pipeline #{category_id}",
        stage=stages.get(stage_id) or stage_id,
        category_id=category_id,
        stage_id=stage_id,
        assigned_by_id=as_int(row.get("ASSIGNED_BY_ID")),
        fields=row,
    )
