"""A stateful CRUD contract: Hypothesis drives a registered resource through a Flask test
client in random order and checks every answer against a model of what it should hold."""

from __future__ import annotations

import functools
import itertools
import json
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import parse_qsl, urlencode, urlsplit

import marshmallow as ma
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, multiple, rule
from sqlalchemy import UniqueConstraint

from resources_kit.errors import ImproperlyConfigured
from resources_kit.options import options_for
from resources_kit.testing.strategies import (
    invalid_payloads,
    load_fields,
    payloads,
    schema_instance,
)

ALL_OPERATIONS = ("create", "read", "list", "update", "patch", "delete")


def _schema(schema: ma.Schema | type[ma.Schema] | None) -> ma.Schema | None:
    return None if schema is None else schema_instance(schema)


@dataclass
class ContractConfig:
    """What one contract checks: the URL, the schemas, the headers of both tenants."""

    client: Any
    base: str
    response_schema: ma.Schema
    schemas: dict[str, ma.Schema]
    checks: Mapping[str, Callable[[Any], str | None]]
    our_headers: dict[str, str]
    their_headers: dict[str, str] | None
    id_field: str
    overrides: Mapping[str, st.SearchStrategy[Any]] | None
    ignored: set[str] = field(default_factory=set)
    page_size: int = 100
    setup: Callable[[], None] | None = None
    #: The resource's compiled allow-lists, when a resource was given (list queries).
    list_options: Any = None
    #: The collection URL under another parent, for a nested resource.
    other_parent_url: str | None = None

    def fits_columns(self, operation: str) -> Callable[[dict[str, Any]], bool]:
        loader, checks = self.schemas[operation], self.checks

        def fits(body: dict[str, Any]) -> bool:
            loaded = loader.load(body, partial=operation == "patch")
            return all(
                not (checks.get(key) and checks[key](value)) for key, value in loaded.items()
            )

        return fits

    def bodies(self, operation: str) -> st.SearchStrategy[dict[str, Any]]:
        partial = operation == "patch"
        strategy = payloads(
            self.schemas[operation],
            partial=partial,
            overrides=self.overrides,
            max_lengths=self.column_lengths(operation),
        )
        return strategy.filter(self.fits_columns(operation)) if self.checks else strategy

    def column_lengths(self, operation: str) -> dict[str, int]:
        """Body key -> the length of the ``String(n)`` column the field writes, so that
        bodies reach the column's limit (a column keeping fewer characters shows there)."""
        if self.list_options is None:
            return {}
        lengths = {}
        for name, loaded in load_fields(self.schemas[operation]):
            attribute = self.list_options.columns.get(loaded.attribute or name)
            length = getattr(getattr(attribute, "type", None), "length", None)
            if isinstance(length, int):
                lengths[loaded.data_key or name] = length
        return lengths

    def expected_fields(self, operation: str, body: dict[str, Any]) -> dict[str, Any]:
        """What the response must show for the fields sent: each loaded, then dumped by
        the response schema's field for the same attribute."""
        loaded = self.schemas[operation].load(body, partial=operation == "patch")
        shown = {}
        for name, field_ in self.response_schema.dump_fields.items():
            attribute = field_.attribute or name
            if attribute in loaded and not field_.load_only:
                shown[field_.data_key or name] = field_.serialize(attribute, loaded)
        return shown

    def comparable(self, item: Mapping[str, Any]) -> dict[str, Any]:
        return {key: value for key, value in item.items() if key not in self.ignored}


class CrudContract(RuleBasedStateMachine):
    """The state machine ``crud_contract()`` configures; its rules are added there."""

    config: ClassVar[ContractConfig]
    #: Whether a create is read back (the contract includes "read").
    reads_back: ClassVar[bool] = True
    #: Whether the contract deletes (a walk then deletes between pages).
    deletes: ClassVar[bool] = True
    items = Bundle("items")

    def __init__(self) -> None:
        super().__init__()
        config = self.config
        client = config.client
        # The client first: a function returning it may push the app context setup needs.
        self.client = client() if callable(client) and not hasattr(client, "get") else client
        if config.setup is not None:
            config.setup()
        #: Every request of this run, for the failure message.
        self.log: list[str] = []
        try:
            listed = self.list_items(config.our_headers)
        except AssertionError as exc:
            raise self.explain(exc) from None
        self.rows: dict[Any, dict[str, Any]] = {item[config.id_field]: item for item in listed}
        #: Every ETag an item was answered with, and what the item was then (in order).
        self.etags: dict[Any, list[tuple[str, dict[str, Any]]]] = {}
        #: The rows of the other tenant, or under the other parent: no request of ours
        #: may touch them.
        self.theirs: dict[Any, dict[str, Any]] = {}
        #: Body keys of unique columns, for the writes the database must refuse.
        self.unique = unique_fields(config)

    def remember_etag(self, key: Any, response: Any, shown: Mapping[str, Any]) -> None:
        """Note the ETag ``response`` gave item ``key`` while it showed ``shown``."""
        etag = response.headers.get("ETag")
        if etag:
            self.etags.setdefault(key, []).append((etag, self.config.comparable(shown)))

    def earlier_etag(self, key: Any) -> str | None:
        """A real ETag the item had when it showed something else than now, if any."""
        now = self.config.comparable(self.rows[key])
        for etag, shown in reversed(self.etags.get(key, [])):
            if shown != now:
                return str(etag)
        return None

    def explain(self, exc: AssertionError) -> ContractViolation:
        """``exc``'s sentence, then every request of this run."""
        steps = "\n".join(f"  {n}. {line}" for n, line in enumerate(self.log[-60:], 1))
        return ContractViolation(f"{exc}\n\nThe requests of this run:\n{steps}")

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        other: bool = False,
        extra: Mapping[str, str] | None = None,
    ) -> Any:
        """Send one request (as the other tenant with ``other``; ``extra`` headers on top),
        log it as sent, decoded, and note that on the response (``sent_as``) for the
        failure messages."""
        config = self.config
        headers = dict((config.their_headers or {}) if other else config.our_headers)
        headers.update(extra or {})
        kwargs: dict[str, Any] = {"headers": headers}
        if body is not None:
            kwargs["json"] = body
        response = getattr(self.client, method)(path, **kwargs)
        response.sent_as = as_sent(method, path, body, extra, other=other)
        self.log.append(f"{response.sent_as} -> {response.status_code}")
        return response

    def list_items(
        self,
        headers: Mapping[str, str],
        params: Mapping[str, str] | None = None,
        base: str | None = None,
    ) -> list[dict[str, Any]]:
        """Every item of the list (with ``params``; of ``base``, by default ours),
        following its cursors or offsets."""
        config = self.config
        query = urlencode({"limit": config.page_size, **(params or {})})
        base = base or config.base
        url = f"{base}?{query}"
        page = self.get_page(url, headers)
        items: list[dict[str, Any]] = list(page["items"])
        if "next" in page:  # cursor pagination
            while page["next"] is not None and len(items) <= len(self.rows) + 1000:
                page = self.get_page(f"{url}&cursor={page['next']}", headers)
                items.extend(page["items"])
            return items
        total, offset = page["total"], config.page_size
        while offset < total and page["items"]:
            page = self.get_page(f"{url}&offset={offset}", headers)
            items.extend(page["items"])
            offset += config.page_size
        if total != len(items):
            fail(self.total_problem(url, total, items, headers, params, base))
        return items

    def total_problem(
        self,
        url: str,
        total: int,
        items: list[dict[str, Any]],
        headers: Mapping[str, str],
        params: Mapping[str, str] | None,
        base: str,
    ) -> str:
        """Which of the two is wrong when a list's ``total`` and its pages disagree: the
        pages miss items (the total is the number of items that exist), or the total
        counts items that do not (the pages list every one), or, where the contract does
        not know how many match (a filter), that they disagree."""
        sent = as_sent("get", url)
        ours = base == self.config.base and headers == self.config.our_headers
        # (The first list of a run, before the contract knows any row: unknown.)
        known = set(self.rows) if ours and not params and hasattr(self, "rows") else None
        listed = {item[self.config.id_field] for item in items}
        rule = "(rule: total is the number of items the pages list, together)"
        if known is not None and total == len(known) and len(items) < total:
            missing = sorted(known - listed, key=str)
            return (
                f"{sent} lists {len(items)} items on its pages but {total} exist, as its total "
                f"says: it leaves out items {missing} (rule: the pages list every item)"
            )
        if known is not None and listed == known:
            return (
                f"{sent} says total {total} but {len(items)} items exist and its pages list "
                f"every one {rule}"
            )
        return f"{sent} says total {total} but its pages list {len(items)} items {rule}"

    def get_page(self, url: str, headers: Mapping[str, str]) -> Any:
        config = self.config
        other = headers == config.their_headers and headers != config.our_headers
        response = self.call("get", url, other=other)
        expect_status(response, 200, rule="a list answers 200")
        return response.get_json()

    def check_unchanged(self, after: Any = None) -> None:
        """The list holds exactly the items the contract knows, as last written; ``after``
        (the response of a write that was refused) is named, as what changed them."""
        config = self.config
        items = self.list_items(config.our_headers)
        sent = as_sent("get", f"{config.base}?{urlencode({'limit': config.page_size})}")
        if config.list_options is not None:
            keys = [(key.key, key.descending) for key in config.list_options.default_sort]
            check_order(sent, items, keys, config.id_field, "the default order")
        listed = {item[config.id_field]: config.comparable(item) for item in items}
        known = {key: config.comparable(row) for key, row in self.rows.items()}
        if after is not None:
            refused = f"{after.sent_as} answered {after.status_code}"
            rule = f"(rule: a refused write changes nothing; {refused})"
        else:
            rule = "(rule: the list holds every item created and not deleted, as last written)"
        for key in known.keys() - listed.keys():
            fail(f"{sent} does not list item {key!r}, which should exist {rule}")
        for key in listed.keys() - known.keys():
            if key in self.theirs:
                fail(
                    f"{sent} lists item {key!r}, created as another tenant (rule: no caller "
                    "sees another tenant's items)"
                )
            fail(f"{sent} lists item {key!r}, which should not exist {rule}")
        for key, row in known.items():
            if listed[key] != row:
                fail(f"{sent} shows item {key!r} {difference(row, listed[key])} {rule}")

    def item_url(self, key: Any) -> str:
        return f"{self.config.base}/{key}"

    def check_sent(
        self, operation: str, body: dict[str, Any], shown: dict[str, Any], where: str
    ) -> None:
        for key, value in self.config.expected_fields(operation, body).items():
            if key not in self.config.ignored and shown.get(key) != value:
                got = shown.get(key)
                fail(
                    f"{where}: {key!r} was sent as {value!r} but the answer shows {got!r} "
                    "(rule: what is written is what is answered and read back)"
                )

    def settled(self, key: Any, response: Any) -> bool:
        """Whether a write's answer needs no more checks: the row is not ours (so 404),
        or the write conflicted (409) and nothing changed."""
        if key not in self.rows:
            expect_status(response, 404, "the item was deleted")
            return True
        if response.status_code == 409:
            self.check_unchanged(after=response)
            return True
        return False

    def change(self, operation: str, method: str, key: Any, body: dict[str, Any]) -> None:
        url = self.item_url(key)
        response = self.call(method, url, body)
        if self.settled(key, response):
            return
        where = response.sent_as
        expect_status(response, 200)
        shown = response.get_json()
        self.check_sent(operation, body, shown, where)
        if operation == "patch":
            sent = set(self.config.expected_fields(operation, body))
            before = self.config.comparable(self.rows[key])
            after = self.config.comparable(shown)
            for name in sorted(set(before) - sent):
                expect(
                    after.get(name) == before[name],
                    f"{where} changed {name!r}, which was not sent: it was {before[name]!r}, "
                    f"now {after.get(name)!r} (rule: a PATCH changes only the fields sent)",
                )
        before = self.config.comparable(self.rows[key])
        self.rows[key] = shown
        old_etags = {etag for etag, seen in self.etags.get(key, []) if seen == before}
        if before != self.config.comparable(shown):
            etag = response.headers.get("ETag")
            expect(
                etag not in old_etags,
                f"{where} changed the item but answered the ETag {etag} it had before the "
                "change (rule: an ETag changes whenever the item does)",
            )
        self.remember_etag(key, response, shown)
        if self.reads_back:
            self.check_etag(url, response)

    def write_during_walk(
        self, body: dict[str, Any] | None, lived: set[Any], seen: list[Any]
    ) -> None:
        """Between two pages of a walk: create an item (when the contract creates) and
        delete one already seen (when it deletes), which shifts every later offset."""
        if body is not None:
            response = self.call("post", self.config.base, body)
            if response.status_code == 201:
                created = response.get_json()
                self.rows[created[self.config.id_field]] = created
        behind = [key for key in seen if key in self.rows]
        if self.deletes and behind:
            response = self.call("delete", self.item_url(behind[0]))
            if response.status_code == 204:
                del self.rows[behind[0]]
                lived.discard(behind[0])

    def check_etag(self, url: str, response: Any) -> None:
        """A write answers with the ETag the next GET of the item gives."""
        where = response.sent_as
        fetched = self.call("get", url)
        expect_status(fetched, 200, f"right after {where}")
        written, read = response.headers.get("ETag"), fetched.headers.get("ETag")
        expect(
            written == read,
            f"{where} answered ETag {written} but the next GET {url} shows {read} "
            "(rule: a write answers the ETag the next GET gives)",
        )


# -- failures that explain themselves ----------------------------------------------------------


class ContractViolation(AssertionError):
    """A broken promise: one sentence naming the request and the field, then every request
    of the (shrunk, so shortest) run that broke it."""


def fail(message: str) -> None:
    raise ContractViolation(message)


def expect(condition: bool, message: str) -> None:
    if not condition:
        fail(message)


#: The rule a status stands for, when the check names no other.
STATUS_RULES = {
    200: "a request that succeeds answers 200",
    201: "a create answers 201 Created",
    204: "a delete answers 204 No Content",
    304: "If-None-Match with the current ETag is a 304",
    404: "an item out of the caller's reach, or deleted, is a 404",
    409: "a unique value another item holds is a 409",
    412: "If-Match with another ETag than the current one is a 412",
    422: "an invalid body is a 422",
}


def expect_status(response: Any, wanted: int, why: str = "", rule: str | None = None) -> None:
    """``response`` has status ``wanted``; otherwise a failure naming the request as sent,
    why that status was expected and the rule it stands for, and what came back."""
    if response.status_code != wanted:
        body = " ".join(response.get_data(as_text=True).split())[:300]
        reason = f"{why}; " if why else ""
        rule = rule or STATUS_RULES.get(wanted, f"the answer is a {wanted}")
        sent = getattr(response, "sent_as", None) or as_sent(
            response.request.method, response.request.full_path.rstrip("?")
        )
        fail(
            f"{sent} answered {response.status_code}, expected {wanted} ({reason}rule: "
            f"{rule}): {body}"
        )


def as_sent(
    method: str,
    url: str,
    body: Any = None,
    headers: Mapping[str, str] | None = None,
    *,
    other: bool = False,
) -> str:
    """A request as sent, decoded: ``GET /api/t?filters={"name": "Ann"}&limit=100``, the
    JSON body, the conditional headers, and whose request it was when not ours."""
    path, _, query = url.partition("?")
    if query:
        pairs = parse_qsl(urlsplit(url).query, keep_blank_values=True)
        path += "?" + "&".join(f"{name}={value}" for name, value in pairs)
    sent = f"{method.upper()} {path}"
    if body is not None:
        text = json.dumps(body, default=str, ensure_ascii=False)
        sent += f" {text if len(text) <= 500 else text[:500] + '...'}"
    for name in ("If-Match", "If-None-Match"):
        if headers and name in headers:
            sent += f" {name}: {headers[name]}"
    return _one_line(sent) + (" (as another tenant)" if other else "")


def _one_line(text: str) -> str:
    """``text`` with every character that does not print (a newline, a line separator, a
    control character) escaped as in JSON, so a request is always one line."""
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else json.dumps(char)[1:-1] for char in text)


def difference(wanted: Mapping[str, Any], got: Mapping[str, Any]) -> str:
    """``'name': expected 'Ann', got 'Bo'`` for the first field that differs."""
    for key in sorted(set(wanted) | set(got)):
        if wanted.get(key, _ABSENT) != got.get(key, _ABSENT):
            return (
                f"{key!r}: expected {_shown(wanted.get(key, _ABSENT))}, "
                f"got {_shown(got.get(key, _ABSENT))}"
            )
    return "no difference"


_ABSENT: Any = object()


def _shown(value: Any) -> str:
    return "nothing" if value is _ABSENT else repr(value)


def explained(rule_function: Callable[..., Any]) -> Callable[..., Any]:
    """Add the requests of the run to a failure of ``rule_function``."""

    @functools.wraps(rule_function)
    def run(self: CrudContract, *args: Any, **kwargs: Any) -> Any:
        try:
            return rule_function(self, *args, **kwargs)
        except AssertionError as exc:
            raise self.explain(exc) from None

    return run


# -- the rules, added per contract by crud_contract() ------------------------------------------


def create(self: CrudContract, body: dict[str, Any]) -> Any:
    config = self.config
    response = self.call("post", config.base, body)
    if response.status_code == 409:
        self.check_unchanged(after=response)
        return multiple()
    expect_status(response, 201)
    created = response.get_json()
    self.check_sent("create", body, created, response.sent_as)
    key = created[config.id_field]
    expect(
        key not in self.rows,
        f"{response.sent_as} reused the id {key!r} of a live item (rule: a new item gets an "
        "id of its own)",
    )
    self.rows[key] = created
    self.etags.pop(key, None)  # a reused id of a deleted item starts afresh
    self.remember_etag(key, response, created)
    if self.reads_back:
        url = self.item_url(key)
        fetched = self.call("get", url)
        expect_status(fetched, 200, f"just created by {response.sent_as}")
        got, wanted = config.comparable(fetched.get_json()), config.comparable(created)
        expect(
            got == wanted,
            f"GET {url} right after {response.sent_as} shows {difference(wanted, got)} (rule: "
            "an item reads back as its create answered it)",
        )
        written, read = response.headers.get("ETag"), fetched.headers.get("ETag")
        expect(
            written == read,
            f"{response.sent_as} answered ETag {written} but the next GET {url} shows {read} "
            "(rule: a write answers the ETag the next GET gives)",
        )
    return key


def create_invalid(self: CrudContract, pair: tuple[str, dict[str, Any]]) -> None:
    name, body = pair
    url = self.config.base
    response = self.call("post", url, body)
    expect_status(response, 422, f"{name!r} is invalid")
    expect(
        name in response.get_json().get("errors", {}),
        f"{response.sent_as}: the 422 does not name the invalid field {name!r} (rule: a 422 "
        "names each invalid field under errors)",
    )
    self.check_unchanged(after=response)


def read(self: CrudContract, key: Any) -> None:
    url = self.item_url(key)
    response = self.call("get", url)
    if key not in self.rows:
        expect_status(response, 404, "the item was deleted")
        return
    expect_status(response, 200)
    comparable = self.config.comparable
    got, wanted = comparable(response.get_json()), comparable(self.rows[key])
    expect(
        got == wanted,
        f"GET {url} shows {difference(wanted, got)} (rule: an item reads back as last written)",
    )


def list_all(self: CrudContract) -> None:
    self.check_unchanged()


def walk(self: CrudContract, body: dict[str, Any] | None = None) -> None:
    """Walk the list an item a page. With cursors, create one item and delete another
    between pages: every item that lived through the walk is seen exactly once, and none
    twice. Offset pages cannot promise that under writes, so they are walked without."""
    config = self.config
    url = f"{config.base}?limit=1"
    response = self.call("get", url)
    expect_status(response, 200)
    page = response.get_json()
    cursors = "next" in page
    lived = set(self.rows)
    seen: list[Any] = []
    offset = 0
    # Items created during the walk may sort after the cursor and so extend it: create at
    # most as many as there were, so that the walk ends within twice its length.
    writes = len(lived)
    for _ in range(2 * len(lived) + 10):
        seen += [item[config.id_field] for item in page["items"]]
        if (cursors and page["next"] is None) or (not cursors and offset + 1 >= page["total"]):
            break
        if cursors:
            if writes > 0:
                writes -= 1
                self.write_during_walk(body, lived, seen)
            next_url = f"{url}&cursor={page['next']}"
        else:
            offset += 1
            next_url = f"{url}&offset={offset}"
        response = self.call("get", next_url)
        expect_status(response, 200, "the next page of a walk")
        page = response.get_json()
    rule = "(rule: walked page by page, a list shows every item that lived through it once)"
    twice = sorted({key for key in seen if seen.count(key) > 1}, key=str)
    expect(not twice, f"GET {url}, walked page by page, showed items {twice} twice {rule}")
    missed = sorted(lived & set(self.rows) - set(seen), key=str)
    expect(not missed, f"GET {url}, walked page by page, never showed items {missed} {rule}")


def list_query(self: CrudContract, data: st.DataObject) -> None:
    """Filters, search, sort and sparse fields against the rows the contract knows, by
    what holds on every database whatever its collation: a row matches conditions built
    from its own values and not their negations; search finds it by a piece of its own
    text; numeric sorts come back ordered; ``?fields=`` returns exactly those fields."""
    config = self.config
    if not self.rows or config.list_options is None:
        return
    # By creation order, not by id: the same run draws the same rows on every database.
    key = data.draw(st.sampled_from(list(self.rows)), label="item")
    row = self.rows[key]
    queries = list_queries(config.list_options, row) + sort_queries(config.list_options, self.rows)
    kinds = sorted({next(iter(params)) for params, _, _ in queries})
    kind = data.draw(st.sampled_from(kinds), label="kind")  # each kind as likely
    of_kind = [query for query in queries if next(iter(query[0])) == kind]
    params, expect_in, description = data.draw(st.sampled_from(of_kind), label="query")
    listed = self.list_items(config.our_headers, params)
    ids = [item[config.id_field] for item in listed]
    where = as_sent("get", f"{config.base}?{urlencode({'limit': config.page_size, **params})}")
    if expect_in:
        rule = "a query built from an item's own values lists it"
    else:
        rule = "the negation of an item's own value does not list it"
    expect(
        (key in ids) == expect_in,
        f"{where} {'misses' if expect_in else 'shows'} item {key!r} ({description}; rule: {rule})",
    )
    if "sort" in params:
        name = params["sort"].removesuffix("__desc")
        keys = [(name, params["sort"].endswith("__desc"))]
        check_order(where, listed, keys, config.id_field, f"sorted by {params['sort']}")
    if "fields" in params:
        wanted = set(params["fields"].split(","))
        odd = [item for item in listed if set(item) != wanted]
        expect(
            not odd,
            f"{where} answers other fields than {sorted(wanted)}: {odd[:1]} (rule: ?fields= "
            "answers exactly the fields it names)",
        )
    sorts = sort_queries(config.list_options, self.rows)
    if "sort" not in params and sorts:  # and every list of two rows or more, sorted too
        order = data.draw(st.sampled_from(sorts), label="sorted too")[0]["sort"]
        where = as_sent(
            "get", f"{config.base}?{urlencode({'limit': config.page_size, 'sort': order})}"
        )
        keys = [(order.removesuffix("__desc"), order.endswith("__desc"))]
        listed = self.list_items(config.our_headers, {"sort": order})
        check_order(where, listed, keys, config.id_field, f"sorted by {order}")


#: (query parameters, whether the row must be listed, why)
ListQuery = tuple[dict[str, str], bool, str]


def list_queries(options: Any, row: Mapping[str, Any]) -> list[ListQuery]:
    """Queries built from ``row``'s own values, each with whether it must list ``row``."""
    queries: list[ListQuery] = []
    for name, path in options.filter_paths.items():
        value = row.get(name, _ABSENT)
        usable = path.relationship is None and not path.is_float and not _is_datetime(path)
        if usable and value is not _ABSENT and not _has_nul(value):
            queries += _filter_queries(name, path, value)
    for name, path in options.search_paths.items():
        value = row.get(name)
        if path.relationship is None and isinstance(value, str) and value.strip():
            start = value[:3]
            if not _has_nul(start):
                queries.append(({"search": start}, True, f"search for the start of {name}"))
    for name in options.resource.sort_fields:
        if _is_number(row.get(name)) and "." not in name:
            queries += [
                ({"sort": order}, True, f"sorted by {order}") for order in (name, f"{name}__desc")
            ]
    shown = sorted({"id", *[name for name in row if name != "id"][:2]} & set(row))
    queries.append(({"fields": ",".join(shown)}, True, f"only the fields {shown}"))
    return queries


def sort_queries(options: Any, rows: Mapping[Any, Mapping[str, Any]]) -> list[ListQuery]:
    """Both directions of each sort field on which at least two rows differ or tie."""
    queries: list[ListQuery] = []
    for name in options.resource.sort_fields:
        if "." not in name and len(rows) > 1:
            for order in (name, f"{name}__desc"):
                queries.append(({"sort": order}, True, f"sorted by {order}"))
    return queries


def check_order(
    where: str,
    items: Sequence[Mapping[str, Any]],
    keys: list[tuple[str, bool]],
    id_field: str,
    rule: str,
) -> None:
    """``items`` in the order ``keys`` (field, descending) say, then by id: checked where
    it holds on every database whatever its collation. Numbers and booleans compare as in
    Python, NULL after every value ascending (before, descending); items equal in every
    key (as JSON) must come by ascending id, the final tie-breaker. A pair told apart by
    text, dates or anything else a collation decides is not checked."""
    for before, after in itertools.pairwise(items):
        problem = _out_of_order(before, after, keys, id_field)
        expect(problem is None, f"{where} lists {problem} (rule: {rule})")


def _out_of_order(
    before: Mapping[str, Any], after: Mapping[str, Any], keys: list[tuple[str, bool]], id_field: str
) -> str | None:
    for name, descending in keys:
        a: Any = before.get(name)
        b: Any = after.get(name)
        if a == b:
            continue
        if _comparable(a, b):
            wrong = bool(a < b) if descending else bool(a > b)
        elif a is None or b is None:
            wrong = (a is None) != descending
        else:
            return None
        return f"{name}={a!r} before {name}={b!r}" if wrong else None
    x: Any = before.get(id_field)
    y: Any = after.get(id_field)
    if _comparable(x, y) and x > y:
        names = ", ".join(name for name, _ in keys) or "every sort key"
        return f"item {x!r} before item {y!r}, equal in {names}: ties must come by ascending id"
    return None


def _comparable(a: Any, b: Any) -> bool:
    numbers = (int, float)
    return (isinstance(a, bool) and isinstance(b, bool)) or (
        isinstance(a, numbers)
        and isinstance(b, numbers)
        and not isinstance(a, bool)
        and not isinstance(b, bool)
    )


def _filter_queries(name: str, path: Any, value: Any) -> list[ListQuery]:
    def query(spec: dict[str, Any], listed: bool, why: str) -> ListQuery:
        return {"filters": json.dumps(spec)}, listed, why

    if value is None:
        return [
            query({f"{name}__isnull": True}, True, f"{name} is null"),
            query({f"{name}__isnull": False}, False, f"{name} is null"),
        ]
    queries = [
        query({name: value}, True, f"{name} equals its own value"),
        query({f"{name}__in": [value]}, True, f"{name} is in [its own value]"),
        query({f"{name}__ne": value}, False, f"{name} equals its own value"),
        query({f"{name}__not_in": [value]}, False, f"{name} is its own value"),
    ]
    if _is_number(value):
        queries.append(query({f"{name}__gte": value}, True, f"{name} >= itself"))
        queries.append(query({f"{name}__lte": value}, True, f"{name} <= itself"))
        queries.append(query({f"{name}__lt": value}, False, f"{name} < itself"))
        queries.append(query({f"{name}__gt": value}, False, f"{name} > itself"))
    if path.is_text and isinstance(value, str) and value.strip():
        piece = value[1:4] or value
        queries.append(query({f"{name}__contains": piece}, True, f"{name} contains {piece!r}"))
        queries.append(query({f"{name}__icontains": piece}, True, f"{name} icontains {piece!r}"))
        start = value[:3]
        queries.append(query({f"{name}__startswith": start}, True, f"{name} starts {start!r}"))
    return queries


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _has_nul(value: Any) -> bool:
    return isinstance(value, str) and "\x00" in value


def _is_datetime(path: Any) -> bool:
    return isinstance(path.field, ma.fields.DateTime)


def their_collection(config: ContractConfig) -> tuple[str, bool] | None:
    """Where the rows we must never touch live: the other tenant's list (``other``: with
    their headers), or the collection under the other parent."""
    if config.their_headers is not None:
        return config.base, True
    if config.other_parent_url is not None:
        return config.other_parent_url, False
    return None


def create_theirs(self: CrudContract, body: dict[str, Any], data: st.DataObject) -> None:
    """A row of the other tenant (or under the other parent), for the checks that none of
    our requests ever changes it. Half the time its text is one of our rows' (a write
    that matches rows by value rather than by key then shows)."""
    where = their_collection(self.config)
    if where is None:
        return
    url, other = where
    copies = bool(self.rows) and data.draw(st.booleans(), label="with our item's text")
    if copies:
        ours = data.draw(st.sampled_from(list(self.rows)), label="like our item")
        for key, value in self.rows[ours].items():
            if key in body and isinstance(value, str):
                body = {**body, key: value}
    response = self.call("post", url, body, other=other)
    if response.status_code == 201:
        created = response.get_json()
        self.theirs[created[self.config.id_field]] = created


def theirs_untouched(self: CrudContract) -> None:
    """After every step: the other tenant's (or parent's) rows are exactly as created."""
    where = their_collection(self.config)
    if where is None or not self.theirs:
        return
    url, other = where
    headers = self.config.their_headers if other else self.config.our_headers
    listed = {
        item[self.config.id_field]: self.config.comparable(item)
        for item in self.list_items(headers or {}, base=url)
    }
    last = next((line for line in reversed(self.log) if not line.startswith("GET")), "")
    request = last.rsplit(" -> ", 1)[0]
    whose = "the other tenant's" if other else "the other parent's"
    for key, row in self.theirs.items():
        if key not in listed:
            fail(
                f"{request}: {whose} item {key!r} is gone (rule: a request never changes "
                "rows outside its own scope and parent)"
            )
        if listed[key] != self.config.comparable(row):
            fail(
                f"{request}: {whose} item {key!r} changed, {difference(row, listed[key])} "
                "(rule: a request never changes rows outside its own scope and parent)"
            )


def list_and_item_agree(self: CrudContract) -> None:
    """Every item the list shows this caller, its item route shows too, identically."""
    for item in self.list_items(self.config.our_headers):
        url = self.item_url(item[self.config.id_field])
        response = self.call("get", url)
        expect_status(response, 200, "the list shows this item")
        shown = self.config.comparable(response.get_json())
        listed = {key: value for key, value in self.config.comparable(item).items() if key in shown}
        same = listed == {key: shown[key] for key in listed}
        expect(
            same,
            f"GET {url} disagrees with the list: {difference(listed, shown)} (rule: an item "
            "route shows what the list shows)",
        )


def update(self: CrudContract, key: Any, body: dict[str, Any]) -> None:
    self.change("update", "put", key, body)


def patch(self: CrudContract, key: Any, body: dict[str, Any]) -> None:
    self.change("patch", "patch", key, body)


def unique_fields(config: ContractConfig) -> list[str]:
    """Body keys of the patch schema's fields whose column is unique on its own."""
    options = config.list_options
    if options is None:
        return []
    table = options.mapper.local_table
    unique = {
        next(iter(constraint.columns)).name
        for constraint in [*table.constraints, *table.indexes]
        if len(constraint.columns) == 1
        and (isinstance(constraint, UniqueConstraint) or getattr(constraint, "unique", False))
        and not next(iter(constraint.columns)).primary_key
    }
    keys = []
    for name, loaded in load_fields(config.schemas["patch"]):
        attribute = options.columns.get(loaded.attribute or name)
        column = getattr(getattr(attribute, "property", None), "columns", [None])[0]
        if column is not None and getattr(column, "name", None) in unique:
            keys.append(loaded.data_key or name)
    return keys


def patch_conflicting(
    self: CrudContract, key: Any, body: dict[str, Any], data: st.DataObject
) -> None:
    """A write the database must refuse: a PATCH of other fields plus a unique value
    another item holds. The 409 must leave the item exactly as it was (a hook that
    commits part of the change by itself shows)."""
    others = [
        other
        for other in self.rows
        if other != key and any(self.rows[other].get(f) is not None for f in self.unique)
    ]
    if key not in self.rows or not others:
        return
    other = data.draw(st.sampled_from(others), label="item whose unique value is copied")
    taken = {f: self.rows[other][f] for f in self.unique if self.rows[other].get(f) is not None}
    url = self.item_url(key)
    response = self.call("patch", url, {**body, **taken})
    why = f"{', '.join(taken)} as item {other!r} has it"
    expect_status(response, 409, why)
    self.check_unchanged(after=response)


def patch_invalid(self: CrudContract, key: Any, pair: tuple[str, dict[str, Any]]) -> None:
    refused(self, "patch", key, pair)


def update_invalid(self: CrudContract, key: Any, pair: tuple[str, dict[str, Any]]) -> None:
    refused(self, "put", key, pair)


def refused(self: CrudContract, method: str, key: Any, pair: tuple[str, dict[str, Any]]) -> None:
    """An invalid body (``pair``: the field it breaks, the body) is a 422 (404 for a deleted
    item) and changes nothing."""
    name, body = pair
    url = self.item_url(key)
    response = self.call(method, url, body)
    if key in self.rows:
        expect_status(response, 422, f"{name!r} is invalid or missing")
    else:
        expect_status(response, 404, "the item was deleted")
    self.check_unchanged(after=response)


def conditional(self: CrudContract, key: Any) -> None:
    """If-None-Match with the current ETag (strong or weak) is a 304; If-Match with a stale
    one is a 412 that changes nothing."""
    url = self.item_url(key)
    current = self.call("get", url)
    if key not in self.rows:
        expect_status(current, 404, "the item was deleted")
        return
    etag = current.headers.get("ETag")
    expect(bool(etag), f"GET {url} answered without an ETag (rule: every item has an ETag)")
    for sent in (etag, f"W/{etag}"):
        response = self.call("get", url, extra={"If-None-Match": sent})
        expect_status(response, 304, f"{sent} is the current ETag")
    self.remember_etag(key, current, current.get_json())
    earlier = self.earlier_etag(key)
    if earlier is not None:  # a real ETag of the item before it last changed
        response = self.call("get", url, extra={"If-None-Match": earlier})
        expect_status(
            response,
            200,
            f"{earlier} is an ETag from before a change",
            "If-None-Match with an ETag the item no longer has answers the item",
        )
    stale = earlier or '"resources-kit-stale-etag"'
    response = self.call("patch", url, {}, extra={"If-Match": stale})
    expect_status(response, 412, f"{stale} is not the current ETag")
    self.check_unchanged(after=response)


def delete(self: CrudContract, key: Any) -> None:
    url = self.item_url(key)
    response = self.call("delete", url)
    if self.settled(key, response):
        return
    expect_status(response, 204)
    del self.rows[key]
    expect_status(self.call("get", url), 404, f"DELETE {url} just answered 204")


def other_tenant_item(self: CrudContract, key: Any, method: str) -> None:
    if key in self.theirs:  # a deleted item's id, given again to one of theirs
        return
    unreachable(self, self.item_url(key), method, "as another tenant", other=True)


def other_parent_item(self: CrudContract, key: Any, method: str) -> None:
    """Our item under another parent's URL is a 404 for every verb, and nothing changes."""
    url = f"{self.config.other_parent_url}/{key}"
    unreachable(self, url, method, "the item is not under this parent")


def unreachable(self: CrudContract, url: str, method: str, why: str, other: bool = False) -> None:
    """``method`` on ``url`` is a 404 and changes nothing."""
    body: dict[str, Any] | None = {} if method in ("put", "patch") else None
    response = self.call(method, url, body, other=other)
    expect_status(response, 404, why)
    self.check_unchanged(after=response)


def other_tenant_list(self: CrudContract) -> None:
    config = self.config
    url = f"{config.base}?limit={config.page_size}"
    response = self.call("get", url, other=True)
    if response.status_code == 404:  # the parent is not theirs: nothing to see
        return
    expect_status(response, 200)
    seen = {item[config.id_field] for item in response.get_json()["items"]}
    leaked = sorted(seen & set(self.rows), key=str)
    expect(
        not leaked,
        f"{response.sent_as} lists our items {leaked} (rule: no caller sees another tenant's "
        "items)",
    )


def _schemas(
    resource: type[Any] | None, *given: ma.Schema | type[ma.Schema] | None
) -> tuple[ma.Schema, dict[str, ma.Schema]]:
    """The response schema and the input schema of each write, taken from ``resource``
    where not given."""
    schema, create_schema, update_schema, patch_schema = given
    if resource is not None:
        compiled = options_for(resource)
        schema = schema or type(compiled.schemas["detail"])
        create_schema = create_schema or type(compiled.schemas["create"])
        update_schema = update_schema or type(compiled.schemas["update"])
        patch_schema = patch_schema or type(compiled.schemas["patch"])
    response_schema = _schema(schema)
    if response_schema is None:
        raise ImproperlyConfigured(
            "crud_contract() needs the resource's schema: pass resource=YourResource "
            "(its schemas are used) or schema=YourSchema."
        )
    schemas = {
        "create": _schema(create_schema) or response_schema,
        "update": _schema(update_schema) or response_schema,
    }
    schemas["patch"] = _schema(patch_schema) or schemas["update"]
    return response_schema, schemas


def _rules(config: ContractConfig, operations: Collection[str]) -> dict[str, Any]:
    items = CrudContract.items
    wanted: dict[str, Any] = {}
    if "create" in operations:
        wanted["create"] = rule(target=items, body=config.bodies("create"))(explained(create))
        invalid = invalid_payloads(config.schemas["create"])
        wanted["create_invalid"] = rule(pair=invalid)(explained(create_invalid))
    if "read" in operations:
        wanted["read"] = rule(key=items)(explained(read))
    if "list" in operations:
        wanted["list_all"] = rule()(explained(list_all))
    if "list" in operations and "read" in operations:
        wanted["list_and_item_agree"] = rule()(explained(list_and_item_agree))
    if "list" in operations and config.list_options is not None:
        wanted["list_query"] = rule(data=st.data())(explained(list_query))
    if "list" in operations:
        walking = rule(body=config.bodies("create")) if "create" in operations else rule()
        wanted["walk"] = walking(explained(walk))
    if "update" in operations:
        wanted["update"] = rule(key=items, body=config.bodies("update"))(explained(update))
        invalid = invalid_payloads(config.schemas["update"])
        wanted["update_invalid"] = rule(key=items, pair=invalid)(explained(update_invalid))
    if "patch" in operations:
        wanted["patch"] = rule(key=items, body=config.bodies("patch"))(explained(patch))
        if unique_fields(config):
            conflicting = rule(key=items, body=config.bodies("patch"), data=st.data())
            wanted["patch_conflicting"] = conflicting(explained(patch_conflicting))
        invalid = invalid_payloads(config.schemas["patch"], partial=True)
        wanted["patch_invalid"] = rule(key=items, pair=invalid)(explained(patch_invalid))
        if "read" in operations:
            wanted["conditional"] = rule(key=items)(explained(conditional))
    if "delete" in operations:
        wanted["delete"] = rule(key=items)(explained(delete))
    if config.other_parent_url is not None:
        methods = st.sampled_from(["get", "put", "patch", "delete"])
        wanted["other_parent_item"] = rule(key=items, method=methods)(explained(other_parent_item))
    if config.their_headers is not None:
        methods = st.sampled_from(["get", "put", "patch", "delete"])
        wanted["other_tenant_item"] = rule(key=items, method=methods)(explained(other_tenant_item))
        wanted["other_tenant_list"] = rule()(explained(other_tenant_list))
    if "create" in operations and their_collection(config) is not None:
        theirs = rule(body=config.bodies("create"), data=st.data())
        wanted["create_theirs"] = theirs(explained(create_theirs))
        wanted["theirs_untouched"] = invariant()(explained(theirs_untouched))
    return wanted


def crud_contract(
    client: Any,
    url: str,
    schema: ma.Schema | type[ma.Schema] | None = None,
    *,
    create_schema: ma.Schema | type[ma.Schema] | None = None,
    update_schema: ma.Schema | type[ma.Schema] | None = None,
    patch_schema: ma.Schema | type[ma.Schema] | None = None,
    resource: type[Any] | None = None,
    headers: Mapping[str, str] | None = None,
    other_headers: Mapping[str, str] | None = None,
    other_parent_url: str | None = None,
    id_field: str = "id",
    overrides: Mapping[str, st.SearchStrategy[Any]] | None = None,
    volatile_fields: Collection[str] = (),
    operations: Collection[str] = ALL_OPERATIONS,
    page_size: int = 100,
    setup: Callable[[], None] | None = None,
) -> type[RuleBasedStateMachine]:
    """Build a ``RuleBasedStateMachine`` that checks a resource's CRUD behaviour.

    ``client``: a Flask test client (or a function returning one); ``url``: the collection
    URL (nested too); ``schema`` and ``create_/update_/patch_schema``, or ``resource`` to
    take them (and the column limits, and the list allow-lists) from. ``headers`` go with
    every request (a user's token: the contract runs as that user); ``other_headers``
    (another tenant's) and ``other_parent_url`` (the collection under another parent) add
    isolation checks. ``overrides`` replaces a field's strategy; ``volatile_fields`` are
    not compared; ``setup`` runs at the start of each run, after ``client`` (when it is a
    function) has made the client, so inside the app context it pushed (empty the tables
    there).

    It creates, reads, lists, walks, queries, updates, patches and deletes in random order
    and checks every answer against a model of what the resource should hold (see the
    Testing page). A failure is one sentence, then the requests of the run.

    Run it with pytest: ``TestTeachers = crud_contract(...).TestCase``.
    """
    response_schema, schemas = _schemas(
        resource, schema, create_schema, update_schema, patch_schema
    )
    config = ContractConfig(
        client=client,
        base=url.rstrip("/"),
        response_schema=response_schema,
        schemas=schemas,
        checks=options_for(resource).column_checks if resource is not None else {},
        our_headers=dict(headers or {}),
        their_headers=dict(other_headers) if other_headers is not None else None,
        id_field=id_field,
        overrides=_link_overrides(resource, overrides),
        ignored=set(volatile_fields),
        page_size=page_size,
        setup=setup,
        list_options=options_for(resource) if resource is not None else None,
        other_parent_url=other_parent_url.rstrip("/") if other_parent_url else None,
    )
    flags = {"reads_back": "read" in operations, "deletes": "delete" in operations}
    return type(
        "CrudContract", (CrudContract,), {"config": config, **flags, **_rules(config, operations)}
    )


def _link_overrides(
    resource: Any, overrides: Mapping[str, st.SearchStrategy[Any]] | None
) -> dict[str, st.SearchStrategy[Any]] | None:
    """``overrides``, plus an empty list for each ``link_fields`` field it does not name:
    the contract cannot know which ids the caller may link."""
    links = options_for(resource).link_fields if resource is not None else {}
    if not links:
        return dict(overrides) if overrides is not None else None
    return {**{name: st.just([]) for name in links}, **(overrides or {})}
