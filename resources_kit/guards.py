"""Production guards: ``Idempotency-Key`` on writes, rate limits, and a tenant-safe response
cache, declared per resource and sharing their state across hosts through Redis.

A resource declares what it wants::

    class TeacherResource(ModelResource):
        idempotency = Idempotency(required=True)
        rate_limits = [RateLimit("30/minute", per="caller", actions=WRITES)]
        cache = ResponseCache(depends_on=("students",))

and the app holds the shared state: ``Guards(app)`` (``RESOURCES_KIT_REDIS_URL`` names the
Redis of every host; without it everything stays in the process). A resource with no guard
costs nothing: ``Resource.dispatch_request`` sees ``guard_plan is None`` and goes on.

Order, for a guarded request (after the permissions and the scope of every level):

1. rate limits, before any database work: 429 with ``Retry-After`` and RateLimit headers;
2. a read served from the cache (``If-None-Match`` answered 304 from it), or run and kept;
3. a write with an ``Idempotency-Key`` claimed in its own transaction, its answer stored
   by the write unit just before the commit, or the stored answer replayed.

After every committed write of any resource of the app, the write unit bumps the cache
generations of that resource and scope, so every host stops serving older answers at once.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, cast

from flask import Flask, Response, current_app, request
from sqlalchemy import make_url

from .caching import (
    CacheStore,
    Channel,
    cached_response,
    generation_keys,
    keep_response,
    key_digest,
    scope_digest,
    store_for,
)
from .errors import HTTPError, ImproperlyConfigured
from .idempotency import (
    Claim,
    claim,
    claim_in_redis,
    finish_in_redis,
    idempotency_table,
    store_answer,
)
from .including import included_resources
from .ratelimits import Limits, check_limits, counts, limits_for

#: The key of the guards' state in ``app.extensions``.
EXTENSION = "resources_kit.guards"

#: The actions that write: what ``actions=WRITES`` of a rate limit means.
WRITES = ("create", "update", "partial_update", "destroy", "@writes")

#: The actions whose answer the cache may keep.
CACHED_ACTIONS = frozenset({"list", "retrieve"})

#: The actions an ``Idempotency-Key`` applies to (and every writing ``@action``).
IDEMPOTENT_ACTIONS = frozenset({"create", "partial_update"})

logger = logging.getLogger("resources_kit.guards")


@dataclass(frozen=True)
class Idempotency:
    """``Idempotency-Key`` on POST, PATCH and writing ``@action``\\ s of a resource."""

    #: Refuse a write without the header (400).
    required: bool = False
    #: Seconds a key is remembered (default: ``RESOURCES_KIT_IDEMPOTENCY_TTL``, 24 hours).
    ttl: int | None = None


@dataclass(frozen=True)
class RateLimit:
    """A limit in Flask-Limiter's notation (``"30/minute"``, ``"5 per second"``)."""

    limit: str
    #: Whose budget: ``"caller"``, ``"tenant"``, ``"tenant+caller"``, or a function of the
    #: view returning a string (an API key, a plan...).
    per: str | Callable[[Any], str] = "caller"
    #: The actions it counts (``"create"``, ``"list"``, an ``@action``'s name; ``WRITES``
    #: for every write); ``None``: every action. Each action has a budget of its own.
    actions: Sequence[str] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.actions, str):  # one action named on its own
            object.__setattr__(self, "actions", (self.actions,))
        if not (callable(self.per) or self.per in ("caller", "tenant", "tenant+caller")):
            raise ImproperlyConfigured(
                f"RateLimit(per={self.per!r}): use 'caller', 'tenant', 'tenant+caller' or a "
                "function of the view."
            )


@dataclass(frozen=True)
class ResponseCache:
    """Keep the answers of lists and item reads until a write invalidates them."""

    #: Seconds an answer is kept at most (``None``: ``RESOURCES_KIT_CACHE_TTL``, 300).
    ttl: int | None = None
    #: The names of other resources whose rows these answers include (a nested schema):
    #: any write to one of them invalidates these answers too.
    depends_on: Sequence[str] = ()
    #: Keep answers per caller (``get_caller_key``), not only per tenant and visibility.
    per_caller: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.depends_on, str):  # one resource named on its own
            object.__setattr__(self, "depends_on", (self.depends_on,))


class GuardView:
    """What the guards need of a resource instance (``Resource`` provides it)."""

    if TYPE_CHECKING:
        name: ClassVar[str | None]
        action: str | None
        extra: Any
        place: Any
        scope: dict[str, Any]
        mount: Any

        def current_user(self) -> Any: ...
        def get_session(self) -> Any: ...
        def visibility_clauses(self) -> list[Any]: ...


class GuardsConfig(GuardView):
    """The guard attributes of a resource, compiled into :attr:`guard_plan` at class
    creation."""

    #: ``Idempotency(...)`` (or ``True``): honour ``Idempotency-Key`` on writes.
    idempotency: ClassVar[Idempotency | bool | None] = None
    #: ``RateLimit(...)`` objects; every one that counts the action must allow it.
    rate_limits: ClassVar[Sequence[RateLimit]] = ()
    #: ``ResponseCache(...)`` (or ``True``): keep list and item answers.
    cache: ClassVar[ResponseCache | bool | None] = None
    #: What the attributes above compile to; ``None`` when the resource has no guard.
    guard_plan: ClassVar[GuardPlan | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.guard_plan = GuardPlan.compile(cls)

    def get_caller_key(self) -> str | None:
        """Who the caller is, for rate limits, idempotency keys and the cache: default the
        id of :meth:`current_user` (``get_id()``, else ``id``, else ``str()``), or ``None``
        for no caller. Override to key by an API key or a session."""
        user = self.current_user()
        if user is None or user is False:
            return None
        get_id = getattr(user, "get_id", None)
        if callable(get_id):
            return str(get_id())
        return str(getattr(user, "id", user))


def scope_identity(view: GuardView) -> list[Any]:
    """The scope values of every level of the request's URL, in a stable order."""
    return [sorted(level.scope.items()) for level in view.place.levels]


@dataclass(frozen=True)
class GuardPlan:
    """A resource class's guards, made once when the class is created."""

    idempotency: Idempotency | None
    limits: Sequence[RateLimit]
    cache: ResponseCache | None

    @classmethod
    def compile(cls, resource: type[Any]) -> GuardPlan | None:
        idempotency = resource.idempotency
        cache = resource.cache
        limits = tuple(resource.rate_limits)
        if idempotency is True:
            idempotency = Idempotency()
        if cache is True:
            cache = ResponseCache()
        for value, kind in ((idempotency, Idempotency), (cache, ResponseCache)):
            if value not in (None, False) and not isinstance(value, kind):
                raise ImproperlyConfigured(
                    f"{resource.__name__}: expected a {kind.__name__}(...) or True, not {value!r}."
                )
        for limit in limits:
            if not isinstance(limit, RateLimit):
                raise ImproperlyConfigured(
                    f"{resource.__name__}.rate_limits holds {limit!r}; use RateLimit(...)."
                )
        if not (idempotency or cache or limits):
            return None
        return cls(idempotency or None, limits, cache or None)

    def wrap(self, view: Any, handler: Callable[[], Response]) -> Callable[[], Response]:
        """``handler`` behind this resource's guards."""
        return lambda: self.run(view, handler)

    def run(self, view: Any, handler: Callable[[], Response]) -> Response:
        guards = guards_of(current_app)
        headers: Mapping[str, str] = {}
        if self.limits:
            headers = check_limits(guards.limits, view, self.limits)  # 429 before any SQL
        if self.cache is not None and view.extra is None and view.action in CACHED_ACTIONS:
            response = read_through_cache(self.cache, guards, view, handler)
        elif self.idempotency is not None and is_idempotent_write(view):
            response = write_once(self.idempotency, guards, view, handler)
        else:
            response = handler()
        if headers:  # one pass: each setdefault would scan the headers and raise a KeyError
            present = {name.lower() for name, _ in response.headers}
            response.headers.extend(
                [(key, value) for key, value in headers.items() if key.lower() not in present]
            )
        return response


def read_through_cache(
    cache: ResponseCache, guards: Guards, view: Any, handler: Callable[[], Response]
) -> Response:
    """A list or item read answered from the cache, or run and its answer kept."""
    if guards.cache is None:  # no Redis, and one process not declared: nothing kept
        return handler()
    environ = request.environ
    bypass = "read-your-writes" in environ.get("HTTP_PREFER", "") or (
        "HTTP_CACHE_CONTROL" in environ and bool(request.cache_control.no_cache)
    )
    depends_on = cache.depends_on
    # (the names as decoded: "%69nclude" is an include too)
    if request.query_string and "include" in request.args:  # the included rows' too
        if not cache.per_caller:  # their visible may differ between callers
            return handler()
        depends_on = (*depends_on, *included_resources(view.mount))
    per_caller = view.get_caller_key() if cache.per_caller else None
    key = cache_key(view, per_caller)
    generations = generation_keys(view, depends_on)
    # The full key is read before the handler runs: should a write commit meanwhile,
    # this answer is kept under the generations it was read at, which no later read
    # computes.
    try:
        found, full_key = cached_response(guards.cache, generations, key, bypass)
    except Exception as exc:  # the cache unreachable: the answer as if there were none
        if not unreachable(exc):
            raise
        logger.warning("The response cache is unreachable (%s); answering uncached", exc)
        return handler()
    if found is not None:
        return found
    response = handler()
    ttl = cache.ttl or int(current_app.config.get("RESOURCES_KIT_CACHE_TTL", 300))
    if full_key is not None:
        keep_response(guards.cache, full_key, response, ttl)
    return response


def unreachable(exc: Exception) -> bool:
    """Whether ``exc`` is the cache's Redis out of reach (not a mistake of ours)."""
    try:
        from redis.exceptions import ConnectionError, TimeoutError
    except ImportError:  # pragma: no cover - no Redis client: no Redis store either
        return False
    return isinstance(exc, ConnectionError | TimeoutError)


def write_once(
    policy: Idempotency, guards: Guards, view: Any, handler: Callable[[], Response]
) -> Response:
    """A write run once per ``Idempotency-Key``; a retry answered what the first did."""
    key = request.headers.get("Idempotency-Key")
    if key is None:
        if policy.required:
            raise HTTPError(400, "This resource requires an Idempotency-Key header.")
        return handler()
    if not 1 <= len(key) <= 255:
        raise HTTPError(400, "An Idempotency-Key is 1 to 255 characters.")
    ttl = policy.ttl or int(current_app.config.get("RESOURCES_KIT_IDEMPOTENCY_TTL", 86400))
    identity = key_digest(guards.prefix, scope_identity(view), view.get_caller_key(), key)
    request_line = f"{request.method} {request.path!r}\n".encode()
    fingerprint = hashlib.blake2b(request_line + request.get_data(cache=True)).hexdigest()[:32]
    if guards.idempotency_redis is not None:
        return write_once_in_redis(guards, identity, fingerprint, ttl, handler)
    found = claim(guards.idempotency_table, view.get_session(), identity, fingerprint, ttl)
    if isinstance(found, Response):
        return found
    token = PENDING.set(found)
    try:
        return handler()
    finally:
        PENDING.reset(token)
        if not found.stored:
            view.get_session().rollback()  # frees the key for a retry


def write_once_in_redis(
    guards: Guards, identity: str, fingerprint: str, ttl: int, handler: Callable[[], Response]
) -> Response:
    wait = float(current_app.config.get("RESOURCES_KIT_IDEMPOTENCY_WAIT", 10))
    found = claim_in_redis(guards.idempotency_redis, identity, fingerprint, wait)
    if isinstance(found, Response):
        return found
    response = None
    try:
        response = handler()
        return response
    finally:
        finish_in_redis(found, response or Response(status=500), ttl)


def is_idempotent_write(view: Any) -> bool:
    extra = view.extra
    if extra is not None:
        return bool(extra.writes)
    return view.action in IDEMPOTENT_ACTIONS


def cache_key(view: Any, caller: str | None) -> str:
    """Everything that shapes the answer: where (URL, query, ``Accept``), and for whom
    (the scope of every level, the caller's visibility at every level, the caller)."""
    visibility = [
        [_compiled(clause) for clause in level.visibility_clauses()] for level in view.place.levels
    ]
    return key_digest(
        view.mount.endpoint,
        view.kind,
        request.path,
        request.query_string,
        request.environ.get("HTTP_ACCEPT", ""),
        scope_identity(view),
        visibility,
        caller,
    )


def _compiled(clause: Any) -> list[Any]:
    compiled = clause.compile()
    return [str(compiled), sorted((k, repr(v)) for k, v in compiled.params.items())]


#: The idempotency claim of the write in progress (read by the write unit's hook).
PENDING: ContextVar[Claim | None] = ContextVar("resources_kit_idempotency", default=None)


class Guards:
    """The guards' shared state for an app: ``Guards(app)`` or ``guards.init_app(app)``.

    Configuration (``app.config``):

    - ``RESOURCES_KIT_REDIS_URL``: the Redis every host shares (rate limits, cache);
      without it the rate limits count per process, and nothing is cached unless
      ``RESOURCES_KIT_CACHE_IN_PROCESS`` says the app runs as one process (the
      development server, tests): another worker's writes could not invalidate it;
    - ``RESOURCES_KIT_RATELIMIT_STORAGE_URI``: another storage for the limits (Flask-
      Limiter's notation; default: the Redis above, else ``memory://``); an app that has
      its own ``flask_limiter.Limiter`` shares its storage;
    - ``RESOURCES_KIT_REDIS_PREFIX``: what the app's keys start with (default: made
      from ``SQLALCHEMY_DATABASE_URI``, the same on every host of the app);
    - ``RESOURCES_KIT_IDEMPOTENCY_STORAGE``: ``"database"`` (the default: the answer in
      the write's transaction) or ``"redis"`` (no table; see :mod:`.idempotency`);
    - ``RESOURCES_KIT_IDEMPOTENCY_TTL`` (24 hours), ``RESOURCES_KIT_IDEMPOTENCY_WAIT``
      (seconds a retry waits for the first request: 10), ``RESOURCES_KIT_CACHE_TTL`` (300).

    The idempotency table joins Flask-SQLAlchemy's metadata here, so ``db.create_all()``
    (and Alembic's autogenerate) sees it: create the ``Guards`` before the tables.
    """

    def __init__(self, app: Flask | None = None) -> None:
        self.app: Flask | None = None
        self.limits: Limits | None = None
        self.cache: CacheStore | None = None
        self.idempotency_table: Any = None
        #: What every key of this app's shared state starts with.
        self.prefix = "rk:"
        #: The connection (a :class:`~resources_kit.caching.Channel`) to the Redis of the
        #: keys, when ``RESOURCES_KIT_IDEMPOTENCY_STORAGE`` is ``"redis"`` (default
        #: ``"database"``: the table, in the write's transaction).
        self.idempotency_redis: Any = None
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        self.app = app
        config = app.config
        redis_url = config.get("RESOURCES_KIT_REDIS_URL")
        self.prefix = namespace(config)
        storage = config.get("RESOURCES_KIT_RATELIMIT_STORAGE_URI", redis_url)
        self.limits = limits_for(app, storage, self.prefix)
        in_process = bool(config.get("RESOURCES_KIT_CACHE_IN_PROCESS"))
        self.cache = store_for(redis_url, in_process, self.prefix)
        if config.get("RESOURCES_KIT_IDEMPOTENCY_STORAGE", "database") == "redis":
            if not redis_url:
                raise ImproperlyConfigured(
                    'RESOURCES_KIT_IDEMPOTENCY_STORAGE = "redis" needs RESOURCES_KIT_REDIS_URL.'
                )
            import redis

            shared = getattr(self.cache, "channel", None)  # the cache's, on the same Redis
            self.idempotency_redis = shared or Channel(redis.Redis.from_url(redis_url))
        extension = app.extensions.get("sqlalchemy")
        if extension is not None:
            self.idempotency_table = idempotency_table(extension.metadata)
        app.extensions[EXTENSION] = self

    def before_commit(self, view: Any, session: Any, response: Response) -> None:
        """The write unit's hook, just before its commit: the idempotency answer joins
        the write's transaction."""
        pending = PENDING.get()
        if pending is not None and response.status_code < 400:
            store_answer(self.idempotency_table, session, pending, response)

    def committed(self, view: Any) -> None:
        """The write unit's hook, after its commit: answers cached for the resource at
        this scope (and every answer that depends on it) are stale, on every host."""
        name = type(view).name
        if self.cache is None:
            return
        try:
            self.invalidate(name, view.scope)
        except Exception:  # the commit stands; the cache's ttl bounds the staleness
            logger.exception("Could not invalidate the cached answers of %s", name)

    def invalidate(self, name: str, scope: Mapping[str, Any] | None = None) -> None:
        """Invalidate the cached answers of the resource ``name`` for ``scope`` (``None``:
        every scope), for a write made outside the library (a script, a job)."""
        keys = [f"gen:{name}:*"]
        if scope is not None:
            keys.append(f"gen:{name}:{scope_digest(scope)}")
        if self.cache is not None:
            self.cache.bump(keys)


PROBLEM = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
RATE_HEADERS = {
    name: {"description": description, "schema": {"type": "integer"}}
    for name, description in (
        ("RateLimit-Limit", "Requests the window allows."),
        ("RateLimit-Remaining", "Requests left in the window."),
        ("RateLimit-Reset", "Seconds until the window resets."),
    )
}


def document_guards(
    resource: type[Any], action: str, extra: Any, operation: dict[str, Any]
) -> None:
    """The OpenAPI operation of ``action`` with what the resource's guards add: the
    ``Idempotency-Key`` header and its 409/422, a 429 with ``Retry-After``."""
    plan: GuardPlan | None = getattr(resource, "guard_plan", None)
    if plan is None:
        return
    responses = operation["responses"]
    writes = bool(extra.writes) if extra is not None else action in IDEMPOTENT_ACTIONS
    if plan.idempotency is not None and writes:
        operation["parameters"].append(
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": plan.idempotency.required,
                "schema": {"type": "string", "minLength": 1, "maxLength": 255},
                "description": "A key unique to this request: a retry with it gets the "
                "first answer again, and writes nothing more.",
            }
        )
        responses["409"] = {
            "description": "A conflict, or the first request with this Idempotency-Key "
            "is still running (retry after Retry-After).",
            "content": PROBLEM,
        }
        responses["422"] = {
            "description": "Validation failed, or the Idempotency-Key was used for "
            "another request.",
            "content": PROBLEM,
        }
        if plan.idempotency.required:
            responses.setdefault("400", {"description": "Bad request.", "content": PROBLEM})
    view = type("Described", (), {"action": action, "extra": extra})()
    if any(counts(limit, view) for limit in plan.limits):
        retry = {"description": "Seconds to wait.", "schema": {"type": "integer"}}
        responses["429"] = {
            "description": "Too many requests: the rate limit is spent.",
            "headers": {"Retry-After": retry, **RATE_HEADERS},
            "content": PROBLEM,
        }


def namespace(config: Mapping[str, Any]) -> str:
    """The prefix of the app's keys in Redis: ``RESOURCES_KIT_REDIS_PREFIX``, else one
    made from the database URL, so that the hosts of one app share their state and two
    apps on one Redis (another service, another database) never do."""
    prefix = config.get("RESOURCES_KIT_REDIS_PREFIX")
    if prefix is None:
        url = str(config.get("SQLALCHEMY_DATABASE_URI", ""))
        if url:
            url = make_url(url).render_as_string(hide_password=True)
        prefix = f"rk:{hashlib.sha256(url.encode()).hexdigest()[:12]}:"
    return str(prefix)


def guards_of(app: Flask) -> Guards:
    """The app's guards, made with its configuration on first use."""
    found = app.extensions.get(EXTENSION)
    if found is None:
        found = Guards(app)
    return cast(Guards, found)
