"""The response cache's storage: answers kept under a key that ends with the generation
counters of every resource and scope they depend on, in Redis (shared by every host) or in
the process. A write bumps the counters after its commit, so no later read computes a key
an older answer is stored under."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Sequence
from typing import Any, Protocol

from flask import Response, current_app, request
from werkzeug.http import unquote_etag

logger = logging.getLogger("resources_kit.guards")

#: The headers of an answer worth keeping (the rest Flask adds again).
KEPT_HEADERS = ("Content-Type", "ETag", "Link")
_KEPT = {name.lower(): name for name in KEPT_HEADERS}


class CacheStore(Protocol):
    def lookup(self, generations: Sequence[str], key: str) -> tuple[str, bytes | None]: ...

    def keep(self, full_key: str, value: bytes, ttl: int) -> None: ...

    def bump(self, generations: Sequence[str]) -> None: ...


class MemoryStore:
    """One process's cache (one host, the tests): dicts under a lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counters: dict[str, int] = {}
        self.answers: dict[str, tuple[float, bytes]] = {}

    def lookup(self, generations: Sequence[str], key: str) -> tuple[str, bytes | None]:
        with self.lock:
            full = ":".join([key, *(str(self.counters.get(g, 0)) for g in generations)])
            found = self.answers.get(full)
        if found is None or found[0] < time.monotonic():
            return full, None
        return full, found[1]

    def keep(self, full_key: str, value: bytes, ttl: int) -> None:
        with self.lock:
            if len(self.answers) > 10_000:  # a bound, not an eviction policy
                self.answers.clear()
            self.answers[full_key] = (time.monotonic() + ttl, value)

    def bump(self, generations: Sequence[str]) -> None:
        with self.lock:
            for key in generations:
                self.counters[key] = self.counters.get(key, 0) + 1


class Channel:
    """A connection of its own per thread (and per process: a forked worker makes
    its own) to the Redis of ``client``, for the cache's two commands per request: the
    client's pool, retries and reply callbacks cost more than the round trip itself.
    :meth:`send` does not wait for its reply; the next :meth:`call` reads it first."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.local = threading.local()

    def connection(self) -> Any:
        local = self.local
        if getattr(local, "pid", None) != os.getpid():
            # Not the pool's make_connection(): that counts against its max_connections,
            # and this connection is never given back.
            pool = self.client.connection_pool
            local.connection = pool.connection_class(**pool.connection_kwargs)
            local.pid, local.unread = os.getpid(), 0
        return local.connection

    def call(self, *command: Any) -> Any:
        """Send ``command`` (one that may be sent twice: a read, a ``SET``) and return its
        reply. A connection lost (a Redis restarted) is opened again once, as the client
        retries; a second failure is raised."""
        from redis.exceptions import ConnectionError, TimeoutError

        for attempt in (1, 2):
            connection = self.connection()
            try:
                packed = connection.pack_command(*command)
                connection.send_packed_command(packed, check_health=False)
                self.drain(connection)
                return connection.read_response()
            except (ConnectionError, TimeoutError):
                self.close(connection)
                if attempt == 2:
                    raise
            except BaseException:
                self.close(connection)
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    def send(self, *command: Any) -> None:
        """Send ``command`` with no wait for its reply (an error in it is only logged)."""
        connection = self.connection()
        try:
            connection.send_packed_command(connection.pack_command(*command), check_health=False)
        except BaseException:
            self.close(connection)
            raise
        self.local.unread += 1

    def close(self, connection: Any) -> None:
        """Drop ``connection``: the next command opens a new one."""
        connection.disconnect()
        self.local.pid = None

    def drain(self, connection: Any) -> None:
        from redis.exceptions import ResponseError

        while self.local.unread:
            self.local.unread -= 1
            try:
                connection.read_response()
            except ResponseError:
                logger.exception("A response cache command sent without waiting failed")


class RedisStore:
    """The cache every host shares: one ``MGET`` per lookup (the counters and the answer
    kept under the key, tagged with the counters it was computed at: a hit only when they
    are the current ones), one ``SET`` per answer kept (sent without waiting: its reply is
    read with the next lookup's), one pipelined ``INCR`` per write."""

    def __init__(self, url: str, prefix: str) -> None:
        import redis

        self.client = redis.Redis.from_url(url)
        self.channel = Channel(self.client)
        #: Every key starts with it: apps sharing one Redis keep apart.
        self.prefix = prefix

    def lookup(self, generations: Sequence[str], key: str) -> tuple[str, bytes | None]:
        prefix = self.prefix
        answer = f"{prefix}answer:{key}"
        *counters, kept = self.channel.call(
            "MGET", *[prefix + generation for generation in generations], answer
        )
        tag = b",".join([counter or b"0" for counter in counters]) + b"\n"
        # What keep() is given: where, and the tag the answer is kept with.
        full = f"{answer}\n{tag.decode()}"
        if kept is None or not kept.startswith(tag):
            return full, None
        return full, kept[len(tag) :]

    def keep(self, full_key: str, value: bytes, ttl: int) -> None:
        # Kept late is harmless: the tag holds the counters read before the answer was
        # computed, which no lookup matches once a write has bumped them. One answer per
        # key: a newer one replaces it (a late older one only costs the next read a miss).
        answer, _, tag = full_key.partition("\n")
        self.channel.send("SET", answer, tag.encode() + value, "EX", ttl)

    def bump(self, generations: Sequence[str]) -> None:
        pipeline = self.client.pipeline(transaction=False)
        for key in generations:
            pipeline.incr(self.prefix + key)
        pipeline.execute()


def store_for(redis_url: str | None, in_process: bool, prefix: str) -> CacheStore | None:
    """Redis when the app names one; the process's memory when it says it is one process;
    else no cache (a process's memory is not invalidated by another's writes)."""
    if redis_url:
        return RedisStore(redis_url, prefix)
    return MemoryStore() if in_process else None


def key_digest(*parts: Any) -> str:
    """A short digest of ``parts``, the same on every host and process: JSON, with any
    other value (a UUID, a date, bytes) as its ``str``, as a script's ``invalidate`` may
    name it."""
    text = json.dumps(parts, default=str, separators=(",", ":"), sort_keys=True)
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def scope_digest(scope: Any) -> str:
    return key_digest(sorted(scope.items()))


def generation_keys(view: Any, depends_on: Sequence[str]) -> list[str]:
    """The counters an answer of ``view`` depends on: its resource's at its scope, each
    parent level's at that level's scope, and every ``depends_on`` resource's (any
    scope)."""
    keys = [f"gen:{type(level).name}:{scope_digest(level.scope)}" for level in view.place.levels]
    keys += [f"gen:{name}:*" for name in depends_on]
    return keys


#: What a kept answer says it is when it is served.
HIT = ("Cache-Status", "resources_kit; hit")


def cached_response(
    store: CacheStore | None, generations: Sequence[str], key: str, bypass: bool = False
) -> tuple[Response | None, str | None]:
    """The kept answer (a 304 when ``If-None-Match`` names its ETag), or ``None`` (always
    with ``bypass``: the request asked for a fresh answer), and the full key to keep a
    fresh answer under."""
    if store is None:
        return None, None
    full, value = store.lookup(generations, key)
    if value is None or bypass:
        return None, full
    # The headers, a "Name: value" line each (a value has no line break), then the body's
    # bytes as they were sent.
    block, _, body = value.partition(b"\n")
    headers = []
    for line in block.decode().split("\r") if block else ():
        name, _, header = line.partition(": ")
        headers.append((name, header))
    headers.append(HIT)
    if "HTTP_IF_NONE_MATCH" in request.environ:
        etag = next((header for name, header in headers if name == "ETag"), None)
        if etag is not None:
            tag, _ = unquote_etag(etag)
            if tag is not None and request.if_none_match.contains_weak(tag):
                return Response(status=304, headers=[("ETag", etag), HIT]), full
    return current_app.response_class(body, headers=headers), full


def keep_response(
    store: CacheStore | None,
    full_key: str,
    response: Response,
    ttl: int,
) -> None:
    """Keep a fresh 200 answer (not one the client asked not to store)."""
    if store is None or response.status_code != 200:
        return
    if "HTTP_CACHE_CONTROL" in request.environ and request.cache_control.no_store:
        return
    headers = []
    for name, value in response.headers:  # one pass (each lookup by name is a scan)
        lowered = name.lower()
        if lowered == "set-cookie":
            return
        if lowered in _KEPT:
            headers.append(f"{_KEPT[lowered]}: {value}")
    store.keep(full_key, "\r".join(headers).encode() + b"\n" + response.get_data(), ttl)
    response.headers["Cache-Status"] = "resources_kit; fwd=miss; stored"
