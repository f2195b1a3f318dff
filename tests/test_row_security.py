"""Row-level security: PostgreSQL refuses other tenants' rows by itself, beside the
library's own scoping. The app connects as a role that cannot bypass the policies; the
rows are seeded and checked as the superuser the other tests use."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, event, func, make_url, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from resources_kit import (
    Callback,
    ImproperlyConfigured,
    Router,
    TenantScopeMixin,
    action,
    signals,
)
from resources_kit.database import (
    bind_settings,
    row_level_security_ddl,
    row_level_security_problems,
    unbind_settings,
)

from . import models
from .conftest import DB_URL, ENGINE_OPTIONS, make_app, reset_database, seed
from .models import Student, Teacher, db

POSTGRES = make_url(DB_URL).get_backend_name() == "postgresql"
needs_postgres = pytest.mark.skipif(
    not POSTGRES, reason="row-level security is PostgreSQL's; elsewhere it is refused"
)
#: The role the app connects as: no superuser, no BYPASSRLS.
APP_ROLE = "resources_kit_app"
TABLES = {Teacher: ["school_id"], Student: ["school_id"]}

#: The school the buggy callback writes to.
OTHER_SCHOOL: list[int] = [0]
#: What raw SQL saw inside the requests of a test.
SEEN: list[set[Any]] = []


class RawTenantRead(Callback):
    """A callback running raw SQL, as a report or an audit step would."""

    def execute(self) -> None:
        for table in ("teachers", "students"):
            rows = db.session.execute(text(f"SELECT * FROM {table}")).mappings().all()
            SEEN.append({row["school_id"] for row in rows})


class RawForeignInsert(Callback):
    """A buggy callback writing a row of another tenant."""

    def execute(self) -> None:
        db.session.execute(
            text("INSERT INTO teachers (name, school_id) VALUES ('Mallory', :school)"),
            {"school": OTHER_SCHOOL[0]},
        )


class RlsTeacherResource(models.ScopedTeacherResource):
    row_level_security = ("school_id",)
    pre_create_callbacks = [RawTenantRead]
    post_create_callbacks = [RawTenantRead]

    @action(detail=False, methods=["GET"])
    def everyone(self) -> Any:
        """A buggy report: an unscoped ORM query, past the library's own scoping."""
        names = self.get_session().scalars(select(Teacher.name).order_by(Teacher.name))
        return {"names": list(names)}


class RlsStudentResource(TenantScopeMixin, models.ScopedStudentResource):
    """Students scoped by their own school_id too (the policy on students needs it)."""

    row_level_security = ("school_id",)

    def get_base_query_kwargs(self) -> dict[str, Any]:
        school = models.current_school()
        return {"school_id": school} if school is not None else {}


class ForeignWriter(RlsTeacherResource):
    name = "foreign-writers"
    pre_create_callbacks = [RawForeignInsert]
    post_create_callbacks = []


def register(router: Router) -> None:
    router.register(RlsTeacherResource)
    router.register(RlsStudentResource, parent=RlsTeacherResource)
    router.register(ForeignWriter)


def superuser_engine() -> Engine:
    return create_engine(DB_URL, isolation_level="AUTOCOMMIT", **ENGINE_OPTIONS)


def policies(engine: Engine, on: bool) -> None:
    with engine.connect() as connection:
        for model in TABLES:
            table = model.__tablename__
            if on:
                for sql in row_level_security_ddl(model, TABLES[model]):
                    connection.execute(text(sql))
            else:
                connection.execute(text(f"ALTER TABLE {table} NO FORCE ROW LEVEL SECURITY"))
                connection.execute(text(f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY"))
                connection.execute(text(f"DROP POLICY IF EXISTS resources_kit_tenant ON {table}"))


@pytest.fixture(scope="module")
def rls_app(app: Flask) -> Iterator[Flask]:
    engine = superuser_engine()
    with engine.connect() as connection:
        exists = connection.execute(
            text("SELECT 1 FROM pg_roles WHERE rolname = :role"), {"role": APP_ROLE}
        ).first()
        if exists is None:
            connection.execute(text(f"CREATE ROLE {APP_ROLE} LOGIN NOSUPERUSER NOBYPASSRLS"))
        connection.execute(text(f"GRANT ALL ON ALL TABLES IN SCHEMA public TO {APP_ROLE}"))
        connection.execute(text(f"GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {APP_ROLE}"))
    policies(engine, on=True)
    url = make_url(DB_URL).set(username=APP_ROLE).render_as_string(hide_password=False)
    made = make_app(register, SQLALCHEMY_DATABASE_URI=url)
    yield made
    with made.app_context():
        db.session.remove()
        for each in db.engines.values():
            each.dispose()
    policies(engine, on=False)
    engine.dispose()


@pytest.fixture
def rls(rls_app: Flask, database: Any) -> Any:
    """A client of the app that connects as the app role; the two schools are seeded."""
    SEEN.clear()
    return rls_app.test_client()


def two_schools() -> dict[str, int]:
    one, two = models.School(name="One"), models.School(name="Two")
    seed(one, two)
    ada, bea, bob = (
        Teacher(name="Ada", school_id=one.id),
        Teacher(name="Bea", school_id=one.id),
        Teacher(name="Bob", school_id=two.id),
    )
    seed(ada, bea, bob)
    seed(
        Student(name="Cy", teacher_id=ada.id, school_id=one.id),
        Student(name="Di", teacher_id=bob.id, school_id=two.id),
    )
    return {"one": one.id, "two": two.id}


def teacher_count() -> int:
    return db.session.scalar(select(func.count()).select_from(Teacher)) or 0


@needs_postgres
def test_raw_sql_in_callbacks_sees_only_the_tenants_rows(rls: Any) -> None:
    schools = two_schools()
    answer = rls.post(
        "/api/teachers", json={"name": "Cy"}, headers={"X-School": str(schools["one"])}
    )
    assert answer.status_code == 201, answer.json
    # SELECT * FROM teachers, then students, before and after the flush, in the
    # request's transaction: school one's rows only, though both schools have some.
    assert [{schools["one"]}] * 4 == SEEN


@needs_postgres
def test_a_signal_receiver_after_the_commit_sees_only_the_tenants_rows(rls: Any) -> None:
    schools = two_schools()
    seen: list[set[int]] = []

    def receiver(sender: Any, **kwargs: Any) -> None:
        # After the commit: a new transaction, which gets the settings again.
        rows = db.session.execute(text("SELECT school_id FROM teachers")).all()
        seen.append({row.school_id for row in rows})

    with signals.resource_created.connected_to(receiver, sender=RlsTeacherResource):
        answer = rls.post(
            "/api/teachers", json={"name": "Cy"}, headers={"X-School": str(schools["two"])}
        )
    assert answer.status_code == 201
    assert seen == [{schools["two"]}]


@needs_postgres
def test_the_database_refuses_an_insert_of_another_tenants_row(rls: Any) -> None:
    schools = two_schools()
    before = teacher_count()
    OTHER_SCHOOL[0] = schools["two"]

    config = rls.application.config
    config["PROPAGATE_EXCEPTIONS"] = False  # answer as in production, not raise to the test
    try:
        answer = rls.post(
            "/api/foreign-writers", json={"name": "Cy"}, headers={"X-School": str(schools["one"])}
        )
    finally:
        config["PROPAGATE_EXCEPTIONS"] = None
    assert answer.status_code == 500
    assert answer.content_type == "application/problem+json"
    body = answer.get_data(as_text=True)
    assert "INSERT" not in body
    assert "row-level" not in body
    assert "Mallory" not in body
    db.session.expire_all()
    assert teacher_count() == before  # neither Cy nor Mallory


@needs_postgres
def test_the_database_refuses_it_directly(rls_app: Flask, database: Any) -> None:
    schools = two_schools()
    with rls_app.app_context():
        token = bind_settings({"school_id": schools["one"]}, db.session)
        try:
            with pytest.raises(DBAPIError, match="row-level security"):
                db.session.execute(
                    text("INSERT INTO teachers (name, school_id) VALUES ('M', :school)"),
                    {"school": schools["two"]},
                )
        finally:
            db.session.rollback()
            unbind_settings(token)


@needs_postgres
def test_without_settings_the_app_role_sees_nothing(rls_app: Flask, database: Any) -> None:
    two_schools()
    with rls_app.app_context():
        assert db.session.execute(text("SELECT count(*) FROM teachers")).scalar() == 0
        db.session.rollback()


@needs_postgres
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    one=st.lists(st.sampled_from(["Ada", "Bea", "Cy"]), max_size=4),
    two=st.lists(st.sampled_from(["Dan", "Eve"]), max_size=4),
    tenant=st.sampled_from(["one", "two"]),
)
def test_an_unscoped_override_leaks_no_row(
    rls_app: Flask, database: Any, one: list[str], two: list[str], tenant: str
) -> None:
    reset_database()
    first, second = models.School(name="One"), models.School(name="Two")
    seed(first, second)
    seed(*(Teacher(name=name, school_id=first.id) for name in one))
    seed(*(Teacher(name=name, school_id=second.id) for name in two))
    school = first if tenant == "one" else second
    answer = rls_app.test_client().get(
        "/api/teachers/everyone", headers={"X-School": str(school.id)}
    )
    assert answer.status_code == 200
    assert answer.json["names"] == sorted(one if tenant == "one" else two)


@needs_postgres
def test_nested_children_are_scoped_by_the_database_too(rls: Any) -> None:
    schools = two_schools()
    ada = db.session.scalar(select(Teacher).where(Teacher.name == "Ada"))
    bob = db.session.scalar(select(Teacher).where(Teacher.name == "Bob"))
    assert ada is not None
    assert bob is not None
    one = {"X-School": str(schools["one"])}
    assert [
        s["name"] for s in rls.get(f"/api/teachers/{ada.id}/students", headers=one).json["items"]
    ] == ["Cy"]
    assert rls.get(f"/api/teachers/{bob.id}/students", headers=one).status_code == 404
    made = rls.post(f"/api/teachers/{ada.id}/students", json={"name": "Tia"}, headers=one)
    assert made.status_code == 201
    assert made.json["school_id"] == schools["one"]


@needs_postgres
def test_the_check_reports_what_is_missing_and_passes_when_all_is_there(
    rls_app: Flask, database: Any
) -> None:
    engine = superuser_engine()
    with engine.connect() as connection:
        problems = row_level_security_problems(connection, TABLES)
    assert problems == [
        "The app connects as a role that bypasses row-level security (superuser or "
        "BYPASSRLS); connect as one that does not."
    ]
    with rls_app.app_context(), db.engine.connect() as connection:
        assert row_level_security_problems(connection, TABLES) == []
        # A policy on the wrong column is named.
        wrong = row_level_security_problems(connection, {Teacher: ["region"]})
        assert wrong == [
            f"Policy resources_kit_tenant on teachers does not compare region with "
            f"resources_kit.region in its {clause} clause."
            for clause in ("USING", "WITH CHECK")
        ]
        missing = row_level_security_problems(connection, {models.School: ["id"]})
        assert missing == ["Table schools does not have row-level security enabled."]
    engine.dispose()


def test_row_level_security_is_refused_off_postgresql() -> None:
    app = Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = "sqlite://"
    router = Router(row_level_security=("school_id",))
    router.register(models.ScopedTeacherResource)
    with pytest.raises(
        ImproperlyConfigured, match="needs PostgreSQL; the app's database is sqlite"
    ):
        router.init_app(app)
    app = Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = "mysql+pymysql://root@127.0.0.1/test"
    with pytest.raises(ImproperlyConfigured, match="database is mysql"):
        Router(app).register(RlsTeacherResource)


def test_a_misspelled_column_is_refused_at_registration() -> None:
    with pytest.raises(ImproperlyConfigured, match="school"):
        Router(row_level_security=("school",)).register(models.ScopedTeacherResource)


def test_the_routers_setting_applies_to_tenant_scoped_resources_only() -> None:
    router = Router(row_level_security=("school_id",))
    router.register(models.StudentResource)
    router.register(models.ScopedTeacherResource)

    class OptedOut(models.ScopedTeacherResource):
        name = "opted-out"
        row_level_security = ()

    router.register(OptedOut)
    assert [m.row_level_security for m in router.mounts] == [(), ("school_id",), ()]


@needs_postgres
def test_flask_resources_checks_the_policies(rls_app: Flask) -> None:
    # Inside the app's own context: the command runs in whichever context is current.
    with rls_app.app_context():
        result = rls_app.test_cli_runner().invoke(args=["resources", "--check-row-level-security"])
    assert result.exit_code == 0, result.output
    assert "row-level security: school_id" in result.output
    assert "row-level security: 2 table(s) enforce their policies" in result.output
    as_superuser = make_app(register)  # the suite's own role: a superuser
    with as_superuser.app_context():
        result = as_superuser.test_cli_runner().invoke(
            args=["resources", "--check-row-level-security"]
        )
    assert result.exit_code == 1
    assert "connects as a role that bypasses row-level security" in result.output


@needs_postgres
def test_the_settings_cost_one_statement_per_transaction(rls: Any) -> None:
    schools = two_schools()
    with rls.application.app_context():
        engine = db.engine
    ran: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        ran.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        one = {"X-School": str(schools["one"])}
        assert rls.get("/api/teachers", headers=one).status_code == 200
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert len(ran) == 2  # the settings, then the list's one statement
    assert "set_config" in ran[0]
    assert "set_config" not in ran[1]


@needs_postgres
def test_another_database_in_the_same_request_is_left_alone(rls_app: Flask) -> None:
    other = create_engine("sqlite://")
    with rls_app.app_context():
        token = bind_settings({"school_id": 1}, db.session)
        try:
            with Session(other) as session:  # a second session, say for a cache
                assert session.execute(text("SELECT 1")).scalar() == 1
            setting = db.session.execute(
                text("SELECT current_setting('resources_kit.school_id', true)")
            ).scalar()
            assert setting == "1"  # while the app's own transaction has the setting
        finally:
            db.session.rollback()
            unbind_settings(token)
    other.dispose()
