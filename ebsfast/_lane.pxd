# C API of ebsfast/_csrc/lane.h, declared once.
from libc.stdint cimport uint8_t, uint64_t, uintptr_t


cdef extern from "lane.h" nogil:
    enum:
        EBS_LANE_MAX_HEADERS

    ctypedef struct ebs_span:
        const char *p
        size_t n

    ctypedef struct ebs_lane_request:
        ebs_span target, path, query
        size_t n_headers

    int ebs_lane_parse(const char *head, size_t n, ebs_lane_request *r)

    ctypedef struct ebs_lane_auth:
        const char *access_key
        size_t access_key_len
        const char *secret_key
        size_t secret_key_len
        const char *region
        size_t region_len
        const char *session_token
        size_t session_token_len
        double max_skew_s
        int have_key

    int ebs_lane_verify(ebs_lane_auth *a, const ebs_lane_request *r, double now)

    enum:
        EBS_LANE_CHECKSUM_LEN

    ctypedef struct ebs_lane_block:
        uint64_t index
        uintptr_t address
        char checksum[44]

    ctypedef struct ebs_lane_table:
        pass

    int ebs_lane_table_init(ebs_lane_table *t, const uint8_t *token_key, size_t key_len)
    void ebs_lane_table_free(ebs_lane_table *t)
    int ebs_lane_publish(ebs_lane_table *t, const char *id, size_t id_len,
                         const ebs_lane_block *blocks, size_t n)
    int ebs_lane_find(ebs_lane_table *t, ebs_span path, ebs_span query, double now,
                      ebs_lane_block *out)
    void ebs_lane_http_date(long long t, char *out)
    long ebs_lane_recv(int fd, char *buf, size_t cap)
    int ebs_lane_send_block(int fd, const char *head, size_t head_len, const void *data,
                            size_t len, int pipe_r, int pipe_w, size_t pipe_cap)


cdef class BlockLane:
    cdef bytes _access_key_b
    cdef bytes _secret_key_b
    cdef bytes _region_b
    cdef bytes _token_b             # None when the server has no session token
    cdef str _access_key
    cdef str _region
    cdef bint _verify
    cdef Py_ssize_t _block_size
    cdef object _lookup
    cdef ebs_lane_auth _auth        # points into the bytes above; its key cache under the GIL
    cdef ebs_lane_table _table
    cdef bint _table_ready
    cdef bytes _id_prefix           # 24 bytes: the request ids of direct answers
    cdef bytes _head0, _head1, _head2, _head3
    cdef const char *_hp[4]         # the four head pieces, read without the GIL
    cdef size_t _hn[4]
    cdef const char *_idp
    cdef int _direct                # read without the GIL
    cdef long long _served          # atomic: every request the lane served
    cdef long long _direct_served   # atomic: of which answered without the lookup
    cdef long long _ids             # atomic: request id counter of direct answers

    cdef int _ready(self) except -1
    cdef object _accepts(self, const char *head, size_t n)
    cdef size_t _direct_head(self, const ebs_lane_block *b, double now, char *out) noexcept nogil
    cdef int _run(self, int fd, char *buf, Py_ssize_t *have, ebs_lane_auth *auth,
                  ebs_lane_request *r, size_t *head_len, int pipe_r, int pipe_w,
                  size_t pipe_cap) noexcept nogil
