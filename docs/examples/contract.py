"""The CRUD contract run against the quickstart's resource, as a user's test would."""

from hypothesis import HealthCheck, settings
from hypothesis.stateful import run_state_machine_as_test
from quickstart import Teacher, TeacherResource, create_app, db

from resources_kit.testing import crud_contract


def test_teachers_contract() -> None:
    app = create_app()
    with app.app_context():

        def empty_tables() -> None:  # each generated run starts from an empty table
            db.session.query(Teacher).delete()
            db.session.commit()

        contract = crud_contract(
            app.test_client(),
            "/api/teachers",
            resource=TeacherResource,  # schemas and column limits from the resource
            setup=empty_tables,
        )
        run_state_machine_as_test(
            contract,
            settings=settings(
                max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow]
            ),
        )


if __name__ == "__main__":
    test_teachers_contract()
    print("contract: the resource keeps its contract")
