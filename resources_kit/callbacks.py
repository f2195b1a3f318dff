"""Callbacks around writes: ``pre_``, ``post_`` and ``after_commit_<op>_callbacks``.

The order of a write (see the lifecycle table in the docs):

1. validate the body; 2. apply the scope and the parent key; 3. ``perform_*``;
4. pre callbacks (nothing flushed yet); 5. flush, then post callbacks (same transaction);
6. commit, then the blinker signals; 7. after-commit callbacks (a failure is logged only).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from flask import current_app

from .actions import extra_actions
from .errors import ImproperlyConfigured
from .links import LINK_OPERATIONS
from .outbox import check_declared

if TYPE_CHECKING:
    from .resource import Resource

    _Base = Resource
else:
    _Base = object

OPERATIONS = ("create", "update", "patch", "delete")
PHASES = ("pre", "post", "after_commit")
#: Callback list attributes: the four operations' and those of writing ``@action`` methods.
CALLBACK_ATTRIBUTE = re.compile(r"(pre|post|after_commit)_(\w+)_callbacks")


class Callback:
    """One step run around a write. Override :meth:`execute`::

        class AuditLog(Callback):
            def execute(self) -> None:
                db.session.add(Audit(op=self.operation, row=self.resource.id))

    and list it in a resource's ``pre_/post_/after_commit_<operation>_callbacks``.
    """

    def __init__(
        self, resource: Any, kwargs: dict[str, Any], operation: str, view: Resource
    ) -> None:
        #: The model instance being written.
        self.resource = resource
        #: Validated body + base query kwargs + parent key.
        self.kwargs = kwargs
        #: ``"create"``, ``"update"``, ``"patch"`` or ``"delete"``.
        self.operation = operation
        #: The resource instance serving the request.
        self.view = view

    def execute(self) -> None:
        """Do the callback's work; ``self.resource``, ``self.kwargs``, ``self.operation`` and
        ``self.view`` say what for. Raise ``HTTPException`` to answer with it."""
        raise NotImplementedError(f"{type(self).__name__} must override execute().")


class CallbackMixin(_Base):
    """Runs callback classes around every write, in list order.

    An ``HTTPException`` raised by a pre or post callback becomes the response, a
    ``marshmallow.ValidationError`` a 422, anything else a 500; in each case the whole
    transaction is rolled back. After-commit callbacks cannot undo the commit: a failure
    there is logged and the success response stands.
    """

    pre_create_callbacks: ClassVar[Sequence[type[Callback]]] = ()
    post_create_callbacks: ClassVar[Sequence[type[Callback]]] = ()
    after_commit_create_callbacks: ClassVar[Sequence[type[Callback]]] = ()
    pre_update_callbacks: ClassVar[Sequence[type[Callback]]] = ()
    post_update_callbacks: ClassVar[Sequence[type[Callback]]] = ()
    after_commit_update_callbacks: ClassVar[Sequence[type[Callback]]] = ()
    pre_patch_callbacks: ClassVar[Sequence[type[Callback]]] = ()
    post_patch_callbacks: ClassVar[Sequence[type[Callback]]] = ()
    after_commit_patch_callbacks: ClassVar[Sequence[type[Callback]]] = ()
    pre_delete_callbacks: ClassVar[Sequence[type[Callback]]] = ()
    post_delete_callbacks: ClassVar[Sequence[type[Callback]]] = ()
    after_commit_delete_callbacks: ClassVar[Sequence[type[Callback]]] = ()
    #: Around ``PUT`` / ``DELETE`` on a many-to-many's link route (``register_links``):
    #: ``resource`` is the parent, ``kwargs`` ``{"relationship": ..., "target": <key>}``.
    pre_link_callbacks: ClassVar[Sequence[type[Callback]]] = ()
    post_link_callbacks: ClassVar[Sequence[type[Callback]]] = ()
    after_commit_link_callbacks: ClassVar[Sequence[type[Callback]]] = ()
    pre_unlink_callbacks: ClassVar[Sequence[type[Callback]]] = ()
    post_unlink_callbacks: ClassVar[Sequence[type[Callback]]] = ()
    after_commit_unlink_callbacks: ClassVar[Sequence[type[Callback]]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for attribute in dir(cls):
            if CALLBACK_ATTRIBUTE.fullmatch(attribute):
                value = getattr(cls, attribute)
                if isinstance(value, str | type) or not all(
                    isinstance(item, type) and issubclass(item, Callback) for item in value
                ):
                    raise ImproperlyConfigured(
                        f"{cls.__name__}.{attribute} must be a list of Callback subclasses, "
                        f"not {value!r}."
                    )

    @classmethod
    def check_configuration(cls) -> None:
        """Refuse, at registration, a callback list that names no operation or action of
        the class (``after_commit_return__callbacks`` for ``return_``, say): it would
        silently never run."""
        next_check = getattr(super(), "check_configuration", None)
        if next_check is not None:
            next_check()
        known = set(OPERATIONS) | set(LINK_OPERATIONS)
        known |= {extra.operation for extra in extra_actions(cls)}
        check_declared(cls, sorted(known))
        for attribute in dir(cls):
            found = CALLBACK_ATTRIBUTE.fullmatch(attribute)
            if found and found.group(2) not in known:
                raise ImproperlyConfigured(
                    f"{cls.__name__}.{attribute} names no operation or @action of "
                    f"{cls.__name__} (known: {', '.join(sorted(known))}); it would never run."
                )

    def run_callbacks(self, phase: str, operation: str, obj: Any, kwargs: dict[str, Any]) -> None:
        """Run the ``<phase>_<operation>_callbacks`` in list order."""
        for callback in getattr(self, f"{phase}_{operation}_callbacks", ()):
            instance = callback(resource=obj, kwargs=kwargs, operation=operation, view=self)
            if phase != "after_commit":
                instance.execute()
                continue
            try:
                instance.execute()
            except Exception:
                # The commit stands; leave the session clean for whatever runs next.
                self.get_session().rollback()
                current_app.logger.exception(
                    "After-commit callback %s failed for %s (%s)",
                    callback.__name__,
                    type(self).__name__,
                    operation,
                )
