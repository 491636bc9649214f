"""Sending a stored block without copying it: vmsplice(2) then splice(2), on Linux.

The in-memory store keeps blocks in anonymous memory backed by transparent huge pages where
the system allows them. ``vmsplice`` hands the block's pages to a pipe by reference and
``splice`` hands them on to the socket, so the kernel neither copies the 512 KiB (as ``send``
from the same memory does) nor looks up 128 page-cache pages one by one (as ``sendfile`` from a
memfd does). Measured on the project's 2-core machine (server CPU per GetSnapshotBlock, paired
runs): 25 to 50 µs less than ``sendfile`` from a memfd with 1 or 8 connections; as cheap as one
``sendmsg`` from huge-page memory with 1 connection, 16 to 44 µs less with 8, where copies
compete for memory bandwidth.

``vmsplice`` has no wrapper in the ``os`` module, so it is called through ``ctypes``. Where it
is missing (not Linux, no ``ctypes``, ``EBSFAST_TESTING_NO_SPLICE=1``) ``AVAILABLE`` is False and
the server sends from the same memory with one ``sendmsg``.

The pages are referenced, not copied, until the client has read them: this is safe because a
stored block is never written again while a snapshot that can be read refers to it (a slot is
reused only after a pending snapshot overwrote its own block, and pending snapshots cannot be
read).
"""
from __future__ import annotations

import errno
import os
import socket

F_SETPIPE_SZ = 1031
F_GETPIPE_SZ = 1032


def _load_vmsplice():
    if os.environ.get("EBSFAST_TESTING_NO_SPLICE", "") not in ("", "0"):
        return None
    if not hasattr(os, "splice") or not hasattr(os, "pipe2"):
        return None
    try:
        import ctypes

        fn = ctypes.CDLL(None, use_errno=True).vmsplice
    except (ImportError, OSError, AttributeError):
        return None
    # No argtypes: the caller passes ctypes objects it made once, which ctypes hands over
    # as they are (converting four Python ints per call cost more than the system call).
    fn.restype = ctypes.c_ssize_t
    return fn


_vmsplice = _load_vmsplice()
#: whether blocks can be sent with vmsplice + splice here
AVAILABLE = _vmsplice is not None

if AVAILABLE:
    import ctypes
    import fcntl

    class _IOVec(ctypes.Structure):
        _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


def buffer_address(buf) -> tuple[int, object]:
    """The address of a writable buffer's first byte, and the object that keeps the buffer
    exported (and so mapped) while it lives; drop that object before closing the buffer."""
    export = (ctypes.c_char * len(buf)).from_buffer(buf)
    return ctypes.addressof(export), export


class BlockPipe:
    """One connection's pipe, sized for a whole block, reused for every block it sends."""

    def __init__(self, size: int):
        self._r, self._w = os.pipe2(os.O_CLOEXEC)
        try:
            try:
                fcntl.fcntl(self._w, F_SETPIPE_SZ, size)
            except OSError:  # over the per-user pipe limits: a smaller pipe works, in steps
                pass
            self._capacity = fcntl.fcntl(self._w, F_GETPIPE_SZ)
        except BaseException:
            self.close()
            raise
        self._iov = _IOVec()
        self._args = (ctypes.c_int(self._w), ctypes.byref(self._iov), ctypes.c_size_t(1),
                      ctypes.c_uint(0))

    def send(self, conn: socket.socket, head: bytes, address: int, length: int) -> None:
        """``head``, then ``length`` bytes at ``address``, on ``conn`` (a blocking socket)."""
        conn.sendall(head, socket.MSG_MORE)
        fd = conn.fileno()
        iov = self._iov
        while length > 0:
            iov.base = address
            iov.len = min(length, self._capacity)
            n = _vmsplice(*self._args)
            if n <= 0:
                err = ctypes.get_errno() if n < 0 else errno.EIO
                if err == errno.EINTR:
                    continue
                raise OSError(err, os.strerror(err))
            address += n
            length -= n
            while n > 0:  # empty the pipe into the socket before the next vmsplice
                sent = os.splice(self._r, fd, n)
                if sent == 0:
                    raise ConnectionResetError("the client closed the connection mid-block")
                n -= sent

    # What ebsfast._lane needs to send through this pipe itself.
    @property
    def read_fd(self) -> int:
        return self._r

    @property
    def write_fd(self) -> int:
        return self._w

    @property
    def capacity(self) -> int:
        return self._capacity

    def close(self) -> None:
        for fd in (self._r, self._w):
            try:
                os.close(fd)
            except OSError:
                pass
