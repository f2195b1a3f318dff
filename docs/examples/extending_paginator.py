"""Recipe: a paginator of your own: numbered pages (``?page=2``)."""

import marshmallow as ma
from school import ONE, Teachers, client_for

from resources_kit import Page, Pagination


class NumberedPages(Pagination):
    envelope = {"page": {"type": "integer"}}  # documented beside "items"

    def get_args(self):
        return {"page": ma.fields.Integer(load_default=1, validate=ma.validate.Range(min=1))}

    def paginate(self, view, query, args, plan):
        # ``query`` is already scoped, filtered and sorted.
        size = view.page_size
        rows = view.get_session().execute(query.limit(size).offset((args["page"] - 1) * size))
        return Page(list(rows.scalars()), {"page": args["page"]})


class PagedTeachers(Teachers):
    pagination = NumberedPages
    page_size = 1


def tour() -> None:
    client = client_for(PagedTeachers)
    second = client.get("/api/teachers?page=2&sort=name", headers=ONE).json
    assert second == {"items": [second["items"][0]], "page": 2}
    assert second["items"][0]["name"] == "Bob"
    assert client.get("/api/teachers?page=0", headers=ONE).status_code == 400
    assert client.get("/api/teachers?offset=1", headers=ONE).status_code == 400


if __name__ == "__main__":
    tour()
