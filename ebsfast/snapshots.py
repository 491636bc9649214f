"""The jobs people run with the EBS direct APIs: list, diff, download, upload (incremental),
apply, verify, and a snapshot opened as a read-only file.

    import ebsfast
    from ebsfast import snapshots

    ebs = ebsfast.client("ebs", config=snapshots.client_config())
    r = snapshots.download(ebs, "snap-0123...", "disk.img")       # resumable, sparse, atomic
    u = snapshots.upload(ebs, "disk.img")                           # + disk.img.manifest.json
    u2 = snapshots.upload(ebs, "disk.img", parent_snapshot_id=u.snapshot_id,
                          manifest="disk.img.manifest.json")        # only the changed blocks
    snapshots.apply(ebs, "old.img", "snap-old", "snap-new")         # old.img becomes snap-new
    snapshots.verify(ebs, "snap-0123...", image="disk.img").ok
    with snapshots.open(ebs, "snap-0123...") as f: f.seek(1 << 30); f.read(4096)

Every job takes ``workers`` (threads, default 16) and ``progress`` (a callable
``progress(done_blocks, total_blocks, done_bytes)``, called from worker threads at most ten
times a second). Throttling never fails a job: the requests in flight halve on each throttle
and grow back by one per window of successes (:mod:`ebsfast.concurrency`). Any other failure,
once the client's retries and a few job-level attempts are spent, stops every worker and
raises :class:`SnapshotError` naming the snapshot, the block, the reason and what to do.

Guarantees
----------
download (to a path)
    Writes ``<dest>.partial`` (sparse: the file is sized to the volume and blocks of zeros,
    and blocks the snapshot lacks, stay holes) and journals each block written with its
    SHA-256 in ``<dest>.partial.state``. Interrupted (Ctrl-C, kill, crash, full disk), the same
    call again continues: it hashes every journaled block in the ``.partial`` and fetches again
    the ones that do not match, then the rest; bytes found where the snapshot has no block
    are zeroed. Only when every block is in and verified is the file fsynced and renamed to
    ``dest``, so ``dest`` never names an incomplete image (an existing ``dest`` is replaced
    only then). The manifest ``<dest>.manifest.json`` (format in
    :mod:`ebsfast.manifest`) is written just before the rename. On a block device the blocks
    are written in place (zeros too: a device is not sparse), with no journal. To a numpy array
    or mmap, blocks go straight from the socket into the buffer; the ranges of blocks the
    snapshot lacks are zeroed unless they already read as zeros (so a fresh ``np.zeros`` or a
    new sparse mmap is never touched there).
upload
    StartSnapshot with a ClientToken (a retried start gets the same snapshot), the blocks by a
    worker pool, CompleteSnapshot with the LINEAR checksum. Each block is hashed once (two-lane
    SHA-NI, in batches ahead of the workers) and that digest serves the block's checksum, the
    aggregate and the manifest. Given the parent and its manifest, only blocks whose digest
    differs are sent, and a block the parent holds that is now zeros is written as zeros.
    A failed upload leaves its snapshot pending (the service errors it after ``timeout``).
Ctrl-C (KeyboardInterrupt)
    Every job stops starting blocks at once and raises within about half a second, without
    waiting out the requests in flight (a stalled one can take the client's read timeout
    times its attempts). A worker still in a request then is abandoned: it may finish in the
    background, but it writes nothing more: not the file, not the journal, not ``progress``.
    The ``.partial`` and its journal stay as a rerun expects them. The exception is a
    download into a numpy array or mmap: there the blocks land straight from the socket in
    the caller's buffer, so the call waits for the requests in flight to end before it
    raises (a second Ctrl-C stops that wait, and those blocks may then still land after the
    call has raised).
apply
    Writes the changed blocks in place, so an interrupted apply leaves a mix of the two
    snapshots; ``<image>.apply-state`` says so, and running the same apply again completes it
    (every write sets a block to the second snapshot's content, which is idempotent). Another
    apply on a mid-apply image is refused. A manifest beside the image for the first snapshot
    is rewritten for the second at the end.
"""
from __future__ import annotations

import base64
import builtins
import collections
import concurrent.futures
import io
import json
import logging
import math
import os
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np

from . import exceptions as _exc
from ._snapshots_io import (BLOCK_SIZE, GIB, ZERO_DIGEST, Journal, Source, data_extents,
                            fsync_dir, hash_blocks_at, is_device, is_zero_digest, map_file,
                            pwrite_all, runs, zero_range)
from .blocklist import BlockList, ChangedBlockList, TokenColumn
from .checksums import linear_checksum, sha256, sha256_blocks
from .concurrency import BlockPool, Progress, TokenBucket, is_throttle_error
from .config import Config
from .manifest import Manifest, ManifestError, manifest_path

logger = logging.getLogger("ebsfast.snapshots")

__all__ = ["ApplyResult", "DownloadResult", "SnapshotError", "SnapshotFile", "UploadResult",
           "VerifyResult", "apply", "client_config", "diff", "download", "list_blocks", "open",
           "upload", "verify"]

#: Threads per job. On this project's 2-core machine against the local server, 8 to 32
#: workers all land within a few percent of each other (the client's CPU is the limit); the
#: service needs ~100 in flight to reach its 1000 blocks/s per snapshot at 100 ms latency,
#: so callers far from the region should raise it.
DEFAULT_WORKERS = 16
BLOCKS_PER_GIB = GIB // BLOCK_SIZE
MAX_PAGE = 10000
#: the ListSnapshotBlocks / ListChangedBlocks quota, requests per second per account
LIST_RATE_PER_S = 50.0

ProgressFn = Callable[[int, int, int], Any]


class SnapshotError(_exc.EbsfastError):
    """A snapshot job stopped: ``snapshot_id``, ``block_index`` (or None), ``reason`` and
    ``advice`` say where, why and what to do; the exception that caused it is ``__cause__``."""

    def __init__(self, message: str, *, snapshot_id: str | None = None,
                 block_index: int | None = None, reason: str | None = None,
                 advice: str | None = None):
        Exception.__init__(self, message + (f" {advice}" if advice else ""))
        self.message = message
        self.snapshot_id = snapshot_id
        self.block_index = block_index
        self.reason = reason
        self.advice = advice
        self.kwargs = {"message": message, "snapshot_id": snapshot_id,
                       "block_index": block_index, "reason": reason, "advice": advice}


def client_config(workers: int | None = None, **overrides: Any) -> Config:
    """A client Config suited to these jobs: a connection per worker (a pool smaller than the
    workers opens and closes a connection per request beyond it) and standard retries."""
    n = _workers(workers)
    kw: dict[str, Any] = {"max_pool_connections": n + 4,
                          "retries": {"mode": "standard", "total_max_attempts": 5}}
    kw.update(overrides)
    return Config(**kw)


def _workers(workers: int | None) -> int:
    if workers is None:
        return DEFAULT_WORKERS
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    return workers


def _check_pool(client: Any, workers: int) -> None:
    size = getattr(getattr(getattr(client, "meta", None), "config", None),
                   "max_pool_connections", None)
    if isinstance(size, int) and size < workers:
        logger.warning("the client keeps %d connections for %d workers: the others open a "
                       "connection per request; build it with "
                       "config=ebsfast.snapshots.client_config(%d)", size, workers, workers)


# -- results ----------------------------------------------------------------------------------
class _Result:
    def to_dict(self) -> dict:
        """Plain JSON-ready values, for ``--json`` output."""
        return asdict(self)  # type: ignore[call-overload]


def _rates(nblocks: int, nbytes: int, seconds: float) -> tuple[float, float]:
    s = max(seconds, 1e-9)
    return round(nblocks / s, 1), round(nbytes / s / 1e6, 2)


@dataclass
class DownloadResult(_Result):
    snapshot_id: str
    dest: str | None
    volume_size: int  #: GiB
    blocks_total: int  #: blocks the snapshot holds
    blocks_fetched: int  #: fetched in this run
    blocks_zero: int  #: of the fetched, all zeros (left as holes in a file)
    blocks_resumed: int  #: already in the .partial and verified again
    blocks_redone: int  #: journaled but failed the check: fetched again
    bytes: int  #: bytes fetched in this run
    seconds: float
    blocks_per_s: float
    mb_per_s: float
    manifest: str | None = None
    workers: int = 0
    throttled: int = 0  #: throttling answers the job saw (after the client's retries)
    retries: int = 0  #: job-level retries of transient failures
    min_concurrency: int = 0
    final_concurrency: int = 0


@dataclass
class UploadResult(_Result):
    snapshot_id: str
    blocks_written: int
    blocks_skipped: int  #: unchanged since the parent, or zeros omitted
    bytes: int
    seconds: float
    checksum: str  #: the LINEAR aggregate sent with CompleteSnapshot
    status: str = ""  #: CompleteSnapshot's answer (the service moves on asynchronously)
    volume_size: int = 0
    parent_snapshot_id: str | None = None
    blocks_total: int = 0
    blocks_per_s: float = 0.0
    mb_per_s: float = 0.0
    manifest: str | None = None
    workers: int = 0
    throttled: int = 0
    retries: int = 0
    min_concurrency: int = 0
    final_concurrency: int = 0


@dataclass
class ApplyResult(_Result):
    image: str
    first_snapshot_id: str
    second_snapshot_id: str
    blocks_changed: int
    blocks_written: int
    blocks_zeroed: int  #: removed in the second snapshot or now zeros: holes punched
    bytes: int
    seconds: float
    volume_size: int = 0
    grown: bool = False
    manifest: str | None = None
    throttled: int = 0
    retries: int = 0
    min_concurrency: int = 0


@dataclass
class VerifyResult(_Result):
    snapshot_id: str
    ok: bool
    blocks_checked: int
    bad_blocks: list = field(default_factory=list)  #: failed their checksum from the service
    mismatched: list = field(default_factory=list)  #: image differs from the snapshot here
    unexpected_data: list = field(default_factory=list)  #: image has data, snapshot no block
    image: str | None = None
    image_size_ok: bool | None = None
    seconds: float = 0.0
    blocks_per_s: float = 0.0
    throttled: int = 0


# -- errors -------------------------------------------------------------------------------------
def _reason(exc: BaseException) -> str:
    """Why ``exc`` happened, as a clause: the caller ends the sentence."""
    return _reason_text(exc).rstrip(". ")


def _reason_text(exc: BaseException) -> str:
    if isinstance(exc, _exc.ClientError):
        err = exc.response.get("Error", {})
        reason = exc.response.get("Reason") or err.get("Reason")
        return f"{err.get('Code')}{' (' + reason + ')' if reason else ''}: {err.get('Message')}"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def _advice(exc: BaseException, again: str) -> str:
    code = (exc.response.get("Error", {}).get("Code")
            if isinstance(exc, _exc.ClientError) else None)
    if code in ("AccessDeniedException", "InvalidSignatureException",
                "UnrecognizedClientException"):
        return "Check the credentials and that their policy allows the EBS direct APIs."
    if code == "ResourceNotFoundException":
        return "Check the snapshot id and the region."
    if code == "ValidationException" and "TOKEN" in _reason(exc):
        return f"The block tokens are stale; {again} (it lists the blocks afresh)."
    if isinstance(exc, OSError):
        return f"Free space or fix permissions, then {again}."
    return f"The service or the network kept failing; {again}."


def _job_error(what: str, snapshot_id: str, again: str, indexes: np.ndarray | None = None):
    """The ``on_error`` of a job's pool. Its items are block indexes, or, given ``indexes``,
    positions in that array of block indexes: the error names the block either way."""
    def make(item: Any, exc: BaseException) -> SnapshotError:
        index = item[0] if isinstance(item, tuple) else item
        index = int(index) if isinstance(index, (int, np.integer)) else None
        if index is not None and indexes is not None:
            index = int(indexes[index]) if 0 <= index < len(indexes) else None
        where = f" at block {index}" if index is not None else ""
        return SnapshotError(f"{what} of {snapshot_id} failed{where}: {_reason(exc)}.",
                             snapshot_id=snapshot_id, block_index=index,
                             reason=_reason(exc), advice=_advice(exc, again))
    return make


def _throttle_backoff(n: int) -> float:
    return min(5.0, 0.1 * 2 ** min(n, 6))


# -- listing ----------------------------------------------------------------------------------
def _page(client: Any, operation: str, kwargs: dict, start: int, page_size: int,
          bucket: TokenBucket, stop: threading.Event):
    """One page of columns from ``start`` (``StartingBlockIndex`` rather than NextToken, so
    any range can be listed alone and a page can be fetched again)."""
    n = 0
    while True:
        bucket.acquire()
        try:
            return client.get_paginator(operation).paginate(
                **kwargs, StartingBlockIndex=int(start),
                PaginationConfig={"PageSize": page_size, "MaxItems": page_size}).columns()
        except _exc.ClientError as e:
            if not is_throttle_error(e) or stop.is_set():
                raise
            n += 1
            time.sleep(_throttle_backoff(n))


def _list_parallel(client: Any, operation: str, kwargs: dict, *, workers: int,
                   page_size: int, rate_per_s: float, progress: ProgressFn | None):
    page_size = int(page_size)
    if not 100 <= page_size <= MAX_PAGE:
        raise ValueError(f"page_size must be within 100..{MAX_PAGE}, got {page_size}")
    bucket = TokenBucket(rate_per_s)
    stop = threading.Event()
    what = kwargs.get("SnapshotId") or (f"{kwargs.get('FirstSnapshotId')} -> "
                                        f"{kwargs.get('SecondSnapshotId')}")
    try:
        return _list_ranges(client, operation, kwargs, workers, page_size, bucket, stop,
                            progress)
    except (_exc.ClientError, _exc.HTTPClientError, _exc.ConnectionError) as e:
        raise SnapshotError(f"listing the blocks of {what} failed: {_reason(e)}.",
                            snapshot_id=kwargs.get("SnapshotId")
                            or kwargs.get("SecondSnapshotId"), reason=_reason(e),
                            advice=_advice(e, "run it again")) from e


def _list_ranges(client, operation, kwargs, workers, page_size, bucket, stop, progress):
    first = _page(client, operation, kwargs, 0, page_size, bucket, stop)
    pieces = [first]
    if len(first) >= page_size:
        space = int(first.volume_size or 0) * BLOCKS_PER_GIB
        begin = int(first.indexes[-1]) + 1
        remaining = max(0, space - begin)
        # A range shorter than a page costs a request for little; more ranges than workers
        # only queue.
        nranges = max(1, min(workers, math.ceil(remaining / page_size)))
        bounds = [begin + remaining * k // nranges for k in range(nranges + 1)]
        bounds[-1] = max(bounds[-1], space)
        done_pages = [1]
        lock = threading.Lock()

        def one_range(a: int, b: int) -> list:
            got = []
            cur = a
            while cur < b and not stop.is_set():
                part = _page(client, operation, kwargs, cur, page_size, bucket, stop)
                if len(part) == 0:
                    break
                inside = part.indexes < b
                got.append(part if inside.all() else part.select(inside))
                with lock:
                    done_pages[0] += 1
                    if progress is not None:
                        progress(done_pages[0], 0, 0)
                if len(part) < page_size or not inside.all():
                    break
                cur = int(part.indexes[-1]) + 1
            return got

        with concurrent.futures.ThreadPoolExecutor(max_workers=nranges,
                                                   thread_name_prefix="ebsfast-list") as ex:
            futures = [ex.submit(one_range, bounds[k], bounds[k + 1]) for k in range(nranges)]
            try:
                for f in futures:
                    pieces.extend(f.result())
            except BaseException:
                stop.set()
                raise
    return first, pieces


def _dedupe_order(indexes: np.ndarray) -> np.ndarray:
    order = np.argsort(indexes, kind="stable")
    sorted_idx = indexes[order]
    keep = np.ones(len(order), dtype=bool)
    keep[1:] = sorted_idx[1:] != sorted_idx[:-1]
    return order[keep]


def list_blocks(client: Any, snapshot_id: str, *, workers: int | None = None,
                progress: ProgressFn | None = None, page_size: int = MAX_PAGE,
                list_rate_per_s: float = LIST_RATE_PER_S) -> BlockList:
    """Every block of a snapshot, sorted by index, as columns. A first page gives the volume
    size; when there is more, the rest of the index space is split into up to ``workers``
    disjoint ranges listed in parallel from their ``StartingBlockIndex``, all sharing one
    token bucket of ``list_rate_per_s`` requests a second. ``progress`` gets
    ``(pages_done, 0, 0)``: the total is unknown while listing."""
    first, pieces = _list_parallel(client, "list_snapshot_blocks", {"SnapshotId": snapshot_id},
                                   workers=_workers(workers), page_size=page_size,
                                   rate_per_s=list_rate_per_s, progress=progress)
    if len(pieces) == 1:
        return first
    merged = BlockList(np.concatenate([p.indexes for p in pieces]),
                       TokenColumn.concat(p.tokens for p in pieces),
                       volume_size=first.volume_size, block_size=first.block_size,
                       expiry_time=min((p.expiry_time for p in pieces
                                        if p.expiry_time is not None), default=None))
    return merged.select(_dedupe_order(merged.indexes))


def diff(client: Any, first_snapshot_id: str, second_snapshot_id: str, *,
         workers: int | None = None, progress: ProgressFn | None = None,
         page_size: int = MAX_PAGE, list_rate_per_s: float = LIST_RATE_PER_S
         ) -> ChangedBlockList:
    """ListChangedBlocks between two snapshots of one lineage, sorted, listed in parallel as
    :func:`list_blocks` does."""
    kwargs = {"FirstSnapshotId": first_snapshot_id, "SecondSnapshotId": second_snapshot_id}
    first, pieces = _list_parallel(client, "list_changed_blocks", kwargs,
                                   workers=_workers(workers), page_size=page_size,
                                   rate_per_s=list_rate_per_s, progress=progress)
    if len(pieces) == 1:
        return first
    merged = ChangedBlockList(
        np.concatenate([p.indexes for p in pieces]),
        TokenColumn.concat(p.first for p in pieces), TokenColumn.concat(p.second for p in pieces),
        np.concatenate([p.has_first for p in pieces]),
        np.concatenate([p.has_second for p in pieces]),
        volume_size=first.volume_size, block_size=first.block_size,
        expiry_time=min((p.expiry_time for p in pieces if p.expiry_time is not None),
                        default=None))
    return merged.select(_dedupe_order(merged.indexes))


# -- block reads shared by the jobs -------------------------------------------------------------
def _fetch(client: Any, snapshot_id: str, index: int, token: str, out: Any) -> bytes:
    """GetSnapshotBlock into ``out``; returns the block's SHA-256, which the client has just
    checked against x-amz-Checksum (so it costs nothing here)."""
    r = client.get_snapshot_block_into(SnapshotId=snapshot_id, BlockIndex=int(index),
                                       BlockToken=token, Out=out)
    length = r.get("DataLength", BLOCK_SIZE)
    view = memoryview(out).cast("B") if not isinstance(out, memoryview) else out
    if length < BLOCK_SIZE:
        view[length:BLOCK_SIZE] = bytes(BLOCK_SIZE - length)
    checksum = r.get("Checksum")
    if checksum and r.get("ChecksumAlgorithm", "SHA256").upper() == "SHA256" \
            and length == BLOCK_SIZE:
        return base64.b64decode(checksum)
    return sha256(view[:BLOCK_SIZE])


def _index_runs(indexes: np.ndarray) -> list[tuple[int, int]]:
    """Runs of consecutive block indexes as ``[lo, hi)`` index ranges."""
    return [(int(indexes[s]), int(indexes[e - 1]) + 1) for s, e in runs(indexes)]


def _new_block() -> np.ndarray:
    return np.empty(BLOCK_SIZE, dtype=np.uint8)


# -- download -----------------------------------------------------------------------------------
def _writable_buffer(dest: Any) -> memoryview | None:
    if isinstance(dest, (str, bytes, os.PathLike)):
        return None
    try:
        view = memoryview(dest)
    except TypeError:
        return None
    if view.readonly:
        raise ValueError("dest is a read-only buffer; pass a writable numpy array or mmap")
    if not view.c_contiguous:
        raise ValueError("dest must be a C-contiguous buffer")
    return view.cast("B") if view.format != "B" or view.ndim != 1 else view


def download(client: Any, snapshot_id: str, dest: Any, *, workers: int | None = None,
             progress: ProgressFn | None = None, page_size: int = MAX_PAGE,
             fsync: bool = True) -> DownloadResult:
    """The whole snapshot into ``dest``: a path (an image file, or a block device), or a
    writable numpy array / mmap of at least the volume size. See the module docstring for
    what is guaranteed when it is interrupted."""
    t0 = time.monotonic()
    n_workers = _workers(workers)
    _check_pool(client, n_workers)
    view = _writable_buffer(dest)
    if view is not None:
        return _download_to_buffer(client, snapshot_id, view, n_workers, progress, page_size,
                                   t0)
    path = os.fspath(dest)
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if is_device(path):
        return _download_to_device(client, snapshot_id, path, n_workers, progress, page_size,
                                   t0, fsync)
    return _download_to_file(client, snapshot_id, path, n_workers, progress, page_size, t0,
                             fsync)


def _open_or_explain(path: str, flags: int, snapshot_id: str, what: str) -> int:
    try:
        return os.open(path, flags, 0o644)
    except OSError as e:
        raise SnapshotError(f"cannot {what} {path}: {e.strerror}.", snapshot_id=snapshot_id,
                            reason=e.strerror, advice="Check that the directory exists and "
                            "is writable.") from e


def _download_to_file(client, snapshot_id, path, n_workers, progress, page_size, t0, fsync):
    partial = path + ".partial"
    state_path = partial + ".state"
    # Fail on an unwritable destination before any request is made.
    fd = _open_or_explain(partial, os.O_RDWR | os.O_CREAT, snapshot_id, "write")
    journal = None
    try:
        blocks = list_blocks(client, snapshot_id, workers=n_workers, page_size=page_size)
        volume_size = int(blocks.volume_size or 0)
        nbytes = volume_size * GIB
        ident = {"snapshot_id": snapshot_id, "volume_bytes": nbytes, "block_size": BLOCK_SIZE}
        n = len(blocks)
        digests = np.zeros((n, 32), dtype=np.uint8)
        have = np.zeros(n, dtype=bool)
        recorded = Journal.read(state_path, ident)
        resumed = redone = 0
        good: dict[int, bytes] = {}
        resuming = recorded is not None and os.fstat(fd).st_size == nbytes
        if resuming:
            good, redone = _recheck(fd, nbytes, blocks, recorded, digests, have)
            resumed = len(good)
            _clear_unlisted(fd, nbytes, blocks)
        else:
            # A fresh start: any old bytes must go, or they would hide behind the holes.
            os.ftruncate(fd, 0)
            try:
                os.ftruncate(fd, nbytes)
            except OSError as e:
                raise SnapshotError(f"cannot size {partial} to {nbytes} bytes: {e.strerror}.",
                                    snapshot_id=snapshot_id, reason=e.strerror,
                                    advice="Check the free space and the file system's "
                                    "largest file size.") from e
        try:
            journal = Journal.create(state_path, ident, good)
        except OSError as e:
            raise SnapshotError(f"cannot write {state_path}: {e.strerror}.",
                                snapshot_id=snapshot_id, reason=e.strerror,
                                advice="Check that the directory is writable.") from e
        todo = np.flatnonzero(~have)
        prog = Progress(progress, n, done_blocks=resumed, done_bytes=resumed * BLOCK_SIZE)
        zero = [0]
        pool = BlockPool(n_workers)

        def work(pos: int, buf: np.ndarray) -> None:
            index = int(blocks.indexes[pos])
            d = _fetch(client, snapshot_id, index, blocks.tokens[pos], buf)
            # The block is in this worker's own buffer; the file and the journal are written
            # only through the gate, so not after an interrupted job has closed them.
            with pool.gate:
                if d == ZERO_DIGEST:
                    zero[0] += 1
                    # A fresh .partial is a hole there already; a resumed one may hold bytes
                    # (a block that failed its check, say).
                    if resuming and _holds_data(fd, buf, index * BLOCK_SIZE):
                        zero_range(fd, index * BLOCK_SIZE, BLOCK_SIZE)
                else:
                    pwrite_all(fd, buf, index * BLOCK_SIZE)
                digests[pos] = np.frombuffer(d, dtype=np.uint8)
                journal.record(index, d)
                prog.add(1, BLOCK_SIZE)

        stats = pool.run(todo.tolist(), work, scratch=_new_block,
                         on_error=_job_error("download", snapshot_id,
                                             "run the same download again to resume",
                                             blocks.indexes))
        prog.finish()
        if fsync:
            os.fsync(fd)
        manifest = Manifest(snapshot_id, volume_size, blocks.indexes, digests).save(
            manifest_path(path))
        os.close(fd)
        fd = -1
        os.replace(partial, path)
        if fsync:
            fsync_dir(path)
        journal.remove()
    finally:
        if journal is not None:
            journal.close()
        if fd >= 0:
            os.close(fd)
    seconds = time.monotonic() - t0
    fetched = len(todo)
    bps, mbps = _rates(fetched, fetched * BLOCK_SIZE, seconds)
    return DownloadResult(snapshot_id, path, volume_size, n, fetched, zero[0], resumed, redone,
                          fetched * BLOCK_SIZE, round(seconds, 3), bps, mbps, manifest,
                          n_workers, stats.throttled, stats.retries, stats.min_concurrency,
                          stats.final_concurrency)


def _recheck(fd: int, nbytes: int, blocks: BlockList, recorded: dict[int, bytes],
             digests: np.ndarray, have: np.ndarray) -> tuple[dict[int, bytes], int]:
    """Hash every journaled block of the .partial again; keep those that match."""
    idx = np.fromiter(recorded.keys(), dtype=np.int64, count=len(recorded))
    pos = np.searchsorted(blocks.indexes, idx)
    pos_c = np.minimum(pos, max(len(blocks) - 1, 0))
    listed = (pos < len(blocks)) & (blocks.indexes[pos_c] == idx) if len(blocks) else \
        np.zeros(len(idx), dtype=bool)
    idx, pos = idx[listed], pos_c[listed]
    order = np.argsort(idx)
    idx, pos = idx[order], pos[order]
    expected = np.frombuffer(b"".join(recorded[int(i)] for i in idx), dtype=np.uint8) \
        .reshape(-1, 32)
    mm, data = map_file(fd, nbytes)
    try:
        actual = hash_blocks_at(data, idx)
    finally:
        del data
        if mm is not None:
            mm.close()
    ok = np.all(actual == expected, axis=1)
    digests[pos[ok]] = expected[ok]
    have[pos[ok]] = True
    good = {int(i): recorded[int(i)] for i in idx[ok]}
    redone = int(np.count_nonzero(~ok))
    if redone:
        logger.info("%d journaled blocks failed their check and will be fetched again",
                    redone)
    return good, redone


def _holds_data(fd: int, buf: np.ndarray, offset: int) -> bool:
    """Whether the block at ``offset`` of the file has a non-zero byte (read into ``buf``)."""
    n = os.preadv(fd, [buf], offset)
    return bool(buf[:n].any())


def _clear_unlisted(fd: int, nbytes: int, blocks: BlockList) -> None:
    """Zero the blocks of a resumed .partial that the snapshot lacks but that hold bytes:
    nothing fetches them, so they must read as zeros before the image is complete. Only the
    file's data extents are read, so the holes a download leaves there cost nothing."""
    mm, data = map_file(fd, nbytes)
    try:
        found = _unlisted_data(fd, data, nbytes, blocks.indexes)
    finally:
        del data
        if mm is not None:
            mm.close()
    for lo, hi in _index_runs(np.asarray(found, dtype=np.int64)):
        zero_range(fd, lo * BLOCK_SIZE, (hi - lo) * BLOCK_SIZE)
    if found:
        logger.info("%d blocks the snapshot lacks held bytes in the .partial: zeroed",
                    len(found))


def _download_to_device(client, snapshot_id, path, n_workers, progress, page_size, t0, fsync):
    fd = _open_or_explain(path, os.O_WRONLY, snapshot_id, "open")
    try:
        blocks = list_blocks(client, snapshot_id, workers=n_workers, page_size=page_size)
        volume_size = int(blocks.volume_size or 0)
        nbytes = volume_size * GIB
        size = os.lseek(fd, 0, os.SEEK_END)
        if size < nbytes:
            raise SnapshotError(f"{path} holds {size} bytes; the snapshot needs {nbytes}.",
                                snapshot_id=snapshot_id, reason="device too small")
        n = len(blocks)
        digests = np.zeros((n, 32), dtype=np.uint8)
        listed = np.zeros(volume_size * BLOCKS_PER_GIB, dtype=bool)
        listed[blocks.indexes] = True
        # A device is not sparse: what the snapshot lacks must be zeroed explicitly.
        for lo, hi in _index_runs(np.flatnonzero(~listed)):
            zero_range(fd, lo * BLOCK_SIZE, (hi - lo) * BLOCK_SIZE, punch=False)
        prog = Progress(progress, n)
        pool = BlockPool(n_workers)

        def work(pos: int, buf: np.ndarray) -> None:
            index = int(blocks.indexes[pos])
            d = _fetch(client, snapshot_id, index, blocks.tokens[pos], buf)
            with pool.gate:
                pwrite_all(fd, buf, index * BLOCK_SIZE)
                digests[pos] = np.frombuffer(d, dtype=np.uint8)
                prog.add(1, BLOCK_SIZE)

        stats = pool.run(range(n), work, scratch=_new_block,
                         on_error=_job_error("download", snapshot_id, "run the download again",
                                             blocks.indexes))
        prog.finish()
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)
    seconds = time.monotonic() - t0
    bps, mbps = _rates(n, n * BLOCK_SIZE, seconds)
    return DownloadResult(snapshot_id, path, volume_size, n, n,
                          int(np.count_nonzero(is_zero_digest(digests))), 0, 0,
                          n * BLOCK_SIZE, round(seconds, 3), bps, mbps, None, n_workers,
                          stats.throttled, stats.retries, stats.min_concurrency,
                          stats.final_concurrency)


def _download_to_buffer(client, snapshot_id, view, n_workers, progress, page_size, t0):
    blocks = list_blocks(client, snapshot_id, workers=n_workers, page_size=page_size)
    volume_size = int(blocks.volume_size or 0)
    nbytes = volume_size * GIB
    if len(view) < nbytes:
        raise ValueError(f"dest holds {len(view)} bytes; the snapshot's volume is {nbytes}")
    arr = np.frombuffer(view, dtype=np.uint8)
    listed = np.zeros(volume_size * BLOCKS_PER_GIB, dtype=bool)
    listed[blocks.indexes] = True
    # Reading a never-touched page of np.zeros or of a sparse mmap allocates nothing, so
    # checking first keeps such a destination as small as the data.
    step = 128  # blocks per check: 64 MiB
    for lo, hi in _index_runs(np.flatnonzero(~listed)):
        for a in range(lo, hi, step):
            b = min(hi, a + step)
            region = arr[a * BLOCK_SIZE:b * BLOCK_SIZE]
            if region.any():
                region[:] = 0
    n = len(blocks)
    zero = np.zeros(n, dtype=bool)
    prog = Progress(progress, n)

    def work(pos: int, _buf: Any) -> None:
        index = int(blocks.indexes[pos])
        off = index * BLOCK_SIZE
        d = _fetch(client, snapshot_id, index, blocks.tokens[pos], view[off:off + BLOCK_SIZE])
        zero[pos] = d == ZERO_DIGEST
        prog.add(1, BLOCK_SIZE)

    # Each block is read from the socket straight into dest, so no gate can keep an abandoned
    # worker out of it: on Ctrl-C the pool waits for the requests in flight (grace_s=None).
    stats = BlockPool(n_workers).run(range(n), work, grace_s=None,
                                     on_error=_job_error("download", snapshot_id,
                                                         "run the download again",
                                                         blocks.indexes))
    prog.finish()
    seconds = time.monotonic() - t0
    bps, mbps = _rates(n, n * BLOCK_SIZE, seconds)
    return DownloadResult(snapshot_id, None, volume_size, n, n, int(np.count_nonzero(zero)),
                          0, 0, n * BLOCK_SIZE, round(seconds, 3), bps, mbps, None, n_workers,
                          stats.throttled, stats.retries, stats.min_concurrency,
                          stats.final_concurrency)


# -- upload ---------------------------------------------------------------------------------------
def _tags(tags: Any) -> list | None:
    if tags is None:
        return None
    if isinstance(tags, dict):
        return [{"Key": str(k), "Value": str(v)} for k, v in tags.items()]
    return list(tags)


def upload(client: Any, source: Any, *, parent_snapshot_id: str | None = None,
           manifest: Any = None, description: str | None = None, tags: Any = None,
           encrypted: bool | None = None, kms_key_arn: str | None = None,
           omit_zero_blocks: bool = False, workers: int | None = None,
           progress: ProgressFn | None = None, volume_size: int | None = None,
           timeout: int | None = None, write_manifest: Any = None,
           client_token: str | None = None, batch_blocks: int = 128,
           hash_threads: int | None = None) -> UploadResult:
    """A new snapshot from ``source`` (a path to an image or block device, or a buffer).

    ``volume_size`` (GiB) defaults to the source size rounded up (at least the parent's).
    ``tags``: boto3's list of ``{"Key", "Value"}`` or a dict. ``timeout``: minutes the snapshot
    may stay pending (StartSnapshot's Timeout). ``manifest``: the parent's manifest (a path or
    a :class:`~ebsfast.manifest.Manifest`); with it only blocks whose digest differs are sent.
    ``write_manifest``: where to write the new snapshot's manifest (default: beside a path
    source; False: nowhere). ``client_token``: StartSnapshot's idempotency token (default a
    fresh UUID4)."""
    t0 = time.monotonic()
    n_workers = _workers(workers)
    _check_pool(client, n_workers)
    parent_man = _parent_manifest(manifest, parent_snapshot_id)
    src = Source(source)
    try:
        return _upload(client, src, parent_snapshot_id, parent_man, description, tags,
                       encrypted, kms_key_arn, omit_zero_blocks, n_workers, progress,
                       volume_size, timeout, write_manifest, client_token, batch_blocks,
                       hash_threads, t0)
    finally:
        src.close()


def _parent_manifest(manifest: Any, parent_snapshot_id: str | None) -> Manifest | None:
    if manifest is None:
        return None
    if parent_snapshot_id is None:
        raise ValueError("manifest= describes the parent snapshot; pass parent_snapshot_id= "
                         "too")
    m = manifest if isinstance(manifest, Manifest) else Manifest.load(manifest)
    if m.snapshot_id != parent_snapshot_id:
        # Comparing against another snapshot's digests would skip blocks the parent lacks.
        raise ManifestError(f"the manifest is of {m.snapshot_id}, not of the parent "
                            f"{parent_snapshot_id}")
    if m.block_size != BLOCK_SIZE:
        raise ManifestError(f"the manifest's block size is {m.block_size}, not {BLOCK_SIZE}")
    return m


def _upload(client, src, parent_id, parent_man, description, tags, encrypted, kms_key_arn,
            omit_zero, n_workers, progress, volume_size, timeout, write_manifest, client_token,
            batch_blocks, hash_threads, t0) -> UploadResult:
    size = src.size
    if size == 0 and volume_size is None:
        raise ValueError("the source is empty; pass volume_size= for an empty snapshot")
    # Which blocks the parent holds (indexes), and, with its manifest, their digests.
    # The parent's volume size too: the new volume may not be smaller.
    if parent_man is not None:
        parent_idx = parent_man.indexes
        parent_gib = int(parent_man.volume_size)
    elif parent_id is not None:
        parent_blocks = list_blocks(client, parent_id, workers=n_workers)
        parent_idx = parent_blocks.indexes
        parent_gib = int(parent_blocks.volume_size or 0)
    else:
        parent_idx = np.empty(0, dtype=np.int64)
        parent_gib = 0
    if volume_size is None:
        volume_size = max(1, -(-size // GIB), parent_gib)
    if volume_size * GIB < size:
        raise ValueError(f"volume_size {volume_size} GiB is smaller than the source "
                         f"({size} bytes)")
    n_src = -(-size // BLOCK_SIZE)
    n_total = max(n_src, int(parent_idx[-1]) + 1 if len(parent_idx) else 0)
    if n_total > volume_size * BLOCKS_PER_GIB:
        raise ValueError(f"the parent holds block {n_total - 1}, beyond a {volume_size} GiB "
                         "volume")
    in_parent = np.zeros(n_total, dtype=bool)
    in_parent[parent_idx] = True

    params: dict[str, Any] = {"VolumeSize": int(volume_size),
                              "ClientToken": client_token or str(uuid.uuid4())}
    for key, value in (("ParentSnapshotId", parent_id), ("Description", description),
                       ("Tags", _tags(tags)), ("Encrypted", encrypted),
                       ("KmsKeyArn", kms_key_arn), ("Timeout", timeout)):
        if value is not None:
            params[key] = value
    snap_id = client.start_snapshot(**params)["SnapshotId"]

    data = src.data
    digests = np.zeros((n_total, 32), dtype=np.uint8)
    sent = np.zeros(n_total, dtype=bool)
    tail = None
    if size % BLOCK_SIZE:
        tail = np.zeros(BLOCK_SIZE, dtype=np.uint8)
        tail[:size % BLOCK_SIZE] = data[(n_src - 1) * BLOCK_SIZE:]
    zero_block = np.zeros(BLOCK_SIZE, dtype=np.uint8)
    whole = size // BLOCK_SIZE
    skipped = [0]
    # Blocks wholly in a hole of a sparse image are zeros: their digest is known unread.
    has_data = src.data_blocks()
    zero_row = np.frombuffer(ZERO_DIGEST, dtype=np.uint8)

    def batches():
        # Hashing runs here, a batch ahead of the workers, in the pool's feeder thread.
        for a in range(0, n_total, batch_blocks):
            b = min(n_total, a + batch_blocks)
            full_end = min(b, whole)
            if full_end > a:
                if has_data is None:
                    sha256_blocks(data[a * BLOCK_SIZE:full_end * BLOCK_SIZE],
                                  out=digests[a:full_end], threads=hash_threads)
                else:
                    digests[a:full_end] = zero_row
                    for lo, hi in _index_runs(a + np.flatnonzero(has_data[a:full_end])):
                        sha256_blocks(data[lo * BLOCK_SIZE:hi * BLOCK_SIZE],
                                      out=digests[lo:hi], threads=hash_threads)
            for j in range(max(a, whole), b):
                block = tail if (j == n_src - 1 and tail is not None) else zero_block
                digests[j] = np.frombuffer(sha256(block), dtype=np.uint8)
            d = digests[a:b]
            zeros = is_zero_digest(d)
            here = in_parent[a:b]
            if parent_man is not None:
                present, pd = parent_man.lookup(np.arange(a, b))
                changed = ~present | np.any(pd != d, axis=1)
            else:
                changed = np.ones(b - a, dtype=bool)
            # A block the parent holds that is zeros now changed and is written; zeros the
            # parent lacks are omitted only on request (unwritten blocks of an encrypted
            # snapshot do not read as zeros).
            send = changed & ~(zeros & ~here & omit_zero)
            n_skip = int(np.count_nonzero(~send))
            skipped[0] += n_skip
            if n_skip:
                with pool.gate:  # settled without a request: progress still reaches 100%
                    prog.add(n_skip, 0)
            yield from (a + np.flatnonzero(send)).tolist()

    prog = Progress(progress, n_total)
    pool = BlockPool(n_workers)

    def work(index: int, _buf: Any) -> None:
        if index < whole:
            block = data[index * BLOCK_SIZE:(index + 1) * BLOCK_SIZE]
        elif index == n_src - 1 and tail is not None:
            block = tail
        else:
            block = zero_block
        client.put_snapshot_block(SnapshotId=snap_id, BlockIndex=index, BlockData=block,
                                  DataLength=BLOCK_SIZE, ChecksumAlgorithm="SHA256",
                                  Checksum=base64.b64encode(digests[index].tobytes())
                                  .decode("ascii"))
        with pool.gate:
            sent[index] = True
            prog.add(1, BLOCK_SIZE)

    again = (f"snapshot {snap_id} stays pending until its timeout, then goes to error; run "
             "the upload again (it starts a new snapshot)")
    stats = pool.run(batches(), work, on_error=_job_error("upload", snap_id, again))
    prog.finish()
    written = np.flatnonzero(sent)
    checksum = linear_checksum(digests[written])
    try:
        status = client.complete_snapshot(
            SnapshotId=snap_id, ChangedBlocksCount=len(written), Checksum=checksum,
            ChecksumAlgorithm="SHA256", ChecksumAggregationMethod="LINEAR").get("Status", "")
    except _exc.ClientError as e:
        raise SnapshotError(f"completing {snap_id} failed: {_reason(e)}.", snapshot_id=snap_id,
                            reason=_reason(e), advice=_advice(e, again)) from e
    if status == "error":
        raise SnapshotError(f"the service put {snap_id} in the error state on completion "
                            f"({len(written)} blocks, LINEAR checksum {checksum}).",
                            snapshot_id=snap_id, reason="completion rejected",
                            advice="Run the upload again; if it recurs, the source changed "
                            "while it was read.")
    man_path = None
    if write_manifest is None and src.name is not None and not is_device(src.name):
        write_manifest = manifest_path(src.name)
    if write_manifest:
        holds = np.flatnonzero(in_parent | sent)
        man_path = Manifest(snap_id, int(volume_size), holds, digests[holds],
                            parent_snapshot_id=parent_id).save(write_manifest)
    seconds = time.monotonic() - t0
    nbytes = len(written) * BLOCK_SIZE
    bps, mbps = _rates(len(written), nbytes, seconds)
    return UploadResult(snap_id, len(written), skipped[0], nbytes, round(seconds, 3), checksum,
                        status, int(volume_size), parent_id, n_total, bps, mbps, man_path,
                        n_workers, stats.throttled, stats.retries, stats.min_concurrency,
                        stats.final_concurrency)


# -- apply -----------------------------------------------------------------------------------------
def apply(client: Any, image: Any, first_snapshot_id: str, second_snapshot_id: str, *,
          workers: int | None = None, progress: ProgressFn | None = None,
          page_size: int = MAX_PAGE, fsync: bool = True) -> ApplyResult:
    """Bring ``image`` (a path to an image of the first snapshot) up to the second by
    fetching only the blocks that changed between them; blocks the second snapshot no longer
    holds, and blocks now all zeros, become holes. The file grows if the second volume is
    larger. See the module docstring for interruption."""
    t0 = time.monotonic()
    n_workers = _workers(workers)
    _check_pool(client, n_workers)
    path = os.fspath(image)
    if not os.path.exists(path):
        raise SnapshotError(f"{path} does not exist.", snapshot_id=first_snapshot_id,
                            reason="no image", advice=f"Download {first_snapshot_id} first.")
    marker = path + ".apply-state"
    ident = {"first": first_snapshot_id, "second": second_snapshot_id}
    if os.path.exists(marker):
        with builtins.open(marker, encoding="utf-8") as f:
            try:
                prior = json.load(f)
            except ValueError:
                prior = None
        if prior != ident and prior is not None:
            raise SnapshotError(
                f"{path} is part-way through applying {prior.get('first')} -> "
                f"{prior.get('second')}.", snapshot_id=second_snapshot_id,
                reason="image mid-apply",
                advice="Run that apply again to finish it first.")
    man_file = manifest_path(path)
    man = None
    if os.path.exists(man_file):
        man = Manifest.load(man_file)
        if man.snapshot_id not in (first_snapshot_id, second_snapshot_id):
            raise SnapshotError(f"{path} is an image of {man.snapshot_id} (its manifest says "
                                f"so), not of {first_snapshot_id}.",
                                snapshot_id=first_snapshot_id, reason="wrong image",
                                advice="Pass the image of the first snapshot.")
    changes = diff(client, first_snapshot_id, second_snapshot_id, workers=n_workers,
                   page_size=page_size)
    volume_size = int(changes.volume_size or 0)
    nbytes = volume_size * GIB
    tmp = marker + ".tmp"
    with builtins.open(tmp, "w", encoding="utf-8") as f:
        json.dump(ident, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, marker)
    fd = _open_or_explain(path, os.O_RDWR, second_snapshot_id, "write")
    n = len(changes)
    digests = np.zeros((n, 32), dtype=np.uint8)
    zeroed = np.zeros(n, dtype=bool)
    try:
        grown = os.fstat(fd).st_size < nbytes
        if grown:
            os.ftruncate(fd, nbytes)
        prog = Progress(progress, n)
        pool = BlockPool(n_workers)

        def work(pos: int, buf: np.ndarray) -> None:
            index = int(changes.indexes[pos])
            off = index * BLOCK_SIZE
            d = None
            if changes.has_second[pos]:
                d = _fetch(client, second_snapshot_id, index, changes.second[pos], buf)
            with pool.gate:
                if d is not None:
                    digests[pos] = np.frombuffer(d, dtype=np.uint8)
                if d is not None and d != ZERO_DIGEST:
                    pwrite_all(fd, buf, off)
                else:
                    zero_range(fd, off, BLOCK_SIZE)
                    zeroed[pos] = True
                prog.add(1, BLOCK_SIZE)

        stats = pool.run(range(n), work, scratch=_new_block,
                         on_error=_job_error("apply", second_snapshot_id,
                                             "run the same apply again to finish it",
                                             changes.indexes))
        prog.finish()
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)
    new_man = None
    if man is not None and man.snapshot_id == first_snapshot_id:
        keep = ~np.isin(man.indexes, changes.indexes)
        has = changes.has_second
        idx = np.concatenate([man.indexes[keep], changes.indexes[has]])
        dig = np.concatenate([man.digests[keep], digests[has]])
        new_man = Manifest(second_snapshot_id, volume_size, idx, dig).save(man_file)
    elif man is not None:
        new_man = man_file
    os.unlink(marker)
    seconds = time.monotonic() - t0
    fetched = int(np.count_nonzero(changes.has_second))
    return ApplyResult(path, first_snapshot_id, second_snapshot_id, n,
                       int(np.count_nonzero(~zeroed)), int(np.count_nonzero(zeroed)),
                       fetched * BLOCK_SIZE, round(seconds, 3), volume_size, grown, new_man,
                       stats.throttled, stats.retries, stats.min_concurrency)


# -- verify ----------------------------------------------------------------------------------------
def verify(client: Any, snapshot_id: str, image: Any = None, *, workers: int | None = None,
           progress: ProgressFn | None = None, page_size: int = MAX_PAGE) -> VerifyResult:
    """Read every block of the snapshot with checksum verification; a block whose data fails
    its checksum on every attempt the client makes is reported in ``bad_blocks``. With
    ``image`` (a path), also compare the image block by block with the snapshot:
    ``mismatched`` lists the blocks that differ (blocks the snapshot lacks count when the
    image holds non-zero data there; those are also in ``unexpected_data``)."""
    t0 = time.monotonic()
    n_workers = _workers(workers)
    _check_pool(client, n_workers)
    blocks = list_blocks(client, snapshot_id, workers=n_workers, page_size=page_size)
    n = len(blocks)
    digests = np.zeros((n, 32), dtype=np.uint8)
    read_ok = np.ones(n, dtype=bool)
    prog = Progress(progress, n)
    pool = BlockPool(n_workers)

    def work(pos: int, buf: np.ndarray) -> None:
        index = int(blocks.indexes[pos])
        try:
            d = _fetch(client, snapshot_id, index, blocks.tokens[pos], buf)
        except _exc.ChecksumMismatchError:
            d = None
        with pool.gate:
            if d is None:
                read_ok[pos] = False
            else:
                digests[pos] = np.frombuffer(d, dtype=np.uint8)
            prog.add(1, BLOCK_SIZE)

    stats = pool.run(range(n), work, scratch=_new_block,
                     on_error=_job_error("verify", snapshot_id, "run the verify again",
                                         blocks.indexes))
    prog.finish()
    bad = blocks.indexes[~read_ok].tolist()
    mismatched: list = []
    unexpected: list = []
    size_ok = None
    path = None
    if image is not None:
        path = os.fspath(image)
        nbytes = int(blocks.volume_size or 0) * GIB
        fd = os.open(path, os.O_RDONLY)
        try:
            size = os.lseek(fd, 0, os.SEEK_END)
            size_ok = size == nbytes
            mm, data = map_file(fd, size)
            try:
                local = hash_blocks_at(data, blocks.indexes)
                differ = read_ok & np.any(local != digests, axis=1)
                found = set(blocks.indexes[differ].tolist())
                unexpected = _unlisted_data(fd, data, size, blocks.indexes)
                found.update(unexpected)
                mismatched = sorted(found)
            finally:
                del data
                if mm is not None:
                    mm.close()
        finally:
            os.close(fd)
    seconds = time.monotonic() - t0
    bps, _ = _rates(n, n * BLOCK_SIZE, seconds)
    return VerifyResult(snapshot_id, not bad and not mismatched, n, bad, mismatched,
                        unexpected, path, size_ok, round(seconds, 3), bps, stats.throttled)


def _unlisted_data(fd: int, data: np.ndarray, size: int, listed_idx: np.ndarray) -> list:
    """Blocks the snapshot lacks where the image holds non-zero bytes (only the file's data
    extents are read, so holes cost nothing)."""
    nblocks = -(-size // BLOCK_SIZE)
    listed = np.zeros(nblocks, dtype=bool)
    listed[listed_idx[listed_idx < nblocks]] = True
    found = []
    for start, end in data_extents(fd, size):
        a, b = start // BLOCK_SIZE, -(-end // BLOCK_SIZE)
        for lo, hi in _index_runs(a + np.flatnonzero(~listed[a:b])):
            for j in range(lo, hi, 128):
                k = min(hi, j + 128)
                chunk = data[j * BLOCK_SIZE:min(k * BLOCK_SIZE, size)]
                if not chunk.any():
                    continue
                for m in range(j, k):
                    if data[m * BLOCK_SIZE:min((m + 1) * BLOCK_SIZE, size)].any():
                        found.append(m)
    return sorted(set(found))


# -- open ------------------------------------------------------------------------------------------
class SnapshotFile(io.RawIOBase):
    """A snapshot as a read-only, seekable binary file (``io.RawIOBase``): blocks are read on
    demand into a bounded LRU cache; sequential reading starts the next ``read_ahead`` blocks
    in a background pool; blocks the snapshot lacks read as zeros. Meant for one reader at a
    time (a lock keeps the cache consistent if threads share it). Build it with :func:`open`."""

    def __init__(self, client: Any, snapshot_id: str, *, cache_blocks: int = 64,
                 read_ahead: int = 8, blocks: BlockList | None = None):
        super().__init__()
        if read_ahead < 0 or cache_blocks < 1:
            raise ValueError("cache_blocks must be >= 1 and read_ahead >= 0")
        self._client = client
        self.snapshot_id = snapshot_id
        self._blocks = blocks if blocks is not None else list_blocks(client, snapshot_id)
        self.size = int(self._blocks.volume_size or 0) * GIB
        self._read_ahead = int(read_ahead)
        # read-ahead blocks must survive in the cache until they are read
        self._cache_blocks = max(int(cache_blocks), self._read_ahead + 2)
        self._cache: collections.OrderedDict[int, np.ndarray] = collections.OrderedDict()
        self._inflight: dict[int, concurrent.futures.Future] = {}
        self._lock = threading.Lock()
        self._pos = 0
        self._last_block = -2
        self._pool = (concurrent.futures.ThreadPoolExecutor(
            max_workers=max(1, min(self._read_ahead, 16)),
            thread_name_prefix="ebsfast-readahead") if self._read_ahead else None)
        self._zeros = np.zeros(BLOCK_SIZE, dtype=np.uint8)
        self._zeros.flags.writeable = False
        self.blocks_fetched = 0

    # io protocol
    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def writable(self) -> bool:
        return False

    def __len__(self) -> int:
        return self.size

    def tell(self) -> int:
        self._checkClosed()
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._checkClosed()
        if whence == io.SEEK_SET:
            pos = offset
        elif whence == io.SEEK_CUR:
            pos = self._pos + offset
        elif whence == io.SEEK_END:
            pos = self.size + offset
        else:
            raise ValueError(f"invalid whence ({whence})")
        if pos < 0:
            raise OSError(22, f"negative seek position {pos}")
        self._pos = int(pos)
        return self._pos

    def readinto(self, b: Any) -> int:
        self._checkClosed()
        out = memoryview(b).cast("B")
        pos, done = self._pos, 0
        want = min(len(out), max(0, self.size - pos))
        while done < want:
            index, off = divmod(pos + done, BLOCK_SIZE)
            block = self._block(index)
            k = min(want - done, BLOCK_SIZE - off)
            out[done:done + k] = block[off:off + k].data
            done += k
        self._pos = pos + done
        return done

    def readall(self) -> bytes:
        return self.read(max(0, self.size - self._pos))

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            return self.readall()
        buf = bytearray(min(size, max(0, self.size - self._pos)))
        n = self.readinto(buf)
        return bytes(buf[:n])

    def close(self) -> None:
        if not self.closed:
            if self._pool is not None:
                self._pool.shutdown(wait=False, cancel_futures=True)
            with self._lock:
                self._cache.clear()
                self._inflight.clear()
        super().close()

    # blocks
    def _position(self, index: int) -> int:
        idx = self._blocks.indexes
        p = int(np.searchsorted(idx, index))
        return p if p < len(idx) and idx[p] == index else -1

    def _fetch_block(self, index: int, pos: int) -> np.ndarray:
        buf = np.empty(BLOCK_SIZE, dtype=np.uint8)
        try:
            _fetch(self._client, self.snapshot_id, index, self._blocks.tokens[pos], buf)
        except Exception as e:
            raise SnapshotError(f"reading block {index} of {self.snapshot_id} failed: "
                                f"{_reason(e)}.", snapshot_id=self.snapshot_id,
                                block_index=index, reason=_reason(e),
                                advice=_advice(e, "read again")) from e
        self.blocks_fetched += 1
        return buf

    def _store(self, index: int, buf: np.ndarray) -> None:
        with self._lock:
            self._cache[index] = buf
            self._cache.move_to_end(index)
            while len(self._cache) > self._cache_blocks:
                self._cache.popitem(last=False)

    def _background(self, index: int, pos: int) -> np.ndarray:
        buf = self._fetch_block(index, pos)
        self._store(index, buf)
        with self._lock:
            self._inflight.pop(index, None)
        return buf

    def _block(self, index: int) -> np.ndarray:
        pos = self._position(index)
        if pos < 0:
            block = self._zeros
        else:
            with self._lock:
                block = self._cache.get(index)
                if block is not None:
                    self._cache.move_to_end(index)
                fut = self._inflight.get(index) if block is None else None
            if block is None and fut is not None:
                try:
                    block = fut.result()
                except (Exception, concurrent.futures.CancelledError):
                    block = None  # fetched again below, and its error raised here
            if block is None:
                block = self._fetch_block(index, pos)
                self._store(index, block)
        if index != self._last_block:
            if index == self._last_block + 1:
                self._start_read_ahead(index + 1)
            self._last_block = index
        return block

    def _start_read_ahead(self, start: int) -> None:
        if self._pool is None:
            return
        nblocks = self.size // BLOCK_SIZE
        idx = self._blocks.indexes
        with self._lock:
            for index in range(start, min(start + self._read_ahead, nblocks)):
                if index in self._cache or index in self._inflight:
                    continue
                p = int(np.searchsorted(idx, index))
                if p >= len(idx) or idx[p] != index:
                    continue
                self._inflight[index] = self._pool.submit(self._background, index, p)


def open(client: Any, snapshot_id: str, *, cache_blocks: int = 64,  # noqa: A001
         read_ahead: int = 8) -> SnapshotFile:
    """The snapshot as a read-only seekable file (see :class:`SnapshotFile`); wrap it in
    ``io.BufferedReader`` for small reads."""
    return SnapshotFile(client, snapshot_id, cache_blocks=cache_blocks, read_ahead=read_ahead)
