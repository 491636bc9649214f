# C API of ebsfast/_csrc/http.h, declared once. (SHA-256 comes from ebsfast/_sha256.pxd.)
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t

from ebsfast._sha256 cimport EBS_SHA256_DIGEST


cdef extern from "http.h" nogil:
    enum:
        EBS_HTTP_MAX_HEAD
        EBS_HTTP_MAX_CHUNK_LINE
        EBS_HTTP_MAX_TRAILERS
        EBS_HTTP_MAX_INTERIM
        EBS_HTTP_FIRST_HEAD_BUF
        EBS_HTTP_DONE
        EBS_HTTP_WANT_READ
        EBS_HTTP_E_CLOSED
        EBS_HTTP_E_INCOMPLETE
        EBS_HTTP_E_PROTOCOL
        EBS_HTTP_E_TOO_LARGE
        EBS_HTTP_E_TIMEOUT
        EBS_HTTP_E_OS
        EBS_HTTP_E_NOMEM
        EBS_HTTP_E_SIGNAL
        EBS_HTTP_E_TLS
        EBS_HTTP_BODY_NONE
        EBS_HTTP_BODY_LENGTH
        EBS_HTTP_BODY_CHUNKED
        EBS_HTTP_BODY_EOF

    ctypedef struct ebs_http_field:
        uint32_t name_off, name_len, value_off, value_len

    ctypedef int (*ebs_http_signal_fn)() noexcept nogil

    ctypedef struct ebs_http_ex:
        uint8_t *out
        size_t out_cap
        int hash_body
        uint64_t max_other
        int head_request
        uint8_t *(*alloc_exact)(void *ctx, size_t n) noexcept nogil
        void *alloc_ctx
        uint8_t *hbuf
        size_t head_len
        int status, minor
        uint32_t reason_off, reason_len
        ebs_http_field *fields
        size_t nfields
        int keep_alive
        int framing
        int64_t content_length
        uint8_t *dst
        size_t dst_len
        int dst_is_out
        int dst_is_exact
        size_t dst_cap
        uint8_t digest[32]
        int has_digest
        const char *error
        int os_errno
        int tls_code
        char tls_message[160]
        uint64_t received

    void ebs_http_init(ebs_http_ex *x)
    void ebs_http_release(ebs_http_ex *x)
    int ebs_http_step(ebs_http_ex *x, uint8_t **buf, size_t *len)
    void ebs_http_received(ebs_http_ex *x, size_t n)
    int ebs_http_reset(ebs_http_ex *x)
    int ebs_http_send_fd(ebs_http_ex *x, int fd, const uint8_t *head, size_t head_len,
                         const uint8_t *body, size_t body_len, double timeout_s,
                         ebs_http_signal_fn on_signal)
    int ebs_http_run_fd(ebs_http_ex *x, int fd, double timeout_s, ebs_http_signal_fn on_signal)
    int ebs_http_run_fd_blocking(ebs_http_ex *x, int fd, double timeout_s,
                                 ebs_http_signal_fn on_signal)
    ctypedef struct ebs_tls_api:
        void *(*get_ex_data)(const void *ssl, int idx) noexcept nogil
        int (*get_fd)(const void *ssl) noexcept nogil

    int ebs_tls_bind(ebs_tls_api *api, const char *module_path)
    int ebs_http_send_tls(ebs_http_ex *x, const ebs_tls_api *api, void *ssl, int fd,
                          const uint8_t *head, size_t head_len, const uint8_t *body,
                          size_t body_len, double timeout_s, ebs_http_signal_fn on_signal)
    int ebs_http_run_tls(ebs_http_ex *x, const ebs_tls_api *api, void *ssl, int fd,
                         int ragged_eof_ok, double timeout_s, ebs_http_signal_fn on_signal)
    void ebs_http_hash_pending(ebs_http_ex *x)
    int ebs_http_sha256_paired(const uint8_t *data, size_t len, uint8_t *out, long long wait_ns)


cdef extern from "Python.h":
    # Declared without Cython's `except -1` so a nogil C callback can run the handlers and
    # leave any exception set for the caller to raise.
    int _check_signals "PyErr_CheckSignals" () noexcept
