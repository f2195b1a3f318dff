"""Recipe: change a write step: normalise the body, and build the row yourself."""

from school import ONE, Teacher, Teachers, client_for, db


class NormalisingTeachers(Teachers):
    def get_request_data(self, operation, server_values):
        data = super().get_request_data(operation, server_values)  # validated, scope applied
        if "email" in data:
            data["email"] = data["email"].lower()
        return data

    def perform_create(self, data):
        # No return needed: the one Teacher added is the one created.
        self.get_session().add(Teacher(**data))


def tour() -> None:
    client = client_for(NormalisingTeachers)
    created = client.post(
        "/api/teachers", json={"name": "Di", "email": "DI@School1.org"}, headers=ONE
    )
    assert created.status_code == 201
    assert created.json["email"] == "di@school1.org"
    assert created.headers["Location"].endswith(f"/api/teachers/{created.json['id']}")
    assert db.session.get(Teacher, created.json["id"]).school_id == 1  # stamped by the server


if __name__ == "__main__":
    tour()
