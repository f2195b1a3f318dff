"""Permissions: who may do what, per action and per row, composable, failing closed.

A resource lists its permissions (``permissions = [IsAuthenticated, IsAdmin | IsOwner]``);
all must allow. Each may decide three things:

- ``has_permission(view)``: the action (``view.action``) for this caller, before any query;
- ``visible(view)``: a SQL condition on the resource's model limiting the rows the caller
  may see at all, in lists, item routes and as a parent in nested URLs (``None``: every
  row). A row outside it is a 404, like another tenant's;
- ``has_object_permission(view, obj)``: a row the caller can see, before it is changed
  (update, patch, delete, a writing ``@action``, and the new row of a create).

A refusal is a 401 with ``WWW-Authenticate`` when there is no caller
(``get_current_user()`` returned ``None``), else a 403. ``A & B``, ``A | B`` and ``~A``
compose them; classes and instances both work.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from sqlalchemy import and_, or_

from .errors import HTTPError

#: Actions that only read: what ``ReadOnly`` allows.
READ_ACTIONS = frozenset({"list", "retrieve"})


class PermissionMeta(type):
    """Lets permission *classes* compose: ``IsAdmin | IsOwner``."""

    def __and__(cls, other: Any) -> Permission:
        return AllOf(as_permission(cls), as_permission(other))

    def __or__(cls, other: Any) -> Permission:  # type: ignore[override]
        return AnyOf(as_permission(cls), as_permission(other))

    def __invert__(cls) -> Permission:
        return Not(as_permission(cls))


class Permission(metaclass=PermissionMeta):
    """One rule; allows everything until a method says otherwise::

        class IsOwnStudent(Permission):
            def visible(self, view):
                return Student.teacher_id == view.current_user().teacher_id

    and list it (or a composition: ``A | B``, ``A & B``, ``~A``) in ``permissions``.
    """

    #: Allowing needs a caller: the OpenAPI operation gets a security requirement and 401.
    requires_authentication: ClassVar[bool] = False
    #: The ``detail`` of the 403.
    message: ClassVar[str] = "You may not do this."

    def has_permission(self, view: Any) -> bool:
        """Whether the caller may do ``view.action`` here at all (for every level of a
        nested URL). Default: yes."""
        return True

    def visible(self, view: Any) -> Any | None:
        """A SQL condition on the rows the caller may see, or ``None`` for all of them."""
        return None

    def has_object_permission(self, view: Any, obj: Any) -> bool:
        """Whether the caller may change ``obj`` (asked for writes, not reads). Default: yes."""
        return True

    def restricts_rows(self) -> bool:
        """Whether ``visible`` may narrow the rows (then statements are built per request)."""
        return type(self).visible is not Permission.visible

    def refusal(self, view: Any, obj: Any = None) -> str:
        """The message of the rule that refuses the action (or, given ``obj``, the change)."""
        return self.message

    def needs_authentication(self) -> bool:
        """Whether the rule admits no anonymous caller (``requires_authentication``): the
        OpenAPI document then lists the 401 of its operations."""
        return self.requires_authentication

    def __and__(self, other: Any) -> Permission:
        return AllOf(self, as_permission(other))

    def __or__(self, other: Any) -> Permission:
        return AnyOf(self, as_permission(other))

    def __invert__(self) -> Permission:
        return Not(self)


def as_permission(value: Any) -> Permission:
    if isinstance(value, Permission):
        return value
    if isinstance(value, type) and issubclass(value, Permission):
        return value()
    raise TypeError(f"Not a Permission: {value!r}.")


class AllOf(Permission):
    """Every part must allow; the visible rows are those every part shows."""

    def __init__(self, *parts: Permission) -> None:
        self.parts = parts

    def has_permission(self, view: Any) -> bool:
        return all(part.has_permission(view) for part in self.parts)

    def visible(self, view: Any) -> Any | None:
        clauses = [c for c in (part.visible(view) for part in self.parts) if c is not None]
        return and_(*clauses) if clauses else None

    def has_object_permission(self, view: Any, obj: Any) -> bool:
        return all(part.has_object_permission(view, obj) for part in self.parts)

    def restricts_rows(self) -> bool:
        return any(part.restricts_rows() for part in self.parts)

    def needs_authentication(self) -> bool:
        return any(part.needs_authentication() for part in self.parts)

    def refusal(self, view: Any, obj: Any = None) -> str:
        for part in self.parts:
            allowed = (
                part.has_permission(view) if obj is None else part.has_object_permission(view, obj)
            )
            if not allowed:
                return part.refusal(view, obj)
        return self.message


class AnyOf(Permission):
    """At least one part must allow; a caller sees the rows of every part that allows the
    action, and may change a row any of them allows."""

    def __init__(self, *parts: Permission) -> None:
        self.parts = parts

    def _allowing(self, view: Any) -> list[Permission]:
        return [part for part in self.parts if part.has_permission(view)]

    def has_permission(self, view: Any) -> bool:
        return bool(self._allowing(view))

    def visible(self, view: Any) -> Any | None:
        clauses: list[Any] = [part.visible(view) for part in self._allowing(view)]
        if not clauses or any(clause is None for clause in clauses):
            return None
        return or_(*clauses)

    def has_object_permission(self, view: Any, obj: Any) -> bool:
        return any(part.has_object_permission(view, obj) for part in self._allowing(view))

    def restricts_rows(self) -> bool:
        return any(part.restricts_rows() for part in self.parts)

    def needs_authentication(self) -> bool:
        return all(part.needs_authentication() for part in self.parts)

    def refusal(self, view: Any, obj: Any = None) -> str:
        allowing = self._allowing(view) if obj is not None else []
        return allowing[0].refusal(view, obj) if allowing else self.parts[0].refusal(view)


class Not(Permission):
    """Allows what the part refuses (actions and objects; it does not invert ``visible``)."""

    def __init__(self, part: Permission) -> None:
        self.part = part

    def has_permission(self, view: Any) -> bool:
        return not self.part.has_permission(view)

    def has_object_permission(self, view: Any, obj: Any) -> bool:
        return not self.part.has_object_permission(view, obj)


class IsAuthenticated(Permission):
    """Any caller ``get_current_user()`` knows (asked through ``view.current_user()``, so
    once per request however many levels list it)."""

    requires_authentication = True
    message = "Sign in to do this."

    def has_permission(self, view: Any) -> bool:
        """Any caller: ``view.current_user()`` is not ``None``."""
        return view.current_user() is not None  # cached: one get_current_user() a request


class ReadOnly(Permission):
    """Lists and item reads only (and ``GET`` extra actions)."""

    message = "Read only."

    def has_permission(self, view: Any) -> bool:
        """Reads only: a list, an item read, a ``GET`` extra action."""
        return view.action in READ_ACTIONS or not getattr(view.extra, "writes", True)


def combine(permissions: Sequence[Any]) -> Permission | None:
    """A resource's ``permissions`` list as one rule (``None`` when empty)."""
    parts = [as_permission(permission) for permission in permissions]
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else AllOf(*parts)


def refusal(view: Any, rule: Permission, obj: Any = None) -> HTTPError:
    """The refusal of ``rule``: 401 with ``WWW-Authenticate`` without a caller, else 403."""
    if view.current_user() is None:
        return HTTPError(
            401, "This needs credentials.", headers={"WWW-Authenticate": view.www_authenticate}
        )
    return HTTPError(403, rule.refusal(view, obj))
