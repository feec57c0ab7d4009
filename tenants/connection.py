"""What django-tenants adds to Django's database connection, for the type checker.

django-tenants has no type hints, and django-stubs types `django.db.connection` as Django's own
BaseDatabaseWrapper: `tenant_connection.schema_name` reads the schema the connection is set
to (public until a tenant's is set: django-tenants' postgresql_backend).
"""

from __future__ import annotations

from typing import Protocol, cast

from django.db import connection


class TenantConnection(Protocol):
    schema_name: str
    # The search_path last set on the database connection (None: set again before the next
    # statement).
    search_path_set_schemas: list[str] | None

    def set_schema(
        self, schema_name: str, include_public: bool = True, tenant_type: str | None = None
    ) -> None: ...

    def set_schema_to_public(self) -> None: ...


# Django's connection proxy, typed with what django-tenants adds: one cast here instead of one at
# every use. Same object as `django.db.connection` (a proxy to this thread's connection).
tenant_connection = cast(TenantConnection, connection)
