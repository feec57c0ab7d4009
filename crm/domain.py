"""What the rest of SIMtrix gets back from Bitrix24, in its own terms."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Literal, NotRequired, TypedDict

LookupStatus = Literal["found", "not_found", "pending", "unavailable"]
EntityType = Literal["contact", "company", "lead", "deal"]


class CrmObject(TypedDict):
    """The bridge contract's `crm` object (`CallerLookup.as_api()`), as a call stores it. Before
    the lookup answers, or when it could not, only `status` may be there."""

    status: LookupStatus
    entity: NotRequired[dict[str, Any] | None]
    responsible: NotRequired[dict[str, Any] | None]
    deals: NotRequired[list[dict[str, Any]]]


class RoutingFacts(TypedDict):
    """What routing rules may read about a caller (`crm.mapping.routing_facts`): the entity's
    type and fields (by the rules' names and Bitrix24's), its responsible, its open deals."""

    entity_type: str
    entity: dict[str, Any]
    responsible_id: int | None
    deals: list[dict[str, Any]]


@dataclass(frozen=True)
class CrmEntity:
    type: str
    id: int
    name: str
    url: str


@dataclass(frozen=True)
class CrmUser:
    id: int
    name: str


@dataclass(frozen=True)
class CrmDeal:
    id: int
    title: str
    pipeline: str
    stage: str
    category_id: int
    stage_id: str
    assigned_by_id: int | None
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass
class CallerLookup:
    """Who is calling, as far as the CRM knows.

    ``as_api()`` is the bridge contract's ``crm`` object. ``entity_fields`` (the entity's raw
    values incl. UF_*, TYPE_ID, SOURCE_ID, STATUS_ID, ASSIGNED_BY_ID) and the deals' ``fields``
    are for routing rules; nothing else should read Bitrix24 field names.
    """

    status: LookupStatus
    phone_e164: str
    entity: CrmEntity | None = None
    responsible: CrmUser | None = None
    deals: list[CrmDeal] = field(default_factory=list)
    entity_fields: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    cached: bool = False

    @property
    def found(self) -> bool:
        return self.status == "found"

    def as_api(self) -> CrmObject:
        return {
            "status": self.status,
            "entity": (
                {
                    "type": self.entity.type,
                    "id": self.entity.id,
                    "name": self.entity.name,
                    "url": self.entity.url,
                }
                if self.entity
                else None
            ),
            "responsible": (
                {"id": self.responsible.id, "name": self.responsible.name}
                if self.responsible
                else None
            ),
            "deals": [
                {"id": d.id, "title": d.title, "pipeline": d.pipeline, "stage": d.stage}
                for d in self.deals
            ],
        }

    def to_cache(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("cached")
        return data

    @classmethod
    def from_cache(cls, data: dict[str, Any]) -> CallerLookup:
        entity = data.get("entity")
        responsible = data.get("responsible")
        return cls(
            status=data["status"],
            phone_e164=data["phone_e164"],
            entity=CrmEntity(**entity) if entity else None,
            responsible=CrmUser(**responsible) if responsible else None,
            deals=[CrmDeal(**d) for d in data.get("deals") or []],
            entity_fields=data.get("entity_fields") or {},
            error=data.get("error") or "",
            cached=True,
        )


@dataclass(frozen=True)
class FollowUpState:
    """A task's or a to-do's state in Bitrix24 (is it still to be done, and by when)."""

    open: bool
    deadline: datetime | None
    description: str = ""


@dataclass(frozen=True)
class RegisteredCall:
    b24_call_id: str
    entity: tuple[str, int] | None


@dataclass(frozen=True)
class FinishedCall:
    b24_call_id: str
    activity_id: int | None
    status_code: str
    duration_s: int
    entity: tuple[str, int] | None = None
    # Why no activity was created (Bitrix24's ERRORS.ACTIVITY_CREATION), when none was.
    activity_error: str = ""


@dataclass(frozen=True)
class ConnectionCheck:
    ok: bool
    scopes: list[str]
    missing_scopes: list[str]
    error: str = ""
    # Optional scopes the portal did not grant, each with what is off without it.
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class DirectorySyncResult:
    users: int
    departments: int
    pipelines: int
    stages: int
    lead_statuses: int
    lead_sources: int
    removed: dict[str, int] = field(default_factory=dict)
    requests: int = 0
    fields: int = 0  # CRM entity fields (incl. UF_*) of the types whose lists were read
    # What could not be read for want of an optional scope (e.g. "department").
    missing_scopes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
