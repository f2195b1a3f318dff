from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import marshmallow as ma
import pytest
from flask import Flask, abort
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import inspect

from resources_kit import (
    Callback,
    CallbackMixin,
    ImproperlyConfigured,
    ModelResource,
    Router,
    signals,
)

from .conftest import make_app, reset_database, running, seed
from .models import (
    Audit,
    LoneTeacherResource,
    Student,
    StudentResource,
    Teacher,
    TeacherSchema,
    db,
)
from .test_errors import snapshot

EVENTS: list[tuple[str, ...]] = []
#: Which step fails and how: {"phase": "pre", "label": "B", "kind": "http"}.
PLAN: dict[str, str] = {}


def fail(kind: str) -> None:
    if kind == "http":
        abort(403)
    if kind == "validation":
        raise ma.ValidationError({"name": ["Refused by a callback."]})
    raise RuntimeError("callback exploded")


class Step(Callback):
    phase = ""
    label = ""

    def execute(self) -> None:
        session = db.session()
        state = inspect(self.resource)
        flushed = not (session.new or session.dirty or session.deleted)
        EVENTS.append(
            (
                self.phase,
                self.label,
                self.operation,
                "flushed" if flushed else "pending",
                "in-transaction" if session.in_transaction() else "committed",
                "has-id" if state.identity is not None else "no-id",
            )
        )
        assert self.view.action in ("create", "update", "partial_update", "destroy")
        assert isinstance(self.kwargs, dict)
        if PLAN.get("phase") == self.phase and PLAN.get("label") == self.label:
            fail(PLAN["kind"])


def step(phase: str, label: str) -> type[Callback]:
    return type(f"{phase}_{label}", (Step,), {"phase": phase, "label": label})


class AuditRow(Callback):
    def execute(self) -> None:
        db.session.add(Audit(operation=self.operation, table="teachers", row_id=self.resource.id))


def _lists(operation: str) -> dict[str, list[type[Callback]]]:
    return {
        f"pre_{operation}_callbacks": [step("pre", "A"), step("pre", "B")],
        f"post_{operation}_callbacks": [step("post", "A"), step("post", "B"), AuditRow],
        f"after_commit_{operation}_callbacks": [
            step("after_commit", "A"),
            step("after_commit", "B"),
        ],
    }


class CallbackTeachers(ModelResource):
    name = "cb-teachers"
    model = Teacher
    schema = TeacherSchema
    locals().update(_lists("create") | _lists("update") | _lists("patch") | _lists("delete"))


@pytest.fixture(scope="module")
def cb_app(app: Flask) -> Flask:
    return make_app(lambda router: router.register(CallbackTeachers), PROPAGATE_EXCEPTIONS=False)


@pytest.fixture
def cb_client(cb_app: Flask, database: Any) -> Iterator[Any]:
    EVENTS.clear()
    PLAN.clear()
    with running(cb_app) as client:
        yield client


@pytest.fixture
def received() -> Iterator[list[tuple[str, Any, Any, str]]]:
    seen: list[tuple[str, Any, Any, str]] = []

    def make(name: str) -> Any:
        def receiver(sender: Any, resource: Any, kwargs: Any, operation: str) -> None:
            seen.append((name, sender, resource, operation))
            EVENTS.append(("signal", name, operation))

        return receiver

    receivers = {
        signal: make(name)
        for name, signal in [
            ("created", signals.resource_created),
            ("updated", signals.resource_updated),
            ("deleted", signals.resource_deleted),
        ]
    }
    for signal, receiver in receivers.items():
        signal.connect(receiver)
    yield seen
    for signal, receiver in receivers.items():
        signal.disconnect(receiver)


OPERATIONS = {
    "create": ("post", "/api/cb-teachers", {"name": "Eve"}),
    "update": ("put", "/api/cb-teachers/{id}", {"name": "Adele", "region": "x"}),
    "patch": ("patch", "/api/cb-teachers/{id}", {"region": "south"}),
    "delete": ("delete", "/api/cb-teachers/{id}", None),
}
SUCCESS = {"create": 201, "update": 200, "patch": 200, "delete": 204}


def existing_teacher() -> int:
    teacher = Teacher(name="Ada", region="north")
    seed(teacher)
    return teacher.id


def call(client: Any, operation: str, teacher_id: int) -> Any:
    method, path, body = OPERATIONS[operation]
    return getattr(client, method)(path.format(id=teacher_id), json=body)


@pytest.mark.parametrize("operation", OPERATIONS)
def test_order_of_a_write(cb_client: Any, received: list[Any], operation: str) -> None:
    teacher_id = existing_teacher()
    response = call(cb_client, operation, teacher_id)
    assert response.status_code == SUCCESS[operation]
    signal = {"create": "created", "delete": "deleted"}.get(operation, "updated")
    pre_state = ("pending", "in-transaction", "no-id" if operation == "create" else "has-id")
    post_state = ("flushed", "in-transaction", "has-id")
    after_state = ("flushed", "committed", "has-id")
    assert [
        ("pre", "A", operation, *pre_state),
        ("pre", "B", operation, *pre_state),
        ("post", "A", operation, *post_state),
        ("post", "B", operation, *post_state),
        ("signal", signal, operation),
        ("after_commit", "A", operation, *after_state),
        ("after_commit", "B", operation, *after_state),
    ] == EVENTS
    audits = [(a.operation, a.table) for a in db.session.query(Audit)]
    assert audits == [(operation, "teachers")]


@pytest.mark.parametrize("operation", OPERATIONS)
@pytest.mark.parametrize("phase", ["pre", "post"])
@pytest.mark.parametrize(("kind", "status"), [("http", 403), ("validation", 422), ("error", 500)])
def test_failure_in_a_callback_rolls_everything_back(
    cb_client: Any,
    received: list[Any],
    operation: str,
    phase: str,
    kind: str,
    status: int,
) -> None:
    teacher_id = existing_teacher()
    before = snapshot()
    audits_before = db.session.query(Audit).count()
    PLAN.update(phase=phase, label="B", kind=kind)
    response = call(cb_client, operation, teacher_id)
    assert response.status_code == status
    assert response.content_type == "application/problem+json"
    if kind == "validation":
        assert response.json["errors"] == {"name": ["Refused by a callback."]}
    assert "exploded" not in response.get_data(as_text=True)
    assert snapshot() == before
    assert db.session.query(Audit).count() == audits_before
    assert received == []  # no signal for a failed write
    assert [e[:2] for e in EVENTS if e[0] == "after_commit"] == []


@pytest.mark.parametrize("operation", OPERATIONS)
def test_after_commit_failure_is_logged_and_response_stands(
    cb_client: Any, received: list[Any], operation: str, caplog: pytest.LogCaptureFixture
) -> None:
    teacher_id = existing_teacher()
    PLAN.update(phase="after_commit", label="A", kind="error")
    with caplog.at_level(logging.ERROR):
        response = call(cb_client, operation, teacher_id)
    assert response.status_code == SUCCESS[operation]
    assert [e[:2] for e in EVENTS if e[0] == "after_commit"] == [
        ("after_commit", "A"),
        ("after_commit", "B"),  # the next one still runs
    ]
    assert len(received) == 1
    assert "after_commit_A" in caplog.text
    assert "CallbackTeachers" in caplog.text
    assert db.session.query(Audit).count() == 1  # the write itself committed
    if operation == "delete":
        assert db.session.get(Teacher, teacher_id) is None


def test_signal_carries_sender_resource_and_kwargs(cb_client: Any) -> None:
    seen: list[dict[str, Any]] = []

    def receiver(sender: Any, **extra: Any) -> None:
        seen.append({"sender": sender, **extra})

    with signals.resource_created.connected_to(receiver, sender=CallbackTeachers):
        response = cb_client.post("/api/cb-teachers", json={"name": "Eve", "region": "west"})
    assert len(seen) == 1
    assert seen[0]["sender"] is CallbackTeachers
    assert seen[0]["operation"] == "create"
    assert seen[0]["resource"].id == response.json["id"]
    assert seen[0]["kwargs"] == {"name": "Eve", "region": "west"}


def test_signal_receiver_failure_does_not_undo_the_write(
    cb_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(sender: Any, **extra: Any) -> None:
        raise RuntimeError("receiver broke")

    with signals.resource_created.connected_to(broken), caplog.at_level(logging.ERROR):
        response = cb_client.post("/api/cb-teachers", json={"name": "Eve"})
    assert response.status_code == 201
    assert db.session.get(Teacher, response.json["id"]) is not None
    assert "receiver" in caplog.text


def test_callback_kwargs_include_scope_and_parent_key(database: Any) -> None:
    captured: list[dict[str, Any]] = []

    class Capture(Callback):
        def execute(self) -> None:
            captured.append(dict(self.kwargs))

    class Students(StudentResource):
        post_create_callbacks = [Capture]
        post_delete_callbacks = [Capture]

    def register(router: Router) -> None:
        router.register(LoneTeacherResource)
        router.register(Students, parent=LoneTeacherResource)

    app = make_app(register)
    with app.app_context():
        db.create_all()
        teacher = Teacher(name="Ada")
        seed(teacher)
        teacher_id = teacher.id
        client = app.test_client()
        created = client.post(f"/api/teachers/{teacher.id}/students", json={"name": "Cy"})
        client.delete(f"/api/teachers/{teacher.id}/students/{created.json['id']}")
        reset_database()
        db.session.remove()
    assert captured == [{"name": "Cy", "teacher_id": teacher_id}, {"teacher_id": teacher_id}]


def test_callback_lists_inherit_and_keep_list_order() -> None:
    class A(Callback):
        pass

    class B(Callback):
        pass

    class Base(CallbackMixin):
        post_create_callbacks = [A]

    class Child(Base):
        post_create_callbacks = [*Base.post_create_callbacks, B]

    class GrandChild(Child):
        pass

    assert list(GrandChild.post_create_callbacks) == [A, B]
    assert list(GrandChild.pre_create_callbacks) == []


@pytest.mark.parametrize("value", [["not a class"], [Teacher], "AuditRow", AuditRow])
def test_callback_lists_hold_callback_classes(value: Any) -> None:
    with pytest.raises(ImproperlyConfigured, match="post_create_callbacks must be a list"):
        type("Broken", (CallbackMixin,), {"post_create_callbacks": value})


def test_callback_must_override_execute() -> None:
    with pytest.raises(NotImplementedError, match="must override execute"):
        Callback(resource=None, kwargs={}, operation="create", view=None).execute()  # type: ignore[arg-type]


# -- property: a failing callback anywhere leaves the database as it was --------------------


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    operation=st.sampled_from(list(OPERATIONS)),
    failure=st.one_of(
        st.none(),
        st.fixed_dictionaries(
            {
                "phase": st.sampled_from(["pre", "post"]),
                "label": st.sampled_from(["A", "B"]),
                "kind": st.sampled_from(["http", "validation", "error"]),
            }
        ),
    ),
)
def test_failed_write_changes_nothing_and_success_applies_once(
    cb_client: Any, operation: str, failure: dict[str, str] | None
) -> None:
    reset_database()
    EVENTS.clear()
    PLAN.clear()
    teacher_id = existing_teacher()
    before = snapshot()
    if failure:
        PLAN.update(failure)
    response = call(cb_client, operation, teacher_id)
    after = snapshot()
    audits = db.session.query(Audit).all()
    if failure:
        assert response.status_code >= 400
        assert after == before
        assert audits == []
        return
    assert response.status_code == SUCCESS[operation]
    assert [(a.operation, a.row_id) for a in audits] == [
        (operation, response.json["id"] if operation == "create" else teacher_id)
    ]
    teachers = after["teachers"]
    if operation == "create":
        assert len(teachers) == 2
    elif operation == "delete":
        assert teachers == []
    else:
        assert len(teachers) == 1
        assert teachers != before["teachers"]


def test_model_resource_includes_callback_mixin() -> None:
    assert issubclass(ModelResource, CallbackMixin)
    assert Student is not None


def test_pre_callbacks_run_with_nothing_flushed(database: Any) -> None:
    """A pre callback that queries does not flush the pending INSERT (the docs' step 4)."""
    seen: list[int] = []

    class Peek(Callback):
        def execute(self) -> None:
            seen.append(db.session.query(Teacher).count())

    class Peeking(LoneTeacherResource):
        name = "peeking"
        pre_create_callbacks = [Peek]

    with running(make_app(lambda r: r.register(Peeking))) as client:
        assert client.post("/api/peeking", json={"name": "Eve"}).status_code == 201
    assert seen == [0]


def test_failing_receiver_cannot_break_the_after_commit_callbacks(database: Any) -> None:
    """A receiver that leaves the session in a failed transaction is isolated: the
    after-commit callbacks that follow still run, and what they commit is kept."""
    from sqlalchemy import text

    from resources_kit import signals

    class Record(Callback):
        def execute(self) -> None:
            db.session.add(Audit(operation="after", table="teachers", row_id=self.resource.id))
            db.session.commit()

    class Recorded(LoneTeacherResource):
        name = "recorded"
        after_commit_create_callbacks = [Record]

    def broken(sender: Any, **kwargs: Any) -> None:
        db.session.execute(text("SELECT * FROM no_such_table"))

    with (
        running(make_app(lambda r: r.register(Recorded))) as client,
        signals.resource_created.connected_to(broken, sender=Recorded),
    ):
        response = client.post("/api/recorded", json={"name": "Eve"})
        assert response.status_code == 201
        db.session.rollback()
        audits = db.session.query(Audit.operation, Audit.row_id).all()
        assert [tuple(a) for a in audits] == [("after", response.json["id"])]
