"""Recipe: the caller from a Flask-JWT-Extended access token."""

from flask import Flask
from flask_jwt_extended import (
    JWTManager,
    create_access_token,
    get_jwt_identity,
    verify_jwt_in_request,
)
from flask_jwt_extended.exceptions import JWTExtendedException
from jwt.exceptions import PyJWTError
from permissions_roles import GuardedTeachers, User, seed_users
from school import db

from resources_kit import Router


class Teachers(GuardedTeachers):
    def get_current_user(self):
        try:
            verify_jwt_in_request(optional=True)  # no token: no caller (then a 401)
        except (JWTExtendedException, PyJWTError):
            return None  # a bad or expired token is no caller either
        identity = get_jwt_identity()
        return db.session.get(User, int(identity)) if identity is not None else None


def tour() -> None:
    app = Flask(__name__)
    app.config.update(SQLALCHEMY_DATABASE_URI="sqlite://", JWT_SECRET_KEY="x" * 32)
    db.init_app(app)
    JWTManager(app)
    Router(app, url_prefix="/api").register(Teachers)
    with app.app_context():  # each request then gets its own context, as in production
        db.create_all()
        seed_users()
    client = app.test_client()

    def bearer(user_id: int) -> dict[str, str]:
        with app.app_context():
            token = create_access_token(identity=str(user_id))
        return {"Authorization": f"Bearer {token}"}

    anonymous = client.get("/api/teachers")
    assert anonymous.status_code == 401
    assert anonymous.headers["WWW-Authenticate"] == "Bearer"
    forged = {"Authorization": "Bearer not.a.token"}
    assert client.get("/api/teachers", headers=forged).status_code == 401
    assert client.get("/api/teachers", headers=bearer(2)).json["total"] == 1
    assert client.patch("/api/teachers/1", json={"years": 3}, headers=bearer(2)).status_code == 403
    assert client.patch("/api/teachers/1", json={"years": 3}, headers=bearer(1)).status_code == 200
    assert client.patch("/api/teachers/1", json={"years": 4}, headers=bearer(3)).status_code == 404


if __name__ == "__main__":
    tour()
