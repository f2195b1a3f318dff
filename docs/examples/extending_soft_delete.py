"""Recipe: soft delete. Narrow get_query() so archived rows vanish from every action,
and make DELETE archive instead of removing."""

from school import ONE, Teacher, Teachers, client_for, db


class SoftDeletedTeachers(Teachers):
    def get_query(self):
        return super().get_query().where(Teacher.archived.is_(False))

    def perform_delete(self, obj):
        obj.archived = True  # still one transaction, callbacks and signal included


def tour() -> None:
    client = client_for(SoftDeletedTeachers)
    assert client.delete("/api/teachers/1", headers=ONE).status_code == 204
    assert client.get("/api/teachers/1", headers=ONE).status_code == 404
    assert [t["name"] for t in client.get("/api/teachers", headers=ONE).json["items"]] == ["Bob"]
    assert db.session.get(Teacher, 1).archived  # the row is kept


if __name__ == "__main__":
    tour()
