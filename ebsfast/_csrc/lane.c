/* See lane.h. Every rule below has its twin in ebsfast/_lane_py.py. */
#define _GNU_SOURCE
#include "lane.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#define EMPTY_SHA256 "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

static int is_tchar(unsigned char c)
{
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
        return 1;
    return c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static unsigned char lower(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') ? (unsigned char)(c + 32) : c;
}

/* a (any case) equals b (lower case) */
static int eq_lower(const char *a, size_t an, const char *b, size_t bn)
{
    if (an != bn)
        return 0;
    for (size_t i = 0; i < an; i++)
        if (lower((unsigned char)a[i]) != (unsigned char)b[i])
            return 0;
    return 1;
}

static int eq(const char *a, size_t an, const char *b, size_t bn)
{
    return an == bn && memcmp(a, b, an) == 0;
}

#define LIT(s) s, sizeof(s) - 1

const ebs_span *ebs_lane_header(const ebs_lane_request *r, const char *name, size_t name_len)
{
    for (size_t i = 0; i < r->n_headers; i++)
        if (eq_lower(r->names[i].p, r->names[i].n, name, name_len))
            return &r->values[i];
    return NULL;
}

int ebs_lane_parse(const char *head, size_t n, ebs_lane_request *r)
{
    static const char GET[] = "GET ", VERSION[] = " HTTP/1.1";
    const char *end = head + n;
    const char *eol = memmem(head, n, "\r\n", 2);
    if (!eol)
        eol = end;
    size_t line = (size_t)(eol - head);
    if (line < sizeof GET - 1 + 1 + sizeof VERSION - 1 || memcmp(head, GET, 4) != 0 ||
        memcmp(eol - (sizeof VERSION - 1), VERSION, sizeof VERSION - 1) != 0)
        return 0;
    r->target.p = head + 4;
    r->target.n = line - 4 - (sizeof VERSION - 1);
    for (size_t i = 0; i < r->target.n; i++) {
        unsigned char c = (unsigned char)r->target.p[i];
        if (c <= 0x20 || c >= 0x7f)
            return 0;
    }
    const char *q = memchr(r->target.p, '?', r->target.n);
    r->path.p = r->target.p;
    r->path.n = q ? (size_t)(q - r->target.p) : r->target.n;
    r->query.p = q ? q + 1 : r->target.p + r->target.n;
    r->query.n = q ? r->target.n - r->path.n - 1 : 0;

    r->n_headers = 0;
    const char *p = eol;
    while (p < end) {
        p += 2; /* the CRLF ending the previous line */
        const char *le = memmem(p, (size_t)(end - p), "\r\n", 2);
        if (!le)
            le = end;
        const char *colon = memchr(p, ':', (size_t)(le - p));
        if (!colon || colon == p || r->n_headers == EBS_LANE_MAX_HEADERS)
            return 0;
        for (const char *c = p; c < colon; c++)
            if (!is_tchar((unsigned char)*c))
                return 0;
        const char *v = colon + 1, *ve = le;
        for (const char *c = v; c < ve; c++)
            if ((*c < 0x20 && *c != '\t') || (unsigned char)*c >= 0x7f)
                return 0;
        while (v < ve && (*v == ' ' || *v == '\t'))
            v++;
        while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
            ve--;
        size_t i = r->n_headers;
        for (size_t j = 0; j < i; j++)
            if (r->names[j].n == (size_t)(colon - p) &&
                strncasecmp(r->names[j].p, p, r->names[j].n) == 0)
                return 0;
        r->names[i].p = p;
        r->names[i].n = (size_t)(colon - p);
        r->values[i].p = v;
        r->values[i].n = (size_t)(ve - v);
        r->n_headers++;
        p = le;
    }
    const ebs_span *h = ebs_lane_header(r, LIT("content-length"));
    if (h && !eq(h->p, h->n, LIT("0")))
        return 0;
    if (ebs_lane_header(r, LIT("transfer-encoding")) || ebs_lane_header(r, LIT("expect")))
        return 0;
    h = ebs_lane_header(r, LIT("connection"));
    if (h && !eq_lower(h->p, h->n, LIT("keep-alive")))
        return 0;
    return 1;
}

/* ---- signature ---- */

static int is_space(char c)
{
    return c == ' ' || c == '\t';
}

/* The run of bytes that are not ',', ' ' or '\t' at *p (at least one), advancing *p. */
static int take_word(const char **p, const char *end, ebs_span *out)
{
    const char *s = *p;
    while (*p < end && **p != ',' && !is_space(**p))
        (*p)++;
    out->p = s;
    out->n = (size_t)(*p - s);
    return out->n > 0;
}

static int take_lit(const char **p, const char *end, const char *lit, size_t n)
{
    if ((size_t)(end - *p) < n || memcmp(*p, lit, n) != 0)
        return 0;
    *p += n;
    return 1;
}

static void skip_spaces(const char **p, const char *end)
{
    while (*p < end && is_space(**p))
        (*p)++;
}

static int digits(const char *s, size_t n, int *out)
{
    int v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return 0;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return 1;
}

/* Seconds since the epoch of YYYYMMDDTHHMMSSZ, with every field in its calendar range
 * (the day may be up to 31 in any month, as the general path allows). */
static int amz_epoch(const char *d, size_t n, double *out)
{
    int y, mo, da, h, mi, s;
    if (n != 16 || d[8] != 'T' || d[15] != 'Z' || !digits(d, 4, &y) || !digits(d + 4, 2, &mo) ||
        !digits(d + 6, 2, &da) || !digits(d + 9, 2, &h) || !digits(d + 11, 2, &mi) ||
        !digits(d + 13, 2, &s))
        return 0;
    if (y < 1 || mo < 1 || mo > 12 || da < 1 || da > 31 || h > 23 || mi > 59 || s > 59)
        return 0;
    /* Days from 1970-01-01 to the first of the month (proleptic Gregorian), plus the day. */
    long yy = mo <= 2 ? y - 1 : y;
    long era = yy / 400;
    long yoe = yy - era * 400;
    long doy = (153 * (mo > 2 ? mo - 3 : mo + 9) + 2) / 5;
    long doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    long days = era * 146097 + doe - 719468 + (da - 1);
    *out = (double)days * 86400.0 + h * 3600.0 + mi * 60.0 + s;
    return 1;
}

static int signature_is(const ebs_lane_auth *a, const ebs_lane_request *r,
                        const ebs_header *signed_h, size_t n_signed, const char *payload_hash,
                        size_t payload_hash_len, const char *amz_date, const char *scope,
                        size_t scope_len, const char *signature)
{
    char cstack[2048], sstack[256], tstack[512];
    ebs_buf creq, names, sts;
    ebs_buf_init(&creq, cstack, sizeof cstack);
    ebs_buf_init(&names, sstack, sizeof sstack);
    ebs_buf_init(&sts, tstack, sizeof tstack);
    ebs_sigv4_request req = {
        .method = "GET", .method_len = 3,
        .path = r->path.p, .path_len = r->path.n,
        .query = r->query.p, .query_len = r->query.n,
        .headers = signed_h, .n_headers = n_signed,
        .payload_hash = payload_hash, .payload_hash_len = payload_hash_len,
        .normalize = 1,
    };
    int ok = 0;
    if (ebs_sigv4_canonical_request(&creq, &names, &req) == EBS_SIGV4_OK &&
        ebs_sigv4_string_to_sign(&sts, amz_date, 16, scope, scope_len, creq.data, creq.len) ==
            EBS_SIGV4_OK) {
        ebs_hmac_key k;
        char hex[EBS_SIGV4_SIG_HEX_LEN];
        ebs_hmac_key_init(&k, a->key, 32, NULL, 0);
        ebs_sigv4_signature_hex(&k, sts.data, sts.len, hex);
        unsigned char diff = 0; /* constant time, as the general path compares */
        for (size_t i = 0; i < EBS_SIGV4_SIG_HEX_LEN; i++)
            diff |= (unsigned char)(hex[i] ^ signature[i]);
        ok = diff == 0;
    }
    ebs_buf_free(&creq);
    ebs_buf_free(&names);
    ebs_buf_free(&sts);
    return ok;
}

int ebs_lane_verify(ebs_lane_auth *a, const ebs_lane_request *r, double now)
{
    const ebs_span *auth = ebs_lane_header(r, LIT("authorization"));
    if (!auth)
        return 0;
    /* AWS4-HMAC-SHA256 Credential=<c>, SignedHeaders=<names>, Signature=<64 hex> */
    const char *p = auth->p, *end = auth->p + auth->n;
    ebs_span cred, names, sig;
    if (!take_lit(&p, end, LIT("AWS4-HMAC-SHA256")) || p == end || !is_space(*p))
        return 0;
    skip_spaces(&p, end);
    if (!take_lit(&p, end, LIT("Credential=")) || !take_word(&p, end, &cred) ||
        !take_lit(&p, end, LIT(",")))
        return 0;
    skip_spaces(&p, end);
    if (!take_lit(&p, end, LIT("SignedHeaders=")) || !take_word(&p, end, &names) ||
        !take_lit(&p, end, LIT(",")))
        return 0;
    skip_spaces(&p, end);
    if (!take_lit(&p, end, LIT("Signature=")) || (size_t)(end - p) != EBS_SIGV4_SIG_HEX_LEN)
        return 0;
    sig.p = p;
    sig.n = EBS_SIGV4_SIG_HEX_LEN;
    for (size_t i = 0; i < sig.n; i++)
        if (!((p[i] >= '0' && p[i] <= '9') || (p[i] >= 'a' && p[i] <= 'f')))
            return 0;

    /* <access key>/<YYYYMMDD>/<region>/ebs/aws4_request */
    ebs_span part[5];
    const char *c = cred.p, *ce = cred.p + cred.n;
    for (int i = 0; i < 5; i++) {
        const char *slash = i < 4 ? memchr(c, '/', (size_t)(ce - c)) : NULL;
        if (i < 4 && !slash)
            return 0;
        part[i].p = c;
        part[i].n = (size_t)((i < 4 ? slash : ce) - c);
        c = i < 4 ? slash + 1 : ce;
    }
    if (memchr(part[4].p, '/', part[4].n) || !eq(LIT("aws4_request"), part[4].p, part[4].n) ||
        !eq(part[0].p, part[0].n, a->access_key, a->access_key_len) ||
        !eq(part[2].p, part[2].n, a->region, a->region_len) ||
        !eq(part[3].p, part[3].n, LIT("ebs")))
        return 0;
    if (a->session_token) {
        const ebs_span *t = ebs_lane_header(r, LIT("x-amz-security-token"));
        if (!t || !eq(t->p, t->n, a->session_token, a->session_token_len))
            return 0;
    }
    const ebs_span *date = ebs_lane_header(r, LIT("x-amz-date"));
    double signed_at;
    if (!date || !amz_epoch(date->p, date->n, &signed_at) || part[1].n != 8 ||
        memcmp(part[1].p, date->p, 8) != 0)
        return 0;
    double skew = now - signed_at;
    if (!(skew <= a->max_skew_s && -skew <= a->max_skew_s))
        return 0;

    ebs_header signed_h[EBS_LANE_MAX_HEADERS];
    size_t n_signed = 0;
    int has_host = 0;
    const char *s = names.p, *se = names.p + names.n;
    for (;;) {
        const char *semi = memchr(s, ';', (size_t)(se - s));
        const char *ne = semi ? semi : se;
        size_t nn = (size_t)(ne - s);
        const ebs_span *v = NULL;
        for (size_t i = 0; i < nn; i++)
            if (s[i] >= 'A' && s[i] <= 'Z') /* the general path looks names up as sent */
                return 0;
        if (nn)
            v = ebs_lane_header(r, s, nn);
        if (!v || n_signed == EBS_LANE_MAX_HEADERS)
            return 0;
        has_host |= eq(s, nn, LIT("host"));
        signed_h[n_signed].name = s;
        signed_h[n_signed].name_len = nn;
        signed_h[n_signed].value = v->p;
        signed_h[n_signed].value_len = v->n;
        n_signed++;
        if (!semi)
            break;
        s = semi + 1;
    }
    if (!has_host)
        return 0;

    if (!a->have_key || memcmp(a->day, part[1].p, 8) != 0) {
        ebs_sigv4_derive_key(a->key, a->secret_key, a->secret_key_len, part[1].p, 8, a->region,
                             a->region_len, LIT("ebs"));
        memcpy(a->day, part[1].p, 8);
        a->have_key = 1;
    }
    char scope[128];
    size_t scope_len = 8 + 1 + a->region_len + sizeof "/ebs/aws4_request" - 1;
    if (scope_len > sizeof scope)
        return 0;
    memcpy(scope, part[1].p, 8);
    scope[8] = '/';
    memcpy(scope + 9, a->region, a->region_len);
    memcpy(scope + 9 + a->region_len, "/ebs/aws4_request", sizeof "/ebs/aws4_request" - 1);

    /* The hash the client announced, else (a GET has no body) the empty body's. */
    const ebs_span *announced = ebs_lane_header(r, LIT("x-amz-content-sha256"));
    if (announced && announced->n &&
        signature_is(a, r, signed_h, n_signed, announced->p, announced->n, date->p, scope,
                     scope_len, sig.p))
        return 1;
    return signature_is(a, r, signed_h, n_signed, LIT(EMPTY_SHA256), date->p, scope, scope_len,
                        sig.p);
}

/* ---- I/O ---- */

long ebs_lane_recv(int fd, char *buf, size_t cap)
{
    for (;;) {
        ssize_t n = recv(fd, buf, cap, 0);
        if (n >= 0)
            return (long)n;
        if (errno != EINTR)
            return -errno;
    }
}

int ebs_lane_send_block(int fd, const char *head, size_t head_len, const void *data, size_t len,
                        int pipe_r, int pipe_w, size_t pipe_cap)
{
    while (head_len > 0) {
        ssize_t n = send(fd, head, head_len, MSG_MORE | MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        head += n;
        head_len -= (size_t)n;
    }
#ifndef __linux__
    (void)data, (void)pipe_r, (void)pipe_w, (void)pipe_cap;
    return len ? -ENOSYS : 0; /* no vmsplice: the server does not use the lane there */
#else
    const char *at = data;
    while (len > 0) {
        struct iovec iov = {(void *)at, len < pipe_cap ? len : pipe_cap};
        ssize_t n = vmsplice(pipe_w, &iov, 1, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (n == 0)
            return -EIO;
        at += n;
        len -= (size_t)n;
        /* Empty the pipe into the socket before the next vmsplice. */
        while (n > 0) {
            ssize_t sent = splice(pipe_r, NULL, fd, NULL, (size_t)n, 0);
            if (sent < 0) {
                if (errno == EINTR)
                    continue;
                return -errno;
            }
            if (sent == 0)
                return -EPIPE;
            n -= sent;
        }
    }
    return 0;
#endif
}
