"""Alembic (and Flask-Migrate) support: the library's tables and row-level security
policies in an app's migrations.

- The outbox table (``resources_kit_jobs``) is on the app's ``db.metadata`` as soon as
  ``Jobs(db)`` is made, so ``flask db migrate`` (autogenerate) writes it into a migration
  like any model's table.
- The row-level security policy of a table is a migration operation: import this module
  in ``migrations/env.py`` (or the migration) and write::

      def upgrade():
          op.enable_row_level_security("teachers", ["school_id"])

      def downgrade():
          op.disable_row_level_security("teachers")

  The table is reflected from the database, so the policy casts each setting to the
  column's own type; the migration runs as the table's owner (see Deployment).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from alembic.operations import MigrateOperation, Operations
from sqlalchemy import MetaData, Table, text
from sqlalchemy.dialects import postgresql

from .database import POLICY_NAME, row_level_security_ddl


@Operations.register_operation("enable_row_level_security")
class EnableRowLevelSecurityOp(MigrateOperation):
    """``op.enable_row_level_security(table, columns, force=True, schema=None)``."""

    def __init__(
        self, table: str, columns: Sequence[str], *, force: bool = True, schema: str | None = None
    ) -> None:
        self.table, self.columns, self.force, self.schema = table, list(columns), force, schema

    @classmethod
    def enable_row_level_security(
        cls,
        operations: Operations,
        table: str,
        columns: Sequence[str],
        *,
        force: bool = True,
        schema: str | None = None,
    ) -> Any:
        return operations.invoke(cls(table, columns, force=force, schema=schema))

    def reverse(self) -> DisableRowLevelSecurityOp:
        return DisableRowLevelSecurityOp(self.table, schema=self.schema)


@Operations.register_operation("disable_row_level_security")
class DisableRowLevelSecurityOp(MigrateOperation):
    """``op.disable_row_level_security(table, schema=None)``: drop the policy, and stop
    enforcing row-level security on the table."""

    def __init__(self, table: str, *, schema: str | None = None) -> None:
        self.table, self.schema = table, schema

    @classmethod
    def disable_row_level_security(
        cls, operations: Operations, table: str, *, schema: str | None = None
    ) -> Any:
        return operations.invoke(cls(table, schema=schema))


@Operations.implementation_for(EnableRowLevelSecurityOp)
def enable_row_level_security(operations: Operations, operation: EnableRowLevelSecurityOp) -> None:
    bind = operations.get_bind()
    table = Table(operation.table, MetaData(), schema=operation.schema, autoload_with=bind)
    for sql in row_level_security_ddl(table, operation.columns, force=operation.force):
        operations.execute(text(sql))


@Operations.implementation_for(DisableRowLevelSecurityOp)
def disable_row_level_security(
    operations: Operations, operation: DisableRowLevelSecurityOp
) -> None:
    for sql in disable_ddl(operation.table, operation.schema):
        operations.execute(text(sql))


def disable_ddl(table: str, schema: str | None = None) -> list[str]:
    """What undoes :func:`~resources_kit.database.row_level_security_ddl` on a table."""
    preparer = postgresql.dialect().identifier_preparer  # type: ignore[no-untyped-call]
    name = preparer.format_table(Table(table, MetaData(), schema=schema))
    return [
        f"DROP POLICY IF EXISTS {POLICY_NAME} ON {name}",
        f"ALTER TABLE {name} NO FORCE ROW LEVEL SECURITY",
        f"ALTER TABLE {name} DISABLE ROW LEVEL SECURITY",
    ]
