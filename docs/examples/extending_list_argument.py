"""Recipe: a list argument of your own, parsed, validated (400) and documented with the
built-in ones."""

import marshmallow as ma
from school import ONE, Teacher, Teachers, client_for


class ExperiencedTeachers(Teachers):
    list_args = {"min_years": ma.fields.Integer(validate=ma.validate.Range(min=0))}

    def filter_list_query(self, query, args):
        query = super().filter_list_query(query, args)  # keep ?filters= and ?search=
        if "min_years" in args:
            query = query.where(Teacher.years >= args["min_years"])
        return query


def tour() -> None:
    client = client_for(ExperiencedTeachers)
    page = client.get("/api/teachers?min_years=5", headers=ONE).json
    assert [t["name"] for t in page["items"]] == ["Bob"]
    bad = client.get("/api/teachers?min_years=many", headers=ONE)
    assert bad.status_code == 400
    assert list(bad.json["errors"]) == ["min_years"]
    operation = client.get("/api/openapi.json").json["paths"]["/api/teachers"]["get"]
    assert "min_years" in [parameter["name"] for parameter in operation["parameters"]]


if __name__ == "__main__":
    tour()
