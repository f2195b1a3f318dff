from __future__ import annotations

import pytest

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
