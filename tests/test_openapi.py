"""The OpenAPI document: valid, covering every route, method and error, deterministic;
the docs page works offline; ``flask resources`` lists what is registered."""

from __future__ import annotations

import re
from typing import Any

import pytest
from flask import Blueprint, Flask
from openapi_spec_validator import validate

from resources_kit import ListMixin, Resource, RetrieveMixin, Router

from .models import Teacher, TeacherResource, TeacherSchema


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
    assert re.fullmatch(parameters["sort"]["schema"]["pattern"], "name__desc,region")
    assert not re.fullmatch(parameters["sort"]["schema"]["pattern"], "email")
    assert re.fullmatch(parameters["fields"]["schema"]["pattern"], "id,name")
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
    router.register(TeacherResource)
    router.register(type("Again", (TeacherResource,), {"name": "again"}))
    router.register(Other)
    document = router.openapi()
    validate(document)
    assert {"Teacher", "TeacherPartial", "Teacher2Partial"} <= set(
        document["components"]["schemas"]
    )


def test_security_is_documented() -> None:
    router = Router(security_schemes={"bearer": {"type": "http", "scheme": "bearer"}},
                    security=[{"bearer": []}], title="School", version="2")  # fmt: skip
    router.register(TeacherResource)
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
    router.register(TeacherResource)
    app.register_blueprint(bp)
    document = app.test_client().get("/v2/api/openapi.json").get_json()
    assert "/v2/api/teachers/{teacher_id}" in document["paths"]
    assert app.test_client().get("/v2/api/docs").status_code == 200


def test_docs_can_be_turned_off() -> None:
    app = Flask(__name__)
    Router(app, url_prefix="/api", docs=False).register(TeacherResource)
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
    assert "after_commit_create: WelcomeEmail" in result.output
