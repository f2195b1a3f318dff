from __future__ import annotations

from typing import Any

import marshmallow as ma
import pytest
from sqlalchemy import Column, ForeignKey, String, Table
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from resources_kit import ImproperlyConfigured, ListMixin, ModelResource, Resource, Router
from resources_kit.options import options_for, snake_case
from resources_kit.querying import SortKey
from resources_kit.querying import split_sort as parse_sort

from .models import GradeResource, TeacherResource


@pytest.mark.parametrize(
    ("name", "expected"),
    [("Teacher", "teacher"), ("SchoolClass", "school_class"), ("HTTPLog", "http_log"),
     ("A1Grade", "a1_grade")],
)  # fmt: skip
def test_snake_case(name: str, expected: str) -> None:
    assert snake_case(name) == expected


def test_parse_sort() -> None:
    assert parse_sort("a__desc, b,c__asc") == [
        SortKey("a", True), SortKey("b", False), SortKey("c", False)
    ]  # fmt: skip
    assert parse_sort(["x__desc"]) == [SortKey("x", True)]
    for bad in ("", "a__sideways", "__desc", "a,,b"):
        with pytest.raises(ValueError):  # noqa: PT011
            parse_sort(bad)


def test_options_are_compiled_once_per_class() -> None:
    assert options_for(TeacherResource) is options_for(TeacherResource)
    options = options_for(GradeResource)
    assert (options.url_variable, options.converter, options.lookup_key) == ("grade_id", "int",
                                                                              "id")  # fmt: skip
    assert [pk.key for pk in options.primary_key_paths] == ["id"]


# -- fields the default write path cannot store ---------------------------------------------


class _Base(DeclarativeBase):
    pass


_post_tags = Table(
    "post_tags",
    _Base.metadata,
    Column("post_id", ForeignKey("posts.id"), primary_key=True),
    Column("tag_id", ForeignKey("tags.id"), primary_key=True),
)


class _Tag(_Base):
    __tablename__ = "tags"
    id: Mapped[int] = mapped_column(primary_key=True)


class _Post(_Base):
    __tablename__ = "posts"
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(50))
    tags: Mapped[list[_Tag]] = relationship(secondary=_post_tags)

    @property
    def slug(self) -> str:
        return self.title.lower()


def _posts(**fields: Any) -> type[Any]:
    schema = ma.Schema.from_dict({"id": ma.fields.Integer(dump_only=True), **fields})
    return type("Posts", (ModelResource,), {"name": "posts", "model": _Post, "schema": schema})


@pytest.mark.parametrize(
    ("field", "says"),
    [
        (ma.fields.List(ma.fields.Integer()), "relationship _Post.tags"),  # ids, many-to-many
        (ma.fields.Integer(), "relationship _Post.tags"),
    ],
)
def test_a_relationship_field_loading_plain_values_is_refused(field: Any, says: str) -> None:
    with pytest.raises(ImproperlyConfigured, match="field 'tags'") as raised:
        Router().register(_posts(tags=field))
    assert says in str(raised.value)
    assert "dump_only" in str(raised.value)
    assert "perform_create()" in str(raised.value)


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"slug": ma.fields.String()}, "read-only property"),
        ({"nothing": ma.fields.String()}, "no attribute 'nothing'"),
        ({"label": ma.fields.String(attribute="nothing")}, "no attribute 'nothing'"),
    ],
)
def test_a_field_the_model_cannot_take_is_refused(fields: dict[str, Any], says: str) -> None:
    with pytest.raises(ImproperlyConfigured, match=says):
        Router().register(_posts(title=ma.fields.String(), **fields))


def test_fields_the_write_path_can_store_or_does_not_write_are_accepted() -> None:
    ids = ma.fields.List(ma.fields.Integer())
    Router().register(_posts(tags=ma.fields.List(ma.fields.Integer(), dump_only=True)))
    Router().register(_posts(tags=ma.fields.Nested(ma.Schema.from_dict({}), many=True)))

    class OwnWrites(_posts(tags=ids)):  # type: ignore[misc,valid-type]
        def perform_create(self, data: dict[str, Any]) -> Any:
            return super().perform_create(data)

        def perform_update(self, obj: Any, data: dict[str, Any]) -> Any:
            return super().perform_update(obj, data)

    Router().register(OwnWrites)
    read_only = type(
        "ReadPosts",
        (ListMixin, Resource),
        {"name": "posts", "model": _Post, "schema": ma.Schema.from_dict({"tags": ids})},
    )
    Router().register(read_only)  # no write: nothing to refuse
