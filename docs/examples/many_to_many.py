"""A many-to-many between books and tags, both scoped by school: the linked list, link and
unlink routes, and a ``tag_ids`` field that replaces the set."""

import marshmallow as ma
from flask import Flask, g, request
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import Column, ForeignKey, Table
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from resources_kit import ModelResource, Router, TenantScopeMixin


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)

book_tags = Table(
    "book_tags",
    Base.metadata,
    Column("book_id", ForeignKey("book.id", ondelete="CASCADE"), primary_key=True),
    Column("tag_id", ForeignKey("tag.id", ondelete="CASCADE"), primary_key=True),
)


class Tag(db.Model):
    id: Mapped[int] = mapped_column(primary_key=True)
    school_id: Mapped[int]
    name: Mapped[str]


class Book(db.Model):
    id: Mapped[int] = mapped_column(primary_key=True)
    school_id: Mapped[int]
    title: Mapped[str]
    tags: Mapped[list[Tag]] = relationship(secondary=book_tags)


class TagSchema(ma.Schema):
    id = ma.fields.Integer(dump_only=True)
    name = ma.fields.String(required=True)


class BookSchema(ma.Schema):
    id = ma.fields.Integer(dump_only=True)
    title = ma.fields.String(required=True)
    tag_ids = ma.fields.List(ma.fields.Integer())  # stored by link_fields below


class BySchool(TenantScopeMixin):
    def get_base_query_kwargs(self):
        return {"school_id": g.get("school_id")}


class TagResource(BySchool, ModelResource):
    name = "tags"
    model = Tag
    schema = TagSchema
    sort_fields = ["name"]


class BookResource(BySchool, ModelResource):
    name = "books"
    model = Book
    schema = BookSchema
    link_fields = {"tag_ids": ("tags", TagResource)}


def make_app() -> Flask:
    app = Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = "sqlite://"
    db.init_app(app)

    @app.before_request
    def school_from_header():
        g.school_id = int(request.headers["X-School"]) if "X-School" in request.headers else None

    api = Router(app, url_prefix="/api")
    api.register(TagResource)
    api.register(BookResource)
    api.register_links(BookResource, "tags", TagResource)  # /books/<id>/tags[/<tag_id>]
    return app


def tour() -> None:
    app = make_app()
    one, two = {"X-School": "1"}, {"X-School": "2"}
    with app.app_context():
        db.create_all()
        client = app.test_client()
        red = client.post("/api/tags", json={"name": "red"}, headers=one).json["id"]
        blue = client.post("/api/tags", json={"name": "blue"}, headers=one).json["id"]
        other = client.post("/api/tags", json={"name": "x"}, headers=two).json["id"]

        # the ids field sets the links on create, and dumps them back
        book = client.post("/api/books", json={"title": "Emma", "tag_ids": [red]}, headers=one)
        assert book.status_code == 201
        assert book.json["tag_ids"] == [red]
        url = f"/api/books/{book.json['id']}"

        # link (idempotent), then the linked rows: the tags list, with its sort and pages
        assert client.put(f"{url}/tags/{blue}", headers=one).status_code == 204
        assert client.put(f"{url}/tags/{blue}", headers=one).status_code == 204
        linked = client.get(f"{url}/tags?sort=name", headers=one).json
        assert [tag["name"] for tag in linked["items"]] == ["blue", "red"]

        # unlink, and a patch that replaces the set
        assert client.delete(f"{url}/tags/{red}", headers=one).status_code == 204
        assert client.get(url, headers=one).json["tag_ids"] == [blue]
        assert client.patch(url, json={"tag_ids": [red]}, headers=one).json["tag_ids"] == [red]

        # another school's tag: 404 in the URL, 422 in a body; nothing changes
        assert client.put(f"{url}/tags/{other}", headers=one).status_code == 404
        refused = client.patch(url, json={"tag_ids": [red, other]}, headers=one)
        assert refused.status_code == 422
        assert refused.json["errors"] == {"tag_ids": [f"No such item: {other}."]}
        twice = client.patch(url, json={"tag_ids": [red, red]}, headers=one)
        assert twice.status_code == 422  # duplicates are refused, not folded
        # another school's caller does not see the book, nor its links
        assert client.get(f"{url}/tags", headers=two).status_code == 404
        assert client.get(url, headers=one).json["tag_ids"] == [red]


if __name__ == "__main__":
    tour()
    print("many_to_many: all good")
