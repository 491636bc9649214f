# SHA-256 kernels over caller buffers (the C code is in _csrc/sha256*.c). The pure-Python twin,
# ebsfast/_sha256_py.py, has the same API and is its executable specification; the public,
# validating API is ebsfast/checksums.py.
import operator
import os
import warnings

from cpython.buffer cimport (
    PyBUF_C_CONTIGUOUS,
    PyBUF_FORMAT,
    PyBUF_SIMPLE,
    PyBUF_WRITABLE,
    PyBuffer_Release,
    PyObject_GetBuffer,
)
from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.pyport cimport PY_SSIZE_T_MAX
from libc.stdint cimport uint8_t
from libc.string cimport memcpy

IMPLEMENTATION = "native"

# Below this size hashing takes less time than handing the GIL to another thread and back, so
# small messages (signing payloads, aggregate checksums) keep it.
cdef Py_ssize_t _NOGIL_MIN = 4096

cdef tuple _FEATURES = (
    (EBS_CPU_SHA, "sha"),
    (EBS_CPU_SSE41, "sse4.1"),
    (EBS_CPU_SSSE3, "ssse3"),
    (EBS_CPU_AVX2, "avx2"),
)


cdef int _acquire(object obj, Py_buffer *view, int flags, str name) except -1:
    try:
        PyObject_GetBuffer(obj, view, flags)
    except (BufferError, ValueError) as exc:  # numpy raises ValueError for non-contiguous
        raise ValueError(f"{name} must be a C-contiguous{' writable' if flags & PyBUF_WRITABLE else ''}"
                         f" buffer ({exc})") from None
    except TypeError:
        raise TypeError(f"{name} must support the buffer protocol, "
                        f"not {type(obj).__name__}") from None
    return 0


cdef bint _byte_format(const char *fmt, bint allow_bool):
    # NULL means unsigned bytes (PEP 3118); a leading byte-order mark is irrelevant for one byte.
    if fmt == NULL:
        return True
    if fmt[0] in b"@=<>!":
        fmt += 1
    if fmt[0] == 0 or fmt[1] != 0:
        return False
    return fmt[0] == b"B" or (allow_bool and fmt[0] == b"?")


cdef int _check_rows(Py_buffer *view, Py_ssize_t n, str name) except -1:
    if view.ndim != 2 or view.itemsize != 1 or not _byte_format(view.format, False):
        raise ValueError(f"{name} must be a uint8 array of shape ({n}, 32)")
    if view.shape[0] != n or view.shape[1] != EBS_SHA256_DIGEST:
        raise ValueError(f"{name} has shape ({view.shape[0]}, {view.shape[1]}); "
                         f"expected ({n}, 32), one row per block")
    return 0


cdef Py_ssize_t _block_size(object block_size) except -1:
    if isinstance(block_size, bool):
        raise TypeError("block_size must be an int, not bool")
    try:
        bs = operator.index(block_size)
    except TypeError:
        raise TypeError(f"block_size must be an int, not {type(block_size).__name__}") from None
    if bs <= 0:
        raise ValueError(f"block_size must be positive, got {bs}")
    # Any block_size >= len(data) means one block, so a huge one can be clamped.
    return min(bs, PY_SSIZE_T_MAX)


cdef Py_ssize_t _nblocks(Py_ssize_t length, Py_ssize_t block_size):
    return length // block_size + (length % block_size != 0)


cdef int _range(object start, object stop, Py_ssize_t n, Py_ssize_t *first,
                Py_ssize_t *last) except -1:
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
    first[0] = s
    last[0] = e
    return 0


def digest(data) -> bytes:
    """SHA-256 of any C-contiguous buffer."""
    cdef Py_buffer view
    cdef uint8_t out[32]
    _acquire(data, &view, PyBUF_SIMPLE, "data")
    try:
        if view.len >= _NOGIL_MIN:
            with nogil:
                ebs_sha256(view.buf, <size_t>view.len, out)
        else:
            ebs_sha256(view.buf, <size_t>view.len, out)
    finally:
        PyBuffer_Release(&view)
    return PyBytes_FromStringAndSize(<char *>out, EBS_SHA256_DIGEST)


def digest_pair(a, b) -> tuple:
    """SHA-256 of two buffers at once (interleaved on the sha-ni-x2 path)."""
    cdef Py_buffer va, vb
    cdef uint8_t outa[32]
    cdef uint8_t outb[32]
    _acquire(a, &va, PyBUF_SIMPLE, "a")
    try:
        _acquire(b, &vb, PyBUF_SIMPLE, "b")
        try:
            with nogil:
                ebs_sha256_x2(va.buf, <size_t>va.len, vb.buf, <size_t>vb.len, outa, outb)
        finally:
            PyBuffer_Release(&vb)
    finally:
        PyBuffer_Release(&va)
    return (PyBytes_FromStringAndSize(<char *>outa, EBS_SHA256_DIGEST),
            PyBytes_FromStringAndSize(<char *>outb, EBS_SHA256_DIGEST))


def digest_blocks(data, block_size, out, start, stop) -> None:
    """Write the digest of block i of data into out[i] for start <= i < stop."""
    cdef Py_buffer dv, ov
    cdef Py_ssize_t bs = _block_size(block_size)
    cdef Py_ssize_t n, first, last
    _acquire(data, &dv, PyBUF_SIMPLE, "data")
    try:
        _acquire(out, &ov, PyBUF_WRITABLE | PyBUF_FORMAT | PyBUF_C_CONTIGUOUS, "out")
        try:
            n = _nblocks(dv.len, bs)
            _check_rows(&ov, n, "out")
            _range(start, stop, n, &first, &last)
            with nogil:
                ebs_sha256_blocks(<const uint8_t *>dv.buf, <size_t>dv.len, <size_t>bs,
                                  <size_t>first, <size_t>(last - first),
                                  <uint8_t *>ov.buf + first * EBS_SHA256_DIGEST)
        finally:
            PyBuffer_Release(&ov)
    finally:
        PyBuffer_Release(&dv)


def verify_digests(data, block_size, expected, result, start, stop) -> int:
    """result[i] = (digest of block i == expected[i]) for start <= i < stop; returns the number
    of mismatches in that range."""
    cdef Py_buffer dv, ev, rv
    cdef Py_ssize_t bs = _block_size(block_size)
    cdef Py_ssize_t n, first, last
    cdef size_t bad
    _acquire(data, &dv, PyBUF_SIMPLE, "data")
    try:
        _acquire(expected, &ev, PyBUF_FORMAT | PyBUF_C_CONTIGUOUS, "expected")
        try:
            _acquire(result, &rv, PyBUF_WRITABLE | PyBUF_FORMAT | PyBUF_C_CONTIGUOUS, "result")
            try:
                n = _nblocks(dv.len, bs)
                _check_rows(&ev, n, "expected")
                if rv.ndim != 1 or rv.itemsize != 1 or not _byte_format(rv.format, True):
                    raise ValueError(f"result must be a bool or uint8 array of shape ({n},)")
                if rv.shape[0] != n:
                    raise ValueError(f"result has shape ({rv.shape[0]},); expected ({n},), "
                                     "one entry per block")
                _range(start, stop, n, &first, &last)
                with nogil:
                    bad = ebs_sha256_verify_blocks(
                        <const uint8_t *>dv.buf, <size_t>dv.len, <size_t>bs, <size_t>first,
                        <size_t>(last - first),
                        <const uint8_t *>ev.buf + first * EBS_SHA256_DIGEST,
                        <uint8_t *>rv.buf + first)
            finally:
                PyBuffer_Release(&rv)
        finally:
            PyBuffer_Release(&ev)
    finally:
        PyBuffer_Release(&dv)
    return bad


cdef class Hasher:
    """Incremental SHA-256 (the C streaming interface), hashlib-style."""
    cdef ebs_sha256_ctx ctx

    def __cinit__(self, data=None):
        ebs_sha256_init(&self.ctx)

    def __init__(self, data=None):
        if data is not None:
            self.update(data)

    def update(self, data) -> None:
        cdef Py_buffer view
        _acquire(data, &view, PyBUF_SIMPLE, "data")
        try:
            if view.len >= _NOGIL_MIN:
                with nogil:
                    ebs_sha256_update(&self.ctx, view.buf, <size_t>view.len)
            else:
                ebs_sha256_update(&self.ctx, view.buf, <size_t>view.len)
        finally:
            PyBuffer_Release(&view)

    def digest(self) -> bytes:
        cdef ebs_sha256_ctx tmp
        cdef uint8_t out[32]
        # Finalising pads and wipes the context; work on a copy so update() may continue.
        memcpy(&tmp, &self.ctx, sizeof(tmp))
        ebs_sha256_final(&tmp, out)
        return PyBytes_FromStringAndSize(<char *>out, EBS_SHA256_DIGEST)

    def copy(self) -> Hasher:
        cdef Hasher other = Hasher.__new__(Hasher)
        memcpy(&other.ctx, &self.ctx, sizeof(self.ctx))
        return other


cdef int _path_id(str name) except -1:
    for p in range(3):
        if name == ebs_sha256_path_name(p).decode():
            return p
    raise ValueError(f"unknown SHA-256 path {name!r}; known: {', '.join(_all_paths())}")


cdef list _all_paths():
    return [ebs_sha256_path_name(p).decode() for p in range(3)]


def get_path() -> str:
    """The path every hash in this process uses now."""
    return ebs_sha256_path_name(ebs_sha256_get_path()).decode()


def set_path(name) -> None:
    """Switch every hash in this process to path ``name``."""
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, not {type(name).__name__}")
    cdef int p = _path_id(name)
    if ebs_sha256_set_path(p) != 0:
        raise ValueError(f"SHA-256 path {name!r} is not supported on this CPU "
                         f"(supported: {', '.join(supported_paths())})")


def supported_paths() -> list:
    """Paths this CPU has and whose self-test passed, slowest first."""
    return [n for p, n in enumerate(_all_paths()) if ebs_sha256_path_supported(p)]


def all_paths() -> list:
    """Every path this build knows, supported here or not."""
    return _all_paths()


def cpu_features() -> list:
    cdef unsigned f = ebs_cpu_features()
    return [name for bit, name in _FEATURES if f & bit]


def self_test(name) -> bool:
    """Re-run the known-answer tests of one supported path."""
    cdef int p = _path_id(name)
    if not ebs_sha256_path_supported(p):
        raise ValueError(f"SHA-256 path {name!r} is not supported on this CPU")
    return ebs_sha256_self_test(p) == 0


ebs_sha256_setup()
if ebs_sha256_self_test(EBS_SHA256_PORTABLE) != 0:
    # Nothing here can be trusted; _backend falls back to the twin and says why.
    raise ImportError("ebsfast._sha256: the portable SHA-256 self-test failed (miscompiled?)")


def _path_warning():
    cdef int req = ebs_sha256_env_request()
    if req == -1 or req == ebs_sha256_get_path():
        return None
    value = os.environ.get("EBSFAST_SHA256", "")
    why = "is not supported on this CPU" if req >= 0 else "names no path"
    return (f"EBSFAST_SHA256={value!r} {why} (known: auto, {', '.join(_all_paths())}); "
            f"using {get_path()!r}")


# Why an EBSFAST_SHA256 request was not honoured, or None. A request that cannot be honoured
# warns once at import instead of raising: an unusable hint must not make the library unusable.
PATH_WARNING = _path_warning()
if PATH_WARNING is not None:
    warnings.warn(PATH_WARNING, RuntimeWarning, stacklevel=2)
