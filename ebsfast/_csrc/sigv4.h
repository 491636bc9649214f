/* AWS Signature Version 4 for ebsfast: the signer core, with no Python API inside.
 *
 * Every step matches botocore's SigV4Auth byte for byte (botocore/auth.py), because a request
 * signed by ebsfast must be indistinguishable from one signed by boto3. Functions return
 * EBS_SIGV4_OK or a negative error code and never abort; none touches global state, so all of
 * them may run without the GIL and from several threads at once.
 *
 * Strings are (pointer, length) pairs of UTF-8 bytes; none needs a terminating NUL. */
#ifndef EBSFAST_SIGV4_H
#define EBSFAST_SIGV4_H

#include <stddef.h>
#include <stdint.h>

#include "sha256.h"

#define EBS_SIGV4_OK 0
#define EBS_SIGV4_ENOMEM (-1)        /* a growable buffer could not grow */
#define EBS_SIGV4_ENOSPC (-2)        /* a fixed-capacity buffer is too small */
#define EBS_SIGV4_EHEADER_VALUE (-3) /* CR or LF in a header value (header injection) */
#define EBS_SIGV4_EHEADER_NAME (-4)  /* a header name that is empty or not an RFC 9110 token */
#define EBS_SIGV4_EMETHOD (-5)       /* an HTTP method that is empty or not a token */
#define EBS_SIGV4_EDATE (-6)         /* an amz date that is not YYYYMMDDTHHMMSSZ */
#define EBS_SIGV4_EINVAL (-7)        /* other malformed input (described at each function) */

#define EBS_SIGV4_AMZ_DATE_LEN 16
#define EBS_SIGV4_SIG_HEX_LEN 64

const char *ebs_sigv4_strerror(int err);

/* ---- output buffer: a pointer+length cursor with one capacity check per write ---- */

typedef struct {
    char *data;
    size_t len;
    size_t cap;
    int heap;  /* data is ours (malloc) and realloc-able */
    int fixed; /* never grows: running out of room is EBS_SIGV4_ENOSPC */
} ebs_buf;

/* A growable buffer starting in `storage` (may be NULL / 0); it moves to the heap only when
 * it outgrows the storage, so a stack array serves the common case without malloc. */
void ebs_buf_init(ebs_buf *b, char *storage, size_t cap);
/* A buffer that never allocates: writes past `cap` fail with EBS_SIGV4_ENOSPC. */
void ebs_buf_init_fixed(ebs_buf *b, char *storage, size_t cap);
void ebs_buf_free(ebs_buf *b);
/* Ensures room for n more bytes; the only place capacity is checked. */
int ebs_buf_reserve(ebs_buf *b, size_t n);
int ebs_buf_put(ebs_buf *b, const void *p, size_t n);

/* ---- HMAC-SHA256 ---- */

/* The key pre-absorbed: inner and outer SHA-256 states after the ipad/opad block, so a MAC
 * costs only the message blocks plus one outer block. */
typedef struct {
    ebs_sha256_ctx inner;
    ebs_sha256_ctx outer;
} ebs_hmac_key;

/* The key is the concatenation a || b (lets "AWS4" + secret be used without a copy). */
void ebs_hmac_key_init(ebs_hmac_key *k, const void *a, size_t alen, const void *b, size_t blen);
void ebs_hmac_mac(const ebs_hmac_key *k, const void *msg, size_t len, uint8_t out[32]);
void ebs_hmac_sha256(const void *key, size_t klen, const void *msg, size_t len, uint8_t out[32]);

/* kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), service), "aws4_request") */
void ebs_sigv4_derive_key(uint8_t out[32], const char *secret, size_t secret_len,
                          const char *date, size_t date_len, const char *region,
                          size_t region_len, const char *service, size_t service_len);

/* ---- canonicalization steps ---- */

/* RFC 3986 percent-encoding as AWS wants it: A-Z a-z 0-9 - _ . ~ kept, every other byte %XX
 * in upper case; '/' kept too when keep_slash. */
int ebs_uri_encode(ebs_buf *out, const char *s, size_t n, int keep_slash);

/* botocore's remove_dot_segments: drops "." and empty segments, ".." pops one; keeps a
 * leading '/' and, if any segment is left, a trailing '/'. The empty path becomes "/". */
int ebs_sigv4_normalize_path(ebs_buf *out, const char *path, size_t n);

/* The canonical URI of a request-line path (the path exactly as sent, already
 * percent-encoded): normalized when asked, then percent-encoded once more with '/' kept, as
 * botocore does for every service but S3. */
int ebs_sigv4_canonical_uri(ebs_buf *out, const char *path, size_t n, int normalize);

/* The canonical query of a query string as it sits on the wire (already percent-encoded):
 * split on '&', each part split at its first '=', pairs sorted by key then value as bytes,
 * rejoined as k=v with '&'. Nothing is re-encoded, matching botocore's URL path. */
int ebs_sigv4_canonical_query(ebs_buf *out, const char *query, size_t n);

typedef struct {
    const char *name;
    size_t name_len;
    const char *value;
    size_t value_len;
} ebs_header;

/* Nonzero when s is a non-empty RFC 9110 token (what a header name must be). */
int ebs_sigv4_is_token(const char *s, size_t n);

/* Nonzero when a (in any case) equals b (lower case), as header names are compared. */
int ebs_sigv4_eq_lower(const char *a, size_t an, const char *b, size_t bn);

/* Nonzero when botocore never signs this header (user-agent, expect, ...). */
int ebs_sigv4_header_excluded(const char *name, size_t n);

/* Canonical header lines ("name:value\n" each, names lower-cased and sorted, values trimmed
 * with runs of whitespace folded to one space as Python's str.split() does, repeated names
 * joined with ',' in their original order) into `block`, and the ';'-joined names into
 * `signed_headers`. Excluded headers are skipped. Names must be tokens; values must not
 * contain CR or LF. */
int ebs_sigv4_canonical_headers(ebs_buf *block, ebs_buf *signed_headers,
                                const ebs_header *headers, size_t n);

typedef struct {
    const char *method;
    size_t method_len;
    const char *path; /* request-line path, as sent */
    size_t path_len;
    const char *query; /* wire query string, without '?' */
    size_t query_len;
    const ebs_header *headers;
    size_t n_headers;
    const char *payload_hash;
    size_t payload_hash_len;
    int normalize; /* remove dot segments and repeated slashes from the path */
} ebs_sigv4_request;

int ebs_sigv4_canonical_request(ebs_buf *creq, ebs_buf *signed_headers,
                                const ebs_sigv4_request *req);

/* Validates YYYYMMDDTHHMMSSZ (digits where digits go). */
int ebs_sigv4_check_amz_date(const char *amz_date, size_t n);

/* "AWS4-HMAC-SHA256\n" amz_date "\n" scope "\n" hex(SHA-256(creq)) */
int ebs_sigv4_string_to_sign(ebs_buf *out, const char *amz_date, size_t amz_date_len,
                             const char *scope, size_t scope_len, const char *creq,
                             size_t creq_len);

/* Lower-case hex HMAC(signing key, string to sign). */
void ebs_sigv4_signature_hex(const ebs_hmac_key *signing_key, const char *sts, size_t n,
                             char out[EBS_SIGV4_SIG_HEX_LEN]);

/* ---- the hot path ---- */

/* What stays fixed between requests of one signer on one day. */
typedef struct {
    ebs_hmac_key key;         /* signing key for `date` */
    const char *access_key;   /* these point into memory the caller keeps alive */
    size_t access_key_len;
    const char *scope;        /* "YYYYMMDD/region/service/aws4_request" */
    size_t scope_len;
    const char *token;        /* NULL: no X-Amz-Security-Token is signed */
    size_t token_len;
} ebs_sigv4_signer;

/* One request from pre-canonicalized pieces.
 * header_block: canonical lines ("name:value\n", sorted) of every signed header except
 *   x-amz-date and x-amz-security-token, which are merged in at their sorted places from
 *   amz_date and the signer's token. signed_headers: the matching ';'-joined names, likewise
 *   without those two. query: the canonical query (already sorted). path: the request-line
 *   path, canonicalized here (cheap, and one less thing a caller can get wrong).
 * EBS_SIGV4_EINVAL: header_block holds a CR, an unterminated line, or one of the two
 * merged names; or the amz date's day is not the scope's. */
typedef struct {
    const char *method;
    size_t method_len;
    const char *path;
    size_t path_len;
    const char *query;
    size_t query_len;
    const char *header_block;
    size_t header_block_len;
    const char *signed_headers;
    size_t signed_headers_len;
    const char *payload_hash;
    size_t payload_hash_len;
    const char *amz_date; /* EBS_SIGV4_AMZ_DATE_LEN bytes */
    int normalize;
} ebs_sigv4_prepared;

/* Writes the Authorization header value
 * "AWS4-HMAC-SHA256 Credential=<ak>/<scope>, SignedHeaders=<names>, Signature=<hex>". */
int ebs_sigv4_authorize_prepared(ebs_buf *out, const ebs_sigv4_signer *s,
                                 const ebs_sigv4_prepared *p);

/* The HMAC state after the string to sign's fixed start ("AWS4-HMAC-SHA256\n" date "\n"
 * scope "\n"): the same for every request signed in one second, and one of the eleven SHA-256
 * blocks a signature costs. The caller owns it and serializes access (the Python layer holds
 * the GIL). */
typedef struct {
    ebs_sha256_ctx state;
    char amz_date[EBS_SIGV4_AMZ_DATE_LEN];
    int valid;
} ebs_sigv4_sts_cache;

/* ebs_sigv4_authorize_prepared, reusing (and refreshing) `cache` for the string to sign. */
int ebs_sigv4_authorize_cached(ebs_buf *out, const ebs_sigv4_signer *s,
                               const ebs_sigv4_prepared *p, ebs_sigv4_sts_cache *cache);

/* The Authorization value from its parts (the general path uses it after its own steps). */
int ebs_sigv4_authorization(ebs_buf *out, const char *access_key, size_t access_key_len,
                            const char *scope, size_t scope_len, const char *signed_headers,
                            size_t signed_headers_len, const char sig[EBS_SIGV4_SIG_HEX_LEN]);

#endif
