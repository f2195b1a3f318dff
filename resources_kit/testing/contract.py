"""A stateful CRUD contract: Hypothesis drives a registered resource through a Flask test
client in random order and checks every answer against a model of what it should hold."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Any

import marshmallow as ma
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, multiple, rule

from resources_kit.errors import ImproperlyConfigured
from resources_kit.options import options_for
from resources_kit.testing.strategies import invalid_payloads, payloads, schema_instance

ALL_OPERATIONS = ("create", "read", "list", "update", "patch", "delete")


def _schema(schema: ma.Schema | type[ma.Schema] | None) -> ma.Schema | None:
    return None if schema is None else schema_instance(schema)


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
    id_field: str = "id",
    overrides: Mapping[str, st.SearchStrategy[Any]] | None = None,
    volatile_fields: Collection[str] = (),
    operations: Collection[str] = ALL_OPERATIONS,
    page_size: int = 100,
    setup: Callable[[], None] | None = None,
) -> type[RuleBasedStateMachine]:
    """Build a ``RuleBasedStateMachine`` that checks a resource's CRUD behaviour.

    ``client`` is a Flask test client (or a function returning one); ``url`` the
    collection URL (nested ones included: ``/api/teachers/3/students``); ``schema`` the
    response schema, and input schema unless ``create_schema``/``update_schema``/
    ``patch_schema`` say otherwise. Pass ``resource`` (the resource class) and generated
    bodies also respect the model's columns (string lengths, integer ranges); take all
    three schemas from it by leaving them out. ``headers`` go with every request (a
    tenant's token); with ``other_headers`` (another tenant's), the contract also checks
    that the other tenant can neither see nor change a single row. ``overrides`` replaces
    a field's strategy (for values a callback checks); ``volatile_fields`` are left out of
    comparisons (``updated_at``); ``setup`` runs before each run (empty the tables there).

    It creates, reads, lists, updates, patches and deletes in random order and checks:
    round trips (what was sent is what is read back), list contents and totals, 404 after
    delete, 422 for invalid bodies with nothing changed, and tenant isolation. A 409 (a
    unique value taken, a row still referenced) is accepted when nothing changed.

    Run it with pytest: ``TestTeachers = crud_contract(...).TestCase``.
    """
    if resource is not None:
        compiled = options_for(resource)
        schema = schema or type(compiled.schemas["detail"])
        create_schema = create_schema or type(compiled.schemas["create"])
        update_schema = update_schema or type(compiled.schemas["update"])
        patch_schema = patch_schema or type(compiled.schemas["patch"])
        checks = compiled.column_checks
    else:
        checks = {}
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
    base = url.rstrip("/")
    our_headers, their_headers = dict(headers or {}), dict(other_headers or {})
    ignored = set(volatile_fields)

    def fits_columns(operation: str) -> Callable[[dict[str, Any]], bool]:
        loader = schemas[operation]

        def fits(body: dict[str, Any]) -> bool:
            loaded = loader.load(body, partial=operation == "patch")
            return all(
                not (checks.get(key) and checks[key](value)) for key, value in loaded.items()
            )

        return fits

    def bodies(operation: str) -> st.SearchStrategy[dict[str, Any]]:
        partial = operation == "patch"
        strategy = payloads(schemas[operation], partial=partial, overrides=overrides)
        return strategy.filter(fits_columns(operation)) if checks else strategy

    def expected_fields(operation: str, body: dict[str, Any]) -> dict[str, Any]:
        """What the response must show for the fields sent: each loaded, then dumped by
        the response schema's field for the same attribute."""
        loaded = schemas[operation].load(body, partial=operation == "patch")
        shown = {}
        for name, field in response_schema.dump_fields.items():
            attribute = field.attribute or name
            if attribute in loaded and not field.load_only:
                shown[field.data_key or name] = field.serialize(attribute, loaded)
        return shown

    def comparable(item: Mapping[str, Any]) -> dict[str, Any]:
        return {key: value for key, value in item.items() if key not in ignored}

    class CrudContract(RuleBasedStateMachine):
        items = Bundle("items")

        def __init__(self) -> None:
            super().__init__()
            if setup is not None:
                setup()
            self.client = client() if callable(client) and not hasattr(client, "get") else client
            self.rows: dict[Any, dict[str, Any]] = {
                item[id_field]: item for item in self._list(our_headers)
            }

        # -- helpers ------------------------------------------------------------------------

        def _call(self, method: str, path: str, body: Any = None, *, other: bool = False) -> Any:
            kwargs: dict[str, Any] = {"headers": their_headers if other else our_headers}
            if body is not None:
                kwargs["json"] = body
            return getattr(self.client, method)(path, **kwargs)

        def _list(self, headers: Mapping[str, str]) -> list[dict[str, Any]]:
            items: list[dict[str, Any]] = []
            offset, total = 0, None
            while total is None or offset < total:
                response = self.client.get(
                    f"{base}?limit={page_size}&offset={offset}", headers=dict(headers)
                )
                assert response.status_code == 200, (response.status_code, response.get_json())
                page = response.get_json()
                total = page["total"]
                items.extend(page["items"])
                offset += page_size
                if not page["items"]:
                    break
            assert total == len(items), f"total {total} but {len(items)} items listed"
            return items

        def _unchanged(self) -> None:
            listed = {item[id_field]: comparable(item) for item in self._list(our_headers)}
            assert listed == {key: comparable(row) for key, row in self.rows.items()}

        def _item(self, key: Any) -> str:
            return f"{base}/{key}"

        def _check_sent(self, operation: str, body: dict[str, Any], shown: dict[str, Any]) -> None:
            for key, value in expected_fields(operation, body).items():
                if key not in ignored:
                    assert shown.get(key) == value, (key, value, shown.get(key))

        # -- rules --------------------------------------------------------------------------

        if "create" in operations:

            @rule(target=items, body=bodies("create"))
            def create(self, body: dict[str, Any]) -> Any:
                response = self._call("post", base, body)
                if response.status_code == 409:
                    self._unchanged()
                    return multiple()
                assert response.status_code == 201, (response.status_code, response.get_json())
                created = response.get_json()
                self._check_sent("create", body, created)
                key = created[id_field]
                assert key not in self.rows, f"create reused the id {key!r}"
                self.rows[key] = created
                if "read" in operations:
                    fetched = self._call("get", self._item(key))
                    assert fetched.status_code == 200
                    assert comparable(fetched.get_json()) == comparable(created)
                return key

            @rule(pair=invalid_payloads(schemas["create"]))
            def create_invalid(self, pair: tuple[str, dict[str, Any]]) -> None:
                field, body = pair
                response = self._call("post", base, body)
                assert response.status_code == 422, (field, response.status_code)
                assert field in response.get_json().get("errors", {}), (field, response.get_json())
                self._unchanged()

        if "read" in operations:

            @rule(key=items)
            def read(self, key: Any) -> None:
                response = self._call("get", self._item(key))
                if key in self.rows:
                    assert response.status_code == 200, response.status_code
                    assert comparable(response.get_json()) == comparable(self.rows[key])
                else:
                    assert response.status_code == 404, (key, response.status_code)

        if "list" in operations:

            @rule()
            def list_all(self) -> None:
                self._unchanged()

        def _settled(self, key: Any, response: Any) -> bool:
            """Whether a write's answer needs no more checks: the row is not ours (so 404),
            or the write conflicted (409) and nothing changed."""
            if key not in self.rows:
                assert response.status_code == 404, (key, response.status_code)
                return True
            if response.status_code == 409:
                self._unchanged()
                return True
            return False

        def _change(self, operation: str, method: str, key: Any, body: dict[str, Any]) -> None:
            response = self._call(method, self._item(key), body)
            if self._settled(key, response):
                return
            assert response.status_code == 200, (response.status_code, response.get_json())
            shown = response.get_json()
            self._check_sent(operation, body, shown)
            if operation == "patch":
                sent = set(expected_fields(operation, body))
                before = comparable(self.rows[key])
                after = comparable(shown)
                for field in set(before) - sent:
                    assert after.get(field) == before[field], (
                        f"PATCH changed {field!r}, which was not sent"
                    )
            self.rows[key] = shown

        if "update" in operations:

            @rule(key=items, body=bodies("update"))
            def update(self, key: Any, body: dict[str, Any]) -> None:
                self._change("update", "put", key, body)

        if "patch" in operations:

            @rule(key=items, body=bodies("patch"))
            def patch(self, key: Any, body: dict[str, Any]) -> None:
                self._change("patch", "patch", key, body)

        if "patch" in operations:

            @rule(key=items, pair=invalid_payloads(schemas["patch"], partial=True))
            def patch_invalid(self, key: Any, pair: tuple[str, dict[str, Any]]) -> None:
                field, body = pair
                response = self._call("patch", self._item(key), body)
                assert response.status_code == (422 if key in self.rows else 404), (
                    field,
                    response.status_code,
                )
                self._unchanged()

        if "delete" in operations:

            @rule(key=items)
            def delete(self, key: Any) -> None:
                response = self._call("delete", self._item(key))
                if self._settled(key, response):
                    return
                assert response.status_code == 204, response.status_code
                del self.rows[key]
                assert self._call("get", self._item(key)).status_code == 404

        if other_headers is not None:

            @rule(key=items, method=st.sampled_from(["get", "put", "patch", "delete"]))
            def other_tenant_item(self, key: Any, method: str) -> None:
                body: dict[str, Any] | None = {} if method in ("put", "patch") else None
                response = self._call(method, self._item(key), body, other=True)
                assert response.status_code == 404, (
                    f"another tenant got {response.status_code} on {method.upper()} of {key!r}"
                )
                self._unchanged()

            @rule()
            def other_tenant_list(self) -> None:
                response = self.client.get(f"{base}?limit={page_size}", headers=their_headers)
                if response.status_code == 404:  # the parent is not theirs: nothing to see
                    return
                assert response.status_code == 200
                seen = {item[id_field] for item in response.get_json()["items"]}
                assert not seen & set(self.rows), f"another tenant sees {seen & set(self.rows)}"

    CrudContract.__name__ = CrudContract.__qualname__ = "CrudContract"
    return CrudContract
