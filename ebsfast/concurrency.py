"""Worker pools for the snapshot jobs: adaptive concurrency, bounded retries, prompt stops.

The EBS direct APIs throttle per snapshot and per account (``RequestThrottledException``,
``ThrottlingException``). A job that keeps its full concurrency while throttled only earns more
throttling, and one that gives up loses hours of work; so :class:`BlockPool` treats throttling
as congestion (AIMD, as TCP does): the number of requests in flight halves on a throttle and
grows back by one after a window of successes, and the throttled item is simply tried again.
Other failures get a few job-level attempts on top of the client's own retries (the client's
retry quota can run dry under a burst of faults), then stop the whole job at once: no worker
keeps going, nothing hangs, and the first error is raised in the caller's thread.

Ctrl-C does not wait for the requests in flight (a stalled one can take the client's read
timeout times its attempts): the job stops starting work, gives its workers a moment, and
raises. A worker still in a request then is abandoned; it may finish in the background, but
:attr:`BlockPool.gate` turns it away before it touches anything the caller owns.

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

__all__ = ["AdaptiveLimit", "BlockPool", "Gate", "PoolStats", "Progress", "TokenBucket",
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


class _Abandoned(BaseException):
    """Raised in a worker that reaches the gate after its job has returned. A BaseException,
    so a ``work`` that catches Exception does not swallow it."""


class Gate:
    """Where a job's workers write what the caller owns: the image file and its journal, the
    progress callback. ``with pool.gate:`` around those writes. Until the job returns it
    costs two short lock holds; when the job returns on Ctrl-C with workers still in requests,
    :meth:`shut` waits for the writes under way and turns every later one away, so no
    worker writes to a file descriptor the job has closed (and the process may have reused),
    nor journals a block after the job has returned."""

    def __init__(self):
        self._cond = threading.Condition()
        self._inside = 0
        self._shut = False

    def __enter__(self) -> None:
        with self._cond:
            if self._shut:
                raise _Abandoned()
            self._inside += 1

    def __exit__(self, *exc: Any) -> bool:
        with self._cond:
            self._inside -= 1
            if not self._inside:
                self._cond.notify_all()
        return False

    def shut(self) -> None:
        """No more writes; returns once the writes under way are done (local writes, so
        moments). A second Ctrl-C meanwhile does not cut that wait short."""
        while True:
            try:
                with self._cond:
                    self._shut = True
                    while self._inside:
                        self._cond.wait(0.1)
                return
            except KeyboardInterrupt:
                continue


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

    Ctrl-C in the caller's thread stops the pool handing out items at once; :meth:`run` waits
    up to ``grace_s`` for the workers, shuts :attr:`gate` and raises the KeyboardInterrupt.
    Workers still alive then are abandoned (they are daemon threads): one that finishes its
    request meets the shut gate and ends. So ``work`` must write what outlives the job (a
    file, a journal, a caller's array) only inside ``with pool.gate:``; work that cannot
    (a request that reads straight into the caller's buffer) runs with ``grace_s=None``,
    and :meth:`run` then waits for every request in flight, as long as that takes.
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
        #: ``with pool.gate:`` around the writes a job's ``work`` makes (see :class:`Gate`)
        self.gate = Gate()
        # Workers started and not yet ended. Counted here rather than read from
        # Thread.is_alive: a join that Ctrl-C interrupts can mark a live thread as ended
        # (CPython before 3.13). A condition of its own, so the caller's thread is not woken
        # at every block.
        self._live = 0
        self._ended = threading.Condition()

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
        except _Abandoned:
            pass  # the job has returned: nothing to report to
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
            self._work(work, scratch)
        finally:
            with self._ended:
                self._live -= 1
                self._ended.notify_all()

    def _wait_workers(self, timeout_s: float | None = None) -> bool:
        """Wait until every worker has ended (at most ``timeout_s``); True if they have."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._ended:
            while self._live:
                wait = 0.2 if deadline is None else min(0.2, deadline - time.monotonic())
                if wait <= 0:
                    return False
                self._ended.wait(wait)
        return True

    def _work(self, work: Callable[[Any, Any], Any], scratch: Callable[[], Any] | None):
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
            except _Abandoned:  # the job returned while this request was in flight
                self.limit.release()
                self._done()
                return
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
            on_error: Callable[[Any, BaseException], BaseException] | None = None,
            grace_s: float | None = 0.5) -> PoolStats:
        """Run the job; see the class docstring. ``grace_s``: after Ctrl-C, how long to wait
        for the workers before abandoning those still in a request (None: wait for all)."""
        feeder = threading.Thread(target=self._feed, args=(items,), daemon=True,
                                  name=f"{self._name}-feed")
        threads = [threading.Thread(target=self._worker, args=(work, scratch), daemon=True,
                                    name=f"{self._name}-{k}") for k in range(self.workers)]
        try:
            feeder.start()
            for t in threads:
                with self._ended:
                    self._live += 1
                try:
                    t.start()
                except BaseException:
                    with self._ended:
                        self._live -= 1
                    raise
            self._wait_workers()
        except BaseException as e:
            # Ctrl-C lands in this thread: stop the workers and pass the interrupt on without
            # waiting out the requests in flight (see the class docstring).
            self._abandon(e, feeder, grace_s)
            raise
        finally:
            self._stop.set()
            with self._cond:
                self._cond.notify_all()
        for t in threads:
            t.join()  # they have ended their work: this only sees them out
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

    def _abandon(self, exc: BaseException, feeder: threading.Thread,
                 grace_s: float | None) -> None:
        try:
            self._fail(None, exc)
            # A worker between requests ends within moments; one whose request answers
            # within the grace still writes its block, which a rerun then need not fetch.
            t0 = time.monotonic()
            self._wait_workers(grace_s)
            if grace_s is not None and feeder.ident is not None:
                feeder.join(max(0.0, grace_s - (time.monotonic() - t0)))
        finally:
            self.gate.shut()


def _item_key(item: Any) -> Any:
    try:
        hash(item)
        return item
    except TypeError:
        return id(item)
