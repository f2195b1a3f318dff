"""The library's tables and policies in an app's Alembic migrations."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import create_engine, make_url, text

from .conftest import DB_URL, ENGINE_OPTIONS
from .jobs_app import jobs
from .models import db

alembic = pytest.importorskip("alembic", reason="the migrations extra is not installed")

from alembic.autogenerate import compare_metadata  # noqa: E402
from alembic.migration import MigrationContext  # noqa: E402
from alembic.operations import Operations  # noqa: E402

import resources_kit.migrations  # noqa: E402, F401  (registers the operations)


def test_autogenerate_sees_the_outbox_table() -> None:
    engine = create_engine("sqlite://")
    with engine.connect() as connection:
        changes = compare_metadata(MigrationContext.configure(connection), db.metadata)
    added = {change[1].name for change in changes if change[0] == "add_table"}
    assert jobs.model.__tablename__ in added
    table = db.metadata.tables["resources_kit_jobs"]
    assert {"id", "task", "status", "due_at", "scope", "tenant", "result", "problem"} <= set(
        table.columns.keys()
    )
    engine.dispose()


def policy(connection: Any) -> Any:
    return connection.execute(
        text(
            "SELECT qual, with_check FROM pg_policies "
            "WHERE tablename = 'teachers' AND policyname = 'resources_kit_tenant'"
        )
    ).first()


@pytest.mark.skipif(
    make_url(DB_URL).get_backend_name() != "postgresql", reason="policies are PostgreSQL's"
)
def test_the_policy_is_a_migration_operation(app: Any) -> None:
    engine = create_engine(DB_URL, **ENGINE_OPTIONS)
    try:
        with engine.begin() as connection:
            op = Operations(MigrationContext.configure(connection))
            op.enable_row_level_security("teachers", ["school_id"])  # type: ignore[attr-defined]
            found = policy(connection)
            assert found is not None
            assert "current_setting('resources_kit.school_id'" in found.qual
            assert "::integer" in found.with_check  # cast to the reflected column's type
            op.disable_row_level_security("teachers")  # type: ignore[attr-defined]
            assert policy(connection) is None
            forced = connection.execute(
                text("SELECT relrowsecurity FROM pg_class WHERE relname = 'teachers'")
            ).scalar()
            assert forced is False
    finally:
        engine.dispose()
