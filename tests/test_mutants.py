"""The mutation suite: resources with one seeded bug each. The CRUD contract must catch
every one within a fixed number of examples, with a message that names the request and,
where there is one, the field."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast

import marshmallow as ma
import pytest
from flask import Flask, Response, current_app, g, request
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import run_state_machine_as_test
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from resources_kit import Callback, HTTPError, ModelResource, Page, Pagination, Sorting
from resources_kit.testing import contract_settings, crud_contract, run_contract
from resources_kit.testing.contract import ContractViolation

from .conftest import make_app, reset_database, running, seed
from .models import (
    Counter,
    CounterResource,
    Gadget,
    LoneTeacherResource,
    School,
    ScopedTeacherResource,
    Student,
    StudentResource,
    Teacher,
    TeacherResource,
    TeacherSchema,
    db,
)

#: Every mutant must be caught within this many examples, the same ones on every run.
EXAMPLES = 100
CAUGHT = settings(
    max_examples=EXAMPLES,
    stateful_step_count=20,
    phases=[Phase.generate],
    database=None,
    derandomize=True,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
#: For the mutants whose failing example needs a rarer draw (a name shared across
#: tenants, a filter that excludes a row): the same run draws differently as the
#: library's source changes (Hypothesis takes constants from the loaded modules), so
#: these get room to spare. A run stops at the first failure, so a caught mutant costs
#: no more.
ROOMY = settings(CAUGHT, max_examples=4 * EXAMPLES)


class PatchResetsUnsent(LoneTeacherResource):
    name = "m-patch-resets"

    def perform_update(self, obj: Any, data: dict[str, Any]) -> None:
        for key in ("email", "years_teaching", "region"):
            if key not in data:
                setattr(obj, key, None)
        super().perform_update(obj, data)


class DeleteDoesNothing(LoneTeacherResource):
    name = "m-delete-nothing"

    def perform_delete(self, obj: Any) -> None:
        pass


class Shout(Callback):
    def execute(self) -> None:
        self.resource.name = self.resource.name.upper()


class CallbackChangesField(LoneTeacherResource):
    name = "m-callback-changes"
    pre_patch_callbacks = [Shout]
    pre_update_callbacks = [Shout]


class ListDropsLastRow(LoneTeacherResource):
    name = "m-list-drops"

    def list_response(self, page: Page) -> Response:
        return super().list_response(Page(page.items[:-1], page.meta, page.links))


class CreateIgnoresField(LoneTeacherResource):
    name = "m-create-ignores"

    def perform_create(self, data: dict[str, Any]) -> Any:
        return super().perform_create({**data, "region": None})


class CreateTruncates(LoneTeacherResource):
    """Keeps one character fewer than the column holds (a column declared shorter in the
    database than in the model, on a server that truncates)."""

    name = "m-create-truncates"

    def perform_create(self, data: dict[str, Any]) -> Any:
        region = data.get("region")
        return super().perform_create({**data, "region": region and region[:19]})


class UpdateCommitsEarly(CounterResource):
    """A hook that commits by itself, through a session of its own (the library refuses a
    commit of the write's own session): when the write is then refused (409: another
    counter has the label), what it committed stays."""

    name = "m-commits-early"

    def perform_update(self, obj: Any, data: dict[str, Any]) -> None:
        label = {"label": data.pop("label")} if "label" in data else {}
        if data:
            with Session(db.engine) as own:
                own.execute(update(Counter).where(Counter.id == obj.id).values(**data))
                own.commit()
        super().perform_update(obj, data)
        super().perform_update(obj, label)


class LaxTeacherSchema(TeacherSchema):
    name = ma.fields.String(load_default="Unnamed")  # no longer required


class PutAcceptsMissingRequired(LoneTeacherResource):
    name = "m-put-lax"
    update_schema = LaxTeacherSchema


class WrongSuccessStatus(LoneTeacherResource):
    name = "m-wrong-status"

    def get_write_response(self, operation: str, obj: Any) -> Response:
        response = super().get_write_response(operation, obj)
        if operation == "create":
            response.status_code = 200
        return response


class ListTotalOffByOne(LoneTeacherResource):
    name = "m-total-off"

    def list_response(self, page: Page) -> Response:
        return super().list_response(
            Page(page.items, {**page.meta, "total": page.meta["total"] + 1})
        )


class TenantLeakInListOnly(ScopedTeacherResource):
    """Item routes are scoped; a hand-made list query forgot the scope."""

    name = "m-leak"

    def paginate_list_query(self, query: Any, args: Any) -> Page:
        rows = list(self.get_session().scalars(select(Teacher).order_by(Teacher.id)))
        return Page(rows, {"total": len(rows), "limit": args["limit"], "offset": 0})


class PriceSchema(ma.Schema):
    id = ma.fields.Integer(dump_only=True)
    label = ma.fields.String(required=True, validate=ma.validate.Length(min=1, max=20))
    price = ma.fields.Float(allow_none=True)  # the column keeps two decimals


class DecimalDoesNotRoundTrip(ModelResource):
    name, model, schema = "m-price", Gadget, PriceSchema


class ItemHidesWhatTheListShows(LoneTeacherResource):
    name = "m-item-hides"

    def get_object(self) -> Any:
        from resources_kit import HTTPError

        obj = super().get_object()
        if obj.email is not None:
            raise HTTPError(404, "Hidden.")
        return obj


class WriteEtagIsNotTheReadEtag(LoneTeacherResource):
    name = "m-etag"

    def get_write_response(self, operation: str, obj: Any) -> Response:
        response = super().get_write_response(operation, obj)
        if operation == "patch":
            response.set_etag("written")
        return response


class EtagOfTheIdOnly(LoneTeacherResource):
    """An ETag that names the item, not its state: it never changes."""

    name = "m-etag-id"

    def item_response(self, body: Any, status: int = 200) -> Response:
        etag = f"teacher-{body['id']}"
        if status == 200 and request.method == "GET" and request.if_none_match.contains_weak(etag):
            return Response(status=304, headers={"ETag": f'"{etag}"'})
        response = cast(Response, current_app.json.response(body))
        response.status_code = status
        response.set_etag(etag)
        return response


class NotModifiedForAnyEtag(LoneTeacherResource):
    """If-None-Match with any ETag at all is taken for "the client has it"."""

    name = "m-304-any"

    def item_response(self, body: Any, status: int = 200) -> Response:
        if status == 200 and request.method == "GET" and request.if_none_match:
            return Response(status=304)
        return super().item_response(body, status)


class IgnoresIfMatch(LoneTeacherResource):
    name = "m-if-match"

    def check_preconditions(self, obj: Any) -> None:
        pass


class OffsetInDisguise(Pagination):
    """ "Cursor" pages that are offsets: a delete behind the position skips a row."""

    envelope = {"next": {"type": "integer", "nullable": True}}

    def get_args(self) -> dict[str, Any]:
        return {**super().get_args(), "cursor": ma.fields.Integer(load_default=0)}

    def paginate(self, view: Any, query: Any, args: Any) -> Page:
        limit, offset = args["limit"], args["cursor"]
        rows = list(view.get_session().scalars(query.limit(limit + 1).offset(offset)))
        more = len(rows) > limit
        return Page(rows[:limit], {"next": offset + limit if more else None})


class CursorSkipsAfterDelete(LoneTeacherResource):
    name = "m-cursor-offset"
    pagination = OffsetInDisguise


class AlwaysAscending(Sorting):
    def sort(self, view: Any, query: Any, args: Any) -> Any:
        ascending = [(path, False) for path, _ in self.get_plan(args)]
        return super().sort(view, query, {**args, "sort": ascending})


class SortIgnoresDirection(LoneTeacherResource):
    name = "m-sort"
    sorting = AlwaysAscending


class ListIgnoresSort(LoneTeacherResource):
    """?sort= parsed and validated, then the default order served anyway."""

    name = "m-sort-ignored"

    def sort_list_query(self, query: Any, args: Any) -> Any:
        return super().sort_list_query(query, {})


class NoTieBreaker(LoneTeacherResource):
    """The default order by name only: ties come back in whatever order the database likes
    (here, newest first). Not at random: a bug that answers differently when the same run
    is replayed makes Hypothesis report its own "flaky" error instead of the failure."""

    name = "m-ties"

    def sort_list_query(self, query: Any, args: Any) -> Any:
        return query.order_by(Teacher.name, Teacher.id.desc())


class ItemIgnoresParent(StudentResource):
    """A hand-written retrieve that looks the student up by id alone."""

    name = "m-students"

    def retrieve(self) -> Response:
        obj = self.get_session().get(Student, self.url_kwargs["student_id"])
        if obj is None:
            raise HTTPError(404, "No such student.")
        return self.item_response(self.serialize(obj))


class DeleteByName(ScopedTeacherResource):
    """Deletes by a column that is not the key: every teacher of that name, in every
    school."""

    name = "m-delete-by-name"

    def perform_delete(self, obj: Any) -> None:
        self.get_session().execute(delete(Teacher).where(Teacher.name == obj.name))


class ForgotTenancy(ModelResource):
    """Meant to be tenant-scoped, but someone forgot TenantScopeMixin."""

    name, model, schema = "m-forgot-tenancy", Teacher, TeacherSchema

    def perform_create(self, data: dict[str, Any]) -> Any:
        return super().perform_create({**data, "school_id": g.get("school_id")})


def two_teachers() -> None:
    reset_database()
    seed(Teacher(id=1, name="One"), Teacher(id=2, name="Two"))


def tenants() -> None:
    reset_database()
    seed(School(id=1, name="One"), School(id=2, name="Two"))


def with_emails() -> None:
    reset_database()
    seed(Teacher(name="Ann", email="ann@school.org"), Teacher(name="Bo"))


#: (mutant, contract options, words its message must hold)
MUTANTS: list[tuple[type[Any], dict[str, Any], tuple[str, ...]]] = [
    (
        PatchResetsUnsent,
        {"operations": ("create", "patch", "read")},
        ("PATCH", "which was not sent"),
    ),
    (DeleteDoesNothing, {"operations": ("create", "delete", "read")}, ("DELETE", "expected 404")),
    (CallbackChangesField, {"operations": ("create", "patch", "update")}, ("'name'",)),
    (ListDropsLastRow, {"operations": ("create", "list")}, ("GET", "m-list-drops")),
    (CreateIgnoresField, {"operations": ("create",)}, ("POST", "'region' was sent as")),
    (
        UpdateCommitsEarly,
        # Provoked on purpose, a refused write is tried often: caught within 10 runs.
        {
            "operations": ("create", "patch"),
            "settings": settings(CAUGHT, max_examples=10),
        },
        ("GET", "m-commits-early", "shows item"),
    ),
    (CreateTruncates, {"operations": ("create",)}, ("POST", "'region' was sent as")),
    (
        PutAcceptsMissingRequired,
        {"operations": ("create", "update"), "update_schema": TeacherSchema},
        ("PUT", "expected 422", "'name'"),
    ),
    (WrongSuccessStatus, {"operations": ("create",)}, ("POST", "answered 200, expected 201")),
    (ListTotalOffByOne, {"operations": ("create", "list")}, ("GET", "says total")),
    (
        ForgotTenancy,
        {"headers": {"X-School": "1"}, "other_headers": {"X-School": "2"}, "setup": tenants},
        ("as another tenant",),  # listed, created or changed
    ),
    (
        DeleteByName,
        {
            "headers": {"X-School": "1"},
            "other_headers": {"X-School": "2"},
            "setup": tenants,
            "operations": ("create", "delete"),
            "settings": ROOMY,
        },
        ("DELETE", "the other tenant's item", "is gone"),
    ),
    (
        TenantLeakInListOnly,
        {"headers": {"X-School": "1"}, "other_headers": {"X-School": "2"}, "setup": tenants},
        ("GET", "m-leak"),
    ),
    (DecimalDoesNotRoundTrip, {"operations": ("create", "read")}, ("POST", "'price' was sent as")),
    (
        CursorSkipsAfterDelete,
        {"operations": ("create", "delete", "list")},
        ("GET", "walked page by page, never showed"),
    ),
    (
        ItemIgnoresParent,
        {
            "url": "/api/teachers/1/m-students",
            "parent": TeacherResource,
            "other_parent_url": "/api/teachers/2/m-students",
            "operations": ("create", "read"),
            "setup": two_teachers,
            "overrides": {"teacher_id": st.just(1)},  # the URL's own parent
        },
        ("GET", "/api/teachers/2/m-students", "not under this parent"),
    ),
    (
        SortIgnoresDirection,
        {
            "operations": ("create", "list"),
            "overrides": {"years_teaching": st.integers(0, 50)},
            # a sort needs two rows that differ: longer runs
            "settings": settings(CAUGHT, stateful_step_count=50),
        },
        ("GET", "(rule: sorted by", "__desc)"),
    ),
    (
        ListIgnoresSort,
        {"operations": ("create", "list"), "overrides": {"years_teaching": st.integers(0, 50)}},
        ("GET", "m-sort-ignored", "(rule: sorted by"),
    ),
    (NoTieBreaker, {"operations": ("create", "list")}, ("GET", "m-ties")),
    (WriteEtagIsNotTheReadEtag, {"operations": ("create", "patch", "read")}, ("PATCH", "ETag")),
    (IgnoresIfMatch, {"operations": ("create", "patch", "read")}, ("PATCH", "expected 412")),
    (
        EtagOfTheIdOnly,
        {"operations": ("create", "patch", "read")},
        ("PATCH", "answered the ETag", "an ETag changes whenever the item does"),
    ),
    (
        NotModifiedForAnyEtag,
        {"operations": ("create", "patch", "read")},
        ("GET", "answered 304, expected 200", "from before a change"),
    ),
    (
        ItemHidesWhatTheListShows,
        {"operations": ("list", "read"), "setup": with_emails},
        ("GET", "answered 404", "the list shows this item"),
    ),
]


@pytest.fixture(scope="module")
def timings() -> Iterator[dict[str, float]]:
    seen: dict[str, float] = {}
    yield seen
    total = sum(seen.values())
    print(f"\nmutation suite: {len(seen)} mutants caught in {total:.1f} s")
    for name, seconds in seen.items():
        if name.startswith("reported: "):
            print(f"  {name} in {seconds:.1f} s with the documented settings")


@contextmanager
def contract_of(resource: type[Any], options: dict[str, Any]) -> Iterator[Any]:
    """The contract of ``resource`` (under its ``parent``, at its ``url``), on an app of
    its own; the other ``options`` go to ``crud_contract``."""
    options = {"setup": reset_database, **options}
    parent = options.pop("parent", None)
    url = options.pop("url", f"/api/{resource.name}")

    def register(router: Any) -> None:
        if parent is not None:
            router.register(parent)
        router.register(resource, parent=parent)

    with running(make_app(register)) as client:
        yield crud_contract(client, url, resource=resource, **options)


def caught(resource: type[Any], options: dict[str, Any]) -> ContractViolation:
    options = dict(options)
    budget = options.pop("settings", CAUGHT)
    with contract_of(resource, options) as machine, pytest.raises(ContractViolation) as info:
        run_state_machine_as_test(machine, settings=budget)
    return info.value


@pytest.mark.parametrize(
    ("resource", "options", "words"), MUTANTS, ids=[m.__name__ for m, _, _ in MUTANTS]
)
def test_every_mutant_is_caught_and_explained(
    app: Flask,
    database: Any,
    timings: dict[str, float],
    resource: type[Any],
    options: dict[str, Any],
    words: tuple[str, ...],
) -> None:
    started = time.perf_counter()
    violation = caught(resource, options)
    timings[resource.__name__] = time.perf_counter() - started
    sentence, _, steps = str(violation).partition("\n\nThe requests of this run:\n")
    assert sentence.split()[0] in ("GET", "POST", "PUT", "PATCH", "DELETE"), sentence
    for word in words:
        assert word in sentence, (word, sentence)
    assert "\n" not in sentence  # one sentence, then the requests
    assert steps.startswith("  1. ")


def test_a_real_failure_message(app: Flask, database: Any) -> None:
    """The message docs/testing.rst shows: shrunk to the shortest run that fails."""
    shrinking = settings(CAUGHT, phases=[Phase.generate, Phase.shrink])
    with running(make_app(lambda router: router.register(CreateIgnoresField))) as client:
        machine = crud_contract(
            client,
            "/api/m-create-ignores",
            resource=CreateIgnoresField,
            operations=("create",),
            setup=reset_database,
        )
        with pytest.raises(ContractViolation) as info:
            run_state_machine_as_test(machine, settings=shrinking)
    message = str(info.value)
    sentence, _, steps_text = message.partition("\n\nThe requests of this run:\n")
    # The request as sent (its body too), then what broke and the rule.
    assert sentence.startswith('POST /api/m-create-ignores {"name": ')
    assert ": 'region' was sent as '" in sentence
    assert sentence.endswith(
        "but the answer shows None (rule: what is written is what is answered and read back)"
    )
    steps = steps_text.splitlines()
    assert steps[0] == "  1. GET /api/m-create-ignores?limit=100 -> 200"
    assert " POST /api/m-create-ignores {" in steps[-1]
    assert steps[-1].endswith("-> 201")  # the failing create is the last request
    sent = sentence.split(": 'region'")[0]
    assert steps[-1] == f"  {len(steps)}. {sent} -> 201"  # named exactly as it was sent


class FiltersIgnored(LoneTeacherResource):
    """?filters= parsed and validated, then ignored: every row is listed."""

    name = "m-filters-ignored"

    def filter_list_query(self, query: Any, args: Any) -> Any:
        return query


#: (mutant, contract options, what its sentence must hold): the request as sent, decoded
#: (a query string's JSON as written, not URL-encoded; a body; a conditional header), the
#: rule, and for the two list bugs that look alike, which side is wrong.
MESSAGES: list[tuple[type[Any], dict[str, Any], tuple[str, ...]]] = [
    (
        FiltersIgnored,
        {"operations": ("create", "list"), "settings": ROOMY},
        ("GET /api/m-filters-ignored?limit=100&filters={", "} shows item", "; rule: the negation"),
    ),
    (
        CreateIgnoresField,
        {"operations": ("create",)},
        ('POST /api/m-create-ignores {"', '"region": ', "(rule: what is written is what is"),
    ),
    (
        IgnoresIfMatch,
        {"operations": ("create", "patch", "read")},
        ("PATCH /api/m-if-match/", " {} If-Match: ", "answered 200, expected 412", "rule: If-"),
    ),
    (
        ListTotalOffByOne,
        {"operations": ("create", "list")},
        ("GET /api/m-total-off?limit=100 says total", "(rule: total is the number of items"),
    ),
]


@pytest.mark.parametrize(
    ("resource", "options", "words"), MESSAGES, ids=[m.__name__ for m, _, _ in MESSAGES]
)
def test_failures_name_the_request_as_sent_and_the_rule(
    app: Flask, database: Any, resource: type[Any], options: dict[str, Any], words: tuple[str, ...]
) -> None:
    sentence = str(caught(resource, options)).partition("\n\nThe requests of this run:\n")[0]
    for word in words:
        assert word in sentence, (word, sentence)
    assert "%7B" not in sentence
    assert "%22" not in sentence
    assert "rule: " in sentence


def test_opposite_list_bugs_get_opposite_messages(app: Flask, database: Any) -> None:
    """A list that drops a row and a total that counts one too many both make total and
    pages disagree; the message says which of the two is wrong."""
    dropped = driven(ListDropsLastRow, lambda machine: (machine.create({"name": "Ann"}),))
    counted = str(caught(ListTotalOffByOne, {"operations": ("create", "list")}))
    assert dropped.startswith("GET /api/m-list-drops?limit=100 lists 0 items on its pages but")
    assert "leaves out items" in dropped
    assert "says total" not in dropped
    assert "says total" in counted
    assert "leaves out items" not in counted


def driven(resource: type[Any], steps: Any) -> str:
    """The failure of a run whose steps are given (``steps(machine)``), then a list."""
    with running(make_app(lambda router: router.register(resource))) as client:
        machine = crud_contract(
            client, f"/api/{resource.name}", resource=resource, setup=reset_database
        )()
        steps(machine)
        with pytest.raises(ContractViolation) as info:
            machine.list_all()
    return str(info.value)


#: The settings the Testing page documents must report each of these within this many
#: seconds of wall time on a shared 2-core machine, shrunk.
REPORTED_WITHIN = 30


def reported(resource: type[Any], options: dict[str, Any]) -> tuple[float, ContractViolation]:
    """Run the contract on ``resource`` exactly as the Testing page says (``run_contract``
    with ``contract_settings()``, random draws), but with no example database: every run
    measures a first find (a saved failure would be replayed at once)."""
    with contract_of(resource, options) as machine:
        started = time.perf_counter()
        with pytest.raises(ContractViolation) as info:
            run_contract(machine, contract_settings(database=None))
        return time.perf_counter() - started, info.value


#: A handful of realistic bugs, one of each kind of rule: a write, a create, tenancy, the
#: ETag preconditions, a list, nesting. (Not those these settings catch only sometimes:
#: "cursor" pages that are offsets, a sort ignoring its direction, a decimal rounded, a
#: DELETE by name across tenants, which need more steps or a rarer draw; the mutation
#: suite above gives them those.)
REPORTED = [
    (PatchResetsUnsent, {"operations": ("create", "patch", "read")}),
    (CreateIgnoresField, {"operations": ("create",)}),
    (
        TenantLeakInListOnly,
        {"headers": {"X-School": "1"}, "other_headers": {"X-School": "2"}, "setup": tenants},
    ),
    (IgnoresIfMatch, {"operations": ("create", "patch", "read")}),
    (ListDropsLastRow, {"operations": ("create", "list")}),
    (
        ItemIgnoresParent,
        {
            "url": "/api/teachers/1/m-students",
            "parent": TeacherResource,
            "other_parent_url": "/api/teachers/2/m-students",
            "operations": ("create", "read"),
            "setup": two_teachers,
            "overrides": {"teacher_id": st.just(1)},
        },
    ),
]


@pytest.mark.parametrize(("resource", "options"), REPORTED, ids=[m.__name__ for m, _ in REPORTED])
def test_the_documented_settings_report_a_bug_in_time_and_shrunk(
    app: Flask,
    database: Any,
    timings: dict[str, float],
    resource: type[Any],
    options: dict[str, Any],
) -> None:
    seconds, violation = reported(resource, options)
    timings[f"reported: {resource.__name__}"] = seconds
    assert seconds < REPORTED_WITHIN, f"{resource.__name__} took {seconds:.1f} s to report"
    sentence, _, steps_text = str(violation).partition("\n\nThe requests of this run:\n")
    steps = steps_text.splitlines()
    method, path = sentence.split()[:2]
    assert method in ("GET", "POST", "PUT", "PATCH", "DELETE"), sentence
    assert path.startswith(options.get("url", f"/api/{resource.name}")) or path.startswith(
        options.get("other_parent_url", "/-")
    ), sentence
    assert "rule: " in sentence
    # Shrunk: a short run, in which the request the sentence names was sent.
    assert 1 <= len(steps) <= 40, steps
    sent = [step.split(". ", 1)[1].rsplit(" -> ", 1)[0] for step in steps]
    assert any(named_first(sentence, request) for request in sent), (sentence, steps)


def named_first(sentence: str, request: str) -> bool:
    """Whether ``sentence`` starts by naming ``request`` (as logged) whole."""
    rest = sentence.removeprefix(request)
    return rest != sentence and rest[:1] in (" ", ":", ",")
