"""Blinker signals sent after a write commits.

Each is sent with the resource class as sender and ``resource=`` (the model instance),
``kwargs=`` (validated body + base query kwargs + parent key) and ``operation=``
(``"create"``, ``"update"``, ``"patch"`` or ``"delete"``). A failed write sends nothing.

>>> from resources_kit import signals
>>> @signals.resource_created.connect_via(TeacherResource)  # doctest: +SKIP
... def on_teacher(sender, resource, kwargs, operation): ...
"""

from __future__ import annotations

from blinker import Namespace

_signals = Namespace()

resource_created = _signals.signal("resource-created")
resource_updated = _signals.signal("resource-updated")
resource_deleted = _signals.signal("resource-deleted")
#: Sent after an ``@action`` that writes commits; ``operation=`` is the action's name and
#: ``resource=`` its object (``None`` for a collection action).
action_performed = _signals.signal("action-performed")

#: Sent after a link (``PUT``) or an unlink (``DELETE``) on a many-to-many's route
#: commits, with the parent's resource class as sender, ``resource=`` the parent and
#: ``kwargs={"relationship": ..., "target": <the target's key>}``.
resource_linked = _signals.signal("resource-linked")
resource_unlinked = _signals.signal("resource-unlinked")

#: Operation -> the signal sent after it commits.
BY_OPERATION = {
    "create": resource_created,
    "update": resource_updated,
    "patch": resource_updated,
    "delete": resource_deleted,
    "link": resource_linked,
    "unlink": resource_unlinked,
}
