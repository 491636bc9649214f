# The local server's lane for GetSnapshotBlock (the C is in _csrc/lane.c). The pure-Python twin,
# ebsfast/_lane_py.py, has the same API and is its executable specification.
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.unicode cimport PyUnicode_DecodeASCII
from libc.errno cimport errno
from libc.stdint cimport uintptr_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, memmove

from ebsfast._sha256 cimport ebs_sha256_setup


cdef extern from "<string.h>" nogil:
    void *memmem(const void *haystack, size_t hn, const void *needle, size_t nn)


cdef extern from "<time.h>" nogil:
    ctypedef long time_t
    struct timespec:
        time_t tv_sec
        long tv_nsec
    enum:
        CLOCK_REALTIME
    int clock_gettime(int clk, timespec *ts)


ebs_sha256_setup()

MAX_HEAD = 64 * 1024
MAX_HEADERS = EBS_LANE_MAX_HEADERS

# Received 64 KiB at a time, as the general path receives; the buffer holds the longest head
# the lane reads and one more receive.
DEF RECV_CHUNK = 64 * 1024
DEF BUF_CAP = 64 * 1024 + RECV_CHUNK


cdef double _now() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_REALTIME, &ts)
    return <double>ts.tv_sec + <double>ts.tv_nsec * 1e-9


cdef bytes _utf8(str s):
    return s.encode("utf-8")


cdef class BlockLane:
    """One server's lane (see ``ebsfast._lane_py.BlockLane``)."""

    def __init__(self, *, str access_key not None, str secret_key not None, session_token,
                 str region not None, bint verify, double max_skew_s, Py_ssize_t block_size,
                 lookup):
        if session_token is not None and not isinstance(session_token, str):
            raise TypeError("session_token must be a str or None")
        if block_size <= 0:
            raise ValueError("block_size must be positive")
        self._access_key = access_key
        self._region = region
        self._access_key_b = _utf8(access_key)
        self._secret_key_b = _utf8(secret_key)
        self._region_b = _utf8(region)
        self._token_b = _utf8(session_token) if session_token is not None else None
        self._verify = verify
        self._block_size = block_size
        self._lookup = lookup
        self.served = 0
        self._auth.access_key = PyBytes_AS_STRING(self._access_key_b)
        self._auth.access_key_len = PyBytes_GET_SIZE(self._access_key_b)
        self._auth.secret_key = PyBytes_AS_STRING(self._secret_key_b)
        self._auth.secret_key_len = PyBytes_GET_SIZE(self._secret_key_b)
        self._auth.region = PyBytes_AS_STRING(self._region_b)
        self._auth.region_len = PyBytes_GET_SIZE(self._region_b)
        if self._token_b is None:
            self._auth.session_token = NULL
            self._auth.session_token_len = 0
        else:
            self._auth.session_token = PyBytes_AS_STRING(self._token_b)
            self._auth.session_token_len = PyBytes_GET_SIZE(self._token_b)
        self._auth.max_skew_s = max_skew_s
        self._auth.have_key = 0

    def __repr__(self):
        return (f"<ebsfast._lane.BlockLane access_key={self._access_key} region={self._region} "
                f"verify={bool(self._verify)} served={self.served}>")

    cdef object _accepts(self, const char *head, size_t n):
        cdef ebs_lane_request r
        if not ebs_lane_parse(head, n, &r):
            return None
        if self._verify and not ebs_lane_verify(&self._auth, &r, _now()):
            return None
        return (PyUnicode_DecodeASCII(r.path.p, r.path.n, NULL),
                PyUnicode_DecodeASCII(r.query.p, r.query.n, NULL))

    def accepts(self, const unsigned char[::1] head not None):
        """``(path, query)`` of a request head (without its final CRLF CRLF) that the lane may
        serve, its signature checked; None for the general path."""
        if head.shape[0] == 0:
            return None
        return self._accepts(<const char *>&head[0], head.shape[0])

    def serve(self, conn, bytes pending not None, pipe):
        """See ``ebsfast._lane_py.BlockLane.serve``."""
        cdef int fd = conn.fileno()
        cdef int pipe_r = pipe.read_fd
        cdef int pipe_w = pipe.write_fd
        cdef size_t pipe_cap = pipe.capacity
        cdef Py_ssize_t have = PyBytes_GET_SIZE(pending)
        cdef size_t scanned = 0, head_len, block_size = <size_t>self._block_size
        cdef long got
        cdef int rc
        cdef const char *end
        cdef const char *head_p
        cdef Py_ssize_t head_n
        cdef uintptr_t address
        if fd < 0 or pipe_cap == 0:
            raise ValueError("serve needs an open socket and a pipe")
        if have > BUF_CAP:
            return pending
        cdef char *buf = <char *>malloc(BUF_CAP)
        if buf == NULL:
            raise MemoryError()
        try:
            memcpy(buf, PyBytes_AS_STRING(pending), have)
            while True:
                end = NULL
                if <size_t>have >= 4:
                    end = <const char *>memmem(buf + scanned, <size_t>have - scanned,
                                               b"\r\n\r\n", 4)
                if end == NULL:
                    if have > MAX_HEAD:
                        return PyBytes_FromStringAndSize(buf, have)
                    scanned = <size_t>have - 3 if have >= 3 else 0
                    with nogil:
                        got = ebs_lane_recv(fd, buf + have, RECV_CHUNK)
                    if got < 0:
                        return None
                    if got == 0:
                        return PyBytes_FromStringAndSize(buf, have) if have else None
                    have += got
                    continue
                head_len = <size_t>(end - buf)
                target = self._accepts(buf, head_len)
                found = self._lookup(*target) if target is not None else None
                if found is None:
                    return PyBytes_FromStringAndSize(buf, have)
                head, address = found
                if not isinstance(head, bytes):
                    raise TypeError("lookup must return (bytes, int)")
                head_p = PyBytes_AS_STRING(head)
                head_n = PyBytes_GET_SIZE(head)
                head_len += 4
                have -= head_len
                memmove(buf, buf + head_len, have)
                scanned = 0
                self.served += 1
                with nogil:
                    rc = ebs_lane_send_block(fd, head_p, head_n, <const void *>address,
                                             block_size, pipe_r, pipe_w, pipe_cap)
                if rc != 0:
                    return None
        finally:
            free(buf)
