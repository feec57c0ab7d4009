"""The actions that change the caller's record in Bitrix24: its lead status or its open deal's
stage, its responsible person, its fields. Each works on the caller's entity (found by the
lookup or made by the unknown-number scenario) or on its open deal: the one the action's
conditions matched, else the most recent. Each says in the run's result what it changed (from
what, to what), or why it changed nothing.
"""

from __future__ import annotations

from typing import Any

from crm.services import (
    crm_deal_set_stage,
    crm_entity_set_fields,
    crm_entity_set_responsible,
    crm_lead_set_status,
)
from scenarios.catalog import crm_catalog, field_unknown
from scenarios.choices import ActionType, AutomationTarget
from scenarios.handlers import (
    Situation,
    crm_ref,
    message_values,
    references_check,
    run_responsible,
    scenario_action,
)
from scenarios.models import ActionRun
from scenarios.outbox import ActionSkipped
from scenarios.selectors import directory
from scenarios.validation import template_render

_NOT_IN_CRM = "The caller is not in the CRM."
_NO_DEAL = "The caller has no open deal."


@scenario_action(ActionType.SET_STATUS)
def set_status(run: ActionRun, situation: Situation) -> dict[str, Any]:
    config = situation.config
    status = str(config["status_id"])
    known = directory()
    references_check(config, known)
    if config.get("target") == AutomationTarget.DEAL:
        deal = situation.deal_now()
        if deal is None:
            raise ActionSkipped(_NO_DEAL)
        pipeline = next((p for p, ids in known.stages.items() if status in ids), None)
        if pipeline is not None and pipeline != deal.category_id:
            raise ActionSkipped(
                f"Deal {deal.id} is in the pipeline {deal.pipeline} ({deal.category_id}); the "
                f"stage {status} is one of pipeline {pipeline}."
            )
        if deal.stage_id == status:
            raise ActionSkipped(f"Deal {deal.id} is at the stage {status} already.")
        crm_deal_set_stage(deal_id=deal.id, stage_id=status)
        return {"deal": deal.id, "stage": [deal.stage_id, status]}
    entity = situation.entity()
    if entity is None:
        raise ActionSkipped(_NOT_IN_CRM)
    if entity.get("type") != "lead":
        raise ActionSkipped(
            f"The caller is a {entity.get('type')}, not a lead: only a lead has a status."
        )
    lookup = situation.lookup()
    same = lookup.entity is not None and (lookup.entity.type, lookup.entity.id) == crm_ref(entity)
    current = str(lookup.entity_fields.get("STATUS_ID") or "") if same else ""
    if current == status:
        raise ActionSkipped(f"Lead {entity['id']} has the status {status} already.")
    crm_lead_set_status(lead_id=int(entity["id"]), status_id=status)
    return {"lead": int(entity["id"]), "status": [current or None, status]}


def _target(situation: Situation) -> tuple[tuple[str, int], Any]:
    """What the action works on, and its responsible now (None when unknown)."""
    if situation.config.get("target") == AutomationTarget.DEAL:
        deal = situation.deal_now()
        if deal is None:
            raise ActionSkipped(_NO_DEAL)
        return ("deal", deal.id), deal.assigned_by_id
    entity = situation.entity()
    if entity is None:
        raise ActionSkipped(_NOT_IN_CRM)
    ref = crm_ref(entity)
    lookup = situation.lookup()
    same = lookup.entity is not None and (lookup.entity.type, lookup.entity.id) == ref
    return ref, (lookup.responsible.id if same and lookup.responsible else None)


@scenario_action(ActionType.SET_RESPONSIBLE)
def set_responsible(run: ActionRun, situation: Situation) -> dict[str, Any]:
    known = directory()
    references_check(situation.config, known)
    target, current = _target(situation)
    user = run_responsible(run, situation.call, known)
    if current == user:
        raise ActionSkipped(f"User {user} is the responsible of {target[0]} {target[1]} already.")
    crm_entity_set_responsible(entity=target, user_id=user)
    return {
        "target": list(target),
        "responsible": [current, user],
        "how": run.params.get("responsible", ""),
    }


def _field_value(name: str, value: Any, values: dict[str, str]) -> Any:
    if isinstance(value, bool):
        # User fields of type "boolean" take 1/0; the built-in yes/no fields take Y/N.
        return (1 if value else 0) if name.startswith("UF_") else ("Y" if value else "N")
    if isinstance(value, list):
        return [_field_value(name, item, values) for item in value]
    if isinstance(value, str):
        return template_render(value, values)
    return value


@scenario_action(ActionType.UPDATE_FIELDS)
def update_fields(run: ActionRun, situation: Situation) -> dict[str, Any]:
    if situation.config.get("target") == AutomationTarget.DEAL:
        target, _ = _target(situation)
    else:
        target = _entity_target(situation)  # no lookup needed
    catalog = crm_catalog()
    missing = [
        name
        for name in situation.config["fields"]
        if field_unknown(name, types=(target[0],), catalog=catalog)
    ]
    if missing:
        raise ActionSkipped(
            f"Bitrix24 has no field {', '.join(missing)} for a {target[0]} (deleted since, or "
            "not one of this kind of record): nothing was changed."
        )
    values = message_values(situation.call, situation.entity())
    fields = {
        name: _field_value(name, value, values)
        for name, value in situation.config["fields"].items()
    }
    crm_entity_set_fields(entity=target, fields=fields)
    return {"target": list(target), "fields": fields}


def _entity_target(situation: Situation) -> tuple[str, int]:
    entity = situation.entity()
    if entity is None:
        raise ActionSkipped(_NOT_IN_CRM)
    return crm_ref(entity)
