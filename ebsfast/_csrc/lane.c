/* See lane.h. Every rule below has its twin in ebsfast/_lane_py.py. */
#define _GNU_SOURCE
#include "lane.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#define EMPTY_SHA256 "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

static int eq(const char *a, size_t an, const char *b, size_t bn)
{
    return an == bn && memcmp(a, b, an) == 0;
}

#define LIT(s) s, sizeof(s) - 1

const ebs_span *ebs_lane_header(const ebs_lane_request *r, const char *name, size_t name_len)
{
    for (size_t i = 0; i < r->n_headers; i++)
        if (ebs_sigv4_eq_lower(r->names[i].p, r->names[i].n, name, name_len))
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
        if (!ebs_sigv4_is_token(p, (size_t)(colon - p)))
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
    if (h && !ebs_sigv4_eq_lower(h->p, h->n, LIT("keep-alive")))
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
        char hex[EBS_SIGV4_SIG_HEX_LEN];
        ebs_sigv4_signature_hex(&a->key, sts.data, sts.len, hex);
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
        uint8_t key[32];
        ebs_sigv4_derive_key(key, a->secret_key, a->secret_key_len, part[1].p, 8, a->region,
                             a->region_len, LIT("ebs"));
        ebs_hmac_key_init(&a->key, key, sizeof key, NULL, 0);
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

/* ---- direct answers ---- */

struct ebs_lane_snap {
    ebs_lane_snap *next;
    ebs_lane_block *blocks; /* sorted by index */
    size_t n_blocks;
    size_t id_len;
    char id[];
};

static uint64_t hash_id(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 1099511628211ULL;
    return h;
}

int ebs_lane_table_init(ebs_lane_table *t, const uint8_t *token_key, size_t key_len)
{
    memset(t, 0, sizeof *t);
    pthread_mutex_t *m = malloc(sizeof *m);
    t->n_buckets = 64;
    t->buckets = calloc(t->n_buckets, sizeof *t->buckets);
    if (!m || !t->buckets || pthread_mutex_init(m, NULL) != 0) {
        free(m);
        free(t->buckets);
        t->buckets = NULL;
        return -ENOMEM;
    }
    t->lock = m;
    ebs_hmac_key_init(&t->token_key, token_key, key_len, NULL, 0);
    return 0;
}

void ebs_lane_table_free(ebs_lane_table *t)
{
    if (t->buckets) {
        for (size_t i = 0; i < t->n_buckets; i++) {
            ebs_lane_snap *s = t->buckets[i];
            while (s) {
                ebs_lane_snap *next = s->next;
                free(s->blocks);
                free(s);
                s = next;
            }
        }
        free(t->buckets);
        t->buckets = NULL;
    }
    if (t->lock) {
        pthread_mutex_destroy(t->lock);
        free(t->lock);
        t->lock = NULL;
    }
}

static int block_cmp(const void *a, const void *b)
{
    uint64_t x = ((const ebs_lane_block *)a)->index, y = ((const ebs_lane_block *)b)->index;
    return x < y ? -1 : x > y;
}

static void grow(ebs_lane_table *t)
{
    size_t n = t->n_buckets * 2;
    ebs_lane_snap **b = calloc(n, sizeof *b);
    if (!b)
        return; /* longer chains, still correct */
    for (size_t i = 0; i < t->n_buckets; i++) {
        ebs_lane_snap *s = t->buckets[i];
        while (s) {
            ebs_lane_snap *next = s->next;
            size_t j = hash_id(s->id, s->id_len) & (n - 1);
            s->next = b[j];
            b[j] = s;
            s = next;
        }
    }
    free(t->buckets);
    t->buckets = b;
    t->n_buckets = n;
}

int ebs_lane_publish(ebs_lane_table *t, const char *id, size_t id_len,
                     const ebs_lane_block *blocks, size_t n)
{
    ebs_lane_snap *s = malloc(sizeof *s + id_len);
    ebs_lane_block *copy = malloc(n ? n * sizeof *copy : 1);
    if (!s || !copy || n > SIZE_MAX / sizeof *copy) {
        free(s);
        free(copy);
        return -ENOMEM;
    }
    memcpy(copy, blocks, n * sizeof *copy);
    qsort(copy, n, sizeof *copy, block_cmp);
    s->blocks = copy;
    s->n_blocks = n;
    s->id_len = id_len;
    memcpy(s->id, id, id_len);
    pthread_mutex_lock(t->lock);
    ebs_lane_snap **at = &t->buckets[hash_id(id, id_len) & (t->n_buckets - 1)];
    while (*at && !eq((*at)->id, (*at)->id_len, id, id_len))
        at = &(*at)->next;
    ebs_lane_snap *old = *at;
    s->next = old ? old->next : NULL;
    *at = s;
    if (old) {
        free(old->blocks);
        free(old);
    } else if (++t->n_snaps > 2 * t->n_buckets) {
        grow(t);
    }
    pthread_mutex_unlock(t->lock);
    return 0;
}

void ebs_lane_token_mac(const ebs_lane_table *t, const void *payload, size_t n, uint8_t out[16])
{
    uint8_t mac[32];
    ebs_hmac_mac(&t->token_key, payload, n, mac);
    memcpy(out, mac, 16);
}

static int b64_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    return c == '+' ? 62 : c == '/' ? 63 : -1;
}

/* The block token of a query "blockToken=<v>", percent-decoded (only %2B, %2F and %3D, in
 * upper case, as clients write base64's specials; '/' and '=' may also come bare) into `out`:
 * its length, or -1. */
static long query_token(ebs_span q, char *out, size_t cap)
{
    static const char KEY[] = "blockToken=";
    if (q.n < sizeof KEY - 1 || memcmp(q.p, KEY, sizeof KEY - 1) != 0)
        return -1;
    size_t n = 0;
    for (size_t i = sizeof KEY - 1; i < q.n; i++) {
        char c = q.p[i];
        if (c == '%') {
            if (q.n - i < 3 || (q.p[i + 1] != '2' && q.p[i + 1] != '3'))
                return -1;
            char d = q.p[i + 2];
            c = q.p[i + 1] == '2' ? (d == 'B' ? '+' : d == 'F' ? '/' : 0) : (d == 'D' ? '=' : 0);
            if (!c)
                return -1;
            i += 2;
        } else if (c == '+' || (b64_value((unsigned char)c) < 0 && c != '=')) {
            return -1; /* a bare '+' in a query is a space */
        }
        if (n == cap)
            return -1;
        out[n++] = c;
    }
    return (long)n;
}

/* Strict base64 (RFC 4648, padded): what the service's validating decoder accepts, no more. */
static long b64_decode(const char *s, size_t n, uint8_t *out)
{
    if (n == 0 || n % 4)
        return -1;
    size_t pad = s[n - 1] == '=' ? (s[n - 2] == '=' ? 2 : 1) : 0;
    size_t len = 0;
    for (size_t i = 0; i < n; i += 4) {
        int v[4];
        for (int k = 0; k < 4; k++) {
            int last = i + 4 == n;
            if (last && k >= 4 - (int)pad) {
                v[k] = 0;
                continue;
            }
            v[k] = b64_value((unsigned char)s[i + k]);
            if (v[k] < 0)
                return -1;
        }
        uint32_t w = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 |
                     (uint32_t)v[3];
        out[len++] = (uint8_t)(w >> 16);
        if (i + 4 < n || pad < 2)
            out[len++] = (uint8_t)(w >> 8);
        if (i + 4 < n || pad < 1)
            out[len++] = (uint8_t)w;
    }
    return (long)len;
}

static uint64_t be64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

int ebs_lane_find(ebs_lane_table *t, ebs_span path, ebs_span query, double now,
                  ebs_lane_block *out)
{
    static const char SNAPS[] = "/snapshots/", BLOCKS[] = "/blocks/";
    if (path.n <= sizeof SNAPS - 1 || memcmp(path.p, SNAPS, sizeof SNAPS - 1) != 0)
        return 0;
    const char *id = path.p + sizeof SNAPS - 1, *end = path.p + path.n;
    const char *slash = memchr(id, '/', (size_t)(end - id));
    if (!slash || slash == id || memchr(id, '%', (size_t)(slash - id)) ||
        (size_t)(end - slash) <= sizeof BLOCKS - 1 ||
        memcmp(slash, BLOCKS, sizeof BLOCKS - 1) != 0)
        return 0;
    size_t id_len = (size_t)(slash - id);
    const char *digits_p = slash + sizeof BLOCKS - 1;
    size_t nd = (size_t)(end - digits_p);
    if (nd == 0 || nd > 18)
        return 0;
    uint64_t index = 0;
    for (size_t i = 0; i < nd; i++) {
        if (digits_p[i] < '0' || digits_p[i] > '9')
            return 0;
        index = index * 10 + (uint64_t)(digits_p[i] - '0');
    }

    char tok[EBS_LANE_MAX_TOKEN];
    long tn = query_token(query, tok, sizeof tok);
    uint8_t raw[EBS_LANE_MAX_TOKEN];
    long rn = tn > 0 ? b64_decode(tok, (size_t)tn, raw) : -1;
    /* "B", index and expiry (big-endian), the snapshot id; then a 16-byte MAC */
    if (rn < 17 + 16 || (size_t)rn != 17 + id_len + 16 || raw[0] != 'B' ||
        memcmp(raw + 17, id, id_len) != 0 || be64(raw + 1) != index)
        return 0;
    uint8_t mac[16];
    ebs_lane_token_mac(t, raw, (size_t)rn - 16, mac);
    unsigned char diff = 0;
    for (int i = 0; i < 16; i++)
        diff |= mac[i] ^ raw[rn - 16 + i];
    if (diff || now > (double)be64(raw + 9))
        return 0;

    int found = 0;
    pthread_mutex_lock(t->lock);
    const ebs_lane_snap *s = t->buckets[hash_id(id, id_len) & (t->n_buckets - 1)];
    while (s && !eq(s->id, s->id_len, id, id_len))
        s = s->next;
    if (s) {
        size_t lo = 0, hi = s->n_blocks;
        while (lo < hi) {
            size_t mid = lo + (hi - lo) / 2;
            if (s->blocks[mid].index < index)
                lo = mid + 1;
            else
                hi = mid;
        }
        if (lo < s->n_blocks && s->blocks[lo].index == index) {
            *out = s->blocks[lo];
            found = 1;
        }
    }
    pthread_mutex_unlock(t->lock);
    return found;
}

void ebs_lane_http_date(long long t, char out[29])
{
    static const char DAYS[] = "ThuFriSatSunMonTueWed", MONTHS[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
    long long days = t >= 0 ? t / 86400 : -((-t + 86399) / 86400);
    long long secs = t - days * 86400;
    /* civil from days (proleptic Gregorian) */
    long long z = days + 719468, era = (z >= 0 ? z : z - 146096) / 146097;
    long long doe = z - era * 146097;
    long long yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    long long y = yoe + era * 400, doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    long long mp = (5 * doy + 2) / 153, d = doy - (153 * mp + 2) / 5 + 1;
    long long m = mp < 10 ? mp + 3 : mp - 9;
    y += m <= 2;
    int wd = (int)(((days % 7) + 7) % 7);
    char *o = out;
    memcpy(o, DAYS + 3 * wd, 3);
    o[3] = ',';
    o[4] = ' ';
    o[5] = (char)('0' + d / 10);
    o[6] = (char)('0' + d % 10);
    o[7] = ' ';
    memcpy(o + 8, MONTHS + 3 * (m - 1), 3);
    o[11] = ' ';
    long long yy = y < 0 ? 0 : y % 10000;
    for (int i = 3; i >= 0; i--, yy /= 10)
        o[12 + i] = (char)('0' + yy % 10);
    o[16] = ' ';
    int hms[3] = {(int)(secs / 3600), (int)(secs / 60 % 60), (int)(secs % 60)};
    for (int i = 0; i < 3; i++) {
        o[17 + 3 * i] = (char)('0' + hms[i] / 10);
        o[18 + 3 * i] = (char)('0' + hms[i] % 10);
        if (i < 2)
            o[19 + 3 * i] = ':';
    }
    memcpy(o + 25, " GMT", 4);
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
