"""ETag, If-None-Match, If-Match and require_if_match, and If-Match under real
concurrency (threads on one database)."""

from __future__ import annotations

import threading
from collections import Counter as Tally
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import update

from resources_kit import Callback

from .conftest import DB, make_app, seed
from .models import LoneTeacherResource, Note, NoteResource, Teacher, db
from .test_errors import snapshot

servers_only = pytest.mark.skipif(
    DB == "sqlite",
    reason="SQLite has no row locks: If-Match is race-free there only with a version column "
    "(tested with Note)",
)


@pytest.fixture
def ada(database: Any) -> int:
    teacher = Teacher(name="Ada", region="north")
    seed(teacher)
    return teacher.id


def etag_of(client: Any, path: str) -> str:
    return str(client.get(path).headers["ETag"])


WRITES: list[tuple[str, Any]] = [
    ("put", {"name": "Adele"}),
    ("patch", {"name": "Adele"}),
    ("delete", None),
]


@pytest.mark.parametrize(("method", "body"), WRITES)
def test_if_match_current_etag_succeeds(client: Any, ada: int, method: str, body: Any) -> None:
    path = f"/api/teachers/{ada}"
    response = getattr(client, method)(path, json=body, headers={"If-Match": etag_of(client, path)})
    assert response.status_code in (200, 204)


@pytest.mark.parametrize(("method", "body"), WRITES)
@pytest.mark.parametrize("if_match", ['"stale"', 'W/"weak"', "garbage"])
def test_if_match_mismatch_is_412_and_changes_nothing(
    client: Any, ada: int, method: str, body: Any, if_match: str
) -> None:
    before = snapshot()
    response = getattr(client, method)(
        f"/api/teachers/{ada}", json=body, headers={"If-Match": if_match}
    )
    assert response.status_code == 412
    assert response.content_type == "application/problem+json"
    assert snapshot() == before


def test_weak_form_of_current_etag_does_not_match(client: Any, ada: int) -> None:
    etag = etag_of(client, f"/api/teachers/{ada}")
    response = client.patch(f"/api/teachers/{ada}", json={"name": "x"},
                            headers={"If-Match": f"W/{etag}"})  # fmt: skip
    assert response.status_code == 412  # If-Match uses the strong comparison


def test_if_match_star_and_lists(client: Any, ada: int) -> None:
    path = f"/api/teachers/{ada}"
    assert client.patch(path, json={"name": "B"}, headers={"If-Match": "*"}).status_code == 200
    etag = etag_of(client, path)
    listed = f'"other", {etag}'
    assert client.patch(path, json={"name": "C"}, headers={"If-Match": listed}).status_code == 200


def test_an_etag_goes_stale_after_a_write(client: Any, ada: int) -> None:
    path = f"/api/teachers/{ada}"
    etag = etag_of(client, path)
    assert client.patch(path, json={"name": "B"}, headers={"If-Match": etag}).status_code == 200
    assert client.patch(path, json={"name": "C"}, headers={"If-Match": etag}).status_code == 412


def test_write_response_etag_is_usable_for_the_next_write(client: Any, ada: int) -> None:
    path = f"/api/teachers/{ada}"
    first = client.patch(path, json={"name": "B"})
    second = client.patch(path, json={"name": "C"}, headers={"If-Match": first.headers["ETag"]})
    assert second.status_code == 200


def test_if_match_on_missing_row_is_404(client: Any, database: Any) -> None:
    assert client.patch("/api/teachers/999", json={}, headers={"If-Match": "*"}).status_code == 404


@pytest.mark.parametrize(("method", "body"), WRITES)
def test_require_if_match_is_428_without_it(client: Any, ada: int, method: str, body: Any) -> None:
    path = f"/api/strict-teachers/{ada}"
    before = snapshot()
    missing = getattr(client, method)(path, json=body)
    assert missing.status_code == 428
    assert snapshot() == before
    given = getattr(client, method)(path, json=body, headers={"If-Match": etag_of(client, path)})
    assert given.status_code in (200, 204)


def test_if_none_match_other_etag_is_200(client: Any, ada: int) -> None:
    response = client.get(f"/api/teachers/{ada}", headers={"If-None-Match": '"other"'})
    assert response.status_code == 200


def test_if_match_write_locks_the_row(client: Any, ada: int, statements: list[str]) -> None:
    path = f"/api/teachers/{ada}"
    etag = etag_of(client, path)
    statements.clear()
    client.patch(path, json={"name": "B"}, headers={"If-Match": etag})
    if DB != "sqlite":
        assert "FOR UPDATE" in statements[0]
    assert [s.split()[0] for s in statements] == ["SELECT", "UPDATE"]


def test_version_column_detects_a_concurrent_change(database: Any) -> None:
    """Between our read and our UPDATE another connection commits: the compare-and-set of
    the version column refuses our write instead of losing theirs."""

    class Interloper(Callback):
        def execute(self) -> None:
            with db.engine.begin() as other:
                other.execute(update(Note).where(Note.id == note_id).values(
                    text="theirs", version=Note.version + 1))  # fmt: skip

    class RacedNotes(NoteResource):
        name = "raced-notes"
        pre_patch_callbacks = [Interloper]

    app = make_app(lambda router: router.register(RacedNotes))
    with app.app_context():
        note = Note(text="first")
        seed(note)
        note_id = note.id
        response = app.test_client().patch(f"/api/raced-notes/{note_id}", json={"text": "ours"})
        assert response.status_code == 409
        db.session.expire_all()
        assert db.session.get(Note, note_id).text == "theirs"


# -- threads ------------------------------------------------------------------------------


def run_together(count: int, work: Callable[[int], Any]) -> list[Any]:
    """Run ``work(i)`` in ``count`` threads released at the same moment."""
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count

    def run(i: int) -> None:
        barrier.wait()
        results[i] = work(i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


def same_etag_race(app: Flask, path: str, body_key: str) -> Tally[int]:
    etag = app.test_client().get(path).headers["ETag"]

    def patch(i: int) -> int:
        response = app.test_client().patch(
            path, json={body_key: f"writer {i}"}, headers={"If-Match": etag}
        )
        return int(response.status_code)

    return Tally(run_together(8, patch))


@servers_only
def test_eight_writers_with_one_etag_exactly_one_wins(app: Flask, ada: int) -> None:
    assert same_etag_race(app, f"/api/teachers/{ada}", "name") == {200: 1, 412: 7}


def test_eight_writers_on_a_versioned_row_exactly_one_wins(app: Flask, database: Any) -> None:
    note = Note(text="first")
    seed(note)
    assert same_etag_race(app, f"/api/notes/{note.id}", "text") == {200: 1, 412: 7}


def test_eight_threads_creating_eighty_rows(app: Flask, database: Any) -> None:
    def create(i: int) -> list[int]:
        client = app.test_client()
        return [
            client.post("/api/teachers", json={"name": f"w{i}-{n}"}).status_code for n in range(10)
        ]

    statuses = [status for batch in run_together(8, create) for status in batch]
    assert statuses == [201] * 80
    assert db.session.query(Teacher).count() == 80


@pytest.mark.parametrize("method", ["patch", "delete"])
def test_if_match_with_joined_eager_loading_locks_only_the_item(database: Any, method: str) -> None:
    import marshmallow as ma
    from sqlalchemy.orm import joinedload

    from .conftest import running
    from .models import Student, TeacherSchema

    class WithStudents(TeacherSchema):
        students = ma.fields.List(ma.fields.Nested(ma.Schema.from_dict({"name": ma.fields.Str()})))

    class Loaded(LoneTeacherResource):
        name = "loaded"
        schema = WithStudents
        # LEFT OUTER JOIN students: PostgreSQL refuses FOR UPDATE on its nullable side.
        query_options = (joinedload(Teacher.students),)

    with running(make_app(lambda r: r.register(Loaded))) as client:
        lone, busy = Teacher(name="Lone"), Teacher(name="Busy")
        seed(lone, busy)
        seed(Student(name="S", teacher_id=busy.id))
        path = f"/api/loaded/{lone.id}"
        etag = etag_of(client, path)
        response = getattr(client, method)(path, json={"name": "L"}, headers={"If-Match": etag})
        assert response.status_code in (200, 204), response.get_data(as_text=True)


def test_weak_if_none_match_is_304(client: Any, ada: int) -> None:
    strong = client.get(f"/api/teachers/{ada}").headers["ETag"]
    response = client.get(f"/api/teachers/{ada}", headers={"If-None-Match": f"W/{strong}"})
    assert response.status_code == 304


def test_concurrent_deletes_of_one_row_succeed_once(app: Flask, database: Any) -> None:
    """Each delete reads the row FOR UPDATE (a version column on SQLite): only the first
    finds it; the others are 404 and run no callbacks."""
    ran: list[int] = []

    class Count(Callback):
        def execute(self) -> None:
            ran.append(self.resource.id)

    class CountedNotes(NoteResource):
        name = "counted-notes"
        post_delete_callbacks = [Count]

    raced = make_app(lambda router: router.register(CountedNotes))
    with raced.app_context():
        note = Note(text="doomed")
        seed(note)
        path = f"/api/counted-notes/{note.id}"

    def delete(i: int) -> int:
        return int(raced.test_client().delete(path).status_code)

    statuses = Tally(run_together(8, delete))
    assert statuses[204] == 1, statuses
    assert set(statuses) <= {204, 404, 409}, statuses
    assert len(ran) == 1
