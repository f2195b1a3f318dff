"""Recipe: a paginator of your own: numbered pages (``?page=2``)."""

import marshmallow as ma
from school import ONE, Teachers, client_for

from resources_kit import Page, Pagination


class NumberedPages(Pagination):
    envelope = {"page": {"type": "integer"}, "pages": {"type": "integer"}}  # beside "items"

    def get_args(self):
        return {"page": ma.fields.Integer(load_default=1, validate=ma.validate.Range(min=1))}

    def paginate(self, view, query, args):
        # ``query`` is already under the row policy, filtered and sorted.
        size = view.page_size
        rows = view.execute_read(query.limit(size).offset((args["page"] - 1) * size))
        # A total counted with ``self.count`` stays under the row policy too.
        return Page(
            list(rows.scalars()),
            {"page": args["page"], "pages": -(-self.count(view, query) // size)},
        )


class PagedTeachers(Teachers):
    pagination = NumberedPages
    page_size = 1


def tour() -> None:
    client = client_for(PagedTeachers)
    second = client.get("/api/teachers?page=2&sort=name", headers=ONE).json
    assert second == {"items": [second["items"][0]], "page": 2, "pages": 2}  # school one's
    assert second["items"][0]["name"] == "Bob"
    assert client.get("/api/teachers?page=0", headers=ONE).status_code == 400
    assert client.get("/api/teachers?offset=1", headers=ONE).status_code == 400


if __name__ == "__main__":
    tour()
