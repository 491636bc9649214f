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
    /* the signing key of the last day seen; the caller serializes calls (the GIL) */
    char day[8];
    int have_key;
    uint8_t key[32];
} ebs_lane_auth;

/* 1 when `r` carries an Authorization header with a valid AWS4-HMAC-SHA256 signature by these
 * credentials, signed within max_skew_s of `now` (seconds since the epoch); 0 otherwise. */
int ebs_lane_verify(ebs_lane_auth *a, const ebs_lane_request *r, double now);

/* recv(2) into buf, retried on EINTR: bytes received, 0 at end of stream, -errno on error. */
long ebs_lane_recv(int fd, char *buf, size_t cap);

/* `head` (sent with MSG_MORE), then `len` bytes at `data` handed to the socket by reference:
 * vmsplice(2) into the pipe (pipe_w), splice(2) from it (pipe_r) to fd, at most `pipe_cap`
 * bytes at a time. 0, or -errno (-EPIPE when the peer stopped reading). */
int ebs_lane_send_block(int fd, const char *head, size_t head_len, const void *data, size_t len,
                        int pipe_r, int pipe_w, size_t pipe_cap);

#endif
