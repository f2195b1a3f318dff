"""Many-to-many (``Router.register_links``, ``link_fields``): both ends inside the caller's
row policies, on every backend. Books and tags of two schools; a caller names its school
in ``X-School`` and the tag names it may not see in ``X-Hide``."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import marshmallow as ma
import pytest
from flask import Flask, g, request
from openapi_spec_validator import validate
from sqlalchemy import event, select

from resources_kit import (
    Callback,
    ImproperlyConfigured,
    ModelResource,
    Permission,
    ReadOnly,
    Router,
    TenantScopeMixin,
    signals,
)
from resources_kit.guards import Guards, ResponseCache

from .conftest import make_app, running, seed
from .models import (
    Book,
    School,
    Tag,
    Teacher,
    TeacherSchema,
    book_tags,
    db,
)


def hidden() -> set[str]:
    return set(filter(None, request.headers.get("X-Hide", "").split(",")))


class HideTags(Permission):
    def visible(self, view: Any) -> Any:
        return Tag.name.not_in(hidden()) if hidden() else None


class NoLinksForGuests(Permission):
    """Books may be read by anyone, linked and unlinked only with ``X-Role: editor``."""

    def has_permission(self, view: Any) -> bool:
        if view.action in ("link", "unlink"):
            return request.headers.get("X-Role") == "editor"
        return True


class TagSchema(ma.Schema):
    id = ma.fields.Integer(dump_only=True)
    name = ma.fields.String(required=True)


class BookSchema(ma.Schema):
    id = ma.fields.Integer(dump_only=True)
    title = ma.fields.String(required=True)
    tag_ids = ma.fields.List(ma.fields.Integer())


EVENTS: list[tuple[str, str, Any]] = []


class Record(Callback):
    def execute(self) -> None:
        EVENTS.append((self.operation, self.kwargs["relationship"], self.kwargs["target"]))


class Refuse(Callback):
    def execute(self) -> None:
        if request.headers.get("X-Refuse"):
            raise ma.ValidationError({"tag": ["Refused by a callback."]})


class Scoped(TenantScopeMixin):
    def get_base_query_kwargs(self) -> dict[str, Any]:
        return {"school_id": g.get("school_id")}

    def get_current_user(self) -> Any:
        return "a reader"  # a caller, so that a refusal is a 403


class Tags(Scoped, ModelResource):
    name = "tags"
    model = Tag
    schema = TagSchema
    permissions = [HideTags]
    filter_fields = ["name"]
    sort_fields = ["name"]


class Books(Scoped, ModelResource):
    name = "books"
    model = Book
    schema = BookSchema
    permissions = [NoLinksForGuests]
    link_fields = {"tag_ids": ("tags", Tags)}
    post_link_callbacks = [Record, Refuse]
    post_unlink_callbacks = [Record]


def register(router: Router) -> None:
    router.register(Tags)
    router.register(Books)
    router.register_links(Books, "tags", Tags)


@pytest.fixture(scope="module")
def links_app(app: Flask) -> Flask:
    return make_app(register)


@pytest.fixture
def lc(links_app: Flask, database: Any) -> Iterator[Any]:
    with running(links_app) as client:
        EVENTS.clear()
        yield client


@pytest.fixture
def world(lc: Any) -> dict[str, int]:
    """School 1: book b1, tags t1 ("red"), t2 ("blue"); school 2: book b2, tag t3."""
    seed(School(id=1, name="One"), School(id=2, name="Two"))
    b1, b2 = Book(school_id=1, title="Emma"), Book(school_id=2, title="Ulysses")
    t1, t2, t3 = (
        Tag(school_id=1, name="red"),
        Tag(school_id=1, name="blue"),
        Tag(school_id=2, name="x"),
    )
    seed(b1, b2, t1, t2, t3)
    db.session.execute(
        book_tags.insert(),
        [{"book_id": b1.id, "tag_id": t1.id}, {"book_id": b2.id, "tag_id": t3.id}],
    )
    db.session.commit()
    return {"b1": b1.id, "b2": b2.id, "t1": t1.id, "t2": t2.id, "t3": t3.id}


ONE = {"X-School": "1", "X-Role": "editor"}
TWO = {"X-School": "2", "X-Role": "editor"}


def links() -> set[tuple[int, int]]:
    db.session.rollback()
    return {(b, t) for b, t in db.session.execute(select(book_tags.c.book_id, book_tags.c.tag_id))}


def listed(client: Any, url: str, headers: dict[str, str]) -> list[int]:
    response = client.get(url, headers=headers)
    assert response.status_code == 200, response.json
    return [item["id"] for item in response.json["items"]]


# -- the list of linked rows ---------------------------------------------------------------


def test_the_list_shows_the_linked_rows_of_that_parent_only(lc: Any, world: dict[str, int]) -> None:
    assert listed(lc, f"/api/books/{world['b1']}/tags", ONE) == [world["t1"]]
    body = lc.get(f"/api/books/{world['b1']}/tags", headers=ONE).json
    assert body["total"] == 1
    assert body["items"][0] == {"id": world["t1"], "name": "red"}
    # another tenant's book is missing, even when its id is guessed
    assert lc.get(f"/api/books/{world['b2']}/tags", headers=ONE).status_code == 404
    assert listed(lc, f"/api/books/{world['b2']}/tags", TWO) == [world["t3"]]
    # a link of another book of the same school is not this book's
    made = lc.post("/api/books", json={"title": "Other", "tag_ids": [world["t2"]]}, headers=ONE)
    assert listed(lc, f"/api/books/{made.json['id']}/tags", ONE) == [world["t2"]]
    assert listed(lc, f"/api/books/{world['b1']}/tags", ONE) == [world["t1"]]
    assert lc.delete(f"/api/books/{world['b1']}/tags/{world['t2']}", headers=ONE).status_code == 204
    assert (made.json["id"], world["t2"]) in links()  # unlinking from b1 left b3's link


def test_the_list_never_shows_a_row_the_tags_routes_hide(lc: Any, world: dict[str, int]) -> None:
    # a link to another tenant's tag (written outside the API) is not shown
    db.session.execute(book_tags.insert().values(book_id=world["b1"], tag_id=world["t3"]))
    db.session.commit()
    assert listed(lc, f"/api/books/{world['b1']}/tags", ONE) == [world["t1"]]
    # nor one hidden by the tag resource's visible
    assert listed(lc, f"/api/books/{world['b1']}/tags", {**ONE, "X-Hide": "red"}) == []
    book = lc.get(f"/api/books/{world['b1']}", headers={**ONE, "X-Hide": "red"}).json
    assert book["tag_ids"] == []
    assert lc.get(f"/api/books/{world['b1']}", headers=ONE).json["tag_ids"] == [world["t1"]]


def test_the_list_takes_the_tag_resources_filters_sort_and_fields(
    lc: Any, world: dict[str, int]
) -> None:
    lc.put(f"/api/books/{world['b1']}/tags/{world['t2']}", headers=ONE)
    url = f"/api/books/{world['b1']}/tags"
    assert listed(lc, f"{url}?sort=name", ONE) == [world["t2"], world["t1"]]
    assert listed(lc, f'{url}?filters={{"name": "red"}}', ONE) == [world["t1"]]
    page = lc.get(f"{url}?fields=name&limit=1&offset=1&sort=name", headers=ONE).json
    assert page["items"] == [{"name": "red"}]
    assert page["total"] == 2
    bad = lc.get(f'{url}?filters={{"school_id": 2}}', headers=ONE)
    assert bad.status_code == 400


@pytest.fixture
def statements(links_app: Flask, lc: Any) -> Iterator[list[str]]:
    """The SQL statements the links app runs while the test runs."""
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    with links_app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", record)
    yield seen
    event.remove(engine, "before_cursor_execute", record)


def test_the_list_runs_as_many_statements_as_a_nested_list(
    lc: Any, world: dict[str, int], statements: list[str]
) -> None:
    statements.clear()
    assert listed(lc, f"/api/books/{world['b1']}/tags", ONE) == [world["t1"]]
    # the page, the parent checked inside it (a first page shorter than the limit needs
    # no count)
    assert len(statements) == 1, statements
    statements.clear()
    assert listed(lc, f"/api/books/{world['b1']}/tags?limit=1&offset=1", ONE) == []
    assert len(statements) == 3, statements  # the empty page, the total, the parent
    statements.clear()
    assert lc.get(f"/api/books/{world['b1']}", headers=ONE).json["tag_ids"] == [world["t1"]]
    assert len(statements) == 2, statements  # the book, its linked ids
    statements.clear()
    assert len(lc.get("/api/books?limit=10", headers=ONE).json["items"]) == 1
    # the page with its total, the linked ids of every item on it
    assert len(statements) == 2, statements


# -- link and unlink -------------------------------------------------------------------------


def test_link_is_idempotent_and_unlink_too(lc: Any, world: dict[str, int]) -> None:
    url = f"/api/books/{world['b1']}/tags/{world['t2']}"
    for _ in range(2):
        response = lc.put(url, headers=ONE)
        assert response.status_code == 204
        assert response.data == b""
    assert (world["b1"], world["t2"]) in links()
    assert len([pair for pair in links() if pair == (world["b1"], world["t2"])]) == 1
    for _ in range(2):
        assert lc.delete(url, headers=ONE).status_code == 204
    assert (world["b1"], world["t2"]) not in links()
    assert (world["b1"], world["t1"]) in links()  # the other link stays


def test_linking_another_tenants_row_is_a_404(lc: Any, world: dict[str, int]) -> None:
    before = links()
    # another tenant's tag under my book
    assert lc.put(f"/api/books/{world['b1']}/tags/{world['t3']}", headers=ONE).status_code == 404
    # my tag under another tenant's book
    assert lc.put(f"/api/books/{world['b2']}/tags/{world['t1']}", headers=ONE).status_code == 404
    # a tag my permissions hide, and one that does not exist
    hide = {**ONE, "X-Hide": "blue"}
    assert lc.put(f"/api/books/{world['b1']}/tags/{world['t2']}", headers=hide).status_code == 404
    assert lc.put(f"/api/books/{world['b1']}/tags/999999", headers=ONE).status_code == 404
    assert lc.put(f"/api/books/{world['b1']}/tags/0{world['t2']}", headers=ONE).status_code == 404
    assert lc.put(f"/api/books/{world['b1']}/tags/99999999999", headers=ONE).status_code == 404
    assert links() == before


def test_unlinking_another_tenants_row_is_a_404(lc: Any, world: dict[str, int]) -> None:
    before = links()
    assert lc.delete(f"/api/books/{world['b2']}/tags/{world['t3']}", headers=ONE).status_code == 404
    hide = {**ONE, "X-Hide": "red"}
    assert (
        lc.delete(f"/api/books/{world['b1']}/tags/{world['t1']}", headers=hide).status_code == 404
    )
    assert links() == before
    assert EVENTS == []


def test_link_asks_the_parents_permissions(lc: Any, world: dict[str, int]) -> None:
    url = f"/api/books/{world['b1']}/tags/{world['t2']}"
    guest = {"X-School": "1"}
    assert lc.put(url, headers=guest).status_code == 403
    assert (
        lc.delete(f"/api/books/{world['b1']}/tags/{world['t1']}", headers=guest).status_code == 403
    )
    assert listed(lc, f"/api/books/{world['b1']}/tags", guest) == [world["t1"]]  # reads are fine
    assert (world["b1"], world["t2"]) not in links()
    assert lc.put(url, headers={}).status_code == 403  # no tenant: refused before any query


def test_link_runs_callbacks_and_signals_in_one_transaction(lc: Any, world: dict[str, int]) -> None:
    received: list[tuple[str, Any]] = []

    def on_link(sender: Any, resource: Any, kwargs: Any, operation: str) -> None:
        received.append((operation, resource.id))

    signals.resource_linked.connect(on_link, sender=Books)
    signals.resource_unlinked.connect(on_link, sender=Books)
    try:
        url = f"/api/books/{world['b1']}/tags/{world['t2']}"
        refused = lc.put(url, headers={**ONE, "X-Refuse": "1"})
        assert refused.status_code == 422
        assert refused.json["errors"] == {"tag": ["Refused by a callback."]}
        assert (world["b1"], world["t2"]) not in links()  # rolled back
        assert received == []
        assert lc.put(url, headers=ONE).status_code == 204
        assert lc.delete(url, headers=ONE).status_code == 204
    finally:
        signals.resource_linked.disconnect(on_link, sender=Books)
        signals.resource_unlinked.disconnect(on_link, sender=Books)
    assert received == [("link", world["b1"]), ("unlink", world["b1"])]
    assert [
        ("link", "tags", world["t2"]),  # the refused one ran, then rolled back
        ("link", "tags", world["t2"]),
        ("unlink", "tags", world["t2"]),
    ] == EVENTS


def test_other_methods_and_query_strings_are_refused(lc: Any, world: dict[str, int]) -> None:
    url = f"/api/books/{world['b1']}/tags"
    assert lc.post(url, json={"name": "new"}, headers=ONE).status_code == 405
    assert lc.get(f"{url}/{world['t1']}", headers=ONE).status_code == 405
    assert lc.patch(f"{url}/{world['t1']}", json={}, headers=ONE).status_code == 405
    assert lc.put(f"{url}/{world['t2']}?x=1", headers=ONE).status_code == 400
    assert (world["b1"], world["t2"]) not in links()


# -- the list-of-ids field -------------------------------------------------------------------


def test_the_ids_field_sets_the_links_on_create(lc: Any, world: dict[str, int]) -> None:
    made = lc.post(
        "/api/books", json={"title": "New", "tag_ids": [world["t2"], world["t1"]]}, headers=ONE
    )
    assert made.status_code == 201, made.json
    assert made.json["tag_ids"] == [world["t1"], world["t2"]]
    new = made.json["id"]
    assert {(new, world["t1"]), (new, world["t2"])} <= links()
    assert lc.get(f"/api/books/{new}", headers=ONE).json == made.json
    assert lc.get(f"/api/books/{new}", headers=ONE).headers["ETag"] == made.headers["ETag"]
    plain = lc.post("/api/books", json={"title": "Bare"}, headers=ONE)
    assert plain.status_code == 201
    assert plain.json["tag_ids"] == []


def test_the_ids_field_replaces_the_set_on_update_and_patch(lc: Any, world: dict[str, int]) -> None:
    url = f"/api/books/{world['b1']}"
    changed = lc.patch(url, json={"tag_ids": [world["t2"]]}, headers=ONE)
    assert changed.status_code == 200
    assert changed.json["tag_ids"] == [world["t2"]]
    assert {pair for pair in links() if pair[0] == world["b1"]} == {(world["b1"], world["t2"])}
    kept = lc.patch(url, json={"title": "Emma 2"}, headers=ONE)  # no field: the set stays
    assert kept.json["tag_ids"] == [world["t2"]]
    replaced = lc.put(url, json={"title": "Emma 3", "tag_ids": []}, headers=ONE)
    assert replaced.status_code == 200
    assert replaced.json["tag_ids"] == []
    assert {pair for pair in links() if pair[0] == world["b1"]} == set()


def test_replacing_leaves_links_the_caller_cannot_reach(lc: Any, world: dict[str, int]) -> None:
    hide = {**ONE, "X-Hide": "red"}
    changed = lc.patch(f"/api/books/{world['b1']}", json={"tag_ids": [world["t2"]]}, headers=hide)
    assert changed.json["tag_ids"] == [world["t2"]]
    # the hidden tag's link is neither shown nor removed
    assert {pair for pair in links() if pair[0] == world["b1"]} == {
        (world["b1"], world["t1"]),
        (world["b1"], world["t2"]),
    }


@pytest.mark.parametrize(
    ("ids", "message"),
    [
        ("t3", "No such item"),  # another tenant's
        ("missing", "No such item"),
        ("hidden", "No such item"),
        ("twice", "more than once"),
        ("huge", "No such item"),
    ],
)
def test_a_body_naming_a_row_outside_the_policy_is_a_422(
    lc: Any, world: dict[str, int], ids: str, message: str
) -> None:
    value = {
        "t3": [world["t1"], world["t3"]],
        "missing": [999999],
        "hidden": [world["t2"]],
        "twice": [world["t2"], world["t2"]],
        "huge": [2**40],
    }[ids]
    headers = {**ONE, "X-Hide": "blue"} if ids == "hidden" else ONE
    before = links()
    for response in (
        lc.post("/api/books", json={"title": "New", "tag_ids": value}, headers=headers),
        lc.patch(f"/api/books/{world['b1']}", json={"tag_ids": value}, headers=headers),
        lc.put(f"/api/books/{world['b1']}", json={"title": "X", "tag_ids": value}, headers=headers),
    ):
        assert response.status_code == 422, response.json
        assert list(response.json["errors"]) == ["tag_ids"]
        assert message in response.json["errors"]["tag_ids"][0]
    assert links() == before
    db.session.rollback()
    assert db.session.scalars(select(Book.title).order_by(Book.id)).all() == ["Emma", "Ulysses"]


def test_a_malformed_ids_field_is_a_422(lc: Any, world: dict[str, int]) -> None:
    for value in ("1", [None], ["a"], None, {"a": 1}):
        response = lc.patch(f"/api/books/{world['b1']}", json={"tag_ids": value}, headers=ONE)
        assert response.status_code == 422, (value, response.json)
        assert "tag_ids" in response.json["errors"]


def test_the_dumped_ids_of_a_list_are_per_item(lc: Any, world: dict[str, int]) -> None:
    lc.post("/api/books", json={"title": "New", "tag_ids": [world["t2"]]}, headers=ONE)
    items = lc.get("/api/books?sort=", headers=ONE)
    items = lc.get("/api/books", headers=ONE).json["items"]
    assert {item["title"]: item["tag_ids"] for item in items} == {
        "Emma": [world["t1"]],
        "New": [world["t2"]],
    }
    sparse = lc.get("/api/books?fields=title", headers=ONE).json["items"]
    assert all(set(item) == {"title"} for item in sparse)


# -- registration mistakes -------------------------------------------------------------------


class TeacherWithIds(ma.Schema):
    id = ma.fields.Integer(dump_only=True)
    name = ma.fields.String()
    tag_ids = ma.fields.List(ma.fields.Integer(), attribute="tags")


def test_an_undeclared_ids_field_is_still_refused() -> None:
    class Undeclared(ModelResource):
        name = "undeclared"
        model = Book
        schema = TeacherWithIds

    with pytest.raises(ImproperlyConfigured, match="link_fields"):
        Router().register(Undeclared)


def test_registration_mistakes_are_refused() -> None:
    router = Router()
    router.register(Tags)
    with pytest.raises(ImproperlyConfigured, match="register Books"):
        router.register_links(Books, "tags", Tags)
    router.register(Books)
    with pytest.raises(ImproperlyConfigured, match="no relationship 'labels'"):
        router.register_links(Books, "labels", Tags)

    class Teachers(ModelResource):
        name = "teachers"
        model = Teacher
        schema = TeacherSchema

    with pytest.raises(ImproperlyConfigured, match="serves Teacher"):
        router.register_links(Books, "tags", Teachers)
    with pytest.raises(ImproperlyConfigured, match="register Books"):
        Router().register_links(Books, "tags", Tags)
    router.register(Teachers)
    with pytest.raises(ImproperlyConfigured, match="no secondary table"):
        router.register_links(Teachers, "students", Tags)

    class OtherTags(Tags):
        name = "other-tags"

    with pytest.raises(ImproperlyConfigured, match="register OtherTags"):
        router.register_links(Books, "tags", OtherTags)

    class BadField(Books):
        name = "bad-books"
        link_fields = {"tag_ids": ("title", Tags)}

    with pytest.raises(ImproperlyConfigured, match="no relationship 'title'"):
        router.register(BadField)

    class TitleOnly(ma.Schema):
        title = ma.fields.String()

    class NoField(Books):
        name = "no-field-books"
        schema = TitleOnly
        link_fields = {"labels": ("tags", Tags)}

    with pytest.raises(ImproperlyConfigured, match="no schema of NoField has a field 'labels'"):
        router.register(NoField)

    class Unregistered(Books):
        name = "unregistered-target-books"
        link_fields = {"tag_ids": ("tags", OtherTags)}

    lone = Router()
    lone.register(Unregistered)
    app = Flask(__name__)
    with pytest.raises(ImproperlyConfigured, match="OtherTags, which is not registered"):
        lone.init_app(app)


def test_read_only_tags_may_still_be_linked(links_app: Flask, database: Any) -> None:
    """The target row is only read: its resource's ReadOnly does not stop a link."""

    class ReadOnlyTags(Tags):
        permissions = [HideTags, ReadOnly]

    class ReadOnlyBooks(Books):
        link_fields = {"tag_ids": ("tags", ReadOnlyTags)}

    def register_read_only(router: Router) -> None:
        router.register(ReadOnlyTags)
        router.register(ReadOnlyBooks)
        router.register_links(ReadOnlyBooks, "tags", ReadOnlyTags)

    with running(make_app(register_read_only)) as client:
        seed(School(id=1, name="One"))
        book, tag = Book(school_id=1, title="A"), Tag(school_id=1, name="t")
        seed(book, tag)
        assert client.put(f"/api/books/{book.id}/tags/{tag.id}", headers=ONE).status_code == 204
        assert client.post("/api/tags", json={"name": "n"}, headers=ONE).status_code == 403


# -- the document ----------------------------------------------------------------------------


def test_the_document_describes_the_link_routes_and_the_ids_field(links_app: Flask) -> None:
    document = links_app.test_client().get("/api/openapi.json").get_json()
    validate(document)
    paths = document["paths"]
    assert set(paths["/api/books/{book_id}/tags"]) >= {"get"}
    assert "post" not in paths["/api/books/{book_id}/tags"]
    item = paths["/api/books/{book_id}/tags/{tag_id}"]
    assert {method for method in item if method != "parameters"} == {"put", "delete"}
    for method, operation_id in (("put", "books_tags_link"), ("delete", "books_tags_unlink")):
        operation = item[method]
        assert operation["operationId"] == operation_id
        assert {"204", "403", "404"} <= set(operation["responses"])
        assert "requestBody" not in operation
    listing = paths["/api/books/{book_id}/tags"]["get"]
    assert {p["name"] for p in listing["parameters"]} >= {"filters", "sort", "fields", "limit"}
    assert "404" in listing["responses"]
    schemas = document["components"]["schemas"]
    ids = {"type": "array", "items": {"type": "integer"}}
    assert schemas["BookCreate"]["properties"]["tag_ids"] == ids
    assert schemas["Book"]["properties"]["tag_ids"] == ids
    assert "tag_ids" in schemas["Book"]["required"]  # always dumped


def test_flask_resources_lists_the_link_routes(links_app: Flask) -> None:
    result = links_app.test_cli_runner().invoke(args=["resources"])
    assert result.exit_code == 0, result.output
    assert "Tags  (books_tags)" in result.output
    assert re.search(r"PUT, DELETE +/api/books/<int:book_id>/tags/<int:tag_id>\n", result.output)
    assert "links: Book.tags (many-to-many)" in result.output
    assert "post_link: Record, Refuse; post_unlink: Record" in result.output


# -- production guards -----------------------------------------------------------------------


class CachedTags(Tags):
    cache = ResponseCache(depends_on=("books",))


class CachedBooks(Books):
    link_fields = {"tag_ids": ("tags", CachedTags)}


def test_a_cached_linked_list_is_fresh_after_each_kind_of_change(app: Flask) -> None:
    def register_cached(router: Router) -> None:
        router.register(CachedTags)
        router.register(CachedBooks)
        router.register_links(CachedBooks, "tags", CachedTags)

    made = make_app(register_cached, RESOURCES_KIT_CACHE_IN_PROCESS=True)
    Guards(made)
    with running(made) as client:
        seed(School(id=1, name="One"))
        book, red, blue = (
            Book(school_id=1, title="A"),
            Tag(school_id=1, name="red"),
            Tag(school_id=1, name="blue"),
        )
        seed(book, red, blue)
        url = f"/api/books/{book.id}/tags"
        assert listed(client, url, ONE) == []
        assert listed(client, url, ONE) == []  # now cached
        assert client.put(f"{url}/{red.id}", headers=ONE).status_code == 204
        assert listed(client, url, ONE) == [red.id]
        assert (
            client.patch(
                f"/api/books/{book.id}", json={"tag_ids": [blue.id]}, headers=ONE
            ).status_code
            == 200
        )
        assert listed(client, url, ONE) == [blue.id]
        assert client.delete(f"{url}/{blue.id}", headers=ONE).status_code == 204
        assert listed(client, url, ONE) == []
