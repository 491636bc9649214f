# The local server's lane for GetSnapshotBlock (the C is in _csrc/lane.c). The pure-Python twin,
# ebsfast/_lane_py.py, has the same API and is its executable specification.
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.unicode cimport PyUnicode_DecodeASCII
from libc.stdint cimport uint8_t, uintptr_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, memmove

from ebsfast._sha256 cimport ebs_sha256_setup
from ebsfast._sigv4 cimport ebs_hmac_sha256


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

DEF MAX_HEAD_C = 64 * 1024
MAX_HEAD = MAX_HEAD_C
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


# What the receive loop (without the GIL) found.
cdef enum:
    GIVE_BACK = 0   # a request that is not the lane's, or a head too long: hand the bytes back
    CLOSED = 1      # the connection is over: a receive or send failed
    PEER_DONE = 2   # the peer closed its side
    LOOKUP = 3      # a request the lane parsed and verified, not answered directly


# Counters and the direct switch are read and written by connection threads without the GIL.
cdef extern from *:
    """
    #define ebs_lane_atomic_add(p, v) __atomic_fetch_add((p), (v), __ATOMIC_RELAXED)
    #define ebs_lane_atomic_load(p) __atomic_load_n((p), __ATOMIC_RELAXED)
    #define ebs_lane_atomic_store(p, v) __atomic_store_n((p), (v), __ATOMIC_RELAXED)
    """
    long long _atomic_add "ebs_lane_atomic_add" (long long *p, long long v) nogil
    long long _atomic_load "ebs_lane_atomic_load" (long long *p) nogil
    int _atomic_load_int "ebs_lane_atomic_load" (int *p) nogil
    void _atomic_store_int "ebs_lane_atomic_store" (int *p, int v) nogil


DEF HEAD_CAP = 512
cdef const char *HEX = b"0123456789abcdef"


def http_date(long long seconds) -> str:
    """The HTTP date of a whole second since the epoch, as direct answers carry it."""
    cdef char out[29]
    if not 0 <= seconds <= 253402300799:
        raise ValueError("seconds must fall in the years 1970 to 9999")
    ebs_lane_http_date(seconds, out)
    return out[:29].decode("ascii")


def token_mac(bytes key not None, const unsigned char[::1] payload not None) -> bytes:
    """HMAC-SHA256 of ``payload`` under ``key``, its first 16 bytes: the MAC of the local
    server's opaque tokens (the lane checks block tokens with it)."""
    cdef uint8_t mac[32]
    cdef size_t n = payload.shape[0]
    cdef const char *k = PyBytes_AS_STRING(key)
    cdef size_t kn = PyBytes_GET_SIZE(key)
    ebs_hmac_sha256(k, kn, &payload[0] if n else NULL, n, mac)
    return PyBytes_FromStringAndSize(<char *>mac, 16)


cdef class BlockLane:
    """One server's lane (see ``ebsfast._lane_py.BlockLane``)."""

    def __cinit__(self):
        self._table_ready = False

    def __init__(self, *, str access_key not None, str secret_key not None, session_token,
                 str region not None, bint verify, double max_skew_s, Py_ssize_t block_size,
                 lookup, bytes token_key not None, str request_id_prefix not None,
                 tuple head_pieces not None):
        if session_token is not None and not isinstance(session_token, str):
            raise TypeError("session_token must be a str or None")
        if block_size <= 0:
            raise ValueError("block_size must be positive")
        if len(request_id_prefix) != 24 or not request_id_prefix.isascii():
            raise ValueError("request_id_prefix must be 24 ASCII characters")
        if len(head_pieces) != 4 or not all(isinstance(p, bytes) for p in head_pieces):
            raise TypeError("head_pieces must be four bytes objects")
        if sum(len(p) for p in head_pieces) + 24 + 12 + 29 + EBS_LANE_CHECKSUM_LEN > HEAD_CAP:
            raise ValueError(f"head_pieces make a head longer than {HEAD_CAP} bytes")
        self._access_key = access_key
        self._region = region
        self._access_key_b = _utf8(access_key)
        self._secret_key_b = _utf8(secret_key)
        self._region_b = _utf8(region)
        self._token_b = _utf8(session_token) if session_token is not None else None
        self._verify = verify
        self._block_size = block_size
        self._lookup = lookup
        self._id_prefix = request_id_prefix.encode("ascii")
        self._head0, self._head1, self._head2, self._head3 = head_pieces
        for i, piece in enumerate((self._head0, self._head1, self._head2, self._head3)):
            self._hp[i] = PyBytes_AS_STRING(piece)
            self._hn[i] = PyBytes_GET_SIZE(piece)
        self._idp = PyBytes_AS_STRING(self._id_prefix)
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
        if self._table_ready:
            ebs_lane_table_free(&self._table)
            self._table_ready = False
        if ebs_lane_table_init(&self._table, <const uint8_t *>PyBytes_AS_STRING(token_key),
                               PyBytes_GET_SIZE(token_key)) != 0:
            raise MemoryError()
        self._table_ready = True
        self._direct = 1

    cdef int _ready(self) except -1:
        if not self._table_ready:
            raise RuntimeError("BlockLane.__init__ did not complete")
        return 0

    def __dealloc__(self):
        if self._table_ready:
            ebs_lane_table_free(&self._table)

    def __repr__(self):
        return (f"<ebsfast._lane.BlockLane access_key={self._access_key} region={self._region} "
                f"verify={bool(self._verify)} served={self.served}>")

    @property
    def served(self) -> int:
        """Requests the lane answered (counted as each answer starts)."""
        return _atomic_load(&self._served)

    @property
    def direct_served(self) -> int:
        """Of which answered from published blocks, without the server's lookup."""
        return _atomic_load(&self._direct_served)

    @property
    def direct(self) -> bool:
        """Whether published blocks are answered directly (the server turns this off while a
        fault is set, so that every request meets the faults)."""
        return bool(_atomic_load_int(&self._direct))

    @direct.setter
    def direct(self, bint on):
        _atomic_store_int(&self._direct, 1 if on else 0)

    def publish(self, str snapshot_id not None, indexes, addresses, checksums):
        """A completed snapshot's blocks: equal-length sequences of indexes, addresses of
        ``block_size`` bytes, and base64 SHA-256 checksums."""
        cdef Py_ssize_t n = len(indexes), i
        self._ready()
        if len(addresses) != n or len(checksums) != n:
            raise ValueError("indexes, addresses and checksums must have the same length")
        cdef bytes sid = _utf8(snapshot_id)
        cdef ebs_lane_block *blocks = <ebs_lane_block *>malloc(max(n, 1) * sizeof(ebs_lane_block))
        cdef bytes c
        if blocks == NULL:
            raise MemoryError()
        try:
            for i in range(n):
                c = (<str?>checksums[i]).encode("ascii")
                if len(c) != EBS_LANE_CHECKSUM_LEN:
                    raise ValueError(f"checksum {checksums[i]!r} is not base64 of 32 bytes")
                blocks[i].index = indexes[i]
                blocks[i].address = addresses[i]
                memcpy(blocks[i].checksum, PyBytes_AS_STRING(c), EBS_LANE_CHECKSUM_LEN)
            if ebs_lane_publish(&self._table, PyBytes_AS_STRING(sid), PyBytes_GET_SIZE(sid),
                                blocks, n) != 0:
                raise MemoryError()
        finally:
            free(blocks)

    def find(self, str path not None, str query not None):
        """``(checksum, address)`` of the published block a GetSnapshotBlock at ``path`` and
        ``query`` names with a valid, unexpired token; None otherwise."""
        cdef bytes p = _utf8(path), q = _utf8(query)
        cdef ebs_span ps, qs
        cdef ebs_lane_block b
        self._ready()
        ps.p = PyBytes_AS_STRING(p)
        ps.n = PyBytes_GET_SIZE(p)
        qs.p = PyBytes_AS_STRING(q)
        qs.n = PyBytes_GET_SIZE(q)
        if not ebs_lane_find(&self._table, ps, qs, _now(), &b):
            return None
        return b.checksum[:EBS_LANE_CHECKSUM_LEN].decode("ascii"), b.address

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
        self._ready()
        if head.shape[0] == 0:
            return None
        return self._accepts(<const char *>&head[0], head.shape[0])

    cdef size_t _direct_head(self, const ebs_lane_block *b, double now, char *out) noexcept nogil:
        """The response head of a direct answer, into ``out`` (HEAD_CAP bytes): the server's
        pieces around this lane's request id, the date and the checksum."""
        cdef size_t n
        cdef long long rid = _atomic_add(&self._ids, 1)
        cdef int i
        memcpy(out, self._hp[0], self._hn[0])
        n = self._hn[0]
        memcpy(out + n, self._idp, 24)
        n += 24
        for i in range(12):
            out[n + 11 - i] = HEX[(rid >> (4 * i)) & 15]
        n += 12
        memcpy(out + n, self._hp[1], self._hn[1])
        n += self._hn[1]
        ebs_lane_http_date(<long long>now, out + n)
        n += 29
        memcpy(out + n, self._hp[2], self._hn[2])
        n += self._hn[2]
        memcpy(out + n, b.checksum, EBS_LANE_CHECKSUM_LEN)
        n += EBS_LANE_CHECKSUM_LEN
        memcpy(out + n, self._hp[3], self._hn[3])
        return n + self._hn[3]

    cdef int _run(self, int fd, char *buf, Py_ssize_t *have, ebs_lane_auth *auth,
                  ebs_lane_request *r, size_t *head_len, int pipe_r, int pipe_w,
                  size_t pipe_cap) noexcept nogil:
        """Receive, parse, verify and answer directly what it can, without the GIL, until a
        request needs the server (LOOKUP, GIVE_BACK) or the connection ends."""
        cdef size_t scanned = 0, hn
        cdef const char *end
        cdef long got
        cdef double now
        cdef ebs_lane_block b
        cdef char head[HEAD_CAP]
        while True:
            end = NULL
            if have[0] >= 4:
                end = <const char *>memmem(buf + scanned, <size_t>have[0] - scanned,
                                           b"\r\n\r\n", 4)
            if end == NULL:
                if have[0] > MAX_HEAD_C:
                    return GIVE_BACK
                scanned = <size_t>have[0] - 3 if have[0] >= 3 else 0
                got = ebs_lane_recv(fd, buf + have[0], RECV_CHUNK)
                if got < 0:
                    return CLOSED
                if got == 0:
                    return PEER_DONE
                have[0] += got
                continue
            head_len[0] = <size_t>(end - buf)
            if not ebs_lane_parse(buf, head_len[0], r):
                return GIVE_BACK
            now = _now()
            if self._verify and not ebs_lane_verify(auth, r, now):
                return GIVE_BACK
            if not (_atomic_load_int(&self._direct)
                    and ebs_lane_find(&self._table, r.path, r.query, now, &b)):
                return LOOKUP
            hn = self._direct_head(&b, now, head)
            head_len[0] += 4
            have[0] -= head_len[0]
            memmove(buf, buf + head_len[0], have[0])
            scanned = 0
            # Counted as the answer starts, so that a client holding it sees it counted.
            _atomic_add(&self._served, 1)
            _atomic_add(&self._direct_served, 1)
            if ebs_lane_send_block(fd, head, hn, <const void *>b.address,
                                   <size_t>self._block_size, pipe_r, pipe_w, pipe_cap) != 0:
                return CLOSED

    def serve(self, conn, bytes pending not None, pipe):
        """See ``ebsfast._lane_py.BlockLane.serve``."""
        cdef int fd = conn.fileno()
        cdef int pipe_r = pipe.read_fd
        cdef int pipe_w = pipe.write_fd
        cdef size_t pipe_cap = pipe.capacity
        cdef Py_ssize_t have = PyBytes_GET_SIZE(pending)
        cdef size_t head_len
        cdef int rc, state
        cdef const char *head_p
        cdef Py_ssize_t head_n
        cdef uintptr_t address
        cdef ebs_lane_request r
        # This connection's copy: its signing-key cache is then its own, used without the GIL.
        cdef ebs_lane_auth auth = self._auth
        self._ready()
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
                with nogil:
                    state = self._run(fd, buf, &have, &auth, &r, &head_len, pipe_r, pipe_w,
                                      pipe_cap)
                if state == CLOSED:
                    return None
                if state == PEER_DONE:
                    return PyBytes_FromStringAndSize(buf, have) if have else None
                if state == GIVE_BACK:
                    return PyBytes_FromStringAndSize(buf, have)
                found = self._lookup(PyUnicode_DecodeASCII(r.path.p, r.path.n, NULL),
                                     PyUnicode_DecodeASCII(r.query.p, r.query.n, NULL))
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
                _atomic_add(&self._served, 1)
                with nogil:
                    rc = ebs_lane_send_block(fd, head_p, head_n, <const void *>address,
                                             <size_t>self._block_size, pipe_r, pipe_w, pipe_cap)
                if rc != 0:
                    return None
        finally:
            free(buf)
