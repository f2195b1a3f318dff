"""Actions: the verb table of the six CRUD actions, and ``@action`` for extra ones.

Mixins define actions, never HTTP verbs; ``Resource.dispatch_request`` binds a verb to an
action through ``ACTIONS``. ``@action`` adds a route of its own on the item or on the
collection (``POST /teachers/<id>/archive``, ``GET /teachers/stats``), served with the
same guards as the CRUD actions.
"""

from __future__ import annotations

import keyword
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import marshmallow as ma
from flask import Response, current_app

from .errors import ImproperlyConfigured

#: (kind of URL, HTTP method) -> the action method a mixin provides.
ACTIONS: Mapping[tuple[str, str], str] = {
    ("collection", "GET"): "list",
    ("collection", "POST"): "create",
    ("item", "GET"): "retrieve",
    ("item", "PUT"): "update",
    ("item", "PATCH"): "partial_update",
    ("item", "DELETE"): "destroy",
    # Registered only for a resource with bulk = ("patch",); see resources_kit.bulk.
    ("collection", "PATCH"): "bulk_partial_update",
}

#: The action of a bulk PATCH: no method of its own, served by ``resources_kit.bulk``.
BULK_PATCH = "bulk_partial_update"

#: Operation of each CRUD action, as callbacks and signals name it.
OPERATIONS: Mapping[str, str] = {
    "create": "create",
    "update": "update",
    "partial_update": "patch",
    "destroy": "delete",
}

#: HTTP verb methods a ``Resource`` subclass may not define, and the action to override.
VERB_METHODS: Mapping[str, str] = {
    "get": "list() or retrieve()",
    "head": "list() or retrieve()",
    "post": "create()",
    "put": "update()",
    "patch": "partial_update()",
    "delete": "destroy()",
}

F = TypeVar("F", bound=Callable[..., Any])

#: The success statuses ``@action(status=...)`` may declare.
SUCCESS_STATUSES = (200, 201, 202, 204)


@dataclass(frozen=True)
class ExtraAction:
    """What ``@action`` recorded about one method."""

    #: The method's name.
    name: str
    #: On the item URL (``True``) or the collection URL (``False``).
    detail: bool
    methods: tuple[str, ...]
    #: The URL segment after the item or collection URL.
    url_path: str
    #: Runs in a write transaction (callbacks, commit, signal); default: any method but GET.
    writes: bool
    #: Schema the JSON body is loaded with; ``None``: the action takes no body.
    schema: type[ma.Schema] | None
    summary: str | None
    #: Schema instance the result is dumped with (and documented by); ``None``: any JSON.
    response: ma.Schema | None = None
    #: The success status; ``None``: 200 with a body, or 204 when the action returns ``None``.
    status: int | None = None
    #: What callbacks and signals call the action, and its default URL segment: the name,
    #: without the ``_`` that a Python keyword needs (``return_`` is ``return``).
    operation: str = ""

    def __post_init__(self) -> None:
        if not self.operation:
            object.__setattr__(self, "operation", operation_name(self.name))

    def statuses(self) -> tuple[int, ...]:
        """Every success status the action can answer (what the document lists)."""
        if self.status is not None:
            return (self.status,)
        return (200,) if self.response is not None else (200, 204)

    def respond(self, result: Any) -> Response:
        """The action's return value as a response: a ``Response`` as it is; otherwise
        dumped with ``response`` (if set) and sent with ``status``, or 204 for ``None``
        when no status is declared."""
        if isinstance(result, Response):
            return result
        if isinstance(result, tuple):  # (body, status), (body, headers), (body, status, headers)
            body, *rest = result
            if not isinstance(body, Response) and self.response is not None:
                body = self.response.dump(body)
            return current_app.make_response((body, *rest))
        if self.status == 204 or (result is None and self.statuses() == (200, 204)):
            if result is not None:
                raise TypeError(f"@action {self.name} declares status 204 but returned a body.")
            return Response(status=204)
        if result is None:
            raise TypeError(
                f"@action {self.name} declares a {self.status or 200} response but returned None."
            )
        body = self.response.dump(result) if self.response is not None else result
        response = cast(Response, current_app.json.response(body))
        response.status_code = self.status or 200
        return response


def action(
    *,
    detail: bool,
    methods: Sequence[str] = ("POST",),
    url_path: str | None = None,
    writes: bool | None = None,
    schema: type[ma.Schema] | None = None,
    summary: str | None = None,
    response: type[ma.Schema] | ma.Schema | None = None,
    status: int | None = None,
) -> Callable[[F], F]:
    """Add a route to a resource, on the item or on the collection::

        class TeacherResource(ModelResource):
            @action(detail=True)                    # POST /teachers/<id>/archive
            def archive(self, obj):
                obj.archived = True
                return self.serialize(obj)

            @action(detail=False, methods=["GET"])  # GET /teachers/stats
            def stats(self):
                return {"count": self.get_session().scalar(...)}

    An item action receives the object, found under the tenant scope and the whole parent
    chain (another tenant's item is a 404); with ``schema=``, also the loaded body. It
    returns a JSON-able body (200), a ``Response``, or ``None`` (204).

    ``response=`` (a schema class or instance, ``many=True`` for a list) dumps what the
    action returns and is its documented response, so generated clients get a typed
    result; ``status=`` sets the success status (``201``, ``202``; ``204`` for an action
    that returns nothing). With either, the document lists exactly that status. A writing action
    runs in one transaction with ``pre_/post_/after_commit_<name>_callbacks`` and sends
    ``signals.action_performed`` after the commit; any error rolls everything back.
    """
    verbs = tuple(method.upper() for method in methods)

    def decorate(func: F) -> F:
        name = func.__name__
        path = url_path if url_path is not None else operation_name(name).replace("_", "-")
        if not re.fullmatch(r"[A-Za-z0-9_\-]+", path):
            raise ImproperlyConfigured(
                f"@action {name}: url_path must be one URL segment, not {path!r}."
            )
        check_signature(name, verbs, status, response)
        func.extra_action = ExtraAction(  # type: ignore[attr-defined]
            name=name,
            detail=detail,
            methods=verbs,
            url_path=path,
            writes=writes if writes is not None else verbs != ("GET",),
            schema=schema,
            summary=summary,
            response=response() if isinstance(response, type) else response,
            status=status,
        )
        return func

    return decorate


def check_signature(name: str, verbs: tuple[str, ...], status: int | None, response: Any) -> None:
    """``ImproperlyConfigured`` for methods, a status or a response ``@action`` refuses."""
    unknown = [verb for verb in verbs if verb not in ("GET", "POST", "PUT", "PATCH", "DELETE")]
    if not verbs or unknown:
        raise ImproperlyConfigured(
            f"@action {name}: methods must be GET, POST, PUT, PATCH or DELETE; got {verbs}."
        )
    if status is not None and status not in SUCCESS_STATUSES:
        raise ImproperlyConfigured(
            f"@action {name}: status must be one of {', '.join(map(str, SUCCESS_STATUSES))}."
        )
    if status == 204 and response is not None:
        raise ImproperlyConfigured(f"@action {name}: a 204 has no body; drop response=.")
    if response is not None and not (
        isinstance(response, ma.Schema)
        or (isinstance(response, type) and issubclass(response, ma.Schema))
    ):
        raise ImproperlyConfigured(
            f"@action {name}: response= must be a marshmallow Schema class or instance."
        )


def operation_name(name: str) -> str:
    """``return_`` -> ``return``: a keyword's trailing ``_`` is not part of its name."""
    bare = name.rstrip("_")
    return bare if bare != name and keyword.iskeyword(bare) else name


def library_names(cls: type[Any]) -> set[str]:
    """The attributes the library's own classes give ``cls`` (hooks, guards, helpers)."""
    return {
        name
        for klass in cls.__mro__
        if klass.__module__.split(".")[0] == "resources_kit"
        for name in vars(klass)
    }


def extra_actions(cls: type[Any]) -> list[ExtraAction]:
    """The ``@action`` methods of a resource class, in definition order; a name the library
    uses itself is refused, since the action would replace that method."""
    found: dict[str, ExtraAction] = {}
    for klass in reversed(cls.__mro__):
        for name, value in vars(klass).items():
            extra = getattr(value, "extra_action", None)
            if isinstance(extra, ExtraAction):
                found[name] = extra
            elif name in found:
                del found[name]  # overridden by a plain method
    taken = library_names(cls)
    for name in found:
        if name in ACTIONS.values():
            raise ImproperlyConfigured(
                f"{cls.__name__}.{name}: @action cannot use the name of a CRUD action."
            )
        if name in taken:
            raise ImproperlyConfigured(
                f"{cls.__name__}.{name}: @action cannot use the name of a method the library "
                f"calls ({name}()); rename the method and keep the URL with url_path=."
            )
    return list(found.values())
