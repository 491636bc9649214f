"""SHA-256 checksums of EBS blocks: whole buffers, per-block digests, verification against the
``x-amz-Checksum`` values EBS sends, and the LINEAR aggregate that CompleteSnapshot takes.

Arguments are validated here, once; the kernel (``ebsfast._sha256`` or its pure-Python twin,
chosen by ``ebsfast._backend``) bounds-checks again, so a direct caller cannot make it read or
write out of bounds either.
"""
from __future__ import annotations

import base64
import binascii
import concurrent.futures
import os
import re
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Union

import numpy as np

from . import _backend

if TYPE_CHECKING:
    import sys

    import numpy.typing as npt

    if sys.version_info >= (3, 12):
        from collections.abc import Buffer
    else:
        from typing_extensions import Buffer

    # One digest as EBS or a caller may hold it: 44-char base64 (str or bytes) or 32 raw bytes.
    DigestLike = Union[str, bytes, bytearray, memoryview]
    DigestsLike = Union[npt.NDArray[np.uint8], Sequence[DigestLike]]

__all__ = ["DEFAULT_BLOCK_SIZE", "linear_checksum", "sha256", "sha256_blocks", "verify_blocks"]

DEFAULT_BLOCK_SIZE = 524288  # the EBS direct APIs' block size, 512 KiB

_kernel = _backend.load("sha256")

# Below this many bytes a second thread costs more than it saves (a 512 KiB block takes ~0.2 ms).
_MIN_BYTES_PER_THREAD = 1 << 20

_pool: concurrent.futures.ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _reset_pool_after_fork() -> None:
    # The child has none of the parent's worker threads; build a new pool on first use.
    global _pool, _pool_lock
    _pool = None
    _pool_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_pool_after_fork)


def _get_pool() -> concurrent.futures.ThreadPoolExecutor:
    global _pool
    pool = _pool
    if pool is None:
        with _pool_lock:
            pool = _pool
            if pool is None:
                pool = _pool = concurrent.futures.ThreadPoolExecutor(
                    max_workers=os.cpu_count() or 1, thread_name_prefix="ebsfast-sha256")
    return pool


def _data_view(data: Any) -> memoryview:
    if isinstance(data, np.ndarray):
        # The bytes of an object array would be pointers, different every run (a record
        # array's fields included). Datetime arrays cannot describe their items in a buffer,
        # but their bytes are plain integers: they are read as bytes, as hashlib reads them.
        if data.dtype.hasobject:
            raise ValueError("data holds Python objects, not bytes")
        if data.dtype.kind in "mM" and data.flags.c_contiguous:
            data = data.reshape(-1).view(np.uint8)
    try:
        mv = memoryview(data)
    except TypeError:
        raise TypeError(f"data must be a bytes-like object (buffer protocol), "
                        f"not {type(data).__name__}") from None
    except (ValueError, BufferError) as exc:  # e.g. numpy object arrays refuse to export
        raise ValueError(f"data cannot be read as bytes: {exc}") from None
    if not mv.c_contiguous:
        raise ValueError("data must be a C-contiguous buffer")
    # the item format without its field names (``T{i:FOO:}``): an O there is an object
    if "O" in re.sub(r":[^:]*:", "", mv.format):
        raise ValueError("data holds Python objects, not bytes")
    return mv


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {value}")
    return int(value)


def _nblocks(nbytes: int, block_size: int) -> int:
    return -(-nbytes // block_size)


def _ranges(n: int, nbytes: int, threads: int | None) -> list[tuple[int, int]]:
    """Contiguous block ranges, one per thread, each an even number of blocks (except the last)
    so the two-lane kernel gets whole pairs."""
    pairs = (n + 1) // 2
    if threads is None:
        threads = min(os.cpu_count() or 1, max(1, nbytes // _MIN_BYTES_PER_THREAD))
    t = max(1, min(threads, pairs))
    bounds = [min(n, 2 * (k * pairs // t)) for k in range(t + 1)]
    return [(bounds[k], bounds[k + 1]) for k in range(t) if bounds[k] < bounds[k + 1]]


def _run(fn: Any, ranges: list[tuple[int, int]], *args: Any) -> int:
    """Call fn(*args, start, stop) for each range, all but one on the pool; returns the sum."""
    if len(ranges) <= 1:
        return sum(fn(*args, a, b) or 0 for a, b in ranges)
    pool = _get_pool()
    futures = [pool.submit(fn, *args, a, b) for a, b in ranges[1:]]
    try:
        total = fn(*args, *ranges[0]) or 0
    finally:
        # Wait for every worker even on error: none may still be writing when we return.
        concurrent.futures.wait(futures)
    return total + sum(f.result() or 0 for f in futures)


def sha256(data: Buffer) -> bytes:
    """SHA-256 digest of any C-contiguous buffer (bytes, bytearray, memoryview, numpy array,
    mmap). The GIL is released while large inputs are hashed."""
    return _kernel.digest(_data_view(data))


def sha256_blocks(data: Buffer, block_size: int = DEFAULT_BLOCK_SIZE, *,
                  out: npt.NDArray[np.uint8] | None = None,
                  threads: int | None = None) -> npt.NDArray[np.uint8]:
    """SHA-256 of each ``block_size`` slice of ``data`` (the last may be shorter), as an
    ``(n, 32)`` uint8 array with ``n = ceil(len(data) / block_size)``.

    ``out``: an array to fill instead of a new one (C-contiguous, writable, uint8, ``(n, 32)``).
    ``threads``: how many threads hash at once; ``None`` means one per CPU, fewer for small
    inputs. The GIL is released while hashing.
    """
    bs = _positive_int(block_size, "block_size")
    if threads is not None:
        threads = _positive_int(threads, "threads")
    mv = _data_view(data)
    n = _nblocks(mv.nbytes, bs)
    if out is None:
        out = np.empty((n, 32), dtype=np.uint8)
    else:
        _check_out(out, n)
    _run(_kernel.digest_blocks, _ranges(n, mv.nbytes, threads), mv, bs, out)
    return out


def _check_out(out: Any, n: int) -> None:
    if not isinstance(out, np.ndarray):
        raise ValueError(f"out must be a numpy.ndarray of shape ({n}, 32), "
                         f"not {type(out).__name__}")
    if out.dtype != np.uint8:
        raise ValueError(f"out must have dtype uint8, not {out.dtype}")
    if out.shape != (n, 32):
        raise ValueError(f"out has shape {out.shape}; expected ({n}, 32), one row per block")
    if not out.flags.c_contiguous:
        raise ValueError("out must be C-contiguous")
    if not out.flags.writeable:
        raise ValueError("out must be writable")


def _decode_one(item: Any, name: str, i: int) -> bytes:
    if isinstance(item, str):
        try:
            item = item.encode("ascii")
        except UnicodeEncodeError:
            raise ValueError(f"{name}[{i}] is not base64: non-ASCII characters") from None
    elif isinstance(item, (bytearray, memoryview)):
        item = bytes(item)
    elif not isinstance(item, bytes):
        raise TypeError(f"{name}[{i}] must be a base64 str, base64 bytes or 32 raw bytes, "
                        f"not {type(item).__name__}")
    if len(item) == 32:
        return item
    if len(item) != 44:
        raise ValueError(f"{name}[{i}] must be 44 base64 characters or 32 raw bytes, "
                         f"got {len(item)} {'characters' if len(item) > 32 else 'bytes'}")
    try:
        raw = base64.b64decode(item, validate=True)
    except binascii.Error as exc:
        raise ValueError(f"{name}[{i}] is not valid base64: {exc}") from None
    # b64decode ignores non-zero padding bits; a digest that does not round-trip was mangled.
    if len(raw) != 32 or base64.b64encode(raw) != item:
        raise ValueError(f"{name}[{i}] is not the canonical base64 of a 32-byte digest")
    return raw


def _digests_array(digests: Any, name: str, n: int | None) -> np.ndarray:
    """(n, 32) C-contiguous uint8 array from an array or a sequence of digests."""
    if isinstance(digests, np.ndarray):
        if digests.dtype != np.uint8 or digests.ndim != 2 or digests.shape[1] != 32:
            raise ValueError(f"{name} must be a uint8 array of shape (n, 32), "
                             f"not {digests.dtype} {digests.shape}")
        arr = np.ascontiguousarray(digests)
    else:
        if isinstance(digests, (str, bytes, bytearray, memoryview)):
            raise TypeError(f"{name} must be a sequence of digests or an (n, 32) array, "
                            f"not a single {type(digests).__name__}")
        try:
            items = list(digests)
        except TypeError:
            raise TypeError(f"{name} must be a sequence of digests or an (n, 32) array, "
                            f"not {type(digests).__name__}") from None
        arr = np.empty((len(items), 32), dtype=np.uint8)
        for i, item in enumerate(items):
            arr[i] = np.frombuffer(_decode_one(item, name, i), dtype=np.uint8)
    if n is not None and arr.shape[0] != n:
        raise ValueError(f"{name} has {arr.shape[0]} entries; data has {n} blocks")
    return arr


def verify_blocks(data: Buffer, checksums: DigestsLike, block_size: int = DEFAULT_BLOCK_SIZE,
                  *, threads: int | None = None) -> npt.NDArray[np.bool_]:
    """Check each ``block_size`` block of ``data`` against its expected SHA-256.

    ``checksums``: one entry per block, each the base64 text EBS sends in ``x-amz-Checksum``
    (str or bytes, 44 characters, decoded strictly) or 32 raw digest bytes; or an ``(n, 32)``
    uint8 array. Returns a bool array, True where the block matches.
    """
    bs = _positive_int(block_size, "block_size")
    if threads is not None:
        threads = _positive_int(threads, "threads")
    mv = _data_view(data)
    n = _nblocks(mv.nbytes, bs)
    expected = _digests_array(checksums, "checksums", n)
    result = np.zeros(n, dtype=np.bool_)
    _run(_kernel.verify_digests, _ranges(n, mv.nbytes, threads), mv, bs, expected, result)
    return result


def linear_checksum(digests: DigestsLike) -> str:
    """The LINEAR aggregate checksum for CompleteSnapshot: base64 of the SHA-256 of the raw
    32-byte block digests concatenated in ascending block index order.

    ``digests``: an ``(n, 32)`` uint8 array (``sha256_blocks`` output) or a sequence of digests
    (32 raw bytes, or base64 str/bytes as in ``x-amz-Checksum``).
    """
    arr = _digests_array(digests, "digests", None)
    return base64.b64encode(_kernel.digest(arr)).decode("ascii")
