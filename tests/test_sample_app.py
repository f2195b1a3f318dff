"""The sample school API, exercised as a client would."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import run_state_machine_as_test
from sqlalchemy import select

from resources_kit.testing import crud_contract
from sample_app import create_app, seed
from sample_app.models import AuditLog, Mailbox, Report, Student, Teacher, User, db, jobs
from sample_app.resources import REVOKED_LICENCES, StudentResource, TeacherResource

from .conftest import sample_app_config, separate_database_url

#: Headers of demo users, filled from the tokens seed() returns.
NORTH: dict[str, str] = {}  # the north school's admin
SOUTH: dict[str, str] = {}  # the south school's admin
AS: dict[str, dict[str, str]] = {}  # login -> headers
NEW_TEACHER = {"name": "Kay", "email": "kay@northside.example.org", "credential": "LIC-4242"}


@pytest.fixture
def sample() -> Iterator[tuple[Flask, Any]]:
    url = separate_database_url("resources_kit_sample")
    app = create_app(sample_app_config(url))
    with app.app_context():
        db.drop_all()
        db.create_all()
        tokens = seed()
        AS.clear()
        AS.update({login: {"Authorization": f"Bearer {t}"} for login, t in tokens.items()})
        NORTH.clear()
        NORTH.update(AS["north-admin"])
        SOUTH.clear()
        SOUTH.update(AS["south-admin"])
        yield app, app.test_client()
        db.session.remove()
        db.drop_all()
        for engine in db.engines.values():
            engine.dispose()
    if url.startswith("sqlite:///"):
        os.remove(url[len("sqlite:///") :])


def counts() -> tuple[int, int, int, int]:
    db.session.rollback()
    return tuple(  # type: ignore[return-value]
        db.session.query(model).count() for model in (Teacher, Student, AuditLog, Mailbox)
    )


def test_without_token_is_401_problem(sample: tuple[Flask, Any]) -> None:
    _, client = sample
    response = client.get("/api/teachers")
    assert response.status_code == 401
    assert response.content_type == "application/problem+json"
    assert response.headers["WWW-Authenticate"].lower().startswith("bearer")
    assert client.get("/api/teachers", headers={"Authorization": "Bearer nope"}).status_code == 401


def test_each_school_sees_its_own_teachers(sample: tuple[Flask, Any]) -> None:
    _, client = sample
    north = client.get("/api/teachers", headers=NORTH).json["items"]
    south = client.get("/api/teachers", headers=SOUTH).json["items"]
    assert {t["email"].split("@")[1] for t in north} == {"northside.example.org"}
    assert {t["email"].split("@")[1] for t in south} == {"southside.example.org"}
    assert "credential" not in north[0]  # load_only
    other = south[0]["id"]
    assert client.get(f"/api/teachers/{other}", headers=NORTH).status_code == 404
    assert client.get(f"/api/teachers/{other}/students", headers=NORTH).status_code == 404


def test_create_teacher_audits_and_queues_welcome(sample: tuple[Flask, Any]) -> None:
    _, client = sample
    before = counts()
    response = client.post("/api/teachers", json=NEW_TEACHER, headers=NORTH)
    assert response.status_code == 201
    assert counts() == (before[0] + 1, before[1], before[2] + 1, before[3] + 1)
    audit = db.session.query(AuditLog).order_by(AuditLog.id.desc()).first()
    assert (audit.operation, audit.resource, audit.row_id) == (
        "create",
        "teachers",
        response.json["id"],
    )
    # The welcome email: a job committed with the teacher, run right after the commit
    # (no broker here), under the school's scope.
    email = db.session.query(Mailbox).one()
    assert (email.to, email.subject) == (NEW_TEACHER["email"], "Welcome, Kay!")
    job = db.session.get(jobs.model, email.job_id)
    assert (job.task, job.status, job.attempts) == ("send_welcome", "succeeded", 1)


def test_a_refused_create_sends_no_email(sample: tuple[Flask, Any]) -> None:
    _, client = sample
    client.post("/api/teachers", json=NEW_TEACHER, headers=NORTH)
    again = client.post("/api/teachers", json=NEW_TEACHER, headers=NORTH)  # same email
    assert again.status_code == 409
    db.session.rollback()
    assert db.session.query(Mailbox).count() == db.session.query(jobs.model).count() == 1


def test_a_report_is_202_and_a_job_to_poll(sample: tuple[Flask, Any]) -> None:
    _, client = sample
    teacher = client.get("/api/teachers", headers=NORTH).json["items"][0]
    answer = client.post(f"/api/teachers/{teacher['id']}/report", headers=NORTH)
    assert answer.status_code == 202
    location = answer.headers["Location"]
    assert location == f"/api/jobs/{answer.json['id']}"
    status = client.get(location, headers=AS["north-auditor"])
    assert status.status_code == 200
    assert status.json["status"] == "succeeded"
    assert status.json["result"] == {"teacher": teacher["name"], "students": 3}
    assert db.session.query(Report).one().students == 3
    # Another school's caller cannot see the job; a caller without a token is a 401;
    # an auditor may read but not start reports.
    assert client.get(location, headers=SOUTH).status_code == 404
    assert client.get(location).status_code == 401
    refused = client.post(f"/api/teachers/{teacher['id']}/report", headers=AS["north-auditor"])
    assert refused.status_code == 403


@pytest.mark.parametrize(
    ("credential", "message"),
    [
        ("nope", "String does not match expected pattern."),
        ("LIC-0000", "This licence has been revoked."),
    ],
)
def test_bad_credential_is_422_and_leaves_nothing(
    sample: tuple[Flask, Any], credential: str, message: str
) -> None:
    _, client = sample
    before = counts()
    response = client.post(
        "/api/teachers", json={**NEW_TEACHER, "credential": credential}, headers=NORTH
    )
    assert response.status_code == 422
    assert response.json["errors"] == {"credential": [message]}
    assert counts() == before


def test_students_nested_and_audited(sample: tuple[Flask, Any]) -> None:
    _, client = sample
    teacher = client.get("/api/teachers", headers=NORTH).json["items"][0]["id"]
    before = counts()
    created = client.post(
        f"/api/teachers/{teacher}/students", json={"name": "Hal", "grade_level": 3}, headers=NORTH
    )
    assert created.status_code == 201
    assert created.json["teacher_id"] == teacher
    assert (
        client.post(
            f"/api/teachers/{teacher}/students",
            json={"name": "Hal", "grade_level": 3},
            headers=SOUTH,
        ).status_code
        == 404
    )
    deleted = client.delete(created.headers["Location"], headers=NORTH)
    assert deleted.status_code == 204
    assert counts() == (before[0], before[1], before[2] + 2, before[3])


def test_teachers_include_their_students(sample: tuple[Flask, Any]) -> None:
    _, client = sample
    north = client.get("/api/teachers?include=students", headers=NORTH).json["items"]
    for teacher in north:
        listed = client.get(f"/api/teachers/{teacher['id']}/students?limit=100", headers=NORTH)
        assert teacher["students"] == sorted(listed.json["items"], key=lambda s: s["name"])
    assert any(teacher["students"] for teacher in north)
    # The cached list is another answer with ?include=, and a student's write ends it.
    first = north[0]
    made = client.post(
        f"/api/teachers/{first['id']}/students",
        json={"name": "Hal", "grade_level": 3},
        headers=NORTH,
    )
    assert made.status_code == 201
    again = client.get("/api/teachers?include=students", headers=NORTH).json["items"]
    assert "Hal" in [s["name"] for s in again[0]["students"]]
    assert client.get("/api/teachers?include=mentor", headers=NORTH).status_code == 400


def test_list_queries(sample: tuple[Flask, Any]) -> None:
    _, client = sample
    listed = client.get(
        '/api/teachers?sort=years_teaching__desc&fields=name&filters={"years_teaching__gte":1}',
        headers=NORTH,
    )
    assert listed.json["items"] == [{"name": "Grace Hopper"}, {"name": "Ada Byron"}]
    found = client.get("/api/teachers?search=GRACE", headers=NORTH).json
    assert [t["name"] for t in found["items"]] == ["Grace Hopper"]
    by_pupil = client.get('/api/teachers?filters={"students.name":"Fay"}', headers=SOUTH).json
    assert [t["name"] for t in by_pupil["items"]] == ["Grace Hopper"]


CONTRACT = settings(
    max_examples=10, stateful_step_count=15, deadline=None, suppress_health_check=list(HealthCheck)
)
LICENCES = st.from_regex(r"LIC-\d{4}", fullmatch=True).filter(lambda c: c not in REVOKED_LICENCES)


def reseed() -> None:
    db.session.rollback()
    db.session.query(User).update({User.teacher_id: None})
    for model in (Mailbox, AuditLog, Student, Teacher):
        db.session.query(model).delete()
    db.session.commit()
    db.session.expunge_all()


def test_contract_on_tenant_scoped_teachers(sample: tuple[Flask, Any]) -> None:
    _, client = sample
    contract = crud_contract(
        client,
        "/api/teachers",
        resource=TeacherResource,
        headers=NORTH,
        other_headers=SOUTH,
        overrides={"credential": LICENCES, "mentor_id": st.none()},
        setup=reseed,
    )
    run_state_machine_as_test(contract, settings=CONTRACT)


def test_contract_on_nested_students(sample: tuple[Flask, Any]) -> None:
    """Students of one north teacher; the contract starts from whatever the list holds."""
    _, client = sample
    reseed()
    teacher = client.post("/api/teachers", json=NEW_TEACHER, headers=NORTH).get_json()["id"]
    other = {**NEW_TEACHER, "email": "lee@northside.example.org", "name": "Lee"}
    colleague = client.post("/api/teachers", json=other, headers=NORTH).get_json()["id"]
    contract = crud_contract(
        client,
        f"/api/teachers/{teacher}/students",
        resource=StudentResource,
        headers=NORTH,
        other_headers=SOUTH,
        other_parent_url=f"/api/teachers/{colleague}/students",
    )
    run_state_machine_as_test(contract, settings=CONTRACT)


def test_seed_is_idempotent(sample: tuple[Flask, Any]) -> None:
    before = counts()
    seed()
    assert counts() == before


def test_promote_and_stats_actions(sample: tuple[Flask, Any]) -> None:
    _, client = sample
    assert client.get("/api/teachers/stats").status_code == 401  # first: the fixture keeps g
    north = client.get("/api/teachers", headers=NORTH).json["items"]
    south = client.get("/api/teachers", headers=SOUTH).json["items"]
    ada = north[0]
    before = counts()
    promoted = client.post(f"/api/teachers/{ada['id']}/promote", headers=NORTH)
    assert promoted.status_code == 200
    assert promoted.json["years_teaching"] == ada["years_teaching"] + 1
    assert counts() == (before[0], before[1], before[2] + 1, before[3])  # one audit row
    other = client.post(f"/api/teachers/{south[0]['id']}/promote", headers=NORTH)
    assert other.status_code == 404
    assert counts() == (before[0], before[1], before[2] + 1, before[3])
    stats = client.get("/api/teachers/stats", headers=NORTH).json
    assert stats["teachers"] == len(north)


def test_mentor_must_be_a_teacher_of_the_same_school(sample: tuple[Flask, Any]) -> None:
    _, client = sample
    north = client.get("/api/teachers", headers=NORTH).json["items"]
    south = client.get("/api/teachers", headers=SOUTH).json["items"]
    before = counts()
    foreign = client.patch(
        f"/api/teachers/{north[0]['id']}", json={"mentor_id": south[0]["id"]}, headers=NORTH
    )
    assert foreign.status_code == 422
    assert foreign.json["errors"] == {"mentor_id": ["No such item."]}
    assert counts() == before
    own = client.patch(
        f"/api/teachers/{north[0]['id']}", json={"mentor_id": north[1]["id"]}, headers=NORTH
    )
    assert own.status_code == 200
    assert own.json["mentor_id"] == north[1]["id"]


def test_years_must_be_whole(sample: tuple[Flask, Any]) -> None:
    _, client = sample
    body = {**NEW_TEACHER, "years_teaching": 1.5}
    assert client.post("/api/teachers", json=body, headers=NORTH).status_code == 422


def test_roles(sample: tuple[Flask, Any]) -> None:
    """An admin changes anything in the school, a teacher only their own students, an
    auditor nothing; another school's rows are 404 to everyone."""
    _, client = sample
    ada, grace = AS["north-ada"], AS["north-grace"]
    teachers = {t["name"]: t["id"] for t in client.get("/api/teachers", headers=ada).json["items"]}
    ada_students = f"/api/teachers/{teachers['Ada Byron']}/students"
    grace_students = f"/api/teachers/{teachers['Grace Hopper']}/students"
    cy = client.get(ada_students, headers=grace).json["items"][0]["id"]  # Grace may read
    before = counts()
    assert (
        client.patch(f"{ada_students}/{cy}", json={"name": "Cyd"}, headers=grace).status_code == 403
    )
    assert (
        client.post(ada_students, json={"name": "X", "grade_level": 1}, headers=grace).status_code
        == 403
    )
    assert (
        client.patch(
            f"/api/teachers/{teachers['Ada Byron']}", json={"years_teaching": 9}, headers=ada
        ).status_code
        == 403
    )
    for method in ("post", "patch", "delete"):
        auditor = getattr(client, method)(
            f"{ada_students}/{cy}" if method != "post" else ada_students,
            json={"name": "Z", "grade_level": 2},
            headers=AS["north-auditor"],
        )
        assert auditor.status_code == 403, method
    assert counts() == before
    assert (
        client.patch(f"{ada_students}/{cy}", json={"name": "Cyd"}, headers=ada).status_code == 200
    )
    assert (
        client.post(
            grace_students, json={"name": "Hal", "grade_level": 1}, headers=grace
        ).status_code
        == 201
    )
    south = client.get("/api/teachers", headers=SOUTH).json["items"][0]["id"]
    for headers in (ada, AS["north-auditor"], NORTH):
        assert client.get(f"/api/teachers/{south}", headers=headers).status_code == 404
    forged = {"Authorization": "Bearer " + AS["north-admin"]["Authorization"][-20:]}
    assert client.get("/api/teachers", headers=forged).status_code == 401


def test_openapi_has_the_bearer_scheme_and_refusals(sample: tuple[Flask, Any]) -> None:
    _, client = sample
    document = client.get("/api/openapi.json").json
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    patch = document["paths"]["/api/teachers/{teacher_id}/students/{student_id}"]["patch"]
    assert patch["security"] == [{"bearer": []}]
    assert {"401", "403", "404"} <= set(patch["responses"])


# -- the command line ---------------------------------------------------------------------


def test_help_prints_usage_and_starts_no_server() -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "sample_app", "--help"],
        capture_output=True,
        text=True,
        timeout=30,  # a server would never return
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: ")
    for command in ("serve", "token", "reset", "policies"):
        assert command in done.stdout
    assert "School API on" not in done.stdout


def test_reset_drops_what_earlier_runs_changed(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from sample_app.__main__ import main

    url = f"sqlite:///{tmp_path / 'demo.sqlite3'}"
    monkeypatch.setenv("SAMPLE_APP_DATABASE_URL", url)
    # main() says one process serves (an in-process cache); here two apps share the file.
    monkeypatch.setenv("SAMPLE_APP_ONE_PROCESS", "")
    assert main(["token", "north-admin"]) == 0
    token = capsys.readouterr().out.strip()
    app = create_app()
    headers = {"Authorization": f"Bearer {token}"}
    with app.app_context():
        client = app.test_client()
        assert client.post("/api/teachers", json=NEW_TEACHER, headers=headers).status_code == 201
        before = client.get("/api/teachers", headers=headers).json["total"]
        db.session.remove()
        for engine in db.engines.values():
            engine.dispose()
    assert main(["reset"]) == 0
    assert "Reset" in capsys.readouterr().out
    with app.app_context():  # the seeded users again (tokens name them by id): Kay gone
        assert app.test_client().get("/api/teachers", headers=headers).json["total"] == before - 1
        db.session.remove()
        for engine in db.engines.values():
            engine.dispose()
    assert main(["token", "nobody"]) == 2


def test_the_hint_runs_the_interpreter_that_serves(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import shlex
    import sys

    from sample_app.__main__ import serve

    served: list[Any] = []
    app = create_app()
    monkeypatch.setattr(app, "run", lambda **kwargs: served.append(kwargs))
    assert serve(app, {"north-admin": "t"}) == 0
    hint = next(line for line in capsys.readouterr().out.splitlines() if "try:" in line)
    assert f"$({shlex.quote(sys.executable)} -m sample_app token north-admin)" in hint
    assert served == [{"host": "127.0.0.1", "port": 5000}]
    with app.app_context():
        for engine in db.engines.values():
            engine.dispose()


def test_the_sample_app_starts_with_row_level_security(monkeypatch: Any) -> None:
    """Every tenant-scoped resource of it either has the school column the policies
    compare or opts out (the jobs): the scale-out run starts it this way."""
    from .conftest import DB_URL, separate_database_url

    if not DB_URL.startswith("postgresql"):
        pytest.skip("row-level security is PostgreSQL's; elsewhere it is refused")
    monkeypatch.setenv("SAMPLE_APP_ROW_LEVEL_SECURITY", "1")
    monkeypatch.setenv("SAMPLE_APP_DATABASE_URL", separate_database_url("resources_kit_sample"))
    app = create_app()
    assert any(rule.rule == "/api/teachers" for rule in app.url_map.iter_rules())
    with app.app_context():
        db.session.remove()
        for engine in db.engines.values():
            engine.dispose()


def test_students_are_created_in_bulk(sample: tuple[Flask, Any]) -> None:
    """The README's bulk line: a class list at once, every student or none."""
    app, client = sample
    url = "/api/teachers/1/students"
    body = [{"name": "Kit", "grade_level": 3}, {"name": "Lu", "grade_level": 4}]
    made = client.post(url, json=body, headers=AS["north-ada"])
    assert made.status_code == 201, made.json
    assert [item["name"] for item in made.json] == ["Kit", "Lu"]
    assert {item["teacher_id"] for item in made.json} == {1}
    bad = client.post(
        url,
        json=[{"name": "Mo", "grade_level": 3}, {"name": "No", "grade_level": 13}],
        headers=AS["north-ada"],
    )
    assert bad.status_code == 422
    assert set(bad.json["errors"]) == {"1"}
    assert set(bad.json["errors"]["1"]) == {"grade_level"}
    others = client.post("/api/teachers/2/students", json=body, headers=AS["north-ada"])
    assert others.status_code == 403  # Grace's students: Ada changes only her own
    with app.app_context():
        names = db.session.scalars(select(Student.name).where(Student.teacher_id == 1)).all()
        assert sorted(names) == ["Cy", "Di", "Eli", "Kit", "Lu"]
        assert not db.session.scalars(select(Student).where(Student.name.in_(["Mo", "No"]))).all()


def test_a_bulk_create_sets_each_items_clubs_inside_the_policy(
    sample: tuple[Flask, Any],
) -> None:
    """A bulk item's ``club_ids`` is set as a single create's is: its own school's clubs
    linked, another school's a 422 naming the item, and then nothing is written."""
    app, client = sample
    clubs = {c["name"]: c["id"] for c in client.get("/api/clubs", headers=NORTH).json["items"]}
    south = {c["name"]: c["id"] for c in client.get("/api/clubs", headers=SOUTH).json["items"]}
    url = "/api/teachers/1/students"
    body = [
        {"name": "Kit", "grade_level": 3, "club_ids": [clubs["Chess"], clubs["Choir"]]},
        {"name": "Lu", "grade_level": 4, "club_ids": []},
    ]
    made = client.post(url, json=body, headers=AS["north-ada"])
    assert made.status_code == 201, made.json
    assert [item["club_ids"] for item in made.json] == [
        sorted([clubs["Chess"], clubs["Choir"]]),
        [],
    ]
    kit = client.get(f"{url}/{made.json[0]['id']}", headers=AS["north-ada"]).json
    assert kit["club_ids"] == sorted([clubs["Chess"], clubs["Choir"]])
    refused = client.post(
        url,
        json=[{"name": "Mo", "grade_level": 3}, {"name": "No", "grade_level": 3,
                                                   "club_ids": [south["Chess"]]}],
        headers=AS["north-ada"],
    )  # fmt: skip
    assert refused.status_code == 422
    assert set(refused.json["errors"]) == {"1"}
    assert set(refused.json["errors"]["1"]) == {"club_ids"}
    with app.app_context():
        assert not db.session.scalars(select(Student).where(Student.name.in_(["Mo", "No"]))).all()


def test_students_and_clubs_many_to_many(sample: tuple[Flask, Any]) -> None:
    """Clubs are scoped by school; a student's clubs are linked by who may change the
    student (an admin, the student's own teacher), never to another school's club."""
    _, client = sample
    clubs = {c["name"]: c["id"] for c in client.get("/api/clubs", headers=NORTH).json["items"]}
    south = {c["name"]: c["id"] for c in client.get("/api/clubs", headers=SOUTH).json["items"]}
    assert set(clubs) == set(south) == {"Chess", "Choir"}
    assert client.get(f"/api/clubs/{south['Chess']}", headers=NORTH).status_code == 404
    teachers = {
        t["name"]: t["id"] for t in client.get("/api/teachers", headers=NORTH).json["items"]
    }
    ada_students = f"/api/teachers/{teachers['Ada Byron']}/students"
    cy = next(s for s in client.get(ada_students, headers=NORTH).json["items"] if s["name"] == "Cy")
    assert cy["club_ids"] == [clubs["Chess"]]  # seeded
    url = f"{ada_students}/{cy['id']}"
    grace_students = f"/api/teachers/{teachers['Grace Hopper']}/students"
    assert client.get(f"{grace_students}/{cy['id']}/clubs", headers=NORTH).status_code == 404
    wrong_parent = f"{grace_students}/{cy['id']}/clubs/{clubs['Choir']}"
    assert client.put(wrong_parent, headers=NORTH).status_code == 404
    chess = client.get(f"{url}/clubs", headers=NORTH).json["items"]
    assert [c["name"] for c in chess] == ["Chess"]

    ada, grace = AS["north-ada"], AS["north-grace"]
    assert client.put(f"{url}/clubs/{clubs['Choir']}", headers=ada).status_code == 204
    assert client.put(f"{url}/clubs/{clubs['Choir']}", headers=grace).status_code == 403
    assert (
        client.delete(f"{url}/clubs/{clubs['Chess']}", headers=AS["north-auditor"]).status_code
        == 403
    )
    assert client.put(f"{url}/clubs/{south['Choir']}", headers=NORTH).status_code == 404
    assert client.get(url, headers=NORTH).json["club_ids"] == sorted(
        [clubs["Chess"], clubs["Choir"]]
    )
    db.session.rollback()
    audited = db.session.query(AuditLog).filter_by(operation="link").count()
    assert audited == 1  # in the same transaction as the link

    refused = client.patch(url, json={"club_ids": [south["Chess"]]}, headers=NORTH)
    assert refused.status_code == 422
    assert list(refused.json["errors"]) == ["club_ids"]
    replaced = client.patch(url, json={"club_ids": [clubs["Choir"]]}, headers=ada)
    assert replaced.status_code == 200
    assert replaced.json["club_ids"] == [clubs["Choir"]]
    assert client.delete(f"{url}/clubs/{clubs['Choir']}", headers=NORTH).status_code == 204
    assert client.get(f"{url}/clubs", headers=NORTH).json["items"] == []
