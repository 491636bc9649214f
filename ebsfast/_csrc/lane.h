/* The local server's native lane for GetSnapshotBlock: request-head parsing, SigV4
 * verification and the block's trip to the socket, with no Python API inside.
 *
 * The lane only ever accepts: a request head it parses and whose signature it verifies is
 * served by it; anything else (another operation, a header it does not expect, a signature that
 * does not verify, a date out of range) goes back to the server's general path in Python, which
 * gives every answer and every error. So the rules here are a subset of the general path's,
 * never a second opinion: ebsfast/_lane_py.py states them in Python and the tests hold the two
 * to each other and to ebsfast/testing/_auth.py. */
#ifndef EBSFAST_LANE_H
#define EBSFAST_LANE_H

#include <stddef.h>
#include <stdint.h>

#include "sigv4.h"

/* At most this many header lines (and signed header names) in a request the lane serves. */
#define EBS_LANE_MAX_HEADERS 32

typedef struct {
    const char *p;
    size_t n;
} ebs_span;

typedef struct {
    ebs_span target, path, query;
    ebs_span names[EBS_LANE_MAX_HEADERS];  /* as sent */
    ebs_span values[EBS_LANE_MAX_HEADERS]; /* trimmed of spaces and tabs */
    size_t n_headers;
} ebs_lane_request;

/* 1 when `head` (the request head without its final CRLF CRLF) is "GET <target> HTTP/1.1"
 * with well-formed header lines of printable ASCII, no repeated header name, no body (no
 * Content-Length other than "0", no Transfer-Encoding, no Expect) and a kept-alive connection;
 * `r` then points into `head`. 0 otherwise. */
int ebs_lane_parse(const char *head, size_t n, ebs_lane_request *r);

/* The value of header `name` (lower case), or NULL. */
const ebs_span *ebs_lane_header(const ebs_lane_request *r, const char *name, size_t name_len);

typedef struct {
    const char *access_key;
    size_t access_key_len;
    const char *secret_key;
    size_t secret_key_len;
    const char *region;
    size_t region_len;
    const char *session_token; /* NULL when the server has none */
    size_t session_token_len;
    double max_skew_s;
    /* the signing key of the last day seen, ready for HMAC; not shared between threads
     * (each connection verifies with its own copy of this struct) */
    char day[8];
    int have_key;
    ebs_hmac_key key;
} ebs_lane_auth;

/* 1 when `r` carries an Authorization header with a valid AWS4-HMAC-SHA256 signature by these
 * credentials, signed within max_skew_s of `now` (seconds since the epoch); 0 otherwise. */
int ebs_lane_verify(ebs_lane_auth *a, const ebs_lane_request *r, double now);

/* ---- direct answers: blocks of completed snapshots, found without Python ----
 *
 * The server publishes each snapshot when it completes (a completed snapshot never changes):
 * its blocks' indexes, addresses and checksums. A GetSnapshotBlock whose path and block token
 * name a published block, with the token's MAC right and unexpired, is then answered from
 * here. Anything else is left to the server's lookup. All of it may run without the GIL. */

#define EBS_LANE_CHECKSUM_LEN 44 /* base64 of a SHA-256 */
#define EBS_LANE_MAX_TOKEN 256   /* longer block tokens are refused by the service */

typedef struct {
    uint64_t index;
    uintptr_t address;
    char checksum[EBS_LANE_CHECKSUM_LEN];
} ebs_lane_block;

typedef struct ebs_lane_snap ebs_lane_snap;

typedef struct {
    void *lock; /* a pthread mutex, behind a pointer to keep pthread.h out of Cython */
    ebs_lane_snap **buckets;
    size_t n_buckets, n_snaps;
    ebs_hmac_key token_key;
} ebs_lane_table;

int ebs_lane_table_init(ebs_lane_table *t, const uint8_t *token_key, size_t key_len);
void ebs_lane_table_free(ebs_lane_table *t);
/* Adds (or replaces) a snapshot's blocks; `blocks` is copied and need not be sorted.
 * 0, or -ENOMEM. */
int ebs_lane_publish(ebs_lane_table *t, const char *id, size_t id_len,
                     const ebs_lane_block *blocks, size_t n);
/* 1 when `path` and `query` are exactly "/snapshots/<id>/blocks/<decimal index>" and
 * "blockToken=<token>" (base64, '+' encoded as %2B, '/' and '=' encoded or not), the token is
 * this snapshot's and index's, its MAC checks and it has not expired at `now`, and the block
 * is published: `out` is then that block. 0 otherwise. */
int ebs_lane_find(ebs_lane_table *t, ebs_span path, ebs_span query, double now,
                  ebs_lane_block *out);
/* HMAC-SHA256 of `payload` under the table's key, its first 16 bytes: the token MAC. */
void ebs_lane_token_mac(const ebs_lane_table *t, const void *payload, size_t n, uint8_t out[16]);

/* An HTTP date ("Sun, 06 Dec 2026 13:11:49 GMT", 29 bytes) of whole second `t`. */
void ebs_lane_http_date(long long t, char out[29]);

/* recv(2) into buf, retried on EINTR: bytes received, 0 at end of stream, -errno on error. */
long ebs_lane_recv(int fd, char *buf, size_t cap);

/* `head` (sent with MSG_MORE), then `len` bytes at `data` handed to the socket by reference:
 * vmsplice(2) into the pipe (pipe_w), splice(2) from it (pipe_r) to fd, at most `pipe_cap`
 * bytes at a time. 0, or -errno (-EPIPE when the peer stopped reading). */
int ebs_lane_send_block(int fd, const char *head, size_t head_len, const void *data, size_t len,
                        int pipe_r, int pipe_w, size_t pipe_cap);

#endif
