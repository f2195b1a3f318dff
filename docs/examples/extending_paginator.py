"""Recipe: a paginator of your own: numbered pages (``?page=2``)."""

import marshmallow as ma
from school import ONE, Teacher, Teachers, client_for, db
from sqlalchemy.orm import joinedload

from resources_kit import Page, Pagination


class NumberedPages(Pagination):
    envelope = {"page": {"type": "integer"}, "pages": {"type": "integer"}}  # beside "items"

    def get_args(self):
        return {"page": ma.fields.Integer(load_default=1, validate=ma.validate.Range(min=1))}

    def paginate(self, view, query, args):
        # ``query`` is already under the row policy, filtered and sorted.
        size = view.page_size
        page = query.limit(size).offset((args["page"] - 1) * size)
        # view.execute_read: on the engine the request reads from (a read replica when one
        # is configured). unique(): rows of a collection the resource loads eagerly
        # (query_options = [joinedload(...)]) arrive once per related row.
        rows = view.execute_read(page).unique().scalars().all()
        # A total counted with ``self.count`` stays under the row policy too.
        pages = -(-self.count(view, query) // size)
        return Page(list(rows), {"page": args["page"], "pages": pages})


class PagedTeachers(Teachers):
    pagination = NumberedPages
    page_size = 1
    query_options = [joinedload(Teacher.notes)]


def tour() -> None:
    client = client_for(PagedTeachers)
    ada = client.get("/api/teachers?sort=name", headers=ONE).json["items"][0]
    from school import Note

    db.session.add_all([Note(teacher_id=ada["id"], text=text) for text in ("a", "b", "c")])
    db.session.commit()
    first = client.get("/api/teachers?page=1&sort=name", headers=ONE)
    assert first.status_code == 200  # joined rows, made unique
    assert first.json == {"items": [ada], "page": 1, "pages": 2}
    second = client.get("/api/teachers?page=2&sort=name", headers=ONE).json
    assert second == {"items": [second["items"][0]], "page": 2, "pages": 2}  # school one's
    assert second["items"][0]["name"] == "Bob"
    assert client.get("/api/teachers?page=0", headers=ONE).status_code == 400
    assert client.get("/api/teachers?offset=1", headers=ONE).status_code == 400
    db.session.remove()


def tour_with_a_replica() -> None:
    """Pages are read where the request reads: here a replica that lags behind."""
    client = client_for(
        PagedTeachers,
        SQLALCHEMY_BINDS={"replica": "sqlite://"},
        RESOURCES_KIT_READ_REPLICA="replica",
    )
    replica = db.engines["replica"]
    db.metadata.create_all(replica)
    with replica.begin() as connection:  # the replica has seen one teacher so far
        connection.execute(
            Teacher.__table__.insert(), {"school_id": 1, "name": "Ada", "email": "a@x", "years": 2}
        )
    assert client.get("/api/teachers?page=2", headers=ONE).json["items"] == []
    fresh = {**ONE, "Prefer": "read-your-writes"}  # the primary has Ada and Bob
    assert client.get("/api/teachers?page=2", headers=fresh).json["items"][0]["name"] == "Bob"
    db.session.remove()


if __name__ == "__main__":
    tour()
    tour_with_a_replica()
