"""What django-tenants adds to Django's database connection, for the type checker.

django-tenants has no type hints, and django-stubs types `django.db.connection` as Django's own
BaseDatabaseWrapper: `cast(TenantConnection, connection).schema_name` reads the schema the
connection is set to (public until a tenant's is set: django-tenants' postgresql_backend).
"""

from __future__ import annotations

from typing import Protocol


class TenantConnection(Protocol):
    schema_name: str
    # The search_path last set on the database connection (None: set again before the next
    # statement).
    search_path_set_schemas: list[str] | None

    def set_schema(
        self, schema_name: str, include_public: bool = True, tenant_type: str | None = None
    ) -> None: ...

    def set_schema_to_public(self) -> None: ...
