"""The snapshot jobs' worker pool: AIMD, bounded retries, prompt stops, rate limits; and how
the jobs stop on Ctrl-C with requests in flight."""
from __future__ import annotations

import _thread
import hashlib
import os
import threading
import time

import numpy as np
import pytest

import ebsfast
from ebsfast import exceptions as exc
from ebsfast import snapshots
from ebsfast._snapshots_io import Journal
from ebsfast.concurrency import (AdaptiveLimit, BlockPool, Progress, TokenBucket,
                                 is_throttle_error, is_transient_error)
from ebsfast.testing import BLOCK_SIZE, EBSServer


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


# -- Ctrl-C with requests in flight --------------------------------------------------------------
def ctrl_c_when(ready, timeout_s=30.0):
    """Ctrl-C in the main thread (as SIGINT gives it) once ``ready()`` is true; never when it
    does not become true, so the interrupt cannot land outside the call under test."""
    def fire():
        deadline = time.monotonic() + timeout_s
        while not ready():
            if time.monotonic() > deadline:
                return
            time.sleep(0.01)
        _thread.interrupt_main()

    t = threading.Thread(target=fire, daemon=True)
    t.start()
    return t


def pool_threads():
    # threading.enumerate rather than is_alive: after a join that Ctrl-C interrupted, CPython
    # before 3.13 can report a live thread as ended
    return [t for t in threading.enumerate() if t.name.startswith("ebsfast-snapshots")]


def wait_for_pool_threads(timeout_s=30.0):
    deadline = time.monotonic() + timeout_s
    while pool_threads() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not pool_threads()


class Hold:
    """Work items that stay "in a request" until ``release`` is set (at most 60 s)."""

    def __init__(self):
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.inside = 0
        self.returned = 0

    def wait(self):
        with self.lock:
            self.inside += 1
        try:
            self.release.wait(60)
        finally:
            with self.lock:
                self.inside -= 1
                self.returned += 1


def test_ctrl_c_does_not_wait_for_requests_in_flight():
    hold = Hold()
    written = []
    pool = BlockPool(2)

    def work(i, buf):
        hold.wait()
        with pool.gate:
            written.append(i)

    ctrl_c_when(lambda: hold.inside == 2)
    t0 = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            pool.run(range(10), work)
        # generous: the requests would hold the job for 60 s
        assert time.monotonic() - t0 < 15
        assert hold.returned == 0 and written == []
    finally:
        hold.release.set()
    wait_for_pool_threads()
    # the abandoned workers finished their requests but wrote nothing, nor took more items
    assert written == [] and hold.returned == 2


def test_ctrl_c_waits_for_writes_already_under_way():
    inside, go = threading.Event(), threading.Event()
    done = []
    pool = BlockPool(2)

    def work(i, buf):
        if i == 0:
            with pool.gate:
                inside.set()
                go.wait(60)
                done.append(i)
        else:
            go.wait(60)

    def release_later():
        inside.wait(30)
        time.sleep(1.5)  # past the pool's grace: the gate must hold the job until the end
        go.set()

    ctrl_c_when(inside.is_set)
    threading.Thread(target=release_later, daemon=True).start()
    try:
        with pytest.raises(KeyboardInterrupt):
            pool.run(range(2), work)
        assert done == [0]  # the write under way finished before the job returned
    finally:
        go.set()
    wait_for_pool_threads()


def test_ctrl_c_without_grace_waits_for_every_request():
    hold = Hold()

    def release_later():
        while hold.inside < 2:
            time.sleep(0.01)
        time.sleep(1.5)  # past the default grace
        hold.release.set()

    ctrl_c_when(lambda: hold.inside == 2)
    threading.Thread(target=release_later, daemon=True).start()
    try:
        with pytest.raises(KeyboardInterrupt):
            BlockPool(2).run(range(10), lambda i, buf: hold.wait(), grace_s=None)
        assert hold.inside == 0 and hold.returned == 2
    finally:
        hold.release.set()
    wait_for_pool_threads()


class HeldClient:
    """A client whose GetSnapshotBlock calls for blocks from ``first_held`` on wait for
    ``hold.release`` before they go out: requests in flight for as long as a test likes.
    Those of the worker thread named ``last_thread`` then wait for ``last`` as well."""

    def __init__(self, client, first_held, last_thread=None):
        self._client = client
        self.first_held = first_held
        self.last_thread = last_thread
        self.hold = Hold()
        self.last = threading.Event()
        self.finished = 0  # held requests that have ended, their block received

    def __getattr__(self, name):
        return getattr(self._client, name)

    def get_snapshot_block_into(self, **kwargs):
        if kwargs["BlockIndex"] < self.first_held:
            return self._client.get_snapshot_block_into(**kwargs)
        self.hold.wait()
        if threading.current_thread().name == self.last_thread:
            self.last.wait(60)
        try:
            return self._client.get_snapshot_block_into(**kwargs)
        finally:
            with self.hold.lock:
                self.finished += 1


@pytest.fixture(scope="module")
def server():
    with EBSServer() as srv:
        yield srv


def make_client(server):
    return ebsfast.client("ebs", endpoint_url=server.endpoint_url, region_name=server.region,
                          aws_access_key_id=server.access_key,
                          aws_secret_access_key=server.secret_key,
                          config=snapshots.client_config())


def image(n_blocks, seed):
    return np.random.default_rng(seed).integers(0, 256, n_blocks * BLOCK_SIZE, dtype=np.uint8)


def head(path, nbytes):
    """The first bytes of a file (an image is as long as its 1 GiB volume)."""
    with open(path, "rb") as f:
        return f.read(nbytes)


def interrupted(job, held, files_dir):
    """Run ``job`` until Ctrl-C lands with two requests held; then open files (they take the
    descriptors the job closed), let the held requests finish and wait for their workers.
    Returns the files, each of which must stay empty."""
    t0 = time.monotonic()
    ctrl_c_when(lambda: held.hold.inside == 2)
    try:
        with pytest.raises(KeyboardInterrupt):
            job()
        assert time.monotonic() - t0 < 15  # generous: the requests are held for 60 s
    except BaseException:
        held.hold.release.set()
        raise
    fds = [os.open(os.path.join(files_dir, f"other-{k}"), os.O_RDWR | os.O_CREAT, 0o644)
           for k in range(8)]
    try:
        held.hold.release.set()
        wait_for_pool_threads()
        assert held.finished == 2
    finally:
        for fd in fds:
            os.close(fd)
    return [os.path.join(files_dir, f"other-{k}") for k in range(8)]


def test_ctrl_c_mid_download_keeps_partial_and_journal_consistent(server, tmp_path):
    client = make_client(server)
    img = image(12, seed=3)
    img[5 * BLOCK_SIZE:6 * BLOCK_SIZE] = 0
    snap = snapshots.upload(client, img, write_manifest=False).snapshot_id
    dest = str(tmp_path / "d.img")
    held = HeldClient(client, first_held=6)
    others = interrupted(lambda: snapshots.download(held, snap, dest, workers=2), held,
                         str(tmp_path))
    # The blocks that answered after the job returned went nowhere: not into the files that
    # took the job's descriptors, not into the .partial, not into the journal.
    assert all(os.path.getsize(p) == 0 for p in others)
    assert not os.path.exists(dest)
    part = np.memmap(dest + ".partial", dtype=np.uint8, mode="r")
    ident = {"snapshot_id": snap, "volume_bytes": 1 << 30, "block_size": BLOCK_SIZE}
    journaled = Journal.read(dest + ".partial.state", ident)
    assert sorted(journaled) == list(range(6))
    for i, digest in journaled.items():
        assert hashlib.sha256(part[i * BLOCK_SIZE:(i + 1) * BLOCK_SIZE]).digest() == digest
    assert not part[6 * BLOCK_SIZE:len(img)].any()
    del part
    r = snapshots.download(client, snap, dest)
    assert r.blocks_resumed == 6 and r.blocks_redone == 0 and r.blocks_fetched == 6
    assert head(dest, len(img)) == img.tobytes()


def test_ctrl_c_mid_apply_writes_nothing_after_the_call(server, tmp_path):
    client = make_client(server)
    a = image(10, seed=4)
    b = a.copy()
    b[2 * BLOCK_SIZE:] = image(8, seed=5)
    first = snapshots.upload(client, a, write_manifest=False).snapshot_id
    second = snapshots.upload(client, b, parent_snapshot_id=first,
                              write_manifest=False).snapshot_id
    path = str(tmp_path / "a.img")
    snapshots.download(client, first, path)
    held = HeldClient(client, first_held=4)
    others = interrupted(lambda: snapshots.apply(held, path, first, second, workers=2), held,
                         str(tmp_path))
    assert all(os.path.getsize(p) == 0 for p in others)
    mid = head(path, len(b))
    assert mid[:4 * BLOCK_SIZE] == b[:4 * BLOCK_SIZE].tobytes()
    assert mid[4 * BLOCK_SIZE:] == a[4 * BLOCK_SIZE:].tobytes()
    assert os.path.exists(path + ".apply-state")
    snapshots.apply(client, path, first, second)
    assert head(path, len(b)) == b.tobytes()


def test_ctrl_c_mid_download_into_an_array_waits_for_the_blocks_in_flight(server):
    client = make_client(server)
    img = image(6, seed=6)
    snap = snapshots.upload(client, img, write_manifest=False).snapshot_id
    # The first worker's request ends last: after Ctrl-C has interrupted a join of that
    # thread, CPython before 3.13 reports it ended while it still reads into dest.
    held = HeldClient(client, first_held=2, last_thread="ebsfast-snapshots-0")
    dest = np.zeros(1 << 30, dtype=np.uint8)

    def release_later():
        while held.hold.inside < 2:
            time.sleep(0.01)
        time.sleep(1.5)  # past the pool's grace
        held.hold.release.set()
        time.sleep(1.5)
        held.last.set()

    ctrl_c_when(lambda: held.hold.inside == 2)
    threading.Thread(target=release_later, daemon=True).start()
    try:
        with pytest.raises(KeyboardInterrupt):
            snapshots.download(held, snap, dest, workers=2)
        # Those blocks went straight into dest: the call returned only after they had.
        assert held.finished == 2
        assert dest[2 * BLOCK_SIZE:4 * BLOCK_SIZE].tobytes() == img[2 * BLOCK_SIZE:
                                                                    4 * BLOCK_SIZE].tobytes()
    finally:
        held.hold.release.set()
        held.last.set()
    wait_for_pool_threads()
