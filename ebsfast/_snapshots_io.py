"""Local-file helpers of the snapshot jobs: the download journal, holes, block hashing at
chosen indexes, and sources to upload from. No network here."""
from __future__ import annotations

import ctypes
import ctypes.util
import errno
import json
import mmap
import os
import stat
import struct
from typing import Any

import numpy as np

from .checksums import sha256, sha256_blocks

BLOCK_SIZE = 524288
GIB = 1 << 30
ZERO_BLOCK = bytes(BLOCK_SIZE)
ZERO_DIGEST = sha256(ZERO_BLOCK)
_ZERO_ROW = np.frombuffer(ZERO_DIGEST, dtype=np.uint8)
# pwrite of zeros where a hole cannot be punched: large enough to be few syscalls, small
# enough not to matter in memory
_ZERO_CHUNK = bytes(8 << 20)


def is_zero_digest(digests: np.ndarray) -> np.ndarray:
    """Which rows of an ``(n, 32)`` digest array are the digest of a block of zeros: a zero
    check that costs 32 bytes per block, since every block is hashed anyway."""
    return np.all(digests == _ZERO_ROW, axis=1)


def is_device(path: str) -> bool:
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return False
    return stat.S_ISBLK(mode) or stat.S_ISCHR(mode)


def pwrite_all(fd: int, data: Any, offset: int) -> None:
    view = memoryview(data).cast("B")
    while len(view):
        n = os.pwrite(fd, view, offset)
        if n <= 0:  # pragma: no cover - pwrite raises rather than returning 0 on a file
            raise OSError(errno.EIO, "pwrite wrote nothing")
        view = view[n:]
        offset += n


# -- holes ------------------------------------------------------------------------------------
_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02
_libc = None


def _fallocate():
    global _libc
    if _libc is None:
        try:
            lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            fn = lib.fallocate
            fn.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
            fn.restype = ctypes.c_int
            _libc = fn
        except (OSError, AttributeError):
            _libc = False
    return _libc or None


def zero_range(fd: int, offset: int, length: int, *, punch: bool = True) -> None:
    """Make ``[offset, offset + length)`` read as zeros: punch a hole where the file system
    can (no space used, as a block never written), else write zeros."""
    if punch:
        fn = _fallocate()
        if fn is not None and fn(fd, _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE,
                                 offset, length) == 0:
            return
    end = offset + length
    while offset < end:
        n = min(len(_ZERO_CHUNK), end - offset)
        pwrite_all(fd, memoryview(_ZERO_CHUNK)[:n], offset)
        offset += n


def data_extents(fd: int, size: int):
    """``(start, end)`` byte ranges that may hold data (SEEK_DATA/SEEK_HOLE); the whole file
    where the file system cannot tell."""
    off = 0
    while off < size:
        try:
            start = os.lseek(fd, off, os.SEEK_DATA)
        except OSError as e:
            if e.errno == errno.ENXIO:
                return
            if e.errno in (errno.EINVAL, errno.EOPNOTSUPP):
                yield off, size
                return
            raise
        if start >= size:
            return
        end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
        yield start, end
        off = end


def runs(indexes: np.ndarray) -> list[tuple[int, int]]:
    """Positions ``(s, e)`` of runs of consecutive values in a sorted index array."""
    if len(indexes) == 0:
        return []
    breaks = np.flatnonzero(np.diff(indexes) != 1) + 1
    starts = np.concatenate(([0], breaks)).tolist()
    ends = np.concatenate((breaks, [len(indexes)])).tolist()
    return list(zip(starts, ends, strict=True))


def hash_blocks_at(data: np.ndarray, indexes: np.ndarray, *,
                   threads: int | None = None) -> np.ndarray:
    """SHA-256 of the 512 KiB blocks of ``data`` (a flat uint8 array) at the given sorted
    indexes. Past the end of ``data`` a block reads as zeros, as a volume does, and a block cut
    by the end is padded with zeros: the digests are those of the blocks the service holds."""
    out = np.empty((len(indexes), 32), dtype=np.uint8)
    size = len(data)
    whole = size // BLOCK_SIZE
    for s, e in runs(indexes):
        first = int(indexes[s])
        last = int(indexes[e - 1]) + 1
        full_end = min(last, whole)
        if full_end > first:
            k = full_end - first
            sha256_blocks(data[first * BLOCK_SIZE:full_end * BLOCK_SIZE], out=out[s:s + k],
                          threads=threads)
        for j in range(max(first, whole), last):
            row = s + (j - first)
            if j * BLOCK_SIZE < size:
                padded = bytearray(BLOCK_SIZE)
                tail = data[j * BLOCK_SIZE:size]
                padded[:len(tail)] = tail.tobytes()
                out[row] = np.frombuffer(sha256(padded), dtype=np.uint8)
            else:
                out[row] = _ZERO_ROW
    return out


def map_file(fd: int, size: int, *, write: bool = False):
    """``(mmap or None, uint8 array)`` over the first ``size`` bytes of a file (an empty array
    for an empty file, which mmap refuses)."""
    if size == 0:
        return None, np.empty(0, dtype=np.uint8)
    mm = mmap.mmap(fd, size, access=mmap.ACCESS_WRITE if write else mmap.ACCESS_READ)
    return mm, np.frombuffer(mm, dtype=np.uint8)


# -- the download journal ----------------------------------------------------------------------
_JOURNAL_MAGIC = b"ebsfast-download-state 1\n"
_RECORD = struct.Struct("<q32s")


class Journal:
    """Which blocks of a ``.partial`` image are written, and their digests, appended as they
    land: a header (magic line, then one JSON line naming the snapshot and size), then
    40-byte records ``<int64 index><32-byte SHA-256>``. No fsync per record: a resume hashes
    every recorded block again, so a record whose data never reached the disk costs a refetch,
    never a wrong image. A record torn by a crash is ignored."""

    def __init__(self, path: str, fd: int):
        self.path = path
        self._fd = fd

    @staticmethod
    def _header(ident: dict) -> bytes:
        return _JOURNAL_MAGIC + json.dumps(ident, sort_keys=True).encode() + b"\n"

    @classmethod
    def read(cls, path: str, ident: dict) -> dict[int, bytes] | None:
        """The recorded blocks, or None when there is no journal for this same download."""
        try:
            with open(path, "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            return None
        header = cls._header(ident)
        if not raw.startswith(header):
            return None
        body = memoryview(raw)[len(header):]
        n = len(body) // _RECORD.size
        done: dict[int, bytes] = {}
        for k in range(n):
            index, digest = _RECORD.unpack_from(body, k * _RECORD.size)
            done[index] = digest
        return done

    @classmethod
    def create(cls, path: str, ident: dict, records: dict[int, bytes] | None = None) -> Journal:
        """A fresh journal holding ``records`` (those still good after a resume's check)."""
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(cls._header(ident))
            if records:
                f.write(b"".join(_RECORD.pack(i, d) for i, d in sorted(records.items())))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        return cls(path, os.open(path, os.O_WRONLY | os.O_APPEND))

    def record(self, index: int, digest: bytes) -> None:
        # one write per record with O_APPEND: records from several threads never interleave
        os.write(self._fd, _RECORD.pack(index, digest))

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def remove(self) -> None:
        self.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


def fsync_dir(path: str) -> None:
    d = os.path.dirname(os.path.abspath(path))
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:  # pragma: no cover - some platforms cannot open directories
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


# -- upload sources --------------------------------------------------------------------------
class Source:
    """What an upload reads: a file or block device (mapped read-only) or a buffer."""

    def __init__(self, source: Any):
        self._mm = None
        self._fd = -1
        self.name: str | None = None
        if isinstance(source, (str, os.PathLike)):
            self.name = os.fspath(source)
            self._fd = os.open(self.name, os.O_RDONLY)
            try:
                size = os.lseek(self._fd, 0, os.SEEK_END)  # a block device's size too
                self._mm, self.data = map_file(self._fd, size)
            except BaseException:
                os.close(self._fd)
                raise
        else:
            try:
                view = memoryview(source)
            except TypeError:
                raise TypeError(f"source must be a path or a buffer (numpy array, bytes, mmap), "
                                f"not {type(source).__name__}") from None
            if not view.c_contiguous:
                raise ValueError("source must be a C-contiguous buffer")
            self.data = np.frombuffer(view.cast("B") if view.format != "B" or view.ndim != 1
                                      else view, dtype=np.uint8)
        self.size = len(self.data)

    def data_blocks(self) -> np.ndarray | None:
        """Per block, whether the file may hold data there (False: wholly in a hole, so zeros
        without reading); None for a buffer or where the file system cannot say."""
        if self._fd < 0 or self.size == 0:
            return None
        n = -(-self.size // BLOCK_SIZE)
        has = np.zeros(n, dtype=bool)
        try:
            for start, end in data_extents(self._fd, self.size):
                has[start // BLOCK_SIZE:-(-end // BLOCK_SIZE)] = True
        except OSError:
            return None
        return has

    def close(self) -> None:
        self.data = np.empty(0, dtype=np.uint8)
        if self._mm is not None:
            try:
                self._mm.close()
            except BufferError:  # a view escaped; the map goes when it does
                pass
            self._mm = None
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
