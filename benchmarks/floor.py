"""The floor: the benchmark's API as the fastest hand-written code would answer it.

SQLAlchemy Core statements built once at import, one statement per request where the
database allows it (the total as a scalar subquery of the page, the parent check inside
the page's statement, ``INSERT/UPDATE ... RETURNING``), rows straight to JSON, and the
input checked by hand: no ORM objects, no marshmallow. It does every check the other two
apps do (the tenant scope, the parent chain, validation, 404s, problem+json errors) and
sends what the library sends, ``ETag`` and ``Link`` headers included, so that
``bench.py`` can compare the library with the least a request can cost.

Reads end their transactions with ``COMMIT``, as the library's do: psycopg drops the
statements it has prepared on a connection at every ``ROLLBACK`` (which is how a pooled
connection is returned), so that PostgreSQL would plan each statement on every request.

Where a database cannot answer in one statement, it falls back as a careful author would:
MariaDB has no ``UPDATE ... RETURNING`` (an update, then a read), and an empty page
cannot tell "no such parent" from "no rows" (a second statement, only then).
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any
from urllib.parse import urlencode

from flask import Flask, Response, g, request
from sqlalchemy import delete, exists, func, insert, select, update
from sqlalchemy.sql import bindparam

from benchmarks.apps import Student, Teacher, db, make_app

T = Teacher.__table__
S = Student.__table__
TEACHER_COLUMNS = (T.c.id, T.c.school_id, T.c.name, T.c.email, T.c.years_teaching)
STUDENT_COLUMNS = (S.c.id, S.c.teacher_id, S.c.name, S.c.grade_level)
SCHOOL, TEACHER, LIMIT, OFFSET = (
    bindparam("school"),
    bindparam("teacher"),
    bindparam("limit"),
    bindparam("offset"),
)

# -- the statements, built once -----------------------------------------------------------

TEACHER_TOTAL = select(func.count()).select_from(T).where(T.c.school_id == SCHOOL)
TEACHER_PAGE = (
    select(*TEACHER_COLUMNS, TEACHER_TOTAL.scalar_subquery().label("total"))
    .where(T.c.school_id == SCHOOL)
    .order_by(T.c.name, T.c.id)
    .limit(LIMIT)
    .offset(OFFSET)
)
TEACHER_ITEM = select(*TEACHER_COLUMNS).where(T.c.id == TEACHER, T.c.school_id == SCHOOL)
TEACHER_INSERT = insert(T).returning(T.c.id)
TEACHER_DELETE = delete(T).where(T.c.id == TEACHER, T.c.school_id == SCHOOL)
VISIBLE_TEACHER = exists().where(T.c.id == TEACHER, T.c.school_id == SCHOOL)
STUDENT_TOTAL = select(func.count()).select_from(S).where(S.c.teacher_id == TEACHER)
STUDENT_PAGE = (
    select(*STUDENT_COLUMNS, STUDENT_TOTAL.scalar_subquery().label("total"))
    .where(S.c.teacher_id == TEACHER, VISIBLE_TEACHER)
    .order_by(S.c.id)
    .limit(LIMIT)
    .offset(OFFSET)
)
PARENT = select(VISIBLE_TEACHER)
#: ``?include=students``: the page's teachers' students, in id order, one statement.
INCLUDED_STUDENTS = (
    select(*STUDENT_COLUMNS)
    .where(S.c.teacher_id.in_(bindparam("teachers", expanding=True)))
    .order_by(S.c.id)
)
STUDENT_ITEM = select(*STUDENT_COLUMNS).where(
    S.c.id == bindparam("student"), S.c.teacher_id == TEACHER, VISIBLE_TEACHER
)

#: What marshmallow's Email field accepts, near enough for the benchmark's bodies.
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
#: The teacher's input fields: (type, check, message).
TEACHER_FIELDS: dict[str, tuple[type, Any, str]] = {
    "name": (str, lambda v: len(v) <= 100, "Longer than maximum length 100."),
    "email": (str, lambda v: len(v) <= 200 and EMAIL.match(v), "Not a valid email address."),
    "years_teaching": (
        int,
        lambda v: 0 <= v <= 80,
        "Must be greater than or equal to 0 and less than or equal to 80.",
    ),
}


def problem(status: int, detail: str, errors: Any = None) -> Response:
    body: dict[str, Any] = {"type": "about:blank", "title": "", "status": status, "detail": detail}
    if errors:
        body["errors"] = errors
    return Response(json.dumps(body), status, mimetype="application/problem+json")


def item(body: dict[str, Any], status: int = 200) -> Response:
    data = json.dumps(body)
    response = Response(data, status, mimetype="application/json")
    response.set_etag(hashlib.blake2b(data.encode(), digest_size=16).hexdigest())
    if (
        status == 200
        and request.method == "GET"
        and request.if_none_match.contains_weak(response.get_etag()[0])
    ):
        return Response(status=304, headers={"ETag": response.headers["ETag"]})
    return response


def page_args(allowed: frozenset[str] = frozenset()) -> tuple[int, int] | Response:
    args = request.args
    try:
        limit, offset = int(args.get("limit", 20)), int(args.get("offset", 0))
    except ValueError:
        return problem(400, "Bad query parameters.")
    if not 1 <= limit <= 100 or offset < 0 or set(args) - {"limit", "offset"} - allowed:
        return problem(400, "Bad query parameters.")
    return limit, offset


def page(rows: list[Any], limit: int, offset: int, total: int) -> Response:
    def at(start: int) -> str:
        return f"{request.base_url}?{urlencode({**request.args, 'limit': limit, 'offset': start})}"

    links = {
        "next": at(offset + limit) if offset + limit < total else None,
        "prev": at(max(offset - limit, 0)) if offset > 0 else None,
    }
    body = {"items": rows, "total": total, "limit": limit, "offset": offset, "links": links}
    response = Response(json.dumps(body), mimetype="application/json")
    header = [f'<{url}>; rel="{rel}"' for rel, url in links.items() if url is not None]
    if header:
        response.headers["Link"] = ", ".join(header)
    return response


def school() -> int | Response:
    if g.school_id is None:
        return problem(403, "No tenant scope for this request.")
    return int(g.school_id)


def load_teacher(partial: bool) -> dict[str, Any] | Response:
    if not request.is_json:
        return problem(415, "The request body must be JSON.")
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        return problem(400, "The request body must be a JSON object.")
    errors: dict[str, list[str]] = {}
    for key in body:
        if key not in TEACHER_FIELDS:
            errors[key] = ["Unknown field."]
    data = {}
    for key, (kind, check, message) in TEACHER_FIELDS.items():
        if key not in body:
            if not partial:
                errors[key] = ["Missing data for required field."]
            continue
        value = body[key]
        if type(value) is not kind:
            errors[key] = [f"Not a valid {'integer' if kind is int else 'string'}."]
        elif not check(value):
            errors[key] = [message]
        else:
            data[key] = value
    if errors:
        return problem(422, "Validation failed.", errors)
    return data


def teacher_row(row: Any) -> dict[str, Any]:
    return {
        "id": row[0],
        "school_id": row[1],
        "name": row[2],
        "email": row[3],
        "years_teaching": row[4],
    }


def student_row(row: Any) -> dict[str, Any]:
    return {"id": row[0], "teacher_id": row[1], "name": row[2], "grade_level": row[3]}


def teachers() -> Response:
    scope = school()
    if isinstance(scope, Response):
        return scope
    if request.method == "POST":
        return create_teacher(scope)
    args = page_args(frozenset({"include"}))
    if isinstance(args, Response):
        return args
    include = request.args.get("include")
    if include not in (None, "students"):
        return problem(400, "Bad query parameters.")
    limit, offset = args
    with db.engine.begin() as connection:
        rows = connection.execute(
            TEACHER_PAGE, {"school": scope, "limit": limit, "offset": offset}
        ).all()
        if rows:
            total = rows[0][-1]
        else:  # past the end: the total on its own
            total = connection.execute(TEACHER_TOTAL, {"school": scope}).scalar_one()
        items = [teacher_row(row) for row in rows]
        if include and items:
            by_teacher: dict[int, list[dict[str, Any]]] = {item["id"]: [] for item in items}
            teachers = list(by_teacher)
            for row in connection.execute(INCLUDED_STUDENTS, {"teachers": teachers}):
                by_teacher[row[1]].append(student_row(row))
            for item in items:
                item["students"] = by_teacher[item["id"]]
    return page(items, limit, offset, int(total))


def create_teacher(scope: int) -> Response:
    data = load_teacher(partial=False)
    if isinstance(data, Response):
        return data
    with db.engine.begin() as connection:
        new_id = connection.execute(TEACHER_INSERT, {**data, "school_id": scope}).scalar_one()
    body = {"id": new_id, "school_id": scope, **data}
    response = item(body, 201)
    response.headers["Location"] = f"{request.root_url.rstrip('/')}/api/teachers/{new_id}"
    return response


def teacher(teacher_id: int) -> Response:
    scope = school()
    if isinstance(scope, Response):
        return scope
    keys = {"school": scope, "teacher": teacher_id}
    if request.method == "DELETE":
        with db.engine.begin() as connection:
            gone = connection.execute(TEACHER_DELETE, keys).rowcount
        return Response(status=204) if gone else problem(404, "No such resource.")
    if request.method in ("PATCH", "PUT"):
        data = load_teacher(partial=request.method == "PATCH")
        if isinstance(data, Response):
            return data
        with db.engine.begin() as connection:
            row = patch_teacher(connection, keys, data)
    else:
        with db.engine.begin() as connection:
            row = connection.execute(TEACHER_ITEM, keys).first()
    return item(teacher_row(row)) if row is not None else problem(404, "No such resource.")


def patch_teacher(connection: Any, keys: dict[str, Any], data: dict[str, Any]) -> Any:
    where = (T.c.id == keys["teacher"], T.c.school_id == keys["school"])
    if not data:
        return connection.execute(TEACHER_ITEM, keys).first()
    if connection.dialect.update_returning:
        statement = update(T).where(*where).values(**data).returning(*TEACHER_COLUMNS)
        return connection.execute(statement).first()
    if connection.execute(update(T).where(*where).values(**data)).rowcount == 0:
        return None
    return connection.execute(TEACHER_ITEM, keys).first()


def students(teacher_id: int) -> Response:
    scope = school()
    if isinstance(scope, Response):
        return scope
    args = page_args()
    if isinstance(args, Response):
        return args
    limit, offset = args
    keys = {"school": scope, "teacher": teacher_id, "limit": limit, "offset": offset}
    with db.engine.begin() as connection:
        rows = connection.execute(STUDENT_PAGE, keys).all()
        if rows:
            total = rows[0][-1]
        else:  # no rows: no such parent, or past the end
            if not connection.execute(PARENT, keys).scalar():
                return problem(404, "No such resource.")
            total = connection.execute(STUDENT_TOTAL, keys).scalar_one()
    return page([student_row(row) for row in rows], limit, offset, int(total))


def student(teacher_id: int, student_id: int) -> Response:
    scope = school()
    if isinstance(scope, Response):
        return scope
    keys = {"school": scope, "teacher": teacher_id, "student": student_id}
    with db.engine.begin() as connection:
        row = connection.execute(STUDENT_ITEM, keys).first()
    return item(student_row(row)) if row is not None else problem(404, "No such resource.")


def floor_app(url: str) -> Flask:
    app = make_app(url)
    app.add_url_rule("/api/teachers", view_func=teachers, methods=["GET", "POST"])
    item_methods = ["GET", "PUT", "PATCH", "DELETE"]
    app.add_url_rule("/api/teachers/<int:teacher_id>", view_func=teacher, methods=item_methods)
    app.add_url_rule("/api/teachers/<int:teacher_id>/students", view_func=students)
    app.add_url_rule("/api/teachers/<int:teacher_id>/students/<int:student_id>", view_func=student)
    return app
