"""Recipe: the caller from Flask-Login (here its request loader reads an API key)."""

from flask import Flask
from flask_login import LoginManager, current_user
from permissions_roles import GuardedTeachers, User, seed_users
from school import db

from resources_kit import Router

login_manager = LoginManager()


@login_manager.request_loader
def user_from_api_key(request):
    key = request.headers.get("X-Api-Key", "")
    return db.session.get(User, int(key)) if key.isdigit() else None  # demo keys: user ids


class LoginUser:
    """Flask-Login's UserMixin parts the extension needs, on the recipe's model."""

    is_authenticated = is_active = True
    is_anonymous = False

    def get_id(self):
        return str(self.id)


for name in ("is_authenticated", "is_active", "is_anonymous", "get_id"):
    setattr(User, name, getattr(LoginUser, name))


class Teachers(GuardedTeachers):
    www_authenticate = 'ApiKey realm="school"'

    def get_current_user(self):
        return current_user if current_user.is_authenticated else None


def tour() -> None:
    app = Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = "sqlite://"
    db.init_app(app)
    login_manager.init_app(app)
    Router(app, url_prefix="/api").register(Teachers)
    with app.app_context():  # each request then gets its own context, as in production
        db.create_all()
        seed_users()
    client = app.test_client()

    anonymous = client.get("/api/teachers")
    assert anonymous.status_code == 401
    assert anonymous.headers["WWW-Authenticate"] == 'ApiKey realm="school"'
    reader, admin, other = {"X-Api-Key": "2"}, {"X-Api-Key": "1"}, {"X-Api-Key": "3"}
    assert [t["name"] for t in client.get("/api/teachers", headers=reader).json["items"]] == ["Ada"]
    body = {"name": "Eve", "email": "eve@school1.org"}
    assert client.post("/api/teachers", json=body, headers=reader).status_code == 403
    assert client.post("/api/teachers", json=body, headers=admin).json["school_id"] == 1
    assert client.get("/api/teachers/1", headers=other).status_code == 404  # another school


if __name__ == "__main__":
    tour()
