"""Rate limits per resource and action, on Flask-Limiter's storage and strategies (the
``limits`` package): a Redis storage makes one limit hold across every host. Over the
limit: 429 problem+json with ``Retry-After`` and the IETF RateLimit headers, before the
request reaches the database."""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, cast

from flask import Flask, request

from .errors import HTTPError, ImproperlyConfigured

try:  # Flask-Limiter's backend, from the guards extra
    from limits import parse
    from limits.storage import MemoryStorage, RedisStorage, storage_from_string
    from limits.strategies import STRATEGIES, FixedWindowRateLimiter
except ImportError:  # pragma: no cover - a resource with limits says what to install
    STRATEGIES = None  # type: ignore[assignment]

#: A fixed window in one round trip: Flask-Limiter's fixed-window counter (its key, its
#: expiry), incremented, and the time left in its window.
SPEND = """
local count = redis.call('INCRBY', KEYS[1], ARGV[2])
if count == tonumber(ARGV[2]) then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return {count, redis.call('PTTL', KEYS[1])}
"""


class MemoryWindows:
    """Fixed windows in this process's memory, as ``limits``' fixed-window strategy counts
    them (a window starts at its first request and lasts the limit's period). Its own
    memory storage starts a timer thread after every 10 ms of traffic to expire keys,
    which costs more than the request it counts; here a dict under a lock, with expired
    windows dropped when it grows."""

    #: Windows kept before the expired ones are dropped.
    KEPT = 100_000

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.lock = threading.Lock()
        self.windows: dict[str, list[float]] = {}
        self.clock = clock

    def spend(self, key: str, period: float) -> tuple[int, float]:
        """One request spent in ``key``'s window: its count and when it resets."""
        moment = self.clock()
        with self.lock:
            window = self.windows.get(key)
            if window is None or window[1] <= moment:
                if len(self.windows) >= self.KEPT:
                    self.windows = {k: w for k, w in self.windows.items() if w[1] > moment}
                window = self.windows[key] = [0, moment + period]
            window[0] += 1
            return int(window[0]), window[1]


class Leases:
    """Budget this process reserved ahead from a shared fixed window: one ``SPEND`` of
    several requests, then that many requests answered with no round trip. The shared
    counter counts every request reserved, so the limit holds across hosts as before;
    what a host reserved and did not spend by the window's end is lost to the others.
    A window of ``amount`` gets leases of ``amount * share`` requests (at most
    :attr:`MOST`): a limit under ``1 / share`` per window is counted request by request.
    Made per process: after a fork, a worker reserves its own."""

    #: The most requests one lease holds.
    MOST = 1000

    def __init__(self, share: float) -> None:
        self.share = share
        self.lock = threading.Lock()
        #: key -> [requests left, window reset (epoch seconds), shared remaining]
        self.held: dict[str, list[Any]] = {}
        self.pid = os.getpid()

    def size(self, amount: int) -> int:
        return max(1, min(int(amount * self.share), self.MOST))

    def take(self, key: str) -> tuple[int, float] | None:
        """One request of ``key``'s lease (what is left then, the window's reset), or
        ``None`` when this process holds none."""
        moment = time.time()
        with self.lock:
            if self.pid != os.getpid():  # a forked worker: the parent's lease is not its own
                self.held, self.pid = {}, os.getpid()
            lease = self.held.get(key)
            if lease is None or lease[0] <= 0 or lease[1] <= moment:
                return None
            lease[0] -= 1
            return lease[2] + lease[0], lease[1]

    def keep(self, key: str, requests: int, reset: float, remaining: int) -> None:
        with self.lock:
            if len(self.held) >= MemoryWindows.KEPT:
                moment = time.time()
                self.held = {k: lease for k, lease in self.held.items() if lease[1] > moment}
            self.held[key] = [requests, reset, remaining]


@dataclass
class Limits:
    """The app's limiter (a ``limits`` strategy over its storage) and parsed limits."""

    limiter: Any
    parsed: dict[str, Any]
    #: On a Redis storage with the fixed-window strategy, ``SPEND`` on its client.
    script: Any = None
    #: What the app's counters start with (apps sharing one storage keep apart).
    prefix: str = "rk:"
    #: The fixed windows of a limiter of the library's own in memory.
    windows: MemoryWindows | None = None
    #: With ``script``: the budget this process reserved ahead.
    leases: Leases | None = None

    def spend(self, item: Any, namespace: str, identity: str) -> tuple[bool, int, float]:
        """One request of ``item`` spent: whether it was allowed, what is left and when
        the window resets (epoch seconds)."""
        if self.script is not None:
            key = self.limiter.storage.prefixed_key(item.key_for(namespace, identity))
            return self.spend_shared(key, item.amount, item.get_expiry())
        if self.windows is not None:  # this process's own: any key that tells them apart
            expiry = item.get_expiry()
            key = f"{namespace}/{identity}/{item.amount}/{expiry}"
            count, reset = self.windows.spend(key, expiry)
            return count <= item.amount, item.amount - count, reset
        allowed = self.limiter.hit(item, namespace, identity)
        reset, remaining = self.limiter.get_window_stats(item, namespace, identity)
        return allowed, remaining, reset

    def spend_shared(self, key: str, amount: int, expiry: int) -> tuple[bool, int, float]:
        """One request of a shared fixed window: from this process's lease, or a new
        lease (one round trip) of as many requests as the window still grants, up to
        :meth:`Leases.size` (one request: a plain count)."""
        leases = self.leases
        size = leases.size(amount) if leases is not None else 1
        if size > 1:
            taken = cast(Leases, leases).take(key)
            if taken is not None:
                return True, taken[0], taken[1]
        count, left_ms = self.script(keys=[key], args=[expiry, size])
        reset = time.time() + max(left_ms, 0) / 1000
        granted = min(size, amount - (count - size))  # what was left before this lease
        if granted <= 0:
            return False, 0, reset
        remaining = max(0, amount - count)
        if granted > 1:
            cast(Leases, leases).keep(key, granted - 1, reset, remaining)
        return True, remaining + granted - 1, reset

    def item(self, text: str) -> Any:
        found = self.parsed.get(text)
        if found is None:
            try:
                found = self.parsed[text] = parse(text)
            except ValueError:
                raise ImproperlyConfigured(
                    f"RateLimit({text!r}): not a limit in Flask-Limiter's notation "
                    '("30/minute", "5 per second").'
                ) from None
        return found


def limits_for(app: Flask, storage_uri: str | None, prefix: str) -> Limits | None:
    """The app's own Flask-Limiter (its storage, its strategy) when it has one; else a
    limiter over ``storage_uri`` (``memory://`` by default). ``None`` without the
    ``guards`` extra installed (a resource with limits then fails at its first request)."""
    if STRATEGIES is None:
        return None
    # Flask-Limiter keeps its limiter, or (since 3.x) the set of them, in "limiter".
    found = app.extensions.get("limiter")
    flask_limiter = next(iter(found), None) if isinstance(found, set) else found
    if flask_limiter is not None and hasattr(flask_limiter, "limiter"):
        limiter = flask_limiter.limiter
    else:
        strategy = STRATEGIES[app.config.get("RATELIMIT_STRATEGY", "fixed-window")]
        limiter = strategy(storage_from_string(storage_uri or "memory://"))
    script = windows = None
    if isinstance(limiter, FixedWindowRateLimiter) and isinstance(limiter.storage, RedisStorage):
        script = limiter.storage.storage.register_script(SPEND)
    elif (
        type(limiter) is FixedWindowRateLimiter
        and flask_limiter is None  # the limiter is ours alone: nobody else reads its storage
        and isinstance(limiter.storage, MemoryStorage)
    ):
        windows = MemoryWindows()
    share = float(app.config.get("RESOURCES_KIT_RATELIMIT_LEASE", 0.01))
    leases = Leases(share) if script is not None and share > 0 else None
    return Limits(limiter, {}, script, prefix, windows, leases)


def limit_key(view: Any, per: Any) -> str:
    """Whose budget a request spends: the caller's, the tenant's (the scope of every level
    of the URL), both, or what a function of the view says."""
    if callable(per):
        return str(per(view))
    parts = []
    if "tenant" in per:  # the repr of str, int, UUID... values: stable, and cheaper than JSON
        parts.append(repr([sorted(level.scope.items()) for level in view.place.levels]))
    if "caller" in per:
        caller = view.get_caller_key()
        parts.append(f"user:{caller}" if caller is not None else f"addr:{request.remote_addr}")
    return "|".join(parts)


def counts(limit: Any, view: Any) -> bool:
    actions = limit.actions
    if actions is None:
        return True
    if view.action in actions:
        return True
    return "@writes" in actions and view.extra is not None and bool(view.extra.writes)


def check_limits(limits: Limits | None, view: Any, declared: Sequence[Any]) -> Mapping[str, str]:
    """Spend one request of every limit that counts this action; 429 when one is spent.
    Returns the RateLimit headers of the tightest limit."""
    if limits is None:
        raise ImproperlyConfigured(
            f"{type(view).__name__}.rate_limits needs Flask-Limiter: pip install "
            "'resources_kit[guards]'."
        )
    tightest: tuple[int, float, Any] | None = None
    for index, limit in enumerate(declared):
        if not counts(limit, view):
            continue
        item = limits.item(limit.limit)
        namespace = f"{limits.prefix}{type(view).name}:{view.action}:{index}"
        identity = limit_key(view, limit.per)
        allowed, remaining, reset = limits.spend(item, namespace, identity)
        if not allowed:
            headers = rate_headers(item, 0, reset)
            headers["Retry-After"] = headers["RateLimit-Reset"]
            raise HTTPError(
                429,
                f"Rate limit exceeded: {item.amount} per {item.get_expiry()} seconds; see "
                "Retry-After.",
                headers=headers,
            )
        if tightest is None or remaining < tightest[0]:
            tightest = (remaining, reset, item)
    if tightest is None:
        return {}
    return rate_headers(tightest[2], tightest[0], tightest[1])


def rate_headers(item: Any, remaining: int, reset: float) -> dict[str, str]:
    """The IETF RateLimit header fields (draft-ietf-httpapi-ratelimit-headers)."""
    seconds = max(1, math.ceil(reset - time.time()))
    limit, policy = _fixed_headers(item)
    return {
        "RateLimit-Limit": limit,
        "RateLimit-Remaining": str(max(0, remaining)),
        "RateLimit-Reset": str(seconds),
        "RateLimit-Policy": policy,
    }


@lru_cache(maxsize=256)
def _fixed_headers(item: Any) -> tuple[str, str]:
    return str(item.amount), f"{item.amount};w={item.get_expiry()}"
