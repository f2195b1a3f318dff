"""The CRUD contract run against the quickstart's resource, as a user's test would."""

from quickstart import Teacher, TeacherResource, create_app, db

from resources_kit.testing import contract_settings, crud_contract, run_contract


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
        # The documented settings (a bug is reported, shrunk, within about 30 s), with
        # fewer examples than their 50 to keep the docs' own test quick.
        run_contract(contract, contract_settings(max_examples=10))


if __name__ == "__main__":
    test_teachers_contract()
    print("contract: the resource keeps its contract")
