# C API of ebsfast/_csrc/lane.h, declared once.
from libc.stdint cimport uint8_t


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
    cdef public Py_ssize_t served

    cdef object _accepts(self, const char *head, size_t n)
