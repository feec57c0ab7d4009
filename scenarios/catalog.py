"""What an action may name in Bitrix24, checked when it is saved or imported: lead statuses,
the stages of each pipeline and the CRM fields (``crm.*.fields``), as crm last synced them.

An action that names what the directory does not hold is refused, whole with its document:
Bitrix24 itself would not say (``crm.*.update`` ignores a field it does not know; b24restdocs
``crm-deal-update.md``), so a typo would fail silently on every call. Nothing is judged before
the first sync (or, for fields, before the entity type's field list was read).

`crm_catalog()` reads crm's directory; `action_catalog_errors` is pure.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.utils.translation import gettext

from crm.selectors import (
    directory_entity_fields,
    directory_lead_statuses,
    directory_pipelines,
    directory_stages,
    directory_users,
)
from scenarios.choices import ActionType, AutomationTarget, Timing
from scenarios.routing.rules import (
    CALLER_TYPES,
    DEAL_FIELDS,
    ENTITY_FIELDS,
    SOURCE_DEAL,
    SOURCE_ENTITY,
)


@dataclass(frozen=True)
class CrmCatalog:
    synced: bool = False
    lead_statuses: frozenset[str] = frozenset()
    stages: dict[int, frozenset[str]] = field(default_factory=dict)  # pipeline -> stage ids
    pipelines: dict[int, str] = field(default_factory=dict)  # id -> name
    # Entity type -> field names, for the types whose field list crm has read.
    fields: dict[str, frozenset[str]] = field(default_factory=dict)

    def pipeline_of(self, stage_id: str) -> int | None:
        return next((p for p, ids in self.stages.items() if stage_id in ids), None)

    def pipeline_name(self, pipeline_id: int) -> str:
        name = self.pipelines.get(pipeline_id)
        return f"{name} ({pipeline_id})" if name else str(pipeline_id)


def crm_catalog() -> CrmCatalog:
    """crm's synced directory, as actions are checked against it (rows marked removed are gone)."""
    if not directory_users(active_only=False).exists():
        return CrmCatalog()
    stages: dict[int, set[str]] = {}
    for pipeline_id, stage_id in directory_stages().values_list("pipeline_id", "stage_id"):
        stages.setdefault(pipeline_id, set()).add(stage_id)
    fields: dict[str, set[str]] = {}
    rows = directory_entity_fields(include_removed=True).values_list(
        "entity_type", "name", "removed"
    )
    for entity_type, name, removed in rows:
        names = fields.setdefault(entity_type, set())
        if not removed:
            names.add(name)
    return CrmCatalog(
        synced=True,
        lead_statuses=frozenset(directory_lead_statuses().values_list("status_id", flat=True)),
        stages={pipeline: frozenset(ids) for pipeline, ids in stages.items()},
        pipelines=dict(directory_pipelines().values_list("id", "name")),
        fields={entity_type: frozenset(names) for entity_type, names in fields.items()},
    )


def _types_of(target: str) -> tuple[str, ...]:
    return ("deal",) if target == AutomationTarget.DEAL else CALLER_TYPES


def field_unknown(name: str, *, types: tuple[str, ...], catalog: CrmCatalog) -> bool:
    """No synced type of `types` has the field (judged only for types whose list was read)."""
    synced = [t for t in types if t in catalog.fields]
    return bool(synced) and not any(name in catalog.fields[t] for t in synced)


def _unknown_field(name: str, target: str) -> str:
    if target == AutomationTarget.DEAL:
        return gettext("%(field)s is not a field of deals in Bitrix24") % {"field": name}
    return gettext("%(field)s is not a field of contacts, companies or leads in Bitrix24") % {
        "field": name
    }


def action_catalog_errors(config: dict[str, Any], catalog: CrmCatalog) -> dict[str, str]:
    """What the action names that Bitrix24 does not have, by field name (empty when all is
    there, or nothing can be judged yet)."""
    if not catalog.synced:
        return {}
    errors: dict[str, str] = {}
    kind = config.get("action_type")
    target = config.get("target") or ""
    if kind == ActionType.SET_STATUS:
        errors.update(_status_errors(config, catalog))
    if kind == ActionType.UPDATE_FIELDS:
        for name in config.get("fields") or {}:
            if field_unknown(name, types=_types_of(target), catalog=catalog):
                errors["fields"] = _unknown_field(name, target)
                break
    if config.get("timing") == Timing.BEFORE_DATE:
        name = config.get("date_field") or ""
        date_of = config.get("date_of") or ""
        if name and field_unknown(name, types=_types_of(date_of), catalog=catalog):
            errors["date_field"] = _unknown_field(name, date_of)
    problem = _conditions_problem(config.get("conditions") or [], catalog)
    if problem:
        errors["conditions"] = problem
    return errors


def _conditions_problem(conditions: list[Any], catalog: CrmCatalog) -> str:
    """The first field the conditions read that Bitrix24 does not have ("" when none)."""
    for condition in conditions:
        if not isinstance(condition, dict):
            continue
        source, name = condition.get("source"), str(condition.get("field") or "")
        if source == SOURCE_ENTITY and name not in ENTITY_FIELDS:
            types: tuple[str, ...] = CALLER_TYPES
        elif source == SOURCE_DEAL and name not in DEAL_FIELDS:
            types = ("deal",)
        else:
            continue
        if field_unknown(name, types=types, catalog=catalog):
            deal = source == SOURCE_DEAL
            return _unknown_field(name, AutomationTarget.DEAL if deal else AutomationTarget.ENTITY)
    return ""


def _status_errors(config: dict[str, Any], catalog: CrmCatalog) -> dict[str, str]:
    status = config.get("status_id") or ""
    if not status:
        return {}
    if config.get("target") != AutomationTarget.DEAL:
        if status not in catalog.lead_statuses:
            return {
                "status_id": gettext("%(status)s is not a lead status in Bitrix24")
                % {"status": status}
            }
        return {}
    pipeline = config.get("pipeline_id")
    found_in = catalog.pipeline_of(status)
    if found_in is None:
        return {
            "status_id": gettext("%(stage)s is not a deal stage in Bitrix24") % {"stage": status}
        }
    if pipeline is not None and pipeline != found_in:
        return {
            "status_id": gettext(
                "%(stage)s is a stage of the pipeline %(other)s, not of %(pipeline)s"
            )
            % {
                "stage": status,
                "other": catalog.pipeline_name(found_in),
                "pipeline": catalog.pipeline_name(pipeline),
            }
        }
    return {}
