"""The per-tenant caller-lookup cache in Redis.

Keys carry the tenant's schema, so tenants never read each other's entries. Each cached lookup
is also indexed by the CRM entity it found, so a change SIMtrix makes to that entity (a new
responsible, a new deal) invalidates every number that resolved to it.

Without Redis the cache is empty and writes are dropped (logged): a lookup then asks Bitrix24,
and an entry a failed delete left behind expires with its TTL.
"""

from __future__ import annotations

import json
import logging
from typing import Any, cast

from redis.exceptions import RedisError

from crm.redis_client import get_redis
from tenants.connection import tenant_connection

logger = logging.getLogger(__name__)


def _prefix() -> str:
    return f"simtrix:crm:{tenant_connection.schema_name}"


def lookup_key(e164: str) -> str:
    return f"{_prefix()}:lookup:{e164}"


def _entity_key(entity_type: str, entity_id: int) -> str:
    return f"{_prefix()}:lookup-by-entity:{entity_type}:{int(entity_id)}"


def cache_get(e164: str) -> dict[str, Any] | None:
    try:
        raw = get_redis().get(lookup_key(e164))
    except RedisError as exc:
        logger.warning("lookup cache not read (Redis unavailable): %s", exc)
        return None
    return json.loads(raw) if raw else None


def cache_set(
    e164: str, data: dict[str, Any], *, ttl: int, entities: list[tuple[str, int]]
) -> None:
    pipe = get_redis().pipeline(transaction=False)
    pipe.set(lookup_key(e164), json.dumps(data, default=str), ex=max(1, ttl))
    for entity_type, entity_id in entities:
        key = _entity_key(entity_type, entity_id)
        pipe.sadd(key, e164)
        pipe.expire(key, max(1, ttl) + 60)
    try:
        pipe.execute()
    except RedisError as exc:
        logger.warning("lookup not cached (Redis unavailable): %s", exc)


def cache_delete(e164: str) -> None:
    try:
        get_redis().delete(lookup_key(e164))
    except RedisError as exc:
        logger.warning("a cached lookup not dropped (Redis unavailable): %s", exc)


def cache_delete_entity(entity_type: str, entity_id: int) -> None:
    r = get_redis()
    key = _entity_key(entity_type, entity_id)
    try:
        # get_redis() leaves decode_responses off: members come back as bytes.
        phones = [p.decode() for p in cast(set[bytes], r.smembers(key))]
        r.delete(*[lookup_key(p) for p in phones], key)
    except RedisError as exc:
        logger.warning(
            "cached lookups of %s %s not dropped (Redis unavailable): %s",
            entity_type,
            entity_id,
            exc,
        )


def cache_clear() -> int:
    """Drops every cached lookup of the current tenant; returns how many keys went."""
    r = get_redis()
    keys = list(r.scan_iter(match=f"{_prefix()}:lookup*", count=500))
    if keys:
        r.delete(*keys)
    return len(keys)


def once_per(name: str, seconds: int) -> bool:
    """True for the first caller in ``seconds`` (debounces background work per tenant)."""
    try:
        return bool(get_redis().set(f"{_prefix()}:once:{name}", 1, nx=True, ex=seconds))
    except RedisError as exc:
        # Nobody is first: background work that cannot be debounced waits for Redis.
        job = name.split(":", maxsplit=1)[0]
        logger.warning("%s not started (Redis unavailable): %s", job, exc)
        return False


def once_reset(name: str) -> None:
    get_redis().delete(f"{_prefix()}:once:{name}")
