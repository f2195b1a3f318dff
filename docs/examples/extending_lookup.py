"""Recipe: look an item up by another column (the id or the e-mail in the same URL)."""

from school import ONE, TWO, Teacher, Teachers, client_for

from resources_kit import HTTPError


class TeachersByIdOrEmail(Teachers):
    lookup_field = "email"  # a string URL converter; Location uses the e-mail

    def get_object(self):
        key = self.url_kwargs[self.options.url_variable]
        column, value = (Teacher.id, int(key)) if key.isdigit() else (Teacher.email, key)
        # Build on get_scoped_query(): it already holds the tenant scope and the parent chain.
        query = self.get_scoped_query().where(column == value)
        obj = self.get_session().execute(query).scalar_one_or_none()
        if obj is None:
            raise HTTPError(404, "No such teacher.")
        return obj


def tour() -> None:
    client = client_for(TeachersByIdOrEmail)
    assert client.get("/api/teachers/1", headers=ONE).json["name"] == "Ada"
    assert client.get("/api/teachers/ada@school1.org", headers=ONE).json["name"] == "Ada"
    assert client.get("/api/teachers/3", headers=ONE).status_code == 404  # Cy: school 2
    assert client.get("/api/teachers/cy@school2.org", headers=ONE).status_code == 404
    assert client.delete("/api/teachers/cy@school2.org", headers=ONE).status_code == 404
    assert client.get("/api/teachers/cy@school2.org", headers=TWO).status_code == 200


if __name__ == "__main__":
    tour()
