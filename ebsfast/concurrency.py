"""Worker pools for the snapshot jobs: adaptive concurrency, bounded retries, prompt stops.

The EBS direct APIs throttle per snapshot and per account (``RequestThrottledException``,
``ThrottlingException``). A job that keeps its full concurrency while throttled only earns more
throttling, and one that gives up loses hours of work; so :class:`BlockPool` treats throttling
as congestion (AIMD, as TCP does): the number of requests in flight halves on a throttle and
grows back by one after a window of successes, and the throttled item is simply tried again.
Other failures get a few job-level attempts on top of the client's own retries (the client's
retry quota can run dry under a burst of faults), then stop the whole job at once: no worker
keeps going, nothing hangs, and the first error is raised in the caller's thread.

Everything here is per job; nothing is global.
"""
from __future__ import annotations

import collections
import random
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from . import exceptions as _exc
from .retries import is_throttling

__all__ = ["AdaptiveLimit", "BlockPool", "PoolStats", "Progress", "TokenBucket",
           "is_throttle_error", "is_transient_error"]


def _error_code(exc: BaseException) -> str | None:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return response.get("Error", {}).get("Code")
    return None


def is_throttle_error(exc: BaseException) -> bool:
    """A service answer that means "slow down" (after the client's own retries)."""
    return isinstance(exc, _exc.ClientError) and is_throttling(_error_code(exc))


def is_transient_error(exc: BaseException) -> bool:
    """A failure worth another attempt at job level: the connection or the bytes broke, or the
    service had an internal error. Never a 4xx the caller caused."""
    if isinstance(exc, (_exc.HTTPClientError, _exc.ConnectionError,
                        _exc.ChecksumMismatchError)):
        return True
    if isinstance(exc, _exc.ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        return status >= 500 or _error_code(exc) == "InternalServerException"
    return False


class TokenBucket:
    """At most ``rate_per_s`` acquisitions a second on average, bursts up to ``burst``.
    Shared by the threads of one job (the List operations' quota is 50 requests/s per
    account)."""

    def __init__(self, rate_per_s: float, burst: float | None = None, *,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        if rate_per_s <= 0:
            raise ValueError(f"rate_per_s must be > 0, got {rate_per_s!r}")
        self.rate = float(rate_per_s)
        self.capacity = float(burst if burst is not None else max(1.0, rate_per_s / 5))
        self._tokens = self.capacity
        self._clock = clock
        self._sleep = sleep
        self._stamp = clock()
        self._lock = threading.Lock()

    def acquire(self) -> float:
        """Take one token, sleeping until one is there; returns the seconds slept."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            self._tokens -= 1.0
            wait = -self._tokens / self.rate if self._tokens < 0 else 0.0
        if wait > 0:
            self._sleep(wait)
        return wait


class AdaptiveLimit:
    """How many requests may be in flight: additive increase, multiplicative decrease.

    ``on_throttle`` halves the limit (not below 1), at most once per ``cooldown_s``, because
    every request in flight when the service starts throttling comes back throttled and one
    congestion event must not count as many. ``on_success`` adds one after ``limit``
    successes in a row: one window's worth, so growth is about one per round trip.
    """

    def __init__(self, maximum: int, *, start: int | None = None, cooldown_s: float = 0.25,
                 clock: Callable[[], float] = time.monotonic):
        if maximum < 1:
            raise ValueError(f"maximum must be >= 1, got {maximum!r}")
        self.maximum = int(maximum)
        self.limit = int(start if start is not None else maximum)
        self.minimum_seen = self.limit
        self.decreases = 0
        self.in_flight = 0
        self._successes = 0
        self._cooldown_s = cooldown_s
        self._clock = clock
        self._last_decrease = -1e18
        self._cond = threading.Condition()

    def acquire(self, stopped: Callable[[], bool]) -> bool:
        """Wait for a free slot; False when the job stopped meanwhile."""
        with self._cond:
            while self.in_flight >= self.limit:
                if stopped():
                    return False
                self._cond.wait(0.1)
            if stopped():
                return False
            self.in_flight += 1
            return True

    def release(self) -> None:
        with self._cond:
            self.in_flight -= 1
            self._cond.notify()

    def on_success(self) -> None:
        with self._cond:
            self._successes += 1
            if self.limit < self.maximum and self._successes >= self.limit:
                self._successes = 0
                self.limit += 1
                self._cond.notify()

    def on_throttle(self) -> bool:
        """Halve the limit unless it was halved moments ago; True when it changed."""
        with self._cond:
            self._successes = 0
            now = self._clock()
            if now - self._last_decrease < self._cooldown_s:
                return False
            self._last_decrease = now
            new = max(1, self.limit // 2)
            changed = new != self.limit
            self.limit = new
            self.minimum_seen = min(self.minimum_seen, new)
            self.decreases += 1
            return changed

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()


class Progress:
    """Calls ``callback(done_blocks, total_blocks, done_bytes)`` at most ``rate_hz`` times a
    second from whichever worker thread finishes a block, and once more at the end."""

    def __init__(self, callback: Callable[[int, int, int], Any] | None, total_blocks: int, *,
                 rate_hz: float = 10.0, done_blocks: int = 0, done_bytes: int = 0):
        self.callback = callback
        self.total = int(total_blocks)
        self.blocks = int(done_blocks)
        self.bytes = int(done_bytes)
        self._interval = 1.0 / rate_hz
        self._next = 0.0
        self._lock = threading.Lock()

    def add(self, blocks: int = 1, nbytes: int = 0) -> None:
        with self._lock:
            self.blocks += blocks
            self.bytes += nbytes
            if self.callback is None:
                return
            now = time.monotonic()
            if now < self._next and self.blocks < self.total:
                return
            self._next = now + self._interval
            snapshot = (self.blocks, self.total, self.bytes)
        # outside the lock: a slow or raising callback must not block the other workers
        self.callback(*snapshot)

    def finish(self) -> None:
        if self.callback is not None:
            self.callback(self.blocks, self.total, self.bytes)


class PoolStats:
    """What a job's pool went through, for the result's report."""

    __slots__ = ("throttled", "retries", "min_concurrency", "final_concurrency",
                 "max_concurrency")

    def __init__(self, limit: AdaptiveLimit, throttled: int, retries: int):
        self.throttled = throttled
        self.retries = retries
        self.min_concurrency = limit.minimum_seen
        self.final_concurrency = limit.limit
        self.max_concurrency = limit.maximum

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__slots__}


class _Stop(Exception):
    pass


class BlockPool:
    """Runs ``work(item, scratch)`` for every item of ``items`` on ``workers`` threads.

    ``items`` is consumed lazily by a feeder thread into a bounded queue, so a source that
    does work per item (hashing the next batch of an image) runs ahead of the workers but not
    far. ``scratch()`` makes one per-worker object (a block buffer). ``work`` may raise:

    - a throttling ClientError: the limit halves, the worker backs off, the item is retried
      (without limit: throttling never fails a job);
    - a transient error (:func:`is_transient_error`): retried up to ``job_retries`` times per
      item with backoff, then fatal;
    - anything else: fatal. The pool stops handing out items, lets the requests in flight
      finish, and :meth:`run` raises ``on_error(item, exc)`` (or the exception itself when it
      is not an Exception, e.g. KeyboardInterrupt from a progress callback).
    """

    def __init__(self, workers: int, *, job_retries: int = 3, queue_size: int | None = None,
                 backoff_base_s: float = 0.05, backoff_cap_s: float = 5.0,
                 name: str = "ebsfast-snapshots"):
        self.workers = max(1, int(workers))
        self.limit = AdaptiveLimit(self.workers)
        self.job_retries = job_retries
        self._queue_size = queue_size or max(64, 4 * self.workers)
        self._backoff_base = backoff_base_s
        self._backoff_cap = backoff_cap_s
        self._name = name
        self._cond = threading.Condition()
        self._pending: collections.deque = collections.deque()
        self._retry: collections.deque = collections.deque()
        self._exhausted = False
        self._outstanding = 0
        self._stop = threading.Event()
        self._error: tuple[Any, BaseException] | None = None
        self._throttled = 0
        self._retries = 0
        self._attempts: dict = {}

    # -- the queue --------------------------------------------------------------------------
    def _feed(self, items: Iterable[Any]) -> None:
        try:
            for item in items:
                with self._cond:
                    while len(self._pending) >= self._queue_size and not self._stop.is_set():
                        self._cond.wait(0.1)
                    if self._stop.is_set():
                        return
                    self._pending.append(item)
                    self._cond.notify()
        except BaseException as e:  # noqa: BLE001 - the source failed: the job stops with it
            self._fail(None, e)
        finally:
            with self._cond:
                self._exhausted = True
                self._cond.notify_all()

    def _take(self) -> tuple[bool, Any]:
        with self._cond:
            while True:
                if self._stop.is_set():
                    return False, None
                if self._retry:
                    ready_at, item = self._retry[0]
                    if ready_at <= time.monotonic():
                        self._retry.popleft()
                        self._outstanding += 1
                        return True, item
                if self._pending:
                    self._outstanding += 1
                    item = self._pending.popleft()
                    self._cond.notify_all()  # the feeder may be waiting for room
                    return True, item
                if self._exhausted and not self._retry and self._outstanding == 0:
                    return False, None
                self._cond.wait(0.05)

    def _done(self, item: Any = None, retry_after_s: float | None = None) -> None:
        with self._cond:
            self._outstanding -= 1
            if retry_after_s is not None:
                self._retry.append((time.monotonic() + retry_after_s, item))
            self._cond.notify_all()

    def _fail(self, item: Any, exc: BaseException) -> None:
        with self._cond:
            if self._error is None:
                self._error = (item, exc)
            self._stop.set()
            self._cond.notify_all()
        self.limit.wake()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def stop(self) -> None:
        self._fail(None, _Stop())

    # -- workers ----------------------------------------------------------------------------
    def _backoff(self, n: int) -> float:
        # full jitter, as the client's standard mode, so throttled workers do not return
        # together
        return random.random() * min(self._backoff_cap, self._backoff_base * 2 ** n) + 0.01

    def _worker(self, work: Callable[[Any, Any], Any], scratch: Callable[[], Any] | None):
        try:
            buf = scratch() if scratch is not None else None
        except BaseException as e:  # noqa: BLE001
            self._fail(None, e)
            return
        throttle_streak = 0
        while True:
            ok, item = self._take()
            if not ok:
                return
            if not self.limit.acquire(lambda: self._stop.is_set()):
                self._done()
                return
            try:
                work(item, buf)
            except Exception as e:  # noqa: BLE001 - sorted below
                self.limit.release()
                key = _item_key(item)
                if is_throttle_error(e):
                    with self._cond:
                        self._throttled += 1
                    self.limit.on_throttle()
                    throttle_streak += 1
                    self._done(item, self._backoff(throttle_streak))
                    continue
                attempts = self._attempts.get(key, 0)
                if is_transient_error(e) and attempts < self.job_retries:
                    self._attempts[key] = attempts + 1
                    with self._cond:
                        self._retries += 1
                    self._done(item, self._backoff(attempts + 3))
                    continue
                self._done()
                self._fail(item, e)
                return
            except BaseException as e:  # KeyboardInterrupt/SystemExit from a callback
                self.limit.release()
                self._done()
                self._fail(item, e)
                return
            self.limit.release()
            self.limit.on_success()
            throttle_streak = 0
            self._done()

    def run(self, items: Iterable[Any], work: Callable[[Any, Any], Any], *,
            scratch: Callable[[], Any] | None = None,
            on_error: Callable[[Any, BaseException], BaseException] | None = None) -> PoolStats:
        feeder = threading.Thread(target=self._feed, args=(items,), daemon=True,
                                  name=f"{self._name}-feed")
        threads = [threading.Thread(target=self._worker, args=(work, scratch), daemon=True,
                                    name=f"{self._name}-{k}") for k in range(self.workers)]
        feeder.start()
        for t in threads:
            t.start()
        try:
            for t in threads:
                while t.is_alive():
                    t.join(0.2)
        except BaseException as e:
            # Ctrl-C lands in this thread: stop the workers, let their requests in flight
            # finish (so what they wrote is recorded), then pass the interrupt on.
            self._fail(None, e)
            for t in threads:
                t.join()
            raise
        finally:
            self._stop.set()
            with self._cond:
                self._cond.notify_all()
            feeder.join(5.0)
        stats = PoolStats(self.limit, self._throttled, self._retries)
        if self._error is not None:
            item, exc = self._error
            if isinstance(exc, _Stop):
                return stats
            if not isinstance(exc, Exception) or on_error is None:
                raise exc
            raise on_error(item, exc) from exc
        return stats


def _item_key(item: Any) -> Any:
    try:
        hash(item)
        return item
    except TypeError:
        return id(item)
