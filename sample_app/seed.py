"""Demo data: two schools, each with an admin, two teachers (with students) and an
auditor who may sign in; teachers, students, and two clubs (the first two students of
each school in the chess club)."""

from __future__ import annotations

from flask_jwt_extended import create_access_token

from .models import Club, School, Student, Teacher, User, db

SCHOOLS = {"Northside Primary": "north", "Southside Primary": "south"}


def seed() -> dict[str, str]:
    """Fill an empty database; return an access token per demo login (``north-admin``,
    ``north-ada``, ``north-grace``, ``north-auditor``, the same for ``south``)."""
    if db.session.query(School).first() is None:
        for school_name, town in SCHOOLS.items():
            _seed_school(school_name, town)
        db.session.commit()
    return {user.login: token_for(user) for user in db.session.query(User).order_by(User.id)}


def _seed_school(school_name: str, town: str) -> None:
    school = School(name=school_name)
    db.session.add(school)
    db.session.flush()
    db.session.add(User(login=f"{town}-admin", school_id=school.id, role="admin"))
    db.session.add(User(login=f"{town}-auditor", school_id=school.id, role="auditor"))
    for number, (teacher, students) in enumerate(
        [("Ada Byron", ["Cy", "Di", "Eli"]), ("Grace Hopper", ["Fay", "Gus"])], start=1
    ):
        first = teacher.split()[0].lower()
        row = Teacher(
            school_id=school.id,
            name=teacher,
            email=f"{first}@{school_name.split()[0].lower()}.example.org",
            credential=f"LIC-{school.id}00{number}",
            years_teaching=3 * number,
        )
        db.session.add(row)
        db.session.flush()
        login = f"{town}-{first}"
        db.session.add(User(login=login, school_id=school.id, role="teacher", teacher_id=row.id))
        for level, student in enumerate(students, start=1):
            db.session.add(Student(teacher_id=row.id, name=student, grade_level=level))
    chess, choir = Club(school_id=school.id, name="Chess"), Club(school_id=school.id, name="Choir")
    db.session.add_all([chess, choir])
    db.session.flush()
    first = db.session.query(Student).join(Teacher).filter(Teacher.school_id == school.id)
    for student in first.order_by(Student.id).limit(2):
        student.clubs.append(chess)


def token_for(user: User) -> str:
    """A Flask-JWT-Extended access token for ``user`` (no expiry: demo only)."""
    return str(create_access_token(identity=str(user.id), expires_delta=False))
