"""Pure-Python twin of ``ebsfast._sha256``, built on hashlib.

It is the executable specification of the kernel API: same functions, same arguments, same
errors, same results. It has one path, ``"python"``. ``EBSFAST_SHA256`` is honoured the same way
as by the native module: any value other than unset, ``""``, ``"auto"`` or ``"python"`` names a
path this implementation cannot use, so importing it warns (``RuntimeWarning``) and records why in
``PATH_WARNING``.
"""
from __future__ import annotations

import hashlib
import operator
import os
import sys
import warnings
from typing import Any

IMPLEMENTATION = "python"

_PATH = "python"
_DIGEST = 32


def _view(obj: Any, name: str, *, writable: bool = False) -> memoryview:
    try:
        mv = memoryview(obj)
    except TypeError:
        raise TypeError(f"{name} must support the buffer protocol, "
                        f"not {type(obj).__name__}") from None
    if not mv.c_contiguous or (writable and mv.readonly):
        extra = " writable" if writable else ""
        why = "not C-contiguous" if not mv.c_contiguous else "read-only"
        raise ValueError(f"{name} must be a C-contiguous{extra} buffer ({why})")
    return mv


def _bytes_view(obj: Any, name: str) -> memoryview:
    mv = _view(obj, name)
    if mv.format == "B" and mv.ndim == 1:
        return mv
    if mv.nbytes == 0:  # cast() refuses shapes with a zero in them
        return memoryview(b"")
    # Unsigned bytes regardless of the exporter's item type or shape, like PyBUF_SIMPLE.
    try:
        return mv.cast("B")
    except TypeError:  # formats cast() does not know; numpy reads any buffer as bytes
        import numpy

        return memoryview(numpy.frombuffer(mv, dtype=numpy.uint8))


def _is_byte_format(fmt: str, allow_bool: bool) -> bool:
    if fmt[:1] in ("@", "=", "<", ">", "!"):
        fmt = fmt[1:]
    return fmt == "B" or (allow_bool and fmt == "?")


def _rows(obj: Any, n: int, name: str, *, writable: bool) -> memoryview:
    mv = _view(obj, name, writable=writable)
    if mv.ndim != 2 or mv.itemsize != 1 or not _is_byte_format(mv.format, False):
        raise ValueError(f"{name} must be a uint8 array of shape ({n}, 32)")
    if mv.shape != (n, _DIGEST):
        raise ValueError(f"{name} has shape ({mv.shape[0]}, {mv.shape[1]}); "
                         f"expected ({n}, 32), one row per block")
    return mv.cast("B") if n else memoryview(bytearray())


def _block_size(block_size: Any) -> int:
    if isinstance(block_size, bool):
        raise TypeError("block_size must be an int, not bool")
    try:
        bs = operator.index(block_size)
    except TypeError:
        raise TypeError(f"block_size must be an int, not {type(block_size).__name__}") from None
    if bs <= 0:
        raise ValueError(f"block_size must be positive, got {bs}")
    return min(bs, sys.maxsize)


def _range(start: Any, stop: Any, n: int) -> tuple[int, int]:
    try:
        s = operator.index(start)
    except TypeError:
        raise TypeError(f"start must be an int, not {type(start).__name__}") from None
    try:
        e = operator.index(stop)
    except TypeError:
        raise TypeError(f"stop must be an int, not {type(stop).__name__}") from None
    if not 0 <= s <= n:
        raise ValueError(f"start must be in 0..{n} (the number of blocks), got {s}")
    if not s <= e <= n:
        raise ValueError(f"stop must be in {s}..{n} (start..number of blocks), got {e}")
    return s, e


def _nblocks(length: int, block_size: int) -> int:
    return -(-length // block_size)


def digest(data: Any) -> bytes:
    """SHA-256 of any C-contiguous buffer."""
    return hashlib.sha256(_bytes_view(data, "data")).digest()


def digest_pair(a: Any, b: Any) -> tuple[bytes, bytes]:
    """SHA-256 of two buffers at once."""
    va = _bytes_view(a, "a")
    vb = _bytes_view(b, "b")
    return hashlib.sha256(va).digest(), hashlib.sha256(vb).digest()


def digest_blocks(data: Any, block_size: Any, out: Any, start: Any, stop: Any) -> None:
    """Write the digest of block i of data into out[i] for start <= i < stop."""
    bs = _block_size(block_size)
    dv = _bytes_view(data, "data")
    n = _nblocks(len(dv), bs)
    ov = _rows(out, n, "out", writable=True)
    first, last = _range(start, stop, n)
    for i in range(first, last):
        ov[i * _DIGEST:(i + 1) * _DIGEST] = hashlib.sha256(dv[i * bs:(i + 1) * bs]).digest()


def verify_digests(data: Any, block_size: Any, expected: Any, result: Any, start: Any,
                   stop: Any) -> int:
    """result[i] = (digest of block i == expected[i]) for start <= i < stop; returns the number
    of mismatches in that range."""
    bs = _block_size(block_size)
    dv = _bytes_view(data, "data")
    n = _nblocks(len(dv), bs)
    ev = _rows(expected, n, "expected", writable=False)
    rv = _view(result, "result", writable=True)
    if rv.ndim != 1 or rv.itemsize != 1 or not _is_byte_format(rv.format, True):
        raise ValueError(f"result must be a bool or uint8 array of shape ({n},)")
    if rv.shape[0] != n:
        raise ValueError(f"result has shape ({rv.shape[0]},); expected ({n},), one entry per block")
    rb = rv.cast("B") if n else memoryview(bytearray())
    first, last = _range(start, stop, n)
    bad = 0
    for i in range(first, last):
        ok = hashlib.sha256(dv[i * bs:(i + 1) * bs]).digest() == ev[i * _DIGEST:(i + 1) * _DIGEST]
        rb[i] = ok
        bad += not ok
    return bad


class Hasher:
    """Incremental SHA-256, hashlib-style."""

    __slots__ = ("_h",)

    def __init__(self, data: Any = None) -> None:
        self._h = hashlib.sha256()
        if data is not None:
            self.update(data)

    def update(self, data: Any) -> None:
        self._h.update(_bytes_view(data, "data"))

    def digest(self) -> bytes:
        return self._h.digest()

    def copy(self) -> Hasher:
        other = Hasher.__new__(Hasher)
        other._h = self._h.copy()
        return other


def get_path() -> str:
    """The path every hash in this process uses now."""
    return _PATH


def set_path(name: str) -> None:
    """Switch to path ``name``; the twin has only ``"python"``."""
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, not {type(name).__name__}")
    if name != _PATH:
        raise ValueError(f"SHA-256 path {name!r} is not supported by the pure-Python "
                         f"implementation (supported: {_PATH})")


def supported_paths() -> list[str]:
    return [_PATH]


def all_paths() -> list[str]:
    return [_PATH]


def cpu_features() -> list[str]:
    # hashlib's own CPU dispatch is OpenSSL's business; this implementation uses none itself.
    return []


def self_test(name: str) -> bool:
    set_path(name)
    return hashlib.sha256(b"abc").hexdigest() == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")


def _path_warning() -> str | None:
    value = os.environ.get("EBSFAST_SHA256", "")
    if value in ("", "auto", _PATH):
        return None
    return (f"EBSFAST_SHA256={value!r} names a path the pure-Python SHA-256 cannot use "
            f"(it has only {_PATH!r}); using {_PATH!r}")


PATH_WARNING = _path_warning()
if PATH_WARNING is not None:
    warnings.warn(PATH_WARNING, RuntimeWarning, stacklevel=2)
