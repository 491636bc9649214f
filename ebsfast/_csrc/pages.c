/* ListSnapshotBlocks / ListChangedBlocks page scanner; see pages.h for the contract. */
#include "pages.h"

#include <stdlib.h>
#include <string.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#define TRY(expr)                 \
    do {                          \
        int rc_ = (expr);         \
        if (rc_ != EBS_PAGE_OK)   \
            return rc_;           \
    } while (0)

const char *ebs_page_strerror(int err)
{
    switch (err) {
    case EBS_PAGE_OK: return "ok";
    case EBS_PAGE_ENOMEM: return "out of memory";
    case EBS_PAGE_EEOF: return "unexpected end of the body";
    case EBS_PAGE_EVALUE: return "expected a JSON value";
    case EBS_PAGE_ECOLON: return "expected ':' after the object key";
    case EBS_PAGE_EOBJECT: return "expected ',' or '}' in an object";
    case EBS_PAGE_EARRAY: return "expected ',' or ']' in an array";
    case EBS_PAGE_EKEY: return "expected a string as object key";
    case EBS_PAGE_ETRAILING: return "extra data after the JSON object";
    case EBS_PAGE_ETOP: return "the body is not a JSON object";
    case EBS_PAGE_ECONTROL: return "unescaped control character in a string";
    case EBS_PAGE_EESCAPE: return "invalid backslash escape in a string";
    case EBS_PAGE_EUTF8: return "invalid UTF-8";
    case EBS_PAGE_ESURROGATE: return "\\u escape leaves a lone surrogate in a token";
    case EBS_PAGE_ENUMBER: return "malformed number";
    case EBS_PAGE_EDEPTH: return "nesting too deep";
    case EBS_PAGE_ETYPE: return "value of the wrong type";
    case EBS_PAGE_ERANGE: return "integer outside the int64 range";
    case EBS_PAGE_EMISSING: return "entry lacks a member the columnar form needs";
    case EBS_PAGE_EINVAL: return "invalid argument";
    default: return "unknown error";
    }
}

/* ------------------------------------------------------------------ tables */

/* String bytes: 0 copies through, anything else ends the fast run. */
enum { S_PLAIN = 0, S_QUOTE, S_BACKSLASH, S_CONTROL, S_HIGH };

static const uint8_t STR_CLASS[256] = {
#define C4 S_CONTROL, S_CONTROL, S_CONTROL, S_CONTROL
#define H4 S_HIGH, S_HIGH, S_HIGH, S_HIGH
#define H16 H4, H4, H4, H4
    C4, C4, C4, C4, C4, C4, C4, C4,
    [0x22] = S_QUOTE,
    [0x5c] = S_BACKSLASH,
    [0x80] = H16, H16, H16, H16, H16, H16, H16, H16,
#undef C4
#undef H4
#undef H16
};

/* RFC 8259 whitespace, the same four json.loads skips. */
static const uint8_t WS[256] = {[' '] = 1, ['\t'] = 1, ['\n'] = 1, ['\r'] = 1};

/* 0..15 for hex digits, 16 otherwise. */
static const uint8_t HEX[256] = {
#define X16 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16
    X16, X16, X16,
    0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 16, 16, 16, 16, 16, 16,
    16, 10, 11, 12, 13, 14, 15, 16, 16, 16, 16, 16, 16, 16, 16, 16,
    X16,
    16, 10, 11, 12, 13, 14, 15, 16, 16, 16, 16, 16, 16, 16, 16, 16,
    X16, X16, X16, X16, X16, X16, X16, X16, X16,
#undef X16
};

/* ------------------------------------------------------------------ buffers */

static int buf_grow(ebs_page_buf *b, size_t n)
{
    if (n > SIZE_MAX / 2 - b->len)
        return EBS_PAGE_ENOMEM;
    size_t need = b->len + n;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need)
        cap *= 2;
    char *d = realloc(b->data, cap);
    if (!d)
        return EBS_PAGE_ENOMEM;
    b->data = d;
    b->cap = cap;
    return EBS_PAGE_OK;
}

static inline int buf_reserve(ebs_page_buf *b, size_t n)
{
    return n <= b->cap - b->len ? EBS_PAGE_OK : buf_grow(b, n);
}

static inline int buf_put(ebs_page_buf *b, const void *p, size_t n)
{
    TRY(buf_reserve(b, n));
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    return EBS_PAGE_OK;
}

static void buf_free(ebs_page_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

/* ------------------------------------------------------------------ page */

void ebs_page_init(ebs_page *pg, int kind, int strict)
{
    memset(pg, 0, sizeof *pg);
    pg->kind = kind;
    pg->strict = strict;
}

void ebs_page_free(ebs_page *pg)
{
    free(pg->index);
    free(pg->flags);
    free(pg->off[0]);
    free(pg->off[1]);
    buf_free(&pg->tok[0]);
    buf_free(&pg->tok[1]);
    buf_free(&pg->next_token);
    buf_free(&pg->expiry);
    buf_free(&pg->scratch);
    pg->index = NULL;
    pg->flags = NULL;
    pg->off[0] = pg->off[1] = NULL;
    pg->n = pg->cap = 0;
}

void ebs_page_reset(ebs_page *pg, int kind, int strict)
{
    pg->kind = kind;
    pg->strict = strict;
    pg->n = 0;
    pg->tok[0].len = pg->tok[1].len = 0;
    pg->non_ascii = pg->present = 0;
    pg->volume_size = pg->block_size = 0;
    pg->expiry.len = 0;
    pg->expiry_is_int = 0;
    pg->next_token.len = 0;
    pg->err_pos = 0;
    pg->err_key = NULL;
    pg->scratch.len = 0;
}

size_t ebs_page_footprint(const ebs_page *pg)
{
    return pg->cap * (3 * sizeof(int64_t) + 1) + pg->tok[0].cap +
           pg->tok[1].cap + pg->next_token.cap + pg->expiry.cap + pg->scratch.cap;
}

static inline int ntokens(const ebs_page *pg)
{
    return pg->kind == EBS_PAGE_CHANGED ? 2 : 1;
}

/* Grows every entry column together; cap only moves once all of them have the room, so a
 * failed realloc leaves a consistent (if larger) set for ebs_page_free. */
static int entries_reserve(ebs_page *pg, size_t want)
{
    if (want <= pg->cap)
        return EBS_PAGE_OK;
    size_t cap = pg->cap ? pg->cap : 16;
    while (cap < want) {
        if (cap > (SIZE_MAX / sizeof(int64_t) - 1) / 2)
            return EBS_PAGE_ENOMEM;
        cap *= 2;
    }
    int64_t *index = realloc(pg->index, cap * sizeof(int64_t));
    if (!index)
        return EBS_PAGE_ENOMEM;
    pg->index = index;
    uint8_t *flags = realloc(pg->flags, cap);
    if (!flags)
        return EBS_PAGE_ENOMEM;
    pg->flags = flags;
    /* Both offset columns whatever the kind, so a reset page can change kind. */
    for (int k = 0; k < 2; k++) {
        int64_t *off = realloc(pg->off[k], (cap + 1) * sizeof(int64_t));
        if (!off)
            return EBS_PAGE_ENOMEM;
        pg->off[k] = off;
    }
    pg->cap = cap;
    return EBS_PAGE_OK;
}

/* ------------------------------------------------------------------ cursor */

/* A pointer+length cursor over the body: each read is preceded by one check against end. */
typedef struct {
    const uint8_t *p;
    const uint8_t *end;
    const uint8_t *start;
    ebs_page *pg;
} cursor;

static int fail_at(cursor *c, const uint8_t *at, int err)
{
    c->pg->err_pos = (size_t)(at - c->start);
    return err;
}

static inline int fail(cursor *c, int err)
{
    return fail_at(c, c->p, err);
}

static inline void skip_ws(cursor *c)
{
    while (c->p < c->end && WS[*c->p])
        c->p++;
}

/* The next byte, or -1 at the end. */
static inline int peek(const cursor *c)
{
    return c->p < c->end ? *c->p : -1;
}

/* At the end of the body every error is "it ended too soon"; otherwise `err`. */
static inline int fail_here(cursor *c, int err)
{
    return fail(c, c->p < c->end ? err : EBS_PAGE_EEOF);
}

static int literal(cursor *c, const char *word, size_t n)
{
    size_t have = (size_t)(c->end - c->p);
    if (have >= n && memcmp(c->p, word, n) == 0) {
        c->p += n;
        return EBS_PAGE_OK;
    }
    if (have < n && memcmp(c->p, word, have) == 0)
        return fail_at(c, c->end, EBS_PAGE_EEOF);
    return fail(c, EBS_PAGE_EVALUE);
}

static inline int value_starts(int ch)
{
    return ch == '"' || ch == '{' || ch == '[' || ch == 't' || ch == 'f' || ch == 'n' ||
           ch == '-' || (ch >= '0' && ch <= '9');
}

/* A known key holds a value of the wrong type: ETYPE when a JSON value does start here (the
 * message names the key), else the syntax error it is. */
static int wrong_type(cursor *c, const char *key)
{
    if (!value_starts(peek(c)))
        return fail_here(c, EBS_PAGE_EVALUE);
    c->pg->err_key = key;
    return fail(c, EBS_PAGE_ETYPE);
}

/* ------------------------------------------------------------------ strings */

/* Length of the valid UTF-8 sequence at p (its first byte >= 0x80), 0 if invalid, -1 if the
 * body ends inside it. Strict as Python's decoder: no overlongs, no encoded surrogates,
 * nothing above U+10FFFF. */
static int utf8_len(const uint8_t *p, const uint8_t *end)
{
    uint8_t b0 = p[0], lo = 0x80, hi = 0xBF;
    int n;
    if (b0 >= 0xC2 && b0 <= 0xDF) {
        n = 2;
    } else if (b0 >= 0xE0 && b0 <= 0xEF) {
        n = 3;
        if (b0 == 0xE0)
            lo = 0xA0;
        else if (b0 == 0xED)
            hi = 0x9F;
    } else if (b0 >= 0xF0 && b0 <= 0xF4) {
        n = 4;
        if (b0 == 0xF0)
            lo = 0x90;
        else if (b0 == 0xF4)
            hi = 0x8F;
    } else {
        return 0;
    }
    for (int i = 1; i < n; i++) {
        if (p + i >= end)
            return -1;
        uint8_t b = p[i];
        if (b < lo || b > hi)
            return 0;
        lo = 0x80;
        hi = 0xBF;
    }
    return n;
}

static inline int hex4(const uint8_t *p, unsigned *out)
{
    unsigned a = HEX[p[0]], b = HEX[p[1]], c = HEX[p[2]], d = HEX[p[3]];
    if ((a | b | c | d) & 16)
        return 0;
    *out = (a << 12) | (b << 8) | (c << 4) | d;
    return 1;
}

static int put_code_point(ebs_page_buf *out, unsigned cp)
{
    uint8_t u[4];
    size_t n;
    if (cp < 0x80) {
        u[0] = (uint8_t)cp;
        n = 1;
    } else if (cp < 0x800) {
        u[0] = (uint8_t)(0xC0 | (cp >> 6));
        u[1] = (uint8_t)(0x80 | (cp & 0x3F));
        n = 2;
    } else if (cp < 0x10000) {
        u[0] = (uint8_t)(0xE0 | (cp >> 12));
        u[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
        u[2] = (uint8_t)(0x80 | (cp & 0x3F));
        n = 3;
    } else {
        u[0] = (uint8_t)(0xF0 | (cp >> 18));
        u[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3F));
        u[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
        u[3] = (uint8_t)(0x80 | (cp & 0x3F));
        n = 4;
    }
    return buf_put(out, u, n);
}

static inline uint64_t load64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

#define ONES 0x0101010101010101ULL
#define HIGHS 0x8080808080808080ULL

/* Nonzero iff one of the 8 bytes is not S_PLAIN (< 0x20, '"', '\\' or >= 0x80). For each
 * test the lowest matching byte borrows and sets its high bit; bytes below it cannot borrow,
 * and a set high bit of v is itself a match, so there are no false negatives and, when no
 * byte matches, no borrows at all. */
static inline uint64_t special8(uint64_t v)
{
    uint64_t q = v ^ (ONES * '"'), b = v ^ (ONES * '\\');
    return ((v - ONES * 0x20) | (q - ONES) | (b - ONES) | v) & HIGHS;
}

/* The first byte in [p, end) that is not S_PLAIN, or end. Tokens are 80 to 150 plain bytes,
 * so this is most of the scan: 16 bytes per step with SSE2 (every x86-64 has it), else 8 with
 * special8. */
static inline const uint8_t *plain_run(const uint8_t *p, const uint8_t *end)
{
#if defined(__SSE2__)
    const __m128i quote = _mm_set1_epi8('"'), backslash = _mm_set1_epi8('\\');
    const __m128i space = _mm_set1_epi8(0x20);
/* As signed bytes, both the controls (0..0x1F) and the bytes >= 0x80 (negative) are below
 * 0x20. */
#define SPECIAL16(v)                                                                          \
    _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, backslash)),        \
                 _mm_cmplt_epi8(v, space))
    while (end - p >= 32) { /* two vectors per branch */
        __m128i a = SPECIAL16(_mm_loadu_si128((const __m128i *)(const void *)p));
        __m128i b = SPECIAL16(_mm_loadu_si128((const __m128i *)(const void *)(p + 16)));
        if (_mm_movemask_epi8(_mm_or_si128(a, b))) {
            unsigned bits = (unsigned)_mm_movemask_epi8(a) |
                            (unsigned)_mm_movemask_epi8(b) << 16;
            return p + __builtin_ctz(bits);
        }
        p += 32;
    }
    if (end - p >= 16) {
        unsigned bits = (unsigned)_mm_movemask_epi8(
            SPECIAL16(_mm_loadu_si128((const __m128i *)(const void *)p)));
        if (bits)
            return p + __builtin_ctz(bits);
        p += 16;
    }
#undef SPECIAL16
#endif
    while (end - p >= 8 && !special8(load64(p)))
        p += 8;
    while (p < end && STR_CLASS[*p] == S_PLAIN)
        p++;
    return p;
}

/* The body of a string, c->p just past its opening quote; leaves c->p past the closing one.
 * Appends the unescaped UTF-8 to `out` (NULL: validate only). json.loads turns a \u escape of
 * an unpaired surrogate into a lone surrogate; UTF-8 cannot hold one, so where the string is
 * kept (`allow_lone` == 0) that is ESURROGATE, and elsewhere it is accepted and skipped (keys
 * get its surrogate-escaped form, which no known key matches). */
static int scan_string(cursor *c, ebs_page_buf *out, int allow_lone, int *non_ascii)
{
    for (;;) {
        const uint8_t *run = c->p;
        c->p = plain_run(c->p, c->end);
        if (out && c->p > run)
            TRY(buf_put(out, run, (size_t)(c->p - run)));
        if (c->p >= c->end)
            return fail(c, EBS_PAGE_EEOF);
        switch (STR_CLASS[*c->p]) {
        case S_QUOTE:
            c->p++;
            return EBS_PAGE_OK;
        case S_CONTROL:
            return fail(c, EBS_PAGE_ECONTROL);
        case S_HIGH: {
            int n = utf8_len(c->p, c->end);
            if (n <= 0)
                return fail(c, n < 0 ? EBS_PAGE_EEOF : EBS_PAGE_EUTF8);
            if (out)
                TRY(buf_put(out, c->p, (size_t)n));
            *non_ascii = 1;
            c->p += n;
            break;
        }
        default: { /* S_BACKSLASH */
            const uint8_t *esc = c->p;
            if (c->end - c->p < 2)
                return fail_at(c, c->end, EBS_PAGE_EEOF);
            uint8_t e = c->p[1], ch;
            switch (e) {
            case '"': case '\\': case '/': ch = e; break;
            case 'b': ch = '\b'; break;
            case 'f': ch = '\f'; break;
            case 'n': ch = '\n'; break;
            case 'r': ch = '\r'; break;
            case 't': ch = '\t'; break;
            case 'u': {
                unsigned cp, lo;
                if (c->end - c->p < 6) {
                    for (const uint8_t *q = c->p + 2; q < c->end; q++)
                        if (HEX[*q] & 16)
                            return fail_at(c, esc, EBS_PAGE_EESCAPE);
                    return fail_at(c, c->end, EBS_PAGE_EEOF);
                }
                if (!hex4(c->p + 2, &cp))
                    return fail_at(c, esc, EBS_PAGE_EESCAPE);
                c->p += 6;
                int lone = 0;
                if (cp >= 0xD800 && cp < 0xDC00) {
                    /* A following \u low surrogate pairs with it, as in json.loads; an
                     * invalid second escape is left for the next round to reject. */
                    if (c->end - c->p >= 6 && c->p[0] == '\\' && c->p[1] == 'u' &&
                        hex4(c->p + 2, &lo) && lo >= 0xDC00 && lo < 0xE000) {
                        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                        c->p += 6;
                    } else {
                        lone = 1;
                    }
                } else if (cp >= 0xDC00 && cp < 0xE000) {
                    lone = 1;
                }
                if (lone && !allow_lone)
                    return fail_at(c, esc, EBS_PAGE_ESURROGATE);
                if (cp >= 0x80)
                    *non_ascii = 1;
                if (out)
                    TRY(put_code_point(out, cp));
                continue;
            }
            default:
                return fail_at(c, esc, EBS_PAGE_EESCAPE);
            }
            if (out)
                TRY(buf_put(out, &ch, 1));
            c->p += 2;
            break;
        }
        }
    }
}

/* ------------------------------------------------------------------ numbers */

/* A JSON number at c->p ('-' or a digit); *is_int when it has no fraction or exponent (which
 * is when json.loads makes it an int). */
static int scan_number(cursor *c, int *is_int)
{
    const uint8_t *p = c->p, *end = c->end;
    *is_int = 1;
    if (p < end && *p == '-')
        p++;
    if (p >= end)
        return fail_at(c, p, EBS_PAGE_EEOF);
    if (*p == '0') {
        p++;
    } else if (*p >= '1' && *p <= '9') {
        while (p < end && *p >= '0' && *p <= '9')
            p++;
    } else {
        return fail_at(c, p, EBS_PAGE_ENUMBER);
    }
    if (p < end && *p == '.') {
        *is_int = 0;
        p++;
        if (p >= end)
            return fail_at(c, p, EBS_PAGE_EEOF);
        if (!(*p >= '0' && *p <= '9'))
            return fail_at(c, p, EBS_PAGE_ENUMBER);
        while (p < end && *p >= '0' && *p <= '9')
            p++;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        *is_int = 0;
        p++;
        if (p < end && (*p == '+' || *p == '-'))
            p++;
        if (p >= end)
            return fail_at(c, p, EBS_PAGE_EEOF);
        if (!(*p >= '0' && *p <= '9'))
            return fail_at(c, p, EBS_PAGE_ENUMBER);
        while (p < end && *p >= '0' && *p <= '9')
            p++;
    }
    c->p = p;
    return EBS_PAGE_OK;
}

/* The integer literal [p, e) (already matched by scan_number) as int64. */
static int to_int64(const uint8_t *p, const uint8_t *e, int64_t *out)
{
    int neg = *p == '-';
    p += neg;
    uint64_t acc = 0;
    if (e - p <= 18) { /* cannot overflow: skip the per-digit check */
        for (; p < e; p++)
            acc = acc * 10 + (unsigned)(*p - '0');
    } else {
        const uint64_t limit = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
        for (; p < e; p++) {
            unsigned d = (unsigned)(*p - '0');
            if (acc > limit / 10 || (acc == limit / 10 && d > limit % 10))
                return EBS_PAGE_ERANGE;
            acc = acc * 10 + d;
        }
    }
    if (!neg)
        *out = (int64_t)acc;
    else
        *out = acc == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)acc;
    return EBS_PAGE_OK;
}

/* An integer member (BlockIndex, VolumeSize, BlockSize), c->p at its value; *is_null for
 * null. */
static int int_member(cursor *c, const char *key, int64_t *out, int *is_null)
{
    int ch = peek(c), is_int;
    *is_null = 0;
    if (ch == 'n') {
        *is_null = 1;
        return literal(c, "null", 4);
    }
    if (ch != '-' && !(ch >= '0' && ch <= '9'))
        return wrong_type(c, key);
    const uint8_t *start = c->p;
    TRY(scan_number(c, &is_int));
    c->pg->err_key = key;
    if (!is_int)
        return fail_at(c, start, EBS_PAGE_ETYPE);
    if (to_int64(start, c->p, out) != EBS_PAGE_OK)
        return fail_at(c, start, EBS_PAGE_ERANGE);
    c->pg->err_key = NULL;
    return EBS_PAGE_OK;
}

/* ------------------------------------------------------------------ separators */

/* After a member or element: ',' (then whitespace) or the closing `close` ('}' or ']'),
 * which sets *closed; anything else is `err`. */
static int list_end(cursor *c, int close, int err, int *closed)
{
    skip_ws(c);
    int ch = peek(c);
    if (ch == close) {
        c->p++;
        *closed = 1;
        return EBS_PAGE_OK;
    }
    if (ch != ',')
        return fail_here(c, err);
    c->p++;
    skip_ws(c);
    *closed = 0;
    return EBS_PAGE_OK;
}

static int member_end(cursor *c, int *closed)
{
    return list_end(c, '}', EBS_PAGE_EOBJECT, closed);
}

static int element_end(cursor *c, int *closed)
{
    return list_end(c, ']', EBS_PAGE_EARRAY, closed);
}

/* ------------------------------------------------------------------ values */

static int skip_value(cursor *c, int depth)
{
    int ch = peek(c), is_int, na;
    switch (ch) {
    case '"':
        c->p++;
        return scan_string(c, NULL, 1, &na);
    case 't':
        return literal(c, "true", 4);
    case 'f':
        return literal(c, "false", 5);
    case 'n':
        return literal(c, "null", 4);
    case '{':
        if (depth >= EBS_PAGE_MAX_DEPTH)
            return fail(c, EBS_PAGE_EDEPTH);
        c->p++;
        skip_ws(c);
        if (peek(c) == '}') {
            c->p++;
            return EBS_PAGE_OK;
        }
        for (;;) {
            if (peek(c) != '"')
                return fail_here(c, EBS_PAGE_EKEY);
            c->p++;
            TRY(scan_string(c, NULL, 1, &na));
            skip_ws(c);
            if (peek(c) != ':')
                return fail_here(c, EBS_PAGE_ECOLON);
            c->p++;
            skip_ws(c);
            TRY(skip_value(c, depth + 1));
            int closed;
            TRY(member_end(c, &closed));
            if (closed)
                return EBS_PAGE_OK;
        }
    case '[':
        if (depth >= EBS_PAGE_MAX_DEPTH)
            return fail(c, EBS_PAGE_EDEPTH);
        c->p++;
        skip_ws(c);
        if (peek(c) == ']') {
            c->p++;
            return EBS_PAGE_OK;
        }
        for (;;) {
            TRY(skip_value(c, depth + 1));
            int closed;
            TRY(element_end(c, &closed));
            if (closed)
                return EBS_PAGE_OK;
        }
    default:
        if (ch == '-' || (ch >= '0' && ch <= '9'))
            return scan_number(c, &is_int);
        return fail_here(c, EBS_PAGE_EVALUE);
    }
}

/* ------------------------------------------------------------------ keys */

enum {
    K_UNKNOWN,
    K_LIST,
    K_EXPIRY,
    K_VOLUME_SIZE,
    K_BLOCK_SIZE,
    K_NEXT_TOKEN,
    K_INDEX,
    K_TOKEN0,
    K_TOKEN1,
};

#define KEY_IS(lit) (n == sizeof(lit) - 1 && memcmp(k, lit, n) == 0)

static int classify(const ebs_page *pg, const char *k, size_t n, int in_entry)
{
    int changed = pg->kind == EBS_PAGE_CHANGED;
    if (in_entry) {
        if (KEY_IS("BlockIndex"))
            return K_INDEX;
        if (changed)
            return KEY_IS("FirstBlockToken") ? K_TOKEN0
                 : KEY_IS("SecondBlockToken") ? K_TOKEN1 : K_UNKNOWN;
        return KEY_IS("BlockToken") ? K_TOKEN0 : K_UNKNOWN;
    }
    if (changed ? KEY_IS("ChangedBlocks") : KEY_IS("Blocks"))
        return K_LIST;
    if (KEY_IS("ExpiryTime"))
        return K_EXPIRY;
    if (KEY_IS("VolumeSize"))
        return K_VOLUME_SIZE;
    if (KEY_IS("BlockSize"))
        return K_BLOCK_SIZE;
    if (KEY_IS("NextToken"))
        return K_NEXT_TOKEN;
    return K_UNKNOWN;
}

#undef KEY_IS

/* The keys of a page's 10,000 entries, compared whole with their quotes (constant lengths,
 * so the compiler inlines each compare): a third of the scan went to matching them byte by
 * byte. */
static inline int entry_key(cursor *c, int *key)
{
#define TAKE(lit, k)                                                          \
    if (have >= sizeof(lit) - 1 && memcmp(c->p, lit, sizeof(lit) - 1) == 0) { \
        c->p += sizeof(lit) - 1;                                              \
        *key = (k);                                                           \
        return 1;                                                             \
    }
    size_t have = (size_t)(c->end - c->p);
    TAKE("\"BlockIndex\"", K_INDEX);
    if (c->pg->kind == EBS_PAGE_BLOCKS) {
        TAKE("\"BlockToken\"", K_TOKEN0);
    } else {
        TAKE("\"FirstBlockToken\"", K_TOKEN0);
        TAKE("\"SecondBlockToken\"", K_TOKEN1);
    }
    return 0;
#undef TAKE
}

/* An object key and its ':', c->p at the opening quote; leaves c->p at the value. Keys are
 * matched after unescaping ("Block\u0049ndex" is BlockIndex to json.loads too), but only
 * keys that need it pay for the copy. */
static int key_member(cursor *c, int in_entry, int *key)
{
    if (peek(c) != '"')
        return fail_here(c, EBS_PAGE_EKEY);
    if (in_entry && entry_key(c, key))
        goto colon;
    const uint8_t *run = ++c->p;
    c->p = plain_run(c->p, c->end);
    if (c->p < c->end && *c->p == '"') {
        *key = classify(c->pg, (const char *)run, (size_t)(c->p - run), in_entry);
        c->p++;
    } else {
        int na;
        c->p = run;
        c->pg->scratch.len = 0;
        TRY(scan_string(c, &c->pg->scratch, 1, &na));
        *key = classify(c->pg, c->pg->scratch.data, c->pg->scratch.len, in_entry);
    }
colon:
    skip_ws(c);
    if (peek(c) != ':')
        return fail_here(c, EBS_PAGE_ECOLON);
    c->p++;
    skip_ws(c);
    return EBS_PAGE_OK;
}

/* ------------------------------------------------------------------ entries */

static const char *token_name(const ebs_page *pg, int k)
{
    if (pg->kind == EBS_PAGE_CHANGED)
        return k ? "SecondBlockToken" : "FirstBlockToken";
    return "BlockToken";
}

static const char *list_name(const ebs_page *pg)
{
    return pg->kind == EBS_PAGE_CHANGED ? "ChangedBlocks" : "Blocks";
}

static const char *entry_name(const ebs_page *pg)
{
    return pg->kind == EBS_PAGE_CHANGED ? "ChangedBlocks entry" : "Blocks entry";
}

/* A token member of entry i: the last occurrence wins, so a repeat first drops what the
 * earlier one appended (the entry's token is always the tail of its column). */
static int token_member(cursor *c, int k, size_t i)
{
    ebs_page *pg = c->pg;
    int ch = peek(c), na = 0;
    pg->tok[k].len = (size_t)pg->off[k][i];
    pg->flags[i] &= (uint8_t)~(EBS_ENTRY_TOKEN0 << k);
    if (ch == 'n')
        return literal(c, "null", 4);
    if (ch != '"')
        return wrong_type(c, token_name(pg, k));
    c->p++;
    TRY(scan_string(c, &pg->tok[k], 0, &na));
    if (na)
        pg->non_ascii |= (unsigned)(EBS_PAGE_NONASCII_TOKEN0 << k);
    pg->flags[i] |= (uint8_t)(EBS_ENTRY_TOKEN0 << k);
    return EBS_PAGE_OK;
}

static inline const uint8_t *skip_ws_at(const uint8_t *p, const uint8_t *end)
{
    while (p < end && WS[*p])
        p++;
    return p;
}

/* The object key `lit` (quotes included) and its ':' at p, whitespace allowed around the ':';
 * the value's first byte, or NULL if something else is there. */
static inline const uint8_t *fast_key(const uint8_t *p, const uint8_t *end, const char *lit,
                                      size_t n)
{
    if ((size_t)(end - p) < n || memcmp(p, lit, n) != 0)
        return NULL;
    p = skip_ws_at(p + n, end);
    if (p >= end || *p != ':')
        return NULL;
    return skip_ws_at(p + 1, end);
}

/* A plain string value at p (its opening quote): no escape, no control, nothing >= 0x80, so
 * its bytes are the token. Appends them to token column k; returns the byte after the closing
 * quote, or NULL to leave it to scan_string (*err set only if memory ran out). */
static inline const uint8_t *fast_token(ebs_page *pg, int k, const uint8_t *p,
                                        const uint8_t *end, int *err)
{
    if (p >= end || *p != '"')
        return NULL;
    const uint8_t *q = plain_run(++p, end);
    if (q >= end || *q != '"')
        return NULL;
    *err = buf_put(&pg->tok[k], p, (size_t)(q - p));
    return *err == EBS_PAGE_OK ? q + 1 : NULL;
}

/* How many of the 8 bytes in w (loaded little-endian from the body) are ASCII digits before
 * the first byte that is not; 8 if all are. A byte is a digit iff its high nibble is 3 and
 * adding 6 leaves it 3 (0x3A..0x3F carry into 4). An addition that carries out of a byte
 * (>= 0xFA) only disturbs the bytes after it, and that byte already stops the count. */
static inline unsigned leading_digits(uint64_t w)
{
#if defined(__GNUC__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    const uint64_t hi = 0xF0F0F0F0F0F0F0F0ULL;
    uint64_t bad = ((w & hi) ^ (ONES * 0x30)) | (((w + ONES * 6) & hi) ^ (ONES * 0x30));
    return bad ? (unsigned)__builtin_ctzll(bad) >> 3 : 8;
#else
    unsigned n = 0;
    uint8_t b[8];
    memcpy(b, &w, 8);
    while (n < 8 && (unsigned)(b[n] - '0') < 10)
        n++;
    return n;
#endif
}

/* The value of the n (1 to 7) leading digits of w, as leading_digits counted them. */
static inline uint64_t digits_value(uint64_t w, unsigned n)
{
#if defined(__GNUC__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    /* Digit values, the first digit in the lowest byte; shifted up so the n digits fill the
     * top bytes and zero bytes stand in front as leading zeros. Then neighbours combine:
     * bytes into 2-digit values in 16-bit lanes, those into 4-digit ones in 32-bit lanes, and
     * those into the 8-digit value. No lane overflows: 99, 9999, 99999999. */
    uint64_t x = (w - ONES * '0') << (8 * (8 - n));
    x = (x * 10 + (x >> 8)) & 0x00FF00FF00FF00FFULL;
    x = (x * 100 + (x >> 16)) & 0x0000FFFF0000FFFFULL;
    return (x * 10000 + (x >> 32)) & 0xFFFFFFFFULL;
#else
    uint8_t b[8];
    uint64_t v = 0;
    memcpy(b, &w, 8);
    for (unsigned i = 0; i < n; i++)
        v = v * 10 + (unsigned)(b[i] - '0');
    return v;
#endif
}

/* Entry i as the service writes it: {"BlockIndex": N, "BlockToken": "..."} for blocks,
 * {"BlockIndex": N[, "FirstBlockToken": "..."][, "SecondBlockToken": "..."]} for changed, in
 * that order, N a non-negative integer of at most 18 digits, tokens plain strings, any JSON
 * whitespace between. That is every entry of a real page, read here in one pass with no
 * per-member dispatch. 1: stored, c->p past the '}'. 0: something else is there (maybe an
 * error); nothing is stored past the columns' ends, and entry() reads it again from the '{'.
 * Negative: out of memory. */
static int entry_fast(cursor *c, size_t i)
{
    ebs_page *pg = c->pg;
    const uint8_t *p = skip_ws_at(c->p + 1, c->end), *end = c->end;
    uint64_t v = 0;
    int err = EBS_PAGE_OK;
    uint8_t flags = EBS_ENTRY_INDEX;

    p = fast_key(p, end, "\"BlockIndex\"", 12);
    if (!p || p >= end)
        return 0;
    if (*p == '0') {
        p++;
    } else if (*p >= '1' && *p <= '9') {
        const uint8_t *digits = p;
        unsigned n;
        if (end - p >= 8 && (n = leading_digits(load64(p))) < 8) {
            v = digits_value(load64(p), n); /* n >= 1: *p is a digit */
            p += n;
        } else {
            while (p < end && (unsigned)(*p - '0') < 10)
                v = v * 10 + (unsigned)(*p++ - '0');
            if (p - digits > 18)
                return 0; /* maybe beyond int64: to_int64 decides */
        }
    } else {
        return 0; /* negative, null, or not a number */
    }
    /* "01", "1.5", "1e3": an error or a float, for the general path to report */
    if (p < end && ((unsigned)(*p - '0') < 10 || *p == '.' || *p == 'e' || *p == 'E'))
        return 0;
    p = skip_ws_at(p, end);

    if (pg->kind == EBS_PAGE_BLOCKS) {
        if (p >= end || *p != ',')
            return 0;
        p = fast_key(skip_ws_at(p + 1, end), end, "\"BlockToken\"", 12);
        if (!p || !(p = fast_token(pg, 0, p, end, &err)))
            return err;
        p = skip_ws_at(p, end);
        flags |= EBS_ENTRY_TOKEN0;
    } else {
        static const char *const keys[2] = {"\"FirstBlockToken\"", "\"SecondBlockToken\""};
        static const size_t lens[2] = {17, 18};
        for (int k = 0; k < 2 && p < end && *p == ','; k++) {
            const uint8_t *q = skip_ws_at(p + 1, end), *at = NULL;
            if (k == 0 && !(at = fast_key(q, end, keys[0], lens[0])))
                k = 1; /* no FirstBlockToken: maybe SecondBlockToken */
            if (k == 1 && !(at = fast_key(q, end, keys[1], lens[1])))
                return 0;
            if (!(p = fast_token(pg, k, at, end, &err)))
                return err;
            p = skip_ws_at(p, end);
            flags |= (uint8_t)(EBS_ENTRY_TOKEN0 << k);
        }
    }
    if (p >= end || *p != '}')
        return 0;
    pg->index[i] = (int64_t)v;
    pg->flags[i] = flags;
    c->p = p + 1;
    return 1;
}

static int entry(cursor *c)
{
    ebs_page *pg = c->pg;
    const uint8_t *start = c->p;
    size_t i = pg->n;
    int nt = ntokens(pg), ch = peek(c);
    TRY(entries_reserve(pg, i + 1));
    pg->index[i] = 0;
    pg->flags[i] = 0;
    if (ch == 'n') {
        TRY(literal(c, "null", 4));
        if (pg->strict) {
            pg->err_key = entry_name(pg);
            return fail_at(c, start, EBS_PAGE_EMISSING);
        }
        pg->flags[i] = EBS_ENTRY_NULL;
    } else if (ch == '{') {
        int fast = entry_fast(c, i);
        if (fast < 0)
            return fast;
        if (fast)
            goto done;
        /* Read again from the '{' by the general path: drop what the fast one appended. */
        for (int k = 0; k < nt; k++)
            pg->tok[k].len = (size_t)pg->off[k][i];
        c->p++;
        skip_ws(c);
        int closed = peek(c) == '}';
        if (closed)
            c->p++;
        while (!closed) {
            int key, is_null;
            TRY(key_member(c, 1, &key));
            switch (key) {
            case K_INDEX:
                TRY(int_member(c, "BlockIndex", &pg->index[i], &is_null));
                if (is_null) {
                    pg->index[i] = 0;
                    pg->flags[i] &= (uint8_t)~EBS_ENTRY_INDEX;
                } else {
                    pg->flags[i] |= EBS_ENTRY_INDEX;
                }
                break;
            case K_TOKEN0:
                TRY(token_member(c, 0, i));
                break;
            case K_TOKEN1:
                TRY(token_member(c, 1, i));
                break;
            default:
                TRY(skip_value(c, 3));
            }
            TRY(member_end(c, &closed));
        }
        if (pg->strict) {
            if (!(pg->flags[i] & EBS_ENTRY_INDEX))
                pg->err_key = "BlockIndex";
            else if (pg->kind == EBS_PAGE_BLOCKS && !(pg->flags[i] & EBS_ENTRY_TOKEN0))
                pg->err_key = "BlockToken";
            if (pg->err_key)
                return fail_at(c, start, EBS_PAGE_EMISSING);
        }
    } else {
        return wrong_type(c, entry_name(pg));
    }
done:
    for (int k = 0; k < nt; k++)
        pg->off[k][i + 1] = (int64_t)pg->tok[k].len;
    pg->n = i + 1;
    return EBS_PAGE_OK;
}

/* The Blocks / ChangedBlocks member. A repeat replaces the earlier list (json.loads keeps the
 * last value of a key). */
static int list_member(cursor *c)
{
    ebs_page *pg = c->pg;
    int ch = peek(c);
    pg->n = 0;
    pg->tok[0].len = pg->tok[1].len = 0;
    pg->present &= ~(unsigned)EBS_PAGE_LIST;
    if (ch == 'n')
        return literal(c, "null", 4);
    if (ch != '[')
        return wrong_type(c, list_name(pg));
    c->p++;
    pg->present |= EBS_PAGE_LIST;
    /* Sized from what is left of the body so a real page never reallocates: an entry takes
     * at least ~40 bytes of JSON, and a token never more bytes than its JSON. */
    size_t left = (size_t)(c->end - c->p);
    TRY(entries_reserve(pg, left / 40 + 16));
    for (int k = 0; k < ntokens(pg); k++) {
        TRY(buf_reserve(&pg->tok[k], left / (size_t)ntokens(pg) + 64));
        pg->off[k][0] = 0;
    }
    skip_ws(c);
    if (peek(c) == ']') {
        c->p++;
        return EBS_PAGE_OK;
    }
    for (;;) {
        int closed;
        TRY(entry(c));
        if (c->end - c->p >= 2 && c->p[0] == ',' && !WS[c->p[1]]) {
            c->p++; /* "},{": the common separator, no whitespace to skip */
            continue;
        }
        TRY(element_end(c, &closed));
        if (closed)
            return EBS_PAGE_OK;
    }
}

/* ------------------------------------------------------------------ page */

static int top_member(cursor *c, int key)
{
    ebs_page *pg = c->pg;
    int ch = peek(c), is_null, is_int, na = 0;
    const uint8_t *start;
    switch (key) {
    case K_LIST:
        return list_member(c);
    case K_EXPIRY:
        pg->present &= ~(unsigned)EBS_PAGE_EXPIRY;
        if (ch == 'n')
            return literal(c, "null", 4);
        if (ch != '-' && !(ch >= '0' && ch <= '9'))
            return wrong_type(c, "ExpiryTime");
        start = c->p;
        TRY(scan_number(c, &is_int));
        pg->expiry.len = 0;
        TRY(buf_put(&pg->expiry, start, (size_t)(c->p - start)));
        TRY(buf_put(&pg->expiry, "", 1));
        pg->expiry.len--;
        pg->expiry_is_int = is_int;
        pg->present |= EBS_PAGE_EXPIRY;
        return EBS_PAGE_OK;
    case K_VOLUME_SIZE:
        TRY(int_member(c, "VolumeSize", &pg->volume_size, &is_null));
        if (is_null)
            pg->present &= ~(unsigned)EBS_PAGE_VOLUME_SIZE;
        else
            pg->present |= EBS_PAGE_VOLUME_SIZE;
        return EBS_PAGE_OK;
    case K_BLOCK_SIZE:
        TRY(int_member(c, "BlockSize", &pg->block_size, &is_null));
        if (is_null)
            pg->present &= ~(unsigned)EBS_PAGE_BLOCK_SIZE;
        else
            pg->present |= EBS_PAGE_BLOCK_SIZE;
        return EBS_PAGE_OK;
    case K_NEXT_TOKEN:
        pg->present &= ~(unsigned)EBS_PAGE_NEXT_TOKEN;
        pg->non_ascii &= ~(unsigned)EBS_PAGE_NONASCII_NEXT;
        pg->next_token.len = 0;
        if (ch == 'n')
            return literal(c, "null", 4);
        if (ch != '"')
            return wrong_type(c, "NextToken");
        c->p++;
        TRY(scan_string(c, &pg->next_token, 0, &na));
        if (na)
            pg->non_ascii |= EBS_PAGE_NONASCII_NEXT;
        pg->present |= EBS_PAGE_NEXT_TOKEN;
        return EBS_PAGE_OK;
    default:
        return skip_value(c, 1);
    }
}

int ebs_page_parse(ebs_page *pg, const void *body, size_t len)
{
    cursor c = {(const uint8_t *)body, (const uint8_t *)body + len, (const uint8_t *)body, pg};
    if (pg->kind != EBS_PAGE_BLOCKS && pg->kind != EBS_PAGE_CHANGED)
        return fail(&c, EBS_PAGE_EINVAL);
    skip_ws(&c);
    if (peek(&c) != '{')
        return fail_here(&c, value_starts(peek(&c)) ? EBS_PAGE_ETOP : EBS_PAGE_EVALUE);
    c.p++;
    skip_ws(&c);
    int closed = peek(&c) == '}';
    if (closed)
        c.p++;
    while (!closed) {
        int key;
        TRY(key_member(&c, 0, &key));
        TRY(top_member(&c, key));
        TRY(member_end(&c, &closed));
    }
    skip_ws(&c);
    if (c.p != c.end)
        return fail(&c, EBS_PAGE_ETRAILING);
    return EBS_PAGE_OK;
}
