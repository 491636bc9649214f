/* One HTTP/1.1 exchange on a connected socket, moving the response body straight into caller
 * memory. The response reader is sans-I/O: ebs_http_step() says where the next bytes should be
 * received (the head buffer, a small scratch area for chunk framing, or the caller's buffer
 * itself) and the driver performs the receive. The plain-socket driver (ebs_http_run_fd) does it
 * with recv()/poll() and needs no Python; the TLS driver (ebs_http_run_tls) does it with
 * OpenSSL's SSL_read_ex on the SSL object of a Python ssl.SSLSocket, through the functions of
 * the OpenSSL that Python's _ssl module uses (ebs_tls_bind); where those cannot be had,
 * ebsfast/_http.pyx calls SSLSocket.recv_into instead. Nothing here touches Python objects:
 * errors come back as codes and the Cython layer raises. */
#ifndef EBSFAST_HTTP_H
#define EBSFAST_HTTP_H

#include <stddef.h>
#include <stdint.h>

#include "sha256.h"

/* Limits shared with the pure-Python twin, ebsfast/_http_py.py. */
#define EBS_HTTP_MAX_HEAD 65536        /* status line + fields + blank line */
#define EBS_HTTP_MAX_CHUNK_LINE 4096   /* bytes of a chunk-size line before its LF */
#define EBS_HTTP_MAX_TRAILERS 65536    /* bytes after the last-chunk line */
#define EBS_HTTP_MAX_INTERIM 16        /* 1xx responses skipped before the final one */
#define EBS_HTTP_FIRST_HEAD_BUF 16384  /* first head-buffer size; it doubles up to MAX_HEAD */

/* Return codes. Negative codes end the exchange; the connection is then unusable. */
#define EBS_HTTP_DONE 0
#define EBS_HTTP_WANT_READ 1
#define EBS_HTTP_E_CLOSED (-1)     /* EOF or reset before a complete head */
#define EBS_HTTP_E_INCOMPLETE (-2) /* EOF or reset inside the body */
#define EBS_HTTP_E_PROTOCOL (-3)   /* malformed head or framing; x->error says what */
#define EBS_HTTP_E_TOO_LARGE (-4)  /* body longer than the destination allows */
#define EBS_HTTP_E_TIMEOUT (-5)    /* no progress for timeout_s */
#define EBS_HTTP_E_OS (-6)         /* x->os_errno */
#define EBS_HTTP_E_NOMEM (-7)
#define EBS_HTTP_E_SIGNAL (-8)     /* the signal callback failed: a Python exception is set */
#define EBS_HTTP_E_TLS (-9)        /* a TLS failure: x->tls_code (Python's ssl error number) and
                                    * x->tls_message */

/* Body framing, decided by the final response head. */
#define EBS_HTTP_BODY_NONE 0
#define EBS_HTTP_BODY_LENGTH 1
#define EBS_HTTP_BODY_CHUNKED 2
#define EBS_HTTP_BODY_EOF 3

/* Offsets into the head buffer of one header field (value without surrounding whitespace). */
typedef struct {
    uint32_t name_off, name_len, value_off, value_len;
} ebs_http_field;

/* Called with the GIL released when a wait is interrupted or a poll slice ends; it takes the GIL
 * and runs Python's signal handlers. Returns 0, or -1 when a handler raised. */
typedef int (*ebs_http_signal_fn)(void);

typedef struct {
    /* -- set by the caller before the first step (ebs_http_init fills the rest) -- */
    uint8_t *out;            /* destination for a 200 body, or NULL */
    size_t out_cap;
    int hash_body;           /* SHA-256 of a body written into out */
    uint64_t max_other;      /* bound of any other body */
    int head_request;        /* the request was HEAD: no response body whatever the head says */
    /* Optional: memory for another (non-out) body whose Content-Length is known, asked once
     * with that length (> 0). It returns room for exactly n bytes, owned by the caller
     * (ebs_http_release never frees it), or NULL for E_NOMEM. Without it, such bodies go into
     * malloc'd memory like bodies of unknown length. */
    uint8_t *(*alloc_exact)(void *ctx, size_t n);
    void *alloc_ctx;

    /* -- the final response head, valid after EBS_HTTP_DONE -- */
    uint8_t *hbuf;           /* malloc'd; the head is hbuf[0 .. head_len) */
    size_t hcap, hlen, head_len;
    int status, minor;       /* HTTP/1.<minor> */
    uint32_t reason_off, reason_len;
    ebs_http_field *fields;  /* malloc'd, nfields entries */
    size_t nfields, fields_cap;
    int keep_alive;
    int framing;
    int64_t content_length;  /* -1 when the head gave none */
    int interim;             /* 1xx responses skipped */

    /* -- the body, valid after EBS_HTTP_DONE -- */
    uint8_t *dst;            /* out, alloc_exact's memory, or a malloc'd buffer */
    size_t dst_cap, dst_len;
    int dst_is_out;
    int dst_is_exact;        /* dst came from alloc_exact */
    uint8_t digest[EBS_SHA256_DIGEST];
    int has_digest;

    /* -- error details -- */
    const char *error;       /* static message for E_PROTOCOL / E_TOO_LARGE */
    int os_errno;
    int tls_code;            /* E_TLS: 1 (SSL_ERROR_SSL), 8 (an EOF without close_notify), ... */
    char tls_message[160];   /* E_TLS: OpenSSL's description, NUL-terminated */
    uint64_t received;       /* response bytes received in total (head and body) */

    /* -- private state -- */
    int phase;
    size_t scan, line_start; /* end-of-head search position, start of the current line */
    const uint8_t *in;       /* received bytes not yet consumed (in hbuf or scratch) */
    size_t in_len;
    int eof;
    uint64_t remaining;      /* LENGTH: body bytes left; CHUNKED: bytes left in this chunk */
    int cstate;              /* chunk framing state */
    uint64_t csize;
    size_t cline;            /* bytes of the current chunk line or of the trailers */
    int cdigits;
    size_t hashed;           /* dst[0 .. hashed) is in sha */
    int reading_scratch;     /* the pending WANT_READ targets scratch */
    int reading_head;        /* ... or the head buffer */
    int reading_exact;       /* ... or exactly the rest of a part of known size */
    ebs_sha256_ctx sha;
    uint8_t scratch[4096];
} ebs_http_ex;

/* Prepares x (zeroing the private state); the caller then sets out/out_cap/hash_body/...
 * Always pair with ebs_http_release(). */
void ebs_http_init(ebs_http_ex *x);
void ebs_http_release(ebs_http_ex *x);

/* Advances the reader over received bytes. Returns EBS_HTTP_DONE, a negative error, or
 * EBS_HTTP_WANT_READ with *buf and *len naming where to receive next (len > 0); the driver then
 * calls ebs_http_received() with the count (0 for EOF), or ebs_http_reset() when the peer reset
 * the connection. Never writes outside out[0 .. out_cap). */
int ebs_http_step(ebs_http_ex *x, uint8_t **buf, size_t *len);
void ebs_http_received(ebs_http_ex *x, size_t n);
int ebs_http_reset(ebs_http_ex *x); /* E_CLOSED before the body, E_INCOMPLETE inside it */

/* The plain-socket driver: sends head and body with sendmsg (looping on partial writes), then
 * reads the whole response. timeout_s < 0 waits forever. Runs without the GIL; on_signal is
 * called at least every poll slice while waiting. */
int ebs_http_send_fd(ebs_http_ex *x, int fd, const uint8_t *head, size_t head_len,
                     const uint8_t *body, size_t body_len, double timeout_s,
                     ebs_http_signal_fn on_signal);
int ebs_http_run_fd(ebs_http_ex *x, int fd, double timeout_s, ebs_http_signal_fn on_signal);

/* The same reading, for an fd in blocking mode: each recv waits in the kernel (one system call
 * per read instead of recv, poll, recv), bounded by an SO_RCVTIMEO of one poll slice that this
 * sets, after which the deadline and on_signal are checked as ebs_http_run_fd does. The rest of
 * a part of known size is asked for whole (MSG_WAITALL; in pieces of a hash batch or two when
 * hashing, so the hash keeps pace with arrival). Returns EBS_HTTP_E_OS if the option cannot be
 * set; never blocks past a slice without looking at the clock. */
int ebs_http_run_fd_blocking(ebs_http_ex *x, int fd, double timeout_s,
                             ebs_http_signal_fn on_signal);

/* -- TLS: OpenSSL called on the SSL object under a Python ssl.SSLSocket -------------------- */

/* The few OpenSSL functions the TLS driver needs (OpenSSL 3 signatures; `ssl` is an SSL *). */
typedef struct {
    int (*read_ex)(void *ssl, void *buf, size_t num, size_t *readbytes);
    int (*write_ex)(void *ssl, const void *buf, size_t num, size_t *written);
    int (*get_error)(const void *ssl, int ret);
    void *(*get_ex_data)(const void *ssl, int idx);
    int (*get_fd)(const void *ssl);
    void (*clear_error)(void);
    unsigned long (*peek_error)(void);
    void (*error_string_n)(unsigned long e, char *buf, size_t len);
} ebs_tls_api;

/* Fills api from the OpenSSL libraries that the already loaded shared object at module_path
 * (Python's _ssl extension) links, so that the SSL objects Python made are driven by the very
 * library that made them. Returns 0, or -1 (api unusable) when the module is not a loaded
 * shared object, a function is missing, or the library is older than OpenSSL 3.0. */
int ebs_tls_bind(ebs_tls_api *api, const char *module_path);

/* The TLS drivers, the plain ones' twins: the request written with SSL_write_ex, the response
 * read with SSL_read_ex straight into the places ebs_http_step names, without the GIL. The fd
 * (the SSL's) must be non-blocking whenever timeout_s >= 0, so that every wait happens in
 * poll, in slices that run on_signal. An EOF without close_notify ends the response like a
 * close when ragged_eof_ok (Python's suppress_ragged_eofs), else it is E_TLS with tls_code 8. */
int ebs_http_send_tls(ebs_http_ex *x, const ebs_tls_api *api, void *ssl, int fd,
                      const uint8_t *head, size_t head_len, const uint8_t *body, size_t body_len,
                      double timeout_s, ebs_http_signal_fn on_signal);
int ebs_http_run_tls(ebs_http_ex *x, const ebs_tls_api *api, void *ssl, int fd, int ragged_eof_ok,
                     double timeout_s, ebs_http_signal_fn on_signal);

/* Hashes whatever of the body has not been hashed yet (the TLS driver batches it). */
void ebs_http_hash_pending(ebs_http_ex *x);

/* SHA-256 of a whole body into out, paired with another thread's body where one is ready:
 * the two-lane SHA-NI kernel hashes two messages in about the time of one, so threads that
 * verify blocks side by side spend about half the CPU on hashing. A body with no partner
 * waits at most wait_ns for one (about what hashing it alone costs, so that a wait never
 * costs more than it can save), then is hashed alone; with wait_ns <= 0 or without the
 * two-lane kernel it is hashed alone at once. Returns 1 when hashed in a pair. Thread-safe;
 * for callers without the GIL. */
int ebs_http_sha256_paired(const uint8_t *data, size_t len, uint8_t out[32], long long wait_ns);

#endif
