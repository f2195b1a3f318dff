"""The OpenAPI document as a generated client sees it: a client generated with
``openapi-python-client`` from the served document drives every operation over a real
WSGI round trip and gets parsed, typed results.

Each client is generated once per module into a temporary directory and imported from
there. The tests skip with a message when the generator is not installed
(``pip install -e '.[client]'``); ``.ci/run`` installs it and sets
``RESOURCES_KIT_REQUIRE_CLIENT=1``, under which a missing generator fails instead.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import marshmallow as ma
import pytest
from flask import Flask

from resources_kit import Router, action

from . import models
from .conftest import (
    make_app,
    running,
    sample_app_config,
    seed,
    seed_two_schools,
    separate_database_url,
)

#: The generated clients' HTTP library, installed with the generator ('client' extra).
httpx: Any = (
    importlib.import_module("httpx")
    if os.environ.get("RESOURCES_KIT_REQUIRE_CLIENT")
    else pytest.importorskip("httpx", reason="httpx is not installed (pip install -e '.[client]')")
)


@pytest.fixture(scope="module", autouse=True)
def _needs_the_generator() -> None:
    try:
        importlib.import_module("openapi_python_client")
    except ImportError:
        message = "openapi-python-client is not installed (pip install -e '.[client]')"
        if os.environ.get("RESOURCES_KIT_REQUIRE_CLIENT"):
            pytest.fail(f"{message}, and RESOURCES_KIT_REQUIRE_CLIENT is set")
        pytest.skip(message)


class Generated:
    """An imported generated package: ``call(tag, operation_id, ...)`` runs that
    operation's ``sync_detailed``; ``models`` holds the generated model classes."""

    def __init__(self, package: str) -> None:
        self.package = package
        self.models = importlib.import_module(f"{package}.models")
        self.client_module = importlib.import_module(f"{package}.client")
        self.types = importlib.import_module(f"{package}.types")

    def operation(self, tag: str, operation_id: str) -> ModuleType:
        return importlib.import_module(f"{self.package}.api.{tag}.{operation_id}")

    def call(self, tag: str, operation_id: str, *args: Any, **kwargs: Any) -> Any:
        return self.operation(tag, operation_id).sync_detailed(*args, **kwargs)

    def client(self, app: Flask, *, token: str | None = None, **headers: str) -> Any:
        """A client whose requests go through ``app`` (httpx's WSGI transport); any status
        the document does not list for the operation raises."""
        options: dict[str, Any] = {
            "base_url": "http://localhost",
            "headers": headers,
            "httpx_args": {"transport": httpx.WSGITransport(app=app)},
            "raise_on_unexpected_status": True,
        }
        if token is not None:
            return self.client_module.AuthenticatedClient(token=token, **options)
        return self.client_module.Client(**options)


@contextmanager
def generated(document: dict[str, Any], package: str, where: Path) -> Iterator[Generated]:
    """Generate ``package`` from ``document`` (no formatting hooks: ruff is not needed to
    import the output), import it, and forget it afterwards."""
    spec, config = where / "openapi.json", where / "config.yaml"
    spec.write_text(json.dumps(document))
    config.write_text(f"post_hooks: []\npackage_name_override: {package}\n")
    command = [sys.executable, "-m", "openapi_python_client", "generate", "--path", str(spec),
               "--config", str(config), "--meta", "none", "--output-path", str(where / package),
               "--fail-on-warning"]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    sys.path.insert(0, str(where))
    try:
        yield Generated(package)
    finally:
        sys.path.remove(str(where))
        for name in [name for name in sys.modules if name.split(".")[0] == package]:
            del sys.modules[name]


def ok(response: Any, status: int) -> Any:
    """The parsed body of a response that must have ``status``."""
    assert response.status_code == status, (response.status_code, response.content)
    return response.parsed


def problem(response: Any, status: int, gen: Generated) -> Any:
    parsed = ok(response, status)
    assert isinstance(parsed, gen.models.Problem)
    assert parsed.status == status
    return parsed


# -- the sample app -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def school_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Generated]:
    from sample_app import create_app

    document = create_app({"SQLALCHEMY_DATABASE_URI": "sqlite://"}).test_client()
    served = document.get("/api/openapi.json").get_json()
    with generated(served, "school_client", tmp_path_factory.mktemp("school")) as gen:
        yield gen


@pytest.fixture
def school() -> Iterator[tuple[Flask, dict[str, str]]]:
    """The sample app on its own database, seeded; the demo logins' tokens."""
    from sample_app import create_app, seed
    from sample_app.models import db

    url = separate_database_url("resources_kit_client")
    app = create_app(sample_app_config(url))
    with app.app_context():
        db.drop_all()
        db.create_all()
        tokens = seed()
        yield app, tokens
        db.session.remove()
        db.drop_all()
        for engine in db.engines.values():
            engine.dispose()
    if url.startswith("sqlite:///"):
        os.remove(url[len("sqlite:///") :])


def test_sample_app_crud_through_the_generated_client(
    school_client: Generated, school: tuple[Flask, dict[str, str]]
) -> None:
    gen, (app, tokens) = school_client, school
    m, client = gen.models, gen.client(app, token=tokens["north-admin"])
    body = m.TeacherCreate(name="Kay", email="kay@northside.example.org", credential="LIC-4242")
    created = ok(gen.call("teachers", "teachers_create", client=client, body=body), 201)
    assert isinstance(created, m.Teacher)  # every field required and present: id is an int
    assert isinstance(created.id, int)
    assert (created.years_teaching, created.mentor_id) == (0, None)  # the server's defaults

    # list, filtered through the typed filters model and sorted by an enum
    filters = json.dumps(m.TeachersFilters(years_teaching_gte=3, name_icontains="a").to_dict())
    sort = [m.TeachersListSortItem.YEARS_TEACHING_DESC, m.TeachersListSortItem.NAME]
    page = ok(gen.call("teachers", "teachers_list", client=client, filters=filters, sort=sort,
                       limit=1), 200)  # fmt: skip
    assert isinstance(page, m.TeachersListResponse200)
    assert (page.total, page.limit, page.offset) == (2, 1, 0)
    assert [t.name for t in page.items] == ["Grace Hopper"]
    assert all(isinstance(t, m.Teacher) for t in page.items)
    assert page.links.prev is None
    assert "offset=1" in page.links.next_
    second = ok(gen.call("teachers", "teachers_list", client=client, filters=filters, sort=sort,
                         limit=1, offset=1), 200)  # fmt: skip
    assert [t.name for t in second.items] == ["Ada Byron"]
    assert second.links.next_ is None
    trimmed = ok(gen.call("teachers", "teachers_list", client=client,
                          fields=[m.TeachersListFieldsItem.NAME]), 200)  # fmt: skip
    assert all(isinstance(t, m.TeacherFields) and isinstance(t.id, gen.types.Unset)
               for t in trimmed.items)  # fmt: skip

    # get, then PATCH one field: only that field is sent, and only it changes
    read = gen.call("teachers", "teachers_retrieve", created.id, client=client)
    before = ok(read, 200)
    patch = m.TeacherPatch(name="Kay Byron")
    assert patch.to_dict() == {"name": "Kay Byron"}
    ok(gen.call("teachers", "teachers_promote", created.id, client=client), 200)  # years: 1
    patched = ok(gen.call("teachers", "teachers_partial_update", created.id, client=client,
                          body=patch), 200)  # fmt: skip
    assert patched.to_dict() == {**before.to_dict(), "name": "Kay Byron", "years_teaching": 1}

    # PUT from a GET: the response model converts to the replace body (plus the
    # write-only credential, which no response returns); a stale If-Match is a 412
    got = gen.call("teachers", "teachers_retrieve", created.id, client=client)
    replace = m.TeacherReplace.from_dict({**ok(got, 200).to_dict(), "credential": "LIC-4243"})
    stale = gen.call("teachers", "teachers_update", created.id, client=client, body=replace,
                     if_match=read.headers["ETag"])  # fmt: skip
    problem(stale, 412, gen)
    put = gen.call("teachers", "teachers_update", created.id, client=client, body=replace,
                   if_match=got.headers["ETag"])  # fmt: skip
    assert ok(put, 200).to_dict() == got.parsed.to_dict()
    not_modified = gen.call("teachers", "teachers_retrieve", created.id, client=client,
                            if_none_match=put.headers["ETag"])  # fmt: skip
    assert not_modified.status_code == 304

    # nested students, walked with cursors
    teacher_id = page.items[0].id
    student = m.StudentCreate(name="Hal", grade_level=4)
    made = ok(gen.call("teachers_students", "teachers_students_create", teacher_id,
                       client=client, body=student), 201)  # fmt: skip
    assert (made.teacher_id, made.grade_level) == (teacher_id, 4)
    seen, cursor = [], gen.types.UNSET
    while True:
        listed = ok(gen.call("teachers_students", "teachers_students_list", teacher_id,
                             client=client, limit=1, cursor=cursor), 200)  # fmt: skip
        seen.extend(s.name for s in listed.items)
        if listed.next_ is None:
            break
        cursor = listed.next_
    assert seen == ["Fay", "Gus", "Hal"]
    one = ok(gen.call("teachers_students", "teachers_students_retrieve", teacher_id, made.id,
                      client=client), 200)  # fmt: skip
    assert one.to_dict() == made.to_dict()
    ok(gen.call("teachers_students", "teachers_students_partial_update", teacher_id, made.id,
                client=client, body=m.StudentPatch(grade_level=5)), 200)  # fmt: skip
    again = ok(gen.call("teachers_students", "teachers_students_retrieve", teacher_id, made.id,
                        client=client), 200)  # fmt: skip
    assert again.to_dict() == {**made.to_dict(), "grade_level": 5}
    replaced = m.StudentReplace.from_dict(again.to_dict())
    ok(gen.call("teachers_students", "teachers_students_update", teacher_id, made.id,
                client=client, body=replaced), 200)  # fmt: skip
    gone = gen.call("teachers_students", "teachers_students_destroy", teacher_id, made.id,
                    client=client)  # fmt: skip
    assert ok(gone, 204) is None
    ok(gen.call("teachers", "teachers_destroy", created.id, client=client), 204)


def test_sample_app_bulk_create_through_the_generated_client(
    school_client: Generated, school: tuple[Flask, dict[str, str]]
) -> None:
    """The create's ``oneOf`` (an item or an array of items) is a union the generated
    client sends and parses both ways."""
    gen, (app, tokens) = school_client, school
    m, client = gen.models, gen.client(app, token=tokens["north-ada"])
    body = [m.StudentCreate(name="Kit", grade_level=3), m.StudentCreate(name="Lu", grade_level=4)]
    made = ok(gen.call("teachers_students", "teachers_students_create", 1, client=client,
                       body=body), 201)  # fmt: skip
    assert isinstance(made, list)
    assert all(isinstance(student, m.Student) for student in made)
    assert [(s.name, s.teacher_id) for s in made] == [("Kit", 1), ("Lu", 1)]
    one = ok(gen.call("teachers_students", "teachers_students_create", 1, client=client,
                      body=m.StudentCreate(name="Mo", grade_level=5)), 201)  # fmt: skip
    assert isinstance(one, m.Student)
    bad = [m.StudentCreate(name="No", grade_level=3), m.StudentCreate(name="", grade_level=3)]
    refused = problem(gen.call("teachers_students", "teachers_students_create", 1,
                               client=client, body=bad), 422, gen)  # fmt: skip
    assert list(refused.errors.to_dict()) == ["1"]


def test_sample_app_actions_and_errors_through_the_generated_client(
    school_client: Generated, school: tuple[Flask, dict[str, str]]
) -> None:
    gen, (app, tokens) = school_client, school
    m, admin = gen.models, gen.client(app, token=tokens["north-admin"])
    teachers = ok(gen.call("teachers", "teachers_list", client=admin), 200).items
    ada = next(t for t in teachers if t.name == "Ada Byron")

    promoted = ok(gen.call("teachers", "teachers_promote", ada.id, client=admin), 200)
    assert isinstance(promoted, m.Teacher)
    assert promoted.to_dict() == {**ada.to_dict(), "years_teaching": ada.years_teaching + 1}
    stats = ok(gen.call("teachers", "teachers_stats", client=admin), 200)
    assert isinstance(stats, m.Stats)
    assert stats.teachers == 2
    assert stats.average_years_teaching == pytest.approx((4 + 6) / 2)

    south = ok(gen.call("teachers", "teachers_list", client=gen.client(
        app, token=tokens["south-admin"])), 200).items[0]  # fmt: skip
    problem(gen.call("teachers", "teachers_retrieve", south.id, client=admin), 404, gen)
    problem(gen.call("teachers", "teachers_list", client=admin, filters="{bad"), 400, gen)
    revoked = m.TeacherCreate(name="Zed", email="zed@northside.example.org",
                              credential="LIC-0000")  # fmt: skip
    refused = problem(gen.call("teachers", "teachers_create", client=admin, body=revoked), 422,
                      gen)  # fmt: skip
    assert refused.errors.additional_properties["credential"] == ["This licence has been revoked."]
    problem(gen.call("teachers", "teachers_destroy", ada.id, client=admin), 409, gen)  # students
    auditor = gen.client(app, token=tokens["north-auditor"])
    problem(gen.call("teachers", "teachers_promote", ada.id, client=auditor), 403, gen)
    nobody = gen.client(app, token="not-a-token")
    problem(gen.call("teachers", "teachers_stats", client=nobody), 401, gen)


# -- an acceptance-style app: tenancy, nesting, actions with response schemas, cursors --


class CardSchema(ma.Schema):
    name = ma.fields.String(required=True)
    students = ma.fields.Integer(required=True)


class Teachers(models.ScopedTeacherResource):
    @action(detail=True, methods=["GET"], response=CardSchema)
    def card(self, obj: models.Teacher) -> Any:
        return {"name": obj.name, "students": len(obj.students)}

    @action(detail=True, response=models.TeacherSchema, status=201)
    def archive(self, obj: models.Teacher) -> Any:
        obj.region = "archived"
        return obj


def register_acceptance(router: Router) -> None:
    router.register(Teachers)
    router.register(models.ScopedStudentResource, parent=Teachers)
    router.register(models.CursorGadgetResource)


@pytest.fixture(scope="module")
def acceptance_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Generated]:
    served = make_app(register_acceptance).test_client().get("/api/openapi.json").get_json()
    where = tmp_path_factory.mktemp("acceptance")
    with generated(served, "acceptance_client", where) as gen:
        yield gen


@pytest.fixture
def acceptance(app: Flask) -> Iterator[Flask]:
    made = make_app(register_acceptance)
    with running(made):
        yield made


def test_acceptance_app_through_the_generated_client(
    acceptance_client: Generated, acceptance: Flask
) -> None:
    gen, m = acceptance_client, acceptance_client.models
    rows = seed_two_schools()
    # No tenant: refused (first: the app context of the test, and its g, outlive a request)
    problem(gen.call("teachers", "teachers_list", client=gen.client(acceptance)), 403, gen)
    one = gen.client(acceptance, **{"X-School": str(rows["one"])})
    ada = ok(gen.call("teachers", "teachers_retrieve", rows["ada"], client=one), 200)
    assert (ada.name, ada.school_id, ada.email) == ("Ada", rows["one"], None)  # nullable
    problem(gen.call("teachers", "teachers_retrieve", rows["bob"], client=one), 404, gen)

    made = ok(gen.call("teachers", "teachers_create", client=one,
                       body=m.TeacherCreate(name="Eve", years_teaching=2)), 201)  # fmt: skip
    assert made.school_id == rows["one"]  # stamped by the scope, not settable
    assert "school_id" not in {field.name for field in m.TeacherCreate.__attrs_attrs__}
    ok(gen.call("teachers", "teachers_partial_update", made.id, client=one,
                body=m.TeacherPatch(region="w")), 200)  # fmt: skip
    got = ok(gen.call("teachers", "teachers_retrieve", made.id, client=one), 200)
    assert got.to_dict() == {**made.to_dict(), "region": "w"}  # years_teaching kept
    ok(gen.call("teachers", "teachers_update", made.id, client=one,
                body=m.TeacherReplace.from_dict(got.to_dict())), 200)  # fmt: skip

    card = ok(gen.call("teachers", "teachers_card", rows["ada"], client=one), 200)
    assert isinstance(card, m.Card)
    assert (card.name, card.students) == ("Ada", 1)
    archived = ok(gen.call("teachers", "teachers_archive", rows["ada"], client=one), 201)
    assert isinstance(archived, m.Teacher)
    assert archived.region == "archived"
    problem(gen.call("teachers", "teachers_card", rows["bob"], client=one), 404, gen)

    students = ok(gen.call("teachers_students", "teachers_students_list", rows["ada"],
                           client=one), 200)  # fmt: skip
    assert [s.name for s in students.items] == ["Cy"]
    problem(gen.call("teachers_students", "teachers_students_list", rows["bob"], client=one),
            404, gen)  # fmt: skip
    student = ok(gen.call("teachers_students", "teachers_students_create", rows["ada"],
                          client=one, body=m.StudentCreate(name="Flo", age=7)), 201)  # fmt: skip
    assert student.teacher_id == rows["ada"]


def test_enum_columns_and_cursor_pages_through_the_generated_client(
    acceptance_client: Generated, acceptance: Flask
) -> None:
    gen, m = acceptance_client, acceptance_client.models
    seed(*(models.Gadget(label=f"g{i}", kind=("small", "large", None)[i % 3]) for i in range(5)))
    client = gen.client(acceptance)
    tag, listing = "cursor_gadgets", "cursor_gadgets_list"
    kinds, cursor = [], gen.types.UNSET
    while True:
        page = ok(gen.call(tag, listing, client=client, limit=2, cursor=cursor,
                           sort=[m.CursorGadgetsListSortItem.LABEL]), 200)  # fmt: skip
        kinds.extend(g.kind for g in page.items)
        if page.next_ is None:
            break
        cursor = page.next_
    assert kinds == [m.GadgetKind.SMALL, m.GadgetKind.LARGE, None, m.GadgetKind.SMALL,
                     m.GadgetKind.LARGE]  # fmt: skip
    made = ok(gen.call(tag, "cursor_gadgets_create", client=client,
                       body=m.GadgetCreate(label="new", kind=m.GadgetKind.LARGE)), 201)  # fmt: skip
    assert made.kind is m.GadgetKind.LARGE
    filters = json.dumps(m.CursorGadgetsFilters(kind_in=[m.GadgetKind.LARGE]).to_dict())
    large = ok(gen.call(tag, listing, client=client, filters=filters), 200)
    assert {g.label for g in large.items} == {"g1", "g4", "new"}
