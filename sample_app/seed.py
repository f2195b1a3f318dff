"""Demo data: two schools, an API token each, teachers and students."""

from __future__ import annotations

from .models import ApiToken, School, Student, Teacher, db

TOKENS = {"Northside Primary": "north-token", "Southside Primary": "south-token"}


def seed() -> dict[str, str]:
    """Fill an empty database; return the API token of each school."""
    if db.session.query(School).first() is not None:
        return TOKENS
    for school_name, token in TOKENS.items():
        school = School(name=school_name)
        db.session.add(school)
        db.session.flush()
        db.session.add(ApiToken(token=token, school_id=school.id))
        town = school_name.split()[0].lower()
        for number, (teacher, students) in enumerate(
            [("Ada Byron", ["Cy", "Di", "Eli"]), ("Grace Hopper", ["Fay", "Gus"])], start=1
        ):
            row = Teacher(
                school_id=school.id,
                name=teacher,
                email=f"{teacher.split()[0].lower()}@{town}.example.org",
                credential=f"LIC-{school.id}00{number}",
                years_teaching=3 * number,
            )
            db.session.add(row)
            db.session.flush()
            for level, student in enumerate(students, start=1):
                db.session.add(Student(teacher_id=row.id, name=student, grade_level=level))
    db.session.commit()
    return TOKENS
