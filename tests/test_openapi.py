"""The OpenAPI document: valid, covering every route, method and error, deterministic;
the docs page works offline; ``flask resources`` lists what is registered."""

from __future__ import annotations

import json
import re
from typing import Any

import marshmallow as ma
import pytest
from flask import Blueprint, Flask
from openapi_spec_validator import validate

from resources_kit import ListMixin, ModelResource, Resource, RetrieveMixin, Router, action

from .models import (
    LoneTeacherResource,
    Student,
    StudentSchema,
    Teacher,
    TeacherResource,
    TeacherSchema,
)


@pytest.fixture(scope="module")
def document(app: Flask) -> dict[str, Any]:
    response = app.test_client().get("/api/openapi.json")
    assert response.status_code == 200
    assert response.content_type == "application/json"
    return response.get_json()  # type: ignore[no-any-return]


def openapi_path(rule: str) -> str:
    return re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule)


def test_document_is_valid_openapi(document: dict[str, Any]) -> None:
    validate(document)
    assert document["openapi"].startswith("3.")


def test_every_registered_route_and_method_is_documented(
    app: Flask, document: dict[str, Any]
) -> None:
    documented = {
        (path, method.upper())
        for path, item in document["paths"].items()
        for method in item
        if method in ("get", "post", "put", "patch", "delete")
    }
    registered = {
        (openapi_path(rule.rule), method)
        for rule in app.url_map.iter_rules()
        if rule.endpoint.endswith(("_collection", "_item"))
        for method in rule.methods or ()
        if method not in ("HEAD", "OPTIONS")
    }
    assert registered
    assert documented == registered


EXPECTED_ERRORS = {
    "list": {"400", "500"},
    "create": {"400", "409", "413", "415", "422", "500"},
    "retrieve": {"400", "404", "500"},
    "update": {"400", "404", "409", "412", "413", "415", "422", "500"},
    "partial_update": {"400", "404", "409", "412", "413", "415", "422", "500"},
    "destroy": {"400", "404", "409", "412", "500"},
}


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in ("get", "post", "put", "patch", "delete")
    ]


def test_every_error_status_is_documented_as_a_problem(document: dict[str, Any]) -> None:
    for path, _, operation in operations(document):
        action = operation["operationId"].rsplit("_", 1)[-1]
        action = "partial_update" if operation["operationId"].endswith("partial_update") else action
        responses = operation["responses"]
        assert EXPECTED_ERRORS[action] <= set(responses), (path, action)
        if path.count("{") > (1 if action not in ("list", "create") else 0):
            assert "404" in responses  # nested: the parent may be missing
        for status, response in responses.items():
            if int(status) >= 400:
                schema = response["content"]["application/problem+json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/Problem"}


def test_require_if_match_documents_428(document: dict[str, Any]) -> None:
    item = document["paths"]["/api/strict-teachers/{teacher_id}"]
    for method in ("put", "patch", "delete"):
        assert "428" in item[method]["responses"]
        header = next(p for p in item[method]["parameters"] if p["name"] == "If-Match")
        assert header["required"] is True


def test_single_item_responses_carry_etag(document: dict[str, Any]) -> None:
    item = document["paths"]["/api/teachers/{teacher_id}"]
    assert "ETag" in item["get"]["responses"]["200"]["headers"]
    assert "304" in item["get"]["responses"]
    created = document["paths"]["/api/teachers"]["post"]["responses"]["201"]
    assert {"ETag", "Location"} <= set(created["headers"])
    assert set(created["links"]) == {
        "retrieve_teachers", "update_teachers", "partial_update_teachers", "destroy_teachers"
    }  # fmt: skip


def test_path_parameters_are_typed(document: dict[str, Any]) -> None:
    item = document["paths"]["/api/teachers/{teacher_id}/students/{student_id}/grades/{grade_id}"]
    assert [(p["name"], p["schema"]["type"]) for p in item["parameters"]] == [
        ("teacher_id", "integer"), ("student_id", "integer"), ("grade_id", "integer")
    ]  # fmt: skip


def test_list_query_parameters_describe_the_allow_lists(document: dict[str, Any]) -> None:
    listing = document["paths"]["/api/teachers"]["get"]
    parameters = {p["name"]: p for p in listing["parameters"]}
    built_in = {"limit", "offset", "filters", "sort", "search", "fields"}
    flat = {name for name in parameters if name.partition("__")[0] in TeacherResource.filter_fields}
    assert set(parameters) == built_in | flat
    # Each filter field, with each operator that applies to it, as a flat parameter too.
    assert {"name", "name__icontains", "years_teaching__gte", "students.name__in"} <= flat
    assert "years_teaching__contains" not in flat
    assert parameters["years_teaching__gte"]["schema"] == {"type": "integer"}
    assert parameters["name__in"]["schema"]["type"] == "array"
    assert parameters["name__in"]["explode"] is True
    assert parameters["limit"]["schema"]["maximum"] == 100
    assert "students.name" in parameters["filters"]["description"]
    assert "icontains" in parameters["filters"]["description"]
    sort = parameters["sort"]["schema"]
    assert sort["type"] == "array"
    assert {"name__desc", "region", "years_teaching__asc"} <= set(sort["items"]["enum"])
    assert "email" not in sort["items"]["enum"]
    assert {"id", "name"} <= set(parameters["fields"]["schema"]["items"]["enum"])
    for parameter in parameters.values():  # every one typed, and no default sent unasked
        assert "schema" in parameter
        assert "content" not in parameter
        assert "default" not in parameter["schema"]
    assert parameters["filters"]["schema"] == {"type": "string"}
    assert json.loads(parameters["filters"]["example"])
    assert "Default: 20." in parameters["limit"]["description"]
    cursor = {p["name"] for p in document["paths"]["/api/cursor-teachers"]["get"]["parameters"]}
    assert "cursor" in cursor
    assert "offset" not in cursor
    plain = {p["name"] for p in document["paths"]["/api/readonly-teachers"]["get"]["parameters"]}
    assert plain == {"limit", "offset", "fields"}


def test_patch_body_requires_nothing_and_create_requires_fields(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    teachers = document["paths"]["/api/teachers"]
    create_ref = teachers["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    item = document["paths"]["/api/teachers/{teacher_id}"]
    patch_ref = item["patch"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert schemas[create_ref.rsplit("/", 1)[-1]]["required"] == ["name"]
    assert "required" not in schemas[patch_ref.rsplit("/", 1)[-1]]


def test_operation_ids_are_unique_and_deterministic(app: Flask) -> None:
    from .conftest import make_app

    def ids() -> list[str]:
        doc = make_app().test_client().get("/api/openapi.json").get_json()
        return [op["operationId"] for _, _, op in operations(doc)]

    first, second = ids(), ids()
    assert first == second
    assert len(first) == len(set(first))
    assert "teachers_students_grades_retrieve" in first


def test_schema_classes_shared_between_resources_and_same_names() -> None:
    class Other(ListMixin, RetrieveMixin, Resource):
        name = "others"
        model = Teacher
        schema = type("TeacherSchema", (TeacherSchema,), {})  # same class name, other class

    router = Router()
    router.register(LoneTeacherResource)
    router.register(type("Again", (TeacherResource,), {"name": "again"}))
    router.register(Other)
    document = router.openapi()
    validate(document)
    assert {"Teacher", "TeacherFields", "TeacherCreate", "Teacher2", "Teacher2Fields"} <= set(
        document["components"]["schemas"]
    )


def test_security_is_documented() -> None:
    router = Router(security_schemes={"bearer": {"type": "http", "scheme": "bearer"}},
                    security=[{"bearer": []}], title="School", version="2")  # fmt: skip
    router.register(LoneTeacherResource)
    document = router.openapi()
    validate(document)
    assert document["security"] == [{"bearer": []}]
    assert document["info"] == {"title": "School", "version": "2"}
    assert "401" in document["paths"]["/teachers"]["get"]["responses"]


def test_docs_page_serves_its_own_assets(app: Flask) -> None:
    client = app.test_client()
    page = client.get("/api/docs")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "/api/docs/swagger-ui-bundle.js" in html
    assert "/api/openapi.json" in html
    assert "https://" not in html  # nothing from a CDN
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css"):
        with client.get(f"/api/docs/{asset}") as response:  # a file: close it
            assert response.status_code == 200
            assert response.headers["Cache-Control"] == "public, max-age=86400"
    missing = client.get("/api/docs/../../etc/passwd")
    assert missing.status_code == 404
    assert client.get("/api/docs/index.html").status_code == 404


def test_document_under_a_blueprint_has_the_full_prefix() -> None:
    app = Flask(__name__)
    bp = Blueprint("v2", __name__, url_prefix="/v2")
    router = Router(bp, url_prefix="/api")
    router.register(LoneTeacherResource)
    app.register_blueprint(bp)
    document = app.test_client().get("/v2/api/openapi.json").get_json()
    assert "/v2/api/teachers/{teacher_id}" in document["paths"]
    assert app.test_client().get("/v2/api/docs").status_code == 200


def test_docs_can_be_turned_off() -> None:
    app = Flask(__name__)
    Router(app, url_prefix="/api", docs=False).register(LoneTeacherResource)
    response = app.test_client().get("/api/openapi.json")
    assert response.status_code == 404
    assert response.content_type == "application/problem+json"


def test_flask_resources_command_lists_everything() -> None:
    from sample_app import create_app

    app = create_app({"SQLALCHEMY_DATABASE_URI": "sqlite://"})
    result = app.test_cli_runner().invoke(args=["resources"])
    assert result.exit_code == 0, result.output
    assert "TeacherResource  (teachers)" in result.output
    assert re.search(r"GET, PUT, PATCH, DELETE +/api/teachers/<int:teacher_id>\n", result.output)
    assert "StudentResource  (teachers_students)" in result.output
    assert "tenant scope: TeacherResource" in result.output
    assert "parent chain: TeacherResource" in result.output
    assert "pre_create: VerifyCredentials" in result.output
    assert "post_create: AuditWrite, WelcomeEmail" in result.output


def component(document: dict[str, Any], ref: dict[str, Any]) -> dict[str, Any]:
    return document["components"]["schemas"][ref["$ref"].rsplit("/", 1)[-1]]  # type: ignore[no-any-return]


def body_schema(operation: dict[str, Any]) -> dict[str, Any]:
    return operation["requestBody"]["content"]["application/json"]["schema"]  # type: ignore[no-any-return]


def test_request_and_response_components_are_separate_and_exact() -> None:
    from sample_app import create_app

    app = create_app({"SQLALCHEMY_DATABASE_URI": "sqlite://"})
    document = app.test_client().get("/api/openapi.json").get_json()
    validate(document)
    collection = document["paths"]["/api/teachers"]
    item = document["paths"]["/api/teachers/{teacher_id}"]
    create = component(document, body_schema(collection["post"]))
    replace = component(document, body_schema(item["put"]))
    patch = component(document, body_schema(item["patch"]))
    created = collection["post"]["responses"]["201"]["content"]["application/json"]["schema"]
    response = component(document, created)
    # Read-only fields only in responses, write-only only in requests.
    assert set(response["properties"]) == {
        "id", "school_id", "name", "email", "years_teaching", "mentor_id"
    }  # fmt: skip
    for body in (create, replace, patch):
        assert set(body["properties"]) == {
            "name", "email", "credential", "years_teaching", "mentor_id"
        }  # fmt: skip
    # required exact on each side; no default in a patch (it applies none).
    assert set(response["required"]) == set(response["properties"])
    assert set(create["required"]) == set(replace["required"]) == {"name", "email", "credential"}
    assert "required" not in patch
    assert create["properties"]["years_teaching"]["default"] == 0
    assert all("default" not in prop for prop in patch["properties"].values())
    assert all("default" not in prop for prop in response["properties"].values())
    # nullable where the column (or the field) is.
    assert response["properties"]["mentor_id"]["nullable"] is True
    assert "nullable" not in response["properties"]["email"]
    assert patch["properties"]["mentor_id"]["nullable"] is True
    # marshmallow's Regexp matches from the start: so does the documented pattern.
    pattern = create["properties"]["credential"]["pattern"]
    assert re.search(pattern, "LIC-1234")
    assert not re.search(pattern, "xLIC-1234")
    # A GET may be trimmed by ?fields=: the full item, or the trimmed one.
    read = item["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert read["anyOf"][0] == created
    assert "required" not in component(document, read["anyOf"][1])


def test_enum_columns_and_nullable_enums_are_typed(document: dict[str, Any]) -> None:
    created = document["paths"]["/api/gadgets"]["post"]["responses"]["201"]
    gadget = component(document, created["content"]["application/json"]["schema"])
    kind = gadget["properties"]["kind"]
    # nullable around the enum, so that generators type it Kind | None.
    assert kind == {"nullable": True, "allOf": [{"$ref": "#/components/schemas/GadgetKind"}]}
    schemas = document["components"]["schemas"]
    assert schemas["GadgetKind"] == {"type": "string", "enum": ["small", "large"]}
    create = component(document, body_schema(document["paths"]["/api/gadgets"]["post"]))
    assert create["properties"]["kind"] == kind  # one enum type on every side
    assert gadget["properties"]["price"]["type"] == "string"  # Decimal(as_string=True)
    filters = schemas["GadgetsFilters"]["properties"]
    assert filters["kind__in"]["items"] == {"$ref": "#/components/schemas/GadgetKind"}
    assert filters["label__isnull"] == {"type": "boolean"}
    assert "price__icontains" not in filters  # text operators on text fields only


def test_problem_errors_are_typed(document: dict[str, Any]) -> None:
    errors = document["components"]["schemas"]["Problem"]["properties"]["errors"]
    messages = errors["additionalProperties"]["anyOf"]
    assert {"type": "array", "items": {"type": "string"}} in messages
    assert document["components"]["responses"]["MethodNotAllowed"]["headers"]["Allow"]


def test_offset_page_envelope_documents_its_links(document: dict[str, Any]) -> None:
    listing = document["paths"]["/api/teachers"]["get"]["responses"]["200"]
    page = listing["content"]["application/json"]["schema"]
    assert set(page["required"]) == {"items", "total", "limit", "offset", "links"}
    assert page["properties"]["links"]["required"] == ["next", "prev"]
    cursor = document["paths"]["/api/cursor-teachers"]["get"]["responses"]["200"]
    assert set(cursor["content"]["application/json"]["schema"]["required"]) == {"items", "next"}


def test_nested_schemas_and_trimmed_instances_get_components_per_side() -> None:
    class Brief(ma.Schema):
        id = ma.fields.Integer(dump_only=True)
        name = ma.fields.String(required=True)

    class WithTeacher(StudentSchema):
        teacher = ma.fields.Nested(Brief, dump_only=True)
        friends = ma.fields.Nested(Brief, many=True, load_default=list)

    class Pupils(ModelResource):
        name, model, schema = "pupils", Student, WithTeacher

        # friends are written by hand (the default write path has nowhere to put them).
        def perform_create(self, data: dict[str, Any]) -> Any:
            return super().perform_create({k: v for k, v in data.items() if k != "friends"})

        def perform_update(self, obj: Any, data: dict[str, Any]) -> Any:
            return super().perform_update(obj, {k: v for k, v in data.items() if k != "friends"})

        @action(detail=True, methods=["GET"], response=TeacherSchema(only=("id", "name")))
        def teacher_card(self, obj: Any) -> Any:
            return obj.teacher

    router = Router()
    router.register(TeacherResource)
    router.register(Pupils)
    document = router.openapi()
    validate(document)
    schemas = document["components"]["schemas"]
    teacher = schemas["WithTeacher"]["properties"]["teacher"]
    assert teacher == {"allOf": [{"$ref": "#/components/schemas/Brief"}], "nullable": True}
    assert sorted(schemas["Brief"]["required"]) == ["id", "name"]  # the response side
    friends = schemas["WithTeacherCreate"]["properties"]["friends"]
    assert friends == {"type": "array", "items": {"$ref": "#/components/schemas/BriefCreate"}}
    assert set(schemas["BriefCreate"]["properties"]) == {"name"}
    assert "teacher" not in schemas["WithTeacherCreate"]["properties"]
    card = document["paths"]["/pupils/{student_id}/teacher-card"]["get"]["responses"]["200"]
    ref = card["content"]["application/json"]["schema"]["$ref"]
    assert ref == "#/components/schemas/Teacher2"  # not the full Teacher
    assert set(schemas["Teacher2"]["properties"]) == {"id", "name"}
