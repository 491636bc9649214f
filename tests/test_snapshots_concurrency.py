"""The snapshot jobs' worker pool alone: AIMD, bounded retries, prompt stops, rate limits."""
from __future__ import annotations

import threading
import time

import pytest

from ebsfast import exceptions as exc
from ebsfast.concurrency import (AdaptiveLimit, BlockPool, Progress, TokenBucket,
                                 is_throttle_error, is_transient_error)


def client_error(code: str, status: int = 400) -> exc.ClientError:
    return exc.ClientError({"Error": {"Code": code, "Message": "m"},
                            "ResponseMetadata": {"HTTPStatusCode": status}}, "GetSnapshotBlock")


def test_classification():
    assert is_throttle_error(client_error("RequestThrottledException"))
    assert is_throttle_error(client_error("ThrottlingException"))
    assert not is_throttle_error(client_error("ValidationException"))
    assert is_transient_error(client_error("InternalServerException", 500))
    assert is_transient_error(exc.ConnectionClosedError(endpoint_url="x"))
    assert is_transient_error(exc.ChecksumMismatchError(block_index=1, snapshot_id="s",
                                                        expected="a", actual="b", length=1))
    assert not is_transient_error(client_error("AccessDeniedException", 403))
    assert not is_transient_error(OSError(28, "No space left on device"))


def test_aimd_halves_once_per_event_and_grows_back():
    now = [0.0]
    lim = AdaptiveLimit(16, cooldown_s=0.25, clock=lambda: now[0])
    assert lim.on_throttle() and lim.limit == 8
    assert not lim.on_throttle() and lim.limit == 8  # the same congestion event
    now[0] += 1
    lim.on_throttle()
    now[0] += 1
    lim.on_throttle()
    now[0] += 1
    lim.on_throttle()
    now[0] += 1
    lim.on_throttle()
    assert lim.limit == 1 and lim.minimum_seen == 1  # never below one
    for _ in range(1):
        lim.on_success()
    assert lim.limit == 2
    for _ in range(2):
        lim.on_success()
    assert lim.limit == 3
    for _ in range(1000):
        lim.on_success()
    assert lim.limit == 16  # capped at the maximum


def test_token_bucket_rate():
    slept = []
    now = [0.0]

    def sleep(s):
        slept.append(s)
        now[0] += s

    b = TokenBucket(50, burst=1, clock=lambda: now[0], sleep=sleep)
    for _ in range(101):
        b.acquire()
    assert now[0] == pytest.approx(2.0, rel=0.01)  # 100 beyond the burst at 50/s


def test_pool_runs_everything_and_retries_throttles_without_limit():
    seen, lock = {}, threading.Lock()
    throttles = {i: 3 for i in range(0, 50, 5)}

    def work(i, buf):
        with lock:
            if throttles.get(i, 0):
                throttles[i] -= 1
                raise client_error("RequestThrottledException")
            seen[i] = seen.get(i, 0) + 1

    pool = BlockPool(8, backoff_base_s=0.001, backoff_cap_s=0.01)
    stats = pool.run(range(50), work)
    assert seen == {i: 1 for i in range(50)}
    assert stats.throttled == 30 and stats.min_concurrency < 8


def test_transient_errors_are_retried_a_bounded_number_of_times():
    calls = []

    def work(i, buf):
        calls.append(i)
        if i == 3:
            raise exc.ConnectionClosedError(endpoint_url="http://x")

    pool = BlockPool(4, job_retries=2, backoff_base_s=0.001, backoff_cap_s=0.002)
    with pytest.raises(RuntimeError, match="item 3") as e:
        pool.run(range(10), work,
                 on_error=lambda item, err: RuntimeError(f"item {item}: {err}"))
    assert calls.count(3) == 3
    assert isinstance(e.value.__cause__, exc.ConnectionClosedError)


def test_a_fatal_error_stops_all_workers_promptly():
    started = []
    gate = threading.Event()

    def work(i, buf):
        started.append(i)
        if i == 2:
            raise client_error("AccessDeniedException", 403)
        gate.wait(0.01)

    t0 = time.monotonic()
    with pytest.raises(exc.ClientError):
        BlockPool(4).run(range(100000), work)
    assert time.monotonic() - t0 < 5
    assert len(started) < 1000  # stopped, not run to the end
    assert not [t for t in threading.enumerate() if t.name.startswith("ebsfast-snapshots")]


def test_keyboard_interrupt_from_a_worker_reaches_the_caller():
    def work(i, buf):
        if i == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        BlockPool(3).run(range(100), work)


def test_a_failing_source_stops_the_pool():
    def items():
        yield 1
        raise ValueError("source broke")

    with pytest.raises(ValueError, match="source broke"):
        BlockPool(2).run(items(), lambda i, b: None)


def test_progress_is_rate_limited_and_final():
    calls = []
    p = Progress(lambda *a: calls.append(a), 1000)
    for _ in range(1000):
        p.add(1, 10)
    assert 1 <= len(calls) <= 5 and calls[-1] == (1000, 1000, 10000)
    p.finish()
    assert calls[-1] == (1000, 1000, 10000)
