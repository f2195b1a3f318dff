"""Recipe: extra actions, on an item (``POST /teachers/<id>/archive``) and on the
collection (``GET /teachers/stats``)."""

import marshmallow as ma
from school import ONE, TWO, Teachers, TeacherSchema, client_for
from sqlalchemy import func

from resources_kit import action


class StatsSchema(ma.Schema):
    count = ma.fields.Integer(required=True)
    average_years = ma.fields.Float(required=True)


class TeachersWithActions(Teachers):
    # POST; writes: one transaction, callbacks, signal. The result is dumped with
    # response= and documented as its schema, so a generated client gets a Teacher.
    @action(detail=True, response=TeacherSchema)
    def archive(self, obj):
        obj.archived = True
        return obj

    @action(detail=False, methods=["GET"], response=StatsSchema)
    def stats(self):
        query = self.get_scoped_query().with_only_columns(
            func.count(), func.avg(Teachers.model.years)
        )
        count, average = self.get_session().execute(query).one()
        return {"count": count, "average_years": float(average or 0)}


def tour() -> None:
    client = client_for(TeachersWithActions)
    assert client.post("/api/teachers/1/archive", headers=ONE).json["archived"] is True
    assert client.post("/api/teachers/3/archive", headers=ONE).status_code == 404  # school 2
    assert client.get("/api/teachers/3", headers=TWO).json["archived"] is False
    assert client.get("/api/teachers/stats", headers=ONE).json == {"count": 2, "average_years": 4.5}


if __name__ == "__main__":
    tour()
