/* ListSnapshotBlocks / ListChangedBlocks response pages, parsed in C with no Python API inside.
 *
 * One scanner serves both outputs of ebsfast._pages: it validates the whole body as JSON (RFC
 * 8259, with the same acceptance as Python's json.loads on a strictly UTF-8-decoded body, minus
 * NaN/Infinity) and leaves the page in columns: block indexes, per-entry presence flags and
 * the decoded token bytes concatenated with end offsets. parse_page builds botocore-shaped dicts
 * from those columns under the GIL; parse_columns copies them into numpy arrays. Everything
 * here runs without the GIL; the one value that needs Python to convert exactly (ExpiryTime,
 * an arbitrary JSON number) is kept as text.
 *
 * Where JSON allows more than one reading, json.loads is the reference (botocore uses it):
 * duplicate keys keep the last value, "null" means absent, object keys are compared after
 * unescaping. */
#ifndef EBSFAST_PAGES_H
#define EBSFAST_PAGES_H

#include <stddef.h>
#include <stdint.h>

#define EBS_PAGE_OK 0
#define EBS_PAGE_ENOMEM (-1)
#define EBS_PAGE_EEOF (-2)          /* the body ends inside a value */
#define EBS_PAGE_EVALUE (-3)        /* no JSON value starts here */
#define EBS_PAGE_ECOLON (-4)        /* expected ':' after an object key */
#define EBS_PAGE_EOBJECT (-5)       /* expected ',' or '}' */
#define EBS_PAGE_EARRAY (-6)        /* expected ',' or ']' */
#define EBS_PAGE_EKEY (-7)          /* expected a string object key */
#define EBS_PAGE_ETRAILING (-8)     /* data after the top-level object */
#define EBS_PAGE_ETOP (-9)          /* the body is not a JSON object */
#define EBS_PAGE_ECONTROL (-10)     /* unescaped control character in a string */
#define EBS_PAGE_EESCAPE (-11)      /* invalid backslash escape */
#define EBS_PAGE_EUTF8 (-12)        /* invalid UTF-8 */
#define EBS_PAGE_ESURROGATE (-13)   /* a \u escape leaves a lone surrogate in a known string */
#define EBS_PAGE_ENUMBER (-14)      /* malformed number */
#define EBS_PAGE_EDEPTH (-15)       /* nesting deeper than EBS_PAGE_MAX_DEPTH */
#define EBS_PAGE_ETYPE (-16)        /* a known key has a value of the wrong type (err_key) */
#define EBS_PAGE_ERANGE (-17)       /* an integer outside int64 (err_key) */
#define EBS_PAGE_EMISSING (-18)     /* columnar mode: entry without err_key, or a null entry */
#define EBS_PAGE_EINVAL (-19)       /* bad argument (kind) */

/* json.loads fails near 1000 levels (RecursionError); nothing in a real page nests past 3. */
#define EBS_PAGE_MAX_DEPTH 512

enum { EBS_PAGE_BLOCKS = 0, EBS_PAGE_CHANGED = 1 };

/* ebs_page.flags[i]: what entry i had (a null entry has only EBS_ENTRY_NULL). Token 0 is
 * BlockToken or FirstBlockToken, token 1 SecondBlockToken. */
#define EBS_ENTRY_INDEX 1
#define EBS_ENTRY_TOKEN0 2
#define EBS_ENTRY_TOKEN1 4
#define EBS_ENTRY_NULL 8

/* ebs_page.present: top-level members that were there and not null. */
#define EBS_PAGE_LIST 1
#define EBS_PAGE_EXPIRY 2
#define EBS_PAGE_VOLUME_SIZE 4
#define EBS_PAGE_BLOCK_SIZE 8
#define EBS_PAGE_NEXT_TOKEN 16

/* ebs_page.non_ascii: which decoded strings hold a byte >= 0x80 (they are valid UTF-8). */
#define EBS_PAGE_NONASCII_TOKEN0 1
#define EBS_PAGE_NONASCII_TOKEN1 2
#define EBS_PAGE_NONASCII_NEXT 4

typedef struct {
    char *data;
    size_t len;
    size_t cap;
} ebs_page_buf;

typedef struct {
    /* in */
    int kind;   /* EBS_PAGE_BLOCKS or EBS_PAGE_CHANGED */
    int strict; /* columnar: every entry needs BlockIndex (and BlockToken for blocks) */

    /* entries: n of them; off[k] has n + 1 items, token k of entry i is
     * tok[k].data[off[k][i] : off[k][i + 1]] (empty when absent) */
    size_t n;
    size_t cap;
    int64_t *index; /* 0 where absent */
    uint8_t *flags;
    int64_t *off[2];
    ebs_page_buf tok[2];
    unsigned non_ascii;

    /* top-level scalars */
    unsigned present;
    int64_t volume_size;
    int64_t block_size;
    /* ExpiryTime as written in the body, NUL-terminated: Python converts it, because only
     * its float() and int() round and size exactly as json.loads does. */
    ebs_page_buf expiry;
    int expiry_is_int;
    ebs_page_buf next_token;

    /* on error: byte offset into the body, and the known key whose value was wrong, if any */
    size_t err_pos;
    const char *err_key;

    ebs_page_buf scratch; /* unescaped object keys */
} ebs_page;

const char *ebs_page_strerror(int err);

void ebs_page_init(ebs_page *pg, int kind, int strict);
void ebs_page_free(ebs_page *pg);
/* Makes a parsed page ready for another parse, keeping its allocations: fresh memory costs a
 * page fault per 4 KiB on first touch, which measured as much as the scan itself. */
void ebs_page_reset(ebs_page *pg, int kind, int strict);
/* Bytes of heap the page holds. */
size_t ebs_page_footprint(const ebs_page *pg);

/* Parses one whole response body into a new or reset page. On failure returns a negative
 * code with err_pos (and err_key) set; the columns then hold a partial page that must not be
 * used. */
int ebs_page_parse(ebs_page *pg, const void *body, size_t len);

#endif
