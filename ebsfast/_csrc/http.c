/* HTTP/1.1 response reading for ebsfast's data path; see http.h for the shape. The parsing rules
 * (RFC 9112) are written down once more, in Python, in ebsfast/_http_py.py: the two must accept
 * and reject the same bytes, and the tests compare them. */
#define _GNU_SOURCE
#include "http.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <time.h>

enum { PH_HEAD, PH_BODY, PH_DONE };
enum { T_HEAD, T_SCRATCH, T_DST };

/* Chunked framing states (RFC 9112 section 7.1). */
enum {
    CS_SIZE,        /* hex digits of the chunk size */
    CS_SIZE_WS,     /* whitespace after the digits */
    CS_EXT,         /* ";ext" up to the end of the line */
    CS_SIZE_LF,     /* CR seen; LF must follow */
    CS_DATA,        /* csize data bytes */
    CS_DATA_END,    /* CRLF (or LF) after the data */
    CS_DATA_LF,
    CS_TRAILER_BOL, /* start of a trailer line; an empty one ends the message */
    CS_TRAILER,
    CS_TRAILER_LF,  /* CR of the final empty line seen */
    CS_END,
};

/* Hashing in batches this large keeps the data in cache and, on the TLS path through Python's
 * recv_into, makes one GIL release cover several 16 KiB records instead of one each. */
#define HASH_BATCH 65536
/* Signals are checked at least this often while waiting, so Ctrl-C works even when the signal
 * went to another thread than the one blocked here. */
#define POLL_SLICE_MS 250
#define OTHER_BODY_FIRST 16384

#define PROTO(x, msg) ((x)->error = (msg), EBS_HTTP_E_PROTOCOL)

void ebs_http_init(ebs_http_ex *x) {
    memset(x, 0, offsetof(ebs_http_ex, scratch));
    x->content_length = -1;
    x->max_other = 1u << 20;
}

void ebs_http_release(ebs_http_ex *x) {
    free(x->hbuf);
    free(x->fields);
    if (!x->dst_is_out && !x->dst_is_exact)
        free(x->dst);
    x->hbuf = NULL;
    x->fields = NULL;
    x->dst = NULL;
}

/* -- head -------------------------------------------------------------------------------- */

static int is_tchar(uint8_t c) {
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
        return 1;
    return c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* field-value and reason-phrase bytes: HTAB, SP, VCHAR, obs-text */
static int is_text(uint8_t c) { return c == '\t' || (c >= 0x20 && c != 0x7f); }

static int is_ws(uint8_t c) { return c == ' ' || c == '\t'; }

static int ieq(const uint8_t *a, size_t n, const char *lower) {
    size_t m = strlen(lower);
    if (n != m)
        return 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t c = a[i];
        if (c >= 'A' && c <= 'Z')
            c = (uint8_t)(c + 32);
        if (c != (uint8_t)lower[i])
            return 0;
    }
    return 1;
}

static void trim(const uint8_t **p, size_t *n) {
    while (*n && is_ws((*p)[0])) {
        (*p)++;
        (*n)--;
    }
    while (*n && is_ws((*p)[*n - 1]))
        (*n)--;
}

/* Calls fn for each non-empty element of a comma-separated list (RFC 9110 section 5.6.1). */
typedef void (*token_fn)(const uint8_t *tok, size_t n, void *arg);
static void each_token(const uint8_t *v, size_t n, token_fn fn, void *arg) {
    size_t i = 0;
    while (i <= n) {
        size_t j = i;
        while (j < n && v[j] != ',')
            j++;
        const uint8_t *t = v + i;
        size_t tn = j - i;
        trim(&t, &tn);
        if (tn)
            fn(t, tn, arg);
        i = j + 1;
    }
}

typedef struct {
    int chunked, other, close, keep_alive;
} tokens;

static void te_token(const uint8_t *t, size_t n, void *arg) {
    tokens *k = arg;
    if (ieq(t, n, "chunked"))
        k->chunked++;
    else
        k->other = 1;
}

static void conn_token(const uint8_t *t, size_t n, void *arg) {
    tokens *k = arg;
    if (ieq(t, n, "close"))
        k->close = 1;
    else if (ieq(t, n, "keep-alive"))
        k->keep_alive = 1;
}

static int add_field(ebs_http_ex *x, size_t no, size_t nl, size_t vo, size_t vl) {
    if (x->nfields == x->fields_cap) {
        size_t cap = x->fields_cap ? 2 * x->fields_cap : 32;
        ebs_http_field *f = realloc(x->fields, cap * sizeof *f);
        if (!f)
            return EBS_HTTP_E_NOMEM;
        x->fields = f;
        x->fields_cap = cap;
    }
    /* Offsets fit: the head is at most EBS_HTTP_MAX_HEAD bytes. */
    x->fields[x->nfields++] = (ebs_http_field){(uint32_t)no, (uint32_t)nl, (uint32_t)vo,
                                               (uint32_t)vl};
    return 0;
}

/* 1*DIGIT into a non-negative int64 */
static int parse_decimal(const uint8_t *v, size_t n, int64_t *out) {
    if (n == 0)
        return -1;
    int64_t val = 0;
    for (size_t i = 0; i < n; i++) {
        if (v[i] < '0' || v[i] > '9')
            return -1;
        int d = v[i] - '0';
        if (val > (INT64_MAX - d) / 10)
            return -2;
        val = val * 10 + d;
    }
    *out = val;
    return 0;
}

/* Finds the blank line that ends the head; 1 when found (head_len set), 0 when more bytes are
 * needed, or an error. */
static int scan_head(ebs_http_ex *x) {
    static const char prefix[] = "HTTP/";
    size_t np = x->hlen < 5 ? x->hlen : 5;
    /* Fail fast on a peer that is not speaking HTTP, rather than waiting for 64 KiB. */
    if (memcmp(x->hbuf, prefix, np) != 0)
        return PROTO(x, "the response does not start with HTTP/");
    while (x->scan < x->hlen) {
        const uint8_t *nl = memchr(x->hbuf + x->scan, '\n', x->hlen - x->scan);
        if (!nl) {
            x->scan = x->hlen;
            break;
        }
        size_t at = (size_t)(nl - x->hbuf);
        size_t end = at;
        if (end > x->line_start && x->hbuf[end - 1] == '\r')
            end--;
        if (end == x->line_start && x->line_start > 0) {
            x->head_len = at + 1;
            return 1;
        }
        x->line_start = x->scan = at + 1;
    }
    if (x->hlen >= EBS_HTTP_MAX_HEAD)
        return PROTO(x, "the response head exceeds 64 KiB");
    return 0;
}

/* Parses hbuf[0 .. head_len). Returns 0, 1 for an interim (1xx) response, or an error. */
static int parse_head(ebs_http_ex *x) {
    const uint8_t *h = x->hbuf;
    size_t pos = 0, n = x->head_len;
    int64_t cl = -1;
    int te_seen = 0;
    tokens tk = {0, 0, 0, 0};
    x->nfields = 0;
    for (int first = 1;; first = 0) {
        const uint8_t *nl = memchr(h + pos, '\n', n - pos);
        size_t ls = pos, le = (size_t)(nl - h);
        pos = le + 1;
        if (le > ls && h[le - 1] == '\r')
            le--;
        const uint8_t *l = h + ls;
        size_t ln = le - ls;
        if (first) {
            /* HTTP/1.x SP 3DIGIT [SP reason] */
            if (ln < 12 || memcmp(l, "HTTP/", 5) != 0 || l[6] != '.' || l[8] != ' ' ||
                l[5] < '0' || l[5] > '9' || l[7] < '0' || l[7] > '9')
                return PROTO(x, "malformed status line");
            if (l[5] != '1')
                return PROTO(x, "unsupported HTTP version (only HTTP/1.x is spoken)");
            for (int i = 9; i < 12; i++)
                if (l[i] < '0' || l[i] > '9')
                    return PROTO(x, "malformed status code");
            if (l[9] == '0')
                return PROTO(x, "status code below 100");
            if (ln > 12 && l[12] != ' ')
                return PROTO(x, "malformed status line");
            for (size_t i = 13; i < ln; i++)
                if (!is_text(l[i]))
                    return PROTO(x, "invalid character in the reason phrase");
            x->minor = l[7] - '0';
            x->status = (l[9] - '0') * 100 + (l[10] - '0') * 10 + (l[11] - '0');
            x->reason_off = (uint32_t)(ls + (ln > 12 ? 13 : 12));
            x->reason_len = (uint32_t)(ln > 12 ? ln - 13 : 0);
            continue;
        }
        if (ln == 0)
            break;
        if (is_ws(l[0]))
            return PROTO(x, "obsolete line folding in the response head is not supported");
        const uint8_t *colon = memchr(l, ':', ln);
        if (!colon)
            return PROTO(x, "header line without a colon");
        size_t nn = (size_t)(colon - l);
        if (nn == 0)
            return PROTO(x, "empty header name");
        for (size_t i = 0; i < nn; i++)
            if (!is_tchar(l[i]))
                return PROTO(x, "invalid character in a header name");
        const uint8_t *v = colon + 1;
        size_t vn = ln - nn - 1;
        trim(&v, &vn);
        for (size_t i = 0; i < vn; i++)
            if (!is_text(v[i]))
                return PROTO(x, "invalid character in a header value");
        int rc = add_field(x, ls, nn, (size_t)(v - h), vn);
        if (rc)
            return rc;
        if (ieq(l, nn, "content-length")) {
            int64_t val;
            rc = parse_decimal(v, vn, &val);
            if (rc == -1)
                return PROTO(x, "invalid Content-Length");
            if (rc == -2)
                return PROTO(x, "Content-Length out of range");
            if (cl >= 0 && cl != val)
                return PROTO(x, "conflicting Content-Length headers");
            cl = val;
        } else if (ieq(l, nn, "transfer-encoding")) {
            te_seen = 1;
            each_token(v, vn, te_token, &tk);
        } else if (ieq(l, nn, "connection")) {
            each_token(v, vn, conn_token, &tk);
        }
    }
    if (te_seen && (tk.other || tk.chunked != 1))
        return PROTO(x, "unsupported Transfer-Encoding (only chunked is)");
    if (te_seen && cl >= 0)
        return PROTO(x, "both Content-Length and Transfer-Encoding in the response");
    if (x->status < 200) {
        if (x->status == 101)
            return PROTO(x, "unexpected 101 Switching Protocols");
        if (++x->interim > EBS_HTTP_MAX_INTERIM)
            return PROTO(x, "too many 1xx interim responses");
        return 1;
    }
    x->content_length = cl;
    if (x->head_request || x->status == 204 || x->status == 304)
        x->framing = EBS_HTTP_BODY_NONE;
    else if (te_seen)
        x->framing = EBS_HTTP_BODY_CHUNKED;
    else if (cl >= 0)
        x->framing = EBS_HTTP_BODY_LENGTH;
    else
        x->framing = EBS_HTTP_BODY_EOF;
    x->keep_alive = !tk.close && (x->minor >= 1 || tk.keep_alive) &&
                    x->framing != EBS_HTTP_BODY_EOF;
    return 0;
}

/* -- body -------------------------------------------------------------------------------- */

/* Makes room for `need` more bytes in an owned (non-out) destination, within max_other. */
static int reserve_other(ebs_http_ex *x, uint64_t need) {
    if (need > x->max_other - x->dst_len) {
        x->error = "the response body exceeds max_other_body";
        return EBS_HTTP_E_TOO_LARGE;
    }
    size_t want = x->dst_len + (size_t)need;
    if (want <= x->dst_cap)
        return 0;
    size_t cap = x->dst_cap ? x->dst_cap : OTHER_BODY_FIRST;
    while (cap < want)
        cap *= 2;
    if (cap > x->max_other)
        cap = (size_t)x->max_other;
    uint8_t *p = realloc(x->dst, cap ? cap : 1);
    if (!p)
        return EBS_HTTP_E_NOMEM;
    x->dst = p;
    x->dst_cap = cap;
    return 0;
}

static int begin_body(ebs_http_ex *x) {
    if (x->out && x->status == 200) {
        x->dst = x->out;
        x->dst_cap = x->out_cap;
        x->dst_is_out = 1;
        if (x->hash_body) {
            ebs_sha256_init(&x->sha);
            x->has_digest = 1;
        }
    }
    if (x->framing == EBS_HTTP_BODY_LENGTH) {
        uint64_t cl = (uint64_t)x->content_length;
        if (x->dst_is_out) {
            if (cl > x->dst_cap) {
                x->error = "Content-Length exceeds the size of out";
                return EBS_HTTP_E_TOO_LARGE;
            }
        } else if (x->alloc_exact && cl > 0) {
            if (cl > x->max_other) {
                x->error = "the response body exceeds max_other_body";
                return EBS_HTTP_E_TOO_LARGE;
            }
            if ((uint64_t)(size_t)cl != cl)
                return EBS_HTTP_E_NOMEM;
            uint8_t *p = x->alloc_exact(x->alloc_ctx, (size_t)cl);
            if (!p)
                return EBS_HTTP_E_NOMEM;
            x->dst = p;
            x->dst_cap = (size_t)cl;
            x->dst_is_exact = 1;
        } else {
            int rc = reserve_other(x, cl);
            if (rc)
                return rc;
        }
        x->remaining = cl;
    }
    x->cstate = CS_SIZE;
    return 0;
}

/* Copies buffered input into the destination; the one place body bytes are memcpy'd. */
static void take(ebs_http_ex *x, size_t n) {
    memcpy(x->dst + x->dst_len, x->in, n);
    x->dst_len += n;
    x->in += n;
    x->in_len -= n;
}

/* Consumes framing bytes of a chunked body until data, the end, or the input runs out. */
static int chunk_framing(ebs_http_ex *x) {
    while (x->in_len && x->cstate != CS_DATA && x->cstate != CS_END) {
        uint8_t c = *x->in++;
        x->in_len--;
        /* The limit counts the bytes before the line's LF. */
        if (x->cstate <= CS_SIZE_LF && ++x->cline > EBS_HTTP_MAX_CHUNK_LINE && c != '\n')
            return PROTO(x, "chunk size line too long");
        if (x->cstate >= CS_TRAILER_BOL && ++x->cline > EBS_HTTP_MAX_TRAILERS)
            return PROTO(x, "chunked trailer section too long");
        switch (x->cstate) {
        case CS_SIZE: {
            int d = (c >= '0' && c <= '9') ? c - '0'
                    : (c >= 'a' && c <= 'f') ? c - 'a' + 10
                    : (c >= 'A' && c <= 'F') ? c - 'A' + 10 : -1;
            if (d >= 0) {
                if (x->csize > (uint64_t)(INT64_MAX - d) / 16)
                    return PROTO(x, "chunk size out of range");
                x->csize = x->csize * 16 + (uint64_t)d;
                x->cdigits++;
                break;
            }
            if (x->cdigits == 0)
                return PROTO(x, "invalid chunk size");
            /* c is the first byte after the digits: the CS_SIZE_WS case sees it */
            x->cstate = CS_SIZE_WS;
        }
            __attribute__((fallthrough));
        case CS_SIZE_WS:
            if (is_ws(c))
                break;
            if (c == ';')
                x->cstate = CS_EXT;
            else if (c == '\r')
                x->cstate = CS_SIZE_LF;
            else if (c == '\n')
                goto size_done;
            else
                return PROTO(x, "invalid chunk size");
            break;
        case CS_EXT:
            if (c == '\r')
                x->cstate = CS_SIZE_LF;
            else if (c == '\n')
                goto size_done;
            break;
        case CS_SIZE_LF:
            if (c != '\n')
                return PROTO(x, "bare CR in a chunk size line");
        size_done:
            x->cline = 0;
            x->cdigits = 0;
            if (x->csize == 0) {
                x->cstate = CS_TRAILER_BOL;
                break;
            }
            /* Bounds before any byte of this chunk is written. */
            if (x->dst_is_out) {
                if (x->csize > x->dst_cap - x->dst_len) {
                    x->error = "the chunked body exceeds the size of out";
                    return EBS_HTTP_E_TOO_LARGE;
                }
            } else {
                int rc = reserve_other(x, x->csize);
                if (rc)
                    return rc;
            }
            x->remaining = x->csize;
            x->csize = 0;
            x->cstate = CS_DATA;
            break;
        case CS_DATA_END:
            if (c == '\r')
                x->cstate = CS_DATA_LF;
            else if (c == '\n')
                x->cstate = CS_SIZE;
            else
                return PROTO(x, "chunk data not followed by CRLF");
            break;
        case CS_DATA_LF:
            if (c != '\n')
                return PROTO(x, "chunk data not followed by CRLF");
            x->cstate = CS_SIZE;
            break;
        case CS_TRAILER_BOL:
            if (c == '\n')
                x->cstate = CS_END;
            else if (c == '\r')
                x->cstate = CS_TRAILER_LF;
            else
                x->cstate = CS_TRAILER;
            break;
        case CS_TRAILER:
            if (c == '\n')
                x->cstate = CS_TRAILER_BOL;
            break;
        case CS_TRAILER_LF:
            if (c != '\n')
                return PROTO(x, "bare CR in the chunked trailer section");
            x->cstate = CS_END;
            break;
        }
    }
    return 0;
}

void ebs_http_hash_pending(ebs_http_ex *x) {
    if (x->has_digest && x->dst_len > x->hashed) {
        ebs_sha256_update(&x->sha, x->dst + x->hashed, x->dst_len - x->hashed);
        x->hashed = x->dst_len;
    }
}

/* One body waiting for a partner; the mutex guards the slot and every job's `done`. */
typedef struct {
    const uint8_t *data;
    size_t len;
    uint8_t *out;
    int done;
} pair_job;

static pthread_mutex_t pair_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t pair_cv;
static pthread_once_t pair_once = PTHREAD_ONCE_INIT;
static int pair_ready; /* the condition variable exists (set once, under pair_once) */
static pair_job *pair_waiting;

/* Waits are timed on the monotonic clock, so a step of the wall clock cannot stretch one. */
static void pair_init(void) {
    pthread_condattr_t attr;
    if (pthread_condattr_init(&attr) != 0)
        return;
    if (pthread_condattr_setclock(&attr, CLOCK_MONOTONIC) == 0 &&
        pthread_cond_init(&pair_cv, &attr) == 0)
        pair_ready = 1;
    pthread_condattr_destroy(&attr);
}

int ebs_http_sha256_paired(const uint8_t *data, size_t len, uint8_t out[32], long long wait_ns) {
    pthread_once(&pair_once, pair_init);
    if (wait_ns <= 0 || !pair_ready || ebs_sha256_get_path() != EBS_SHA256_SHANI_X2) {
        ebs_sha256(data, len, out);
        return 0;
    }
    pthread_mutex_lock(&pair_mu);
    pair_job *other = pair_waiting;
    if (other) { /* a body is waiting: hash both here, then tell its thread */
        pair_waiting = NULL;
        pthread_mutex_unlock(&pair_mu);
        ebs_sha256_x2(data, len, other->data, other->len, out, other->out);
        pthread_mutex_lock(&pair_mu);
        other->done = 1;
        pthread_cond_broadcast(&pair_cv);
        pthread_mutex_unlock(&pair_mu);
        return 1;
    }
    pair_job me = {data, len, out, 0};
    pair_waiting = &me;
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    long long ns = until.tv_nsec + wait_ns % 1000000000LL;
    until.tv_sec += (time_t)(wait_ns / 1000000000LL + ns / 1000000000LL);
    until.tv_nsec = (long)(ns % 1000000000LL);
    while (pair_waiting == &me)
        if (pthread_cond_timedwait(&pair_cv, &pair_mu, &until) == ETIMEDOUT)
            break;
    if (pair_waiting == &me) { /* nobody came */
        pair_waiting = NULL;
        pthread_mutex_unlock(&pair_mu);
        ebs_sha256(data, len, out);
        return 0;
    }
    while (!me.done) /* taken: the partner is hashing this body too */
        pthread_cond_wait(&pair_cv, &pair_mu);
    pthread_mutex_unlock(&pair_mu);
    return 1;
}

static int want(ebs_http_ex *x, int target, uint8_t *p, size_t n, uint8_t **buf, size_t *len) {
    x->reading_head = target == T_HEAD;
    x->reading_scratch = target == T_SCRATCH;
    x->reading_exact = 0;
    *buf = p;
    *len = n;
    return EBS_HTTP_WANT_READ;
}

/* Internal to body_step: the part is not finished, go round its loop again. */
#define AGAIN 2

/* The next bytes of a part whose size is known (`remaining`, already checked to fit the
 * destination): those read along with earlier data first, then a read straight into the
 * destination. AGAIN when buffered bytes were taken. */
static int counted_part(ebs_http_ex *x, uint8_t **buf, size_t *len) {
    if (x->in_len) {
        size_t n = x->in_len < x->remaining ? x->in_len : (size_t)x->remaining;
        take(x, n);
        x->remaining -= n;
        return AGAIN;
    }
    if (x->eof)
        return EBS_HTTP_E_INCOMPLETE;
    int rc = want(x, T_DST, x->dst + x->dst_len, (size_t)x->remaining, buf, len);
    x->reading_exact = 1;
    return rc;
}

static int body_step(ebs_http_ex *x, uint8_t **buf, size_t *len) {
    if (x->has_digest && x->dst_len - x->hashed >= HASH_BATCH)
        ebs_http_hash_pending(x);
    for (;;) {
        switch (x->framing) {
        case EBS_HTTP_BODY_NONE:
            return EBS_HTTP_DONE;
        case EBS_HTTP_BODY_LENGTH: {
            if (x->remaining == 0)
                return EBS_HTTP_DONE;
            /* begin_body checked remaining <= dst_cap - dst_len */
            int rc = counted_part(x, buf, len);
            if (rc == AGAIN)
                continue;
            return rc;
        }
        case EBS_HTTP_BODY_EOF:
            if (x->in_len) {
                if (x->dst_is_out) {
                    if (x->in_len > x->dst_cap - x->dst_len) {
                        x->error = "the response body exceeds the size of out";
                        return EBS_HTTP_E_TOO_LARGE;
                    }
                } else {
                    int rc = reserve_other(x, x->in_len);
                    if (rc)
                        return rc;
                }
                take(x, x->in_len);
                continue;
            }
            if (x->eof)
                return EBS_HTTP_DONE;
            if (!x->dst_is_out && x->dst_len == x->dst_cap && x->dst_cap < x->max_other) {
                int rc = reserve_other(x, 1);
                if (rc)
                    return rc;
            }
            /* A full destination still needs one more read to tell EOF from excess. */
            if (x->dst_len == x->dst_cap)
                return want(x, T_SCRATCH, x->scratch, sizeof x->scratch, buf, len);
            return want(x, T_DST, x->dst + x->dst_len, x->dst_cap - x->dst_len, buf, len);
        case EBS_HTTP_BODY_CHUNKED: {
            int rc = chunk_framing(x);
            if (rc)
                return rc;
            if (x->cstate == CS_END)
                return EBS_HTTP_DONE;
            if (x->cstate == CS_DATA) {
                if (x->remaining == 0) {
                    x->cstate = CS_DATA_END;
                    continue;
                }
                /* the chunk size was checked against the room left */
                rc = counted_part(x, buf, len);
                if (rc == AGAIN)
                    continue;
                return rc;
            }
            if (x->eof)
                return EBS_HTTP_E_INCOMPLETE;
            return want(x, T_SCRATCH, x->scratch, sizeof x->scratch, buf, len);
        }
        default:
            return PROTO(x, "internal error: unknown body framing");
        }
    }
}

/* -- the reader -------------------------------------------------------------------------- */

int ebs_http_step(ebs_http_ex *x, uint8_t **buf, size_t *len) {
    for (;;) {
        switch (x->phase) {
        case PH_HEAD: {
            if (!x->hbuf) {
                x->hbuf = malloc(EBS_HTTP_FIRST_HEAD_BUF);
                if (!x->hbuf)
                    return EBS_HTTP_E_NOMEM;
                x->hcap = EBS_HTTP_FIRST_HEAD_BUF;
            }
            int rc = scan_head(x);
            if (rc < 0)
                return rc;
            if (rc == 0) {
                if (x->eof)
                    return EBS_HTTP_E_CLOSED;
                if (x->hlen == x->hcap) {
                    size_t cap = 2 * x->hcap;
                    if (cap > EBS_HTTP_MAX_HEAD)
                        cap = EBS_HTTP_MAX_HEAD;
                    uint8_t *p = realloc(x->hbuf, cap);
                    if (!p)
                        return EBS_HTTP_E_NOMEM;
                    x->hbuf = p;
                    x->hcap = cap;
                }
                return want(x, T_HEAD, x->hbuf + x->hlen, x->hcap - x->hlen, buf, len);
            }
            rc = parse_head(x);
            if (rc < 0)
                return rc;
            if (rc == 1) {
                /* An interim response: drop it and read the next head from what follows. */
                memmove(x->hbuf, x->hbuf + x->head_len, x->hlen - x->head_len);
                x->hlen -= x->head_len;
                x->head_len = x->scan = x->line_start = 0;
                continue;
            }
            rc = begin_body(x);
            if (rc < 0)
                return rc;
            x->in = x->hbuf + x->head_len;
            x->in_len = x->hlen - x->head_len;
            x->phase = PH_BODY;
            continue;
        }
        case PH_BODY: {
            int rc = body_step(x, buf, len);
            if (rc != EBS_HTTP_DONE)
                return rc;
            ebs_http_hash_pending(x);
            if (x->has_digest)
                ebs_sha256_final(&x->sha, x->digest);
            /* Bytes beyond this response cannot be handed to the next exchange. */
            if (x->in_len)
                x->keep_alive = 0;
            x->phase = PH_DONE;
            return EBS_HTTP_DONE;
        }
        default:
            return EBS_HTTP_DONE;
        }
    }
}

void ebs_http_received(ebs_http_ex *x, size_t n) {
    x->received += n;
    if (n == 0) {
        x->eof = 1;
        x->keep_alive = 0;
        return;
    }
    if (x->reading_head) {
        x->hlen += n;
    } else if (x->reading_scratch) {
        x->in = x->scratch;
        x->in_len = n;
    } else {
        x->dst_len += n;
        if (x->framing != EBS_HTTP_BODY_EOF)
            x->remaining -= n;
    }
    x->reading_head = x->reading_scratch = x->reading_exact = 0;
}

int ebs_http_reset(ebs_http_ex *x) {
    return x->phase == PH_HEAD ? EBS_HTTP_E_CLOSED : EBS_HTTP_E_INCOMPLETE;
}

/* -- the plain-socket driver ------------------------------------------------------------- */

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Runs Python's signal handlers through on_signal (if any); nonzero when one raised, and the
 * caller then returns EBS_HTTP_E_SIGNAL. */
static int signal_raised(ebs_http_signal_fn on_signal) {
    return on_signal && on_signal() < 0;
}

/* Waits until fd is ready for `events`, for at most timeout_s without progress (the caller
 * calls this afresh after each transfer, like a socket timeout applies to each recv). */
static int wait_fd(ebs_http_ex *x, int fd, short events, double timeout_s,
                   ebs_http_signal_fn on_signal) {
    double deadline = timeout_s < 0 ? INFINITY : now_s() + timeout_s;
    for (;;) {
        int slice = POLL_SLICE_MS;
        if (timeout_s >= 0) {
            double left = deadline - now_s();
            if (left <= 0)
                return EBS_HTTP_E_TIMEOUT;
            if (left * 1000 < slice)
                slice = (int)ceil(left * 1000);
        }
        struct pollfd p = {fd, events, 0};
        int r = poll(&p, 1, slice);
        if (r > 0)
            return 0; /* ready, or an error the next send/recv reports */
        if (r < 0 && errno != EINTR) {
            x->os_errno = errno;
            return EBS_HTTP_E_OS;
        }
        if (signal_raised(on_signal))
            return EBS_HTTP_E_SIGNAL;
    }
}

int ebs_http_send_fd(ebs_http_ex *x, int fd, const uint8_t *head, size_t head_len,
                     const uint8_t *body, size_t body_len, double timeout_s,
                     ebs_http_signal_fn on_signal) {
    size_t sent = 0, total = head_len + body_len;
    while (sent < total) {
        struct iovec iov[2];
        int n = 0;
        if (sent < head_len) {
            iov[n++] = (struct iovec){(void *)(head + sent), head_len - sent};
            if (body_len)
                iov[n++] = (struct iovec){(void *)body, body_len};
        } else {
            iov[n++] = (struct iovec){(void *)(body + (sent - head_len)), total - sent};
        }
        struct msghdr msg = {0};
        msg.msg_iov = iov;
        msg.msg_iovlen = (size_t)n;
        /* MSG_DONTWAIT: the fd may be blocking (no socket timeout) and we wait in poll so that
         * signals and timeout_s are honoured. MSG_NOSIGNAL: a closed peer is an error code,
         * not a SIGPIPE. */
        ssize_t r = sendmsg(fd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (r >= 0) {
            sent += (size_t)r;
            continue;
        }
        if (errno == EINTR) {
            if (signal_raised(on_signal))
                return EBS_HTTP_E_SIGNAL;
            continue;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            int rc = wait_fd(x, fd, POLLOUT, timeout_s, on_signal);
            if (rc)
                return rc;
            continue;
        }
        x->os_errno = errno;
        if (errno == EPIPE || errno == ECONNRESET)
            return EBS_HTTP_E_CLOSED;
        return EBS_HTTP_E_OS;
    }
    return 0;
}

int ebs_http_run_fd(ebs_http_ex *x, int fd, double timeout_s, ebs_http_signal_fn on_signal) {
    for (;;) {
        uint8_t *buf;
        size_t len;
        int rc = ebs_http_step(x, &buf, &len);
        if (rc != EBS_HTTP_WANT_READ)
            return rc;
        for (;;) {
            ssize_t r = recv(fd, buf, len, MSG_DONTWAIT);
            if (r >= 0) {
                ebs_http_received(x, (size_t)r);
                break;
            }
            if (errno == EINTR) {
                if (signal_raised(on_signal))
                    return EBS_HTTP_E_SIGNAL;
                continue;
            }
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                rc = wait_fd(x, fd, POLLIN, timeout_s, on_signal);
                if (rc)
                    return rc;
                continue;
            }
            x->os_errno = errno;
            if (errno == ECONNRESET)
                return ebs_http_reset(x);
            return EBS_HTTP_E_OS;
        }
    }
}

/* Pieces of an exact read while hashing: the hash of one piece runs while the next arrives. */
#define WAITALL_HASHING (2 * HASH_BATCH)

int ebs_http_run_fd_blocking(ebs_http_ex *x, int fd, double timeout_s,
                             ebs_http_signal_fn on_signal) {
    double slice_s = POLL_SLICE_MS / 1000.0;
    if (timeout_s >= 0 && timeout_s < slice_s)
        slice_s = timeout_s > 0.001 ? timeout_s : 0.001; /* 0 would mean "no timeout" */
    struct timeval tv, now_tv;
    socklen_t now_len = sizeof now_tv;
    tv.tv_sec = (time_t)slice_s;
    tv.tv_usec = (suseconds_t)((slice_s - (double)tv.tv_sec) * 1e6);
    /* A pooled connection keeps the slice from its last exchange: reading it back costs a
     * third of setting it again. The kernel keeps it in clock ticks (at most 10 ms), rounded
     * up, so what it reports may exceed what was set by up to one tick. */
    long long want_us = (long long)tv.tv_sec * 1000000 + tv.tv_usec, have_us = -1;
    if (getsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &now_tv, &now_len) == 0 && now_len == sizeof now_tv)
        have_us = (long long)now_tv.tv_sec * 1000000 + now_tv.tv_usec;
    if (have_us < want_us || have_us - want_us >= 10000) {
        if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) != 0) {
            x->os_errno = errno;
            return EBS_HTTP_E_OS;
        }
    }
    double last = timeout_s < 0 ? 0.0 : now_s(); /* the last progress */
    for (;;) {
        uint8_t *buf;
        size_t len;
        int rc = ebs_http_step(x, &buf, &len);
        if (rc != EBS_HTTP_WANT_READ)
            return rc;
        int flags = 0;
        if (x->reading_exact) {
            flags = MSG_WAITALL;
            if (x->hash_body && x->dst_is_out && len > WAITALL_HASHING)
                len = WAITALL_HASHING;
        }
        for (;;) {
            ssize_t r = recv(fd, buf, len, flags);
            if (r >= 0) {
                ebs_http_received(x, (size_t)r);
                if (r > 0 && timeout_s >= 0)
                    last = now_s();
                /* A short MSG_WAITALL read: a signal, the slice or the end; let handlers run
                 * now rather than a slice later. */
                if (flags && r > 0 && (size_t)r < len && signal_raised(on_signal))
                    return EBS_HTTP_E_SIGNAL;
                break;
            }
            if (errno == EINTR) {
                if (signal_raised(on_signal))
                    return EBS_HTTP_E_SIGNAL;
                continue;
            }
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                int fl = fcntl(fd, F_GETFL);
                if (fl >= 0 && (fl & O_NONBLOCK)) {
                    /* not blocking after all: wait in poll for what is left of the timeout */
                    double left = -1.0;
                    if (timeout_s >= 0) {
                        left = timeout_s - (now_s() - last);
                        if (left <= 0)
                            return EBS_HTTP_E_TIMEOUT;
                    }
                    rc = wait_fd(x, fd, POLLIN, left, on_signal);
                    if (rc)
                        return rc;
                    continue;
                }
                /* a slice passed without a byte */
                if (timeout_s >= 0 && now_s() - last >= timeout_s)
                    return EBS_HTTP_E_TIMEOUT;
                if (signal_raised(on_signal))
                    return EBS_HTTP_E_SIGNAL;
                continue;
            }
            x->os_errno = errno;
            if (errno == ECONNRESET)
                return ebs_http_reset(x);
            return EBS_HTTP_E_OS;
        }
    }
}

/* -- the TLS driver ---------------------------------------------------------------------- */

/* OpenSSL's values (ssl.h, err.h of OpenSSL 3), which do not change between its releases. */
enum {
    TLS_ERROR_SSL = 1,
    TLS_ERROR_WANT_READ = 2,
    TLS_ERROR_WANT_WRITE = 3,
    TLS_ERROR_SYSCALL = 5,
    TLS_ERROR_ZERO_RETURN = 6,
    TLS_PY_ERROR_EOF = 8, /* Python's number for an EOF in violation of the protocol */
};
#define TLS_ERR_SYSTEM_FLAG 0x80000000UL
#define TLS_ERR_LIB(e) (((e) >> 23) & 0xFFUL)
#define TLS_ERR_REASON(e) ((e) & 0x7FFFFFUL)
#define TLS_ERR_LIB_SSL 20UL
#define TLS_R_UNEXPECTED_EOF_WHILE_READING 294UL

int ebs_tls_bind(ebs_tls_api *api, const char *module_path) {
    memset(api, 0, sizeof *api);
    /* RTLD_NOLOAD: only a module Python already loaded; dlsym on its handle searches the
     * module and then the libraries it links, which is where _ssl's OpenSSL is. */
    void *h = dlopen(module_path, RTLD_NOW | RTLD_NOLOAD);
    if (h == NULL)
        return -1;
    unsigned long (*version)(void);
    void *f = dlsym(h, "OpenSSL_version_num");
    memcpy(&version, &f, sizeof version);
    if (f == NULL || version() < 0x30000000UL)
        return -1;
#define BIND(field, name)                           \
    do {                                            \
        void *sym = dlsym(h, name);                 \
        if (sym == NULL)                            \
            return -1;                              \
        memcpy(&api->field, &sym, sizeof api->field); \
    } while (0)
    BIND(read_ex, "SSL_read_ex");
    BIND(write_ex, "SSL_write_ex");
    BIND(get_error, "SSL_get_error");
    BIND(get_ex_data, "SSL_get_ex_data");
    BIND(get_fd, "SSL_get_fd");
    BIND(clear_error, "ERR_clear_error");
    BIND(peek_error, "ERR_peek_error");
    BIND(error_string_n, "ERR_error_string_n");
#undef BIND
    return 0; /* h stays open: the functions are used for the life of the process */
}

/* What an SSL_read_ex / SSL_write_ex that failed means. */
enum { TLS_WAIT_READ = 1, TLS_WAIT_WRITE, TLS_CLOSED, TLS_RAGGED };

static int tls_failed(ebs_http_ex *x, int code, const char *message) {
    x->tls_code = code;
    snprintf(x->tls_message, sizeof x->tls_message, "%s", message);
    return EBS_HTTP_E_TLS;
}

/* sys_errno: errno right after the call. Returns a TLS_* outcome, or EBS_HTTP_E_OS (os_errno
 * set) or EBS_HTTP_E_TLS; the thread's OpenSSL error queue is left empty. */
static int tls_outcome(ebs_http_ex *x, const ebs_tls_api *api, void *ssl, int sys_errno) {
    int e = api->get_error(ssl, 0);
    unsigned long q = api->peek_error();
    int outcome = 0;
    char text[sizeof x->tls_message];
    switch (e) {
    case TLS_ERROR_WANT_READ:
        outcome = TLS_WAIT_READ;
        break;
    case TLS_ERROR_WANT_WRITE:
        outcome = TLS_WAIT_WRITE;
        break;
    case TLS_ERROR_ZERO_RETURN: /* close_notify */
        outcome = TLS_CLOSED;
        break;
    case TLS_ERROR_SYSCALL:
        if (q != 0)
            break;
        if (sys_errno == 0) { /* the transport ended without close_notify */
            outcome = TLS_RAGGED;
        } else {
            x->os_errno = sys_errno;
            outcome = EBS_HTTP_E_OS;
        }
        break;
    case TLS_ERROR_SSL:
        if (!(q & TLS_ERR_SYSTEM_FLAG) && TLS_ERR_LIB(q) == TLS_ERR_LIB_SSL &&
            TLS_ERR_REASON(q) == TLS_R_UNEXPECTED_EOF_WHILE_READING)
            outcome = TLS_RAGGED;
        break;
    default:
        break;
    }
    if (outcome == 0) {
        if (q == 0)
            snprintf(text, sizeof text, "TLS error %d", e);
        else
            api->error_string_n(q, text, sizeof text);
        outcome = tls_failed(x, e, text);
    }
    api->clear_error();
    return outcome;
}

int ebs_http_send_tls(ebs_http_ex *x, const ebs_tls_api *api, void *ssl, int fd,
                      const uint8_t *head, size_t head_len, const uint8_t *body, size_t body_len,
                      double timeout_s, ebs_http_signal_fn on_signal) {
    const uint8_t *part[2] = {head, body};
    size_t part_len[2] = {head_len, body_len};
    for (int i = 0; i < 2; i++) {
        size_t done = 0;
        while (done < part_len[i]) {
            size_t n = 0;
            api->clear_error();
            errno = 0;
            /* After WANT_*, OpenSSL wants the same buffer and length again: done has not moved. */
            if (api->write_ex(ssl, part[i] + done, part_len[i] - done, &n)) {
                done += n;
                continue;
            }
            int o = tls_outcome(x, api, ssl, errno);
            if (o == TLS_WAIT_READ || o == TLS_WAIT_WRITE) {
                int rc = wait_fd(x, fd, o == TLS_WAIT_READ ? POLLIN : POLLOUT, timeout_s,
                                 on_signal);
                if (rc)
                    return rc;
                continue;
            }
            if (o == TLS_CLOSED || o == TLS_RAGGED) {
                x->os_errno = EPIPE;
                return EBS_HTTP_E_CLOSED;
            }
            if (o == EBS_HTTP_E_OS && (x->os_errno == EPIPE || x->os_errno == ECONNRESET))
                return EBS_HTTP_E_CLOSED;
            return o;
        }
    }
    return 0;
}

int ebs_http_run_tls(ebs_http_ex *x, const ebs_tls_api *api, void *ssl, int fd, int ragged_eof_ok,
                     double timeout_s, ebs_http_signal_fn on_signal) {
    for (;;) {
        uint8_t *buf;
        size_t len;
        int rc = ebs_http_step(x, &buf, &len);
        if (rc != EBS_HTTP_WANT_READ)
            return rc;
        for (;;) {
            size_t got = 0;
            api->clear_error();
            errno = 0;
            if (api->read_ex(ssl, buf, len, &got)) {
                ebs_http_received(x, got);
                break;
            }
            int o = tls_outcome(x, api, ssl, errno);
            if (o == TLS_WAIT_READ || o == TLS_WAIT_WRITE) {
                rc = wait_fd(x, fd, o == TLS_WAIT_READ ? POLLIN : POLLOUT, timeout_s, on_signal);
                if (rc)
                    return rc;
                continue;
            }
            if (o == TLS_CLOSED || (o == TLS_RAGGED && ragged_eof_ok)) {
                ebs_http_received(x, 0);
                break;
            }
            if (o == TLS_RAGGED)
                return tls_failed(x, TLS_PY_ERROR_EOF, "EOF occurred in violation of protocol");
            if (o == EBS_HTTP_E_OS && x->os_errno == ECONNRESET)
                return ebs_http_reset(x);
            return o;
        }
    }
}
