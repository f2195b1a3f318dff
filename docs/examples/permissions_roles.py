"""The roles both permission recipes use: an admin changes anything in their school, a
reader only reads. The caller comes from ``get_current_user()``, which each recipe fills
in from its login library."""

from school import Teacher, Teachers, TeacherSchema, db
from sqlalchemy.orm import Mapped, mapped_column

from resources_kit import IsAuthenticated, Permission, ReadOnly


class User(db.Model):
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]
    school_id: Mapped[int]
    role: Mapped[str]  # "admin" or "reader"


class IsAdmin(Permission):
    requires_authentication = True
    message = "Only a school admin may change teachers."

    def has_permission(self, view):
        user = view.current_user()
        return user is not None and user.role == "admin"


class GuardedTeachers(Teachers):
    """Teachers of the caller's own school; readers read, admins change."""

    permissions = [IsAuthenticated, IsAdmin | ReadOnly]

    def get_base_query_kwargs(self):
        return {"school_id": self.current_user().school_id}


def seed_users() -> None:
    db.session.add_all(
        [
            User(id=1, name="Ann", school_id=1, role="admin"),
            User(id=2, name="Rex", school_id=1, role="reader"),
            User(id=3, name="Zoe", school_id=2, role="admin"),
            Teacher(school_id=1, name="Ada", email="ada@school1.org"),
            Teacher(school_id=2, name="Cy", email="cy@school2.org"),
        ]
    )
    db.session.commit()


__all__ = ["GuardedTeachers", "TeacherSchema", "User", "seed_users"]
