# C API of ebsfast/_csrc/sigv4.h, declared once. (SHA-256 comes from ebsfast/_sha256.pxd.)
from libc.stdint cimport uint8_t


cdef extern from "sigv4.h" nogil:
    enum:
        EBS_SIGV4_OK
        EBS_SIGV4_ENOMEM
        EBS_SIGV4_ENOSPC
        EBS_SIGV4_EHEADER_VALUE
        EBS_SIGV4_EHEADER_NAME
        EBS_SIGV4_EMETHOD
        EBS_SIGV4_EDATE
        EBS_SIGV4_EINVAL
        EBS_SIGV4_AMZ_DATE_LEN
        EBS_SIGV4_SIG_HEX_LEN

    const char *ebs_sigv4_strerror(int err)

    ctypedef struct ebs_buf:
        char *data
        size_t len
        size_t cap
        int heap
        int fixed

    void ebs_buf_init(ebs_buf *b, char *storage, size_t cap)
    void ebs_buf_init_fixed(ebs_buf *b, char *storage, size_t cap)
    void ebs_buf_free(ebs_buf *b)
    int ebs_buf_reserve(ebs_buf *b, size_t n)
    int ebs_buf_put(ebs_buf *b, const void *p, size_t n)

    # Opaque to Cython: two SHA-256 midstates.
    ctypedef struct ebs_hmac_key:
        pass

    void ebs_hmac_key_init(ebs_hmac_key *k, const void *a, size_t alen, const void *b,
                           size_t blen)
    void ebs_hmac_mac(const ebs_hmac_key *k, const void *msg, size_t len, uint8_t *out)
    void ebs_hmac_sha256(const void *key, size_t klen, const void *msg, size_t len,
                         uint8_t *out)
    void ebs_sigv4_derive_key(uint8_t *out, const char *secret, size_t secret_len,
                              const char *date, size_t date_len, const char *region,
                              size_t region_len, const char *service, size_t service_len)

    int ebs_uri_encode(ebs_buf *out, const char *s, size_t n, int keep_slash)
    int ebs_sigv4_normalize_path(ebs_buf *out, const char *path, size_t n)
    int ebs_sigv4_canonical_uri(ebs_buf *out, const char *path, size_t n, int normalize)
    int ebs_sigv4_canonical_query(ebs_buf *out, const char *query, size_t n)

    ctypedef struct ebs_header:
        const char *name
        size_t name_len
        const char *value
        size_t value_len

    int ebs_sigv4_header_excluded(const char *name, size_t n)
    int ebs_sigv4_canonical_headers(ebs_buf *block, ebs_buf *signed_headers,
                                    const ebs_header *headers, size_t n)

    ctypedef struct ebs_sigv4_request:
        const char *method
        size_t method_len
        const char *path
        size_t path_len
        const char *query
        size_t query_len
        const ebs_header *headers
        size_t n_headers
        const char *payload_hash
        size_t payload_hash_len
        int normalize

    int ebs_sigv4_canonical_request(ebs_buf *creq, ebs_buf *signed_headers,
                                    const ebs_sigv4_request *req)
    int ebs_sigv4_check_amz_date(const char *amz_date, size_t n)
    int ebs_sigv4_string_to_sign(ebs_buf *out, const char *amz_date, size_t amz_date_len,
                                 const char *scope, size_t scope_len, const char *creq,
                                 size_t creq_len)
    void ebs_sigv4_signature_hex(const ebs_hmac_key *signing_key, const char *sts, size_t n,
                                 char *out)

    ctypedef struct ebs_sigv4_signer:
        ebs_hmac_key key
        const char *access_key
        size_t access_key_len
        const char *scope
        size_t scope_len
        const char *token
        size_t token_len

    ctypedef struct ebs_sigv4_prepared:
        const char *method
        size_t method_len
        const char *path
        size_t path_len
        const char *query
        size_t query_len
        const char *header_block
        size_t header_block_len
        const char *signed_headers
        size_t signed_headers_len
        const char *payload_hash
        size_t payload_hash_len
        const char *amz_date
        int normalize

    int ebs_sigv4_authorize_prepared(ebs_buf *out, const ebs_sigv4_signer *s,
                                     const ebs_sigv4_prepared *p)
    ctypedef struct ebs_sigv4_sts_cache:
        int valid
    int ebs_sigv4_authorize_cached(ebs_buf *out, const ebs_sigv4_signer *s,
                                   const ebs_sigv4_prepared *p, ebs_sigv4_sts_cache *cache)
    int ebs_sigv4_authorization(ebs_buf *out, const char *access_key, size_t access_key_len,
                                const char *scope, size_t scope_len,
                                const char *signed_headers, size_t signed_headers_len,
                                const char *sig)


cdef class Signer:
    cdef str _access_key
    cdef str _secret_key
    cdef str _region
    cdef str _service
    cdef object _token          # str or None
    cdef bint _sign_token
    cdef bytes _token_b         # UTF-8 of the token as signed, or None
    # The day's key, swapped under the GIL; every method that reads it holds the GIL.
    cdef ebs_sigv4_signer _c
    cdef ebs_sigv4_sts_cache _sts    # string-to-sign start for the current second
    cdef char _date[8]
    cdef bint _have_key
    cdef str _scope
    cdef bytes _scope_b
    cdef bytes _access_key_b
    cdef bint _ascii            # key id, region and service are ASCII

    cdef int _ensure_day(self, const char *amz_date) except -1
    cdef str _day(self, object amz_date)
    cdef str _signature(self, str amz_date, str creq)


cdef class PreparedRequest:
    # One request shape of one signer (method, headers, payload hash), checked once; each
    # signature then converts only the path, query and date.
    cdef Signer _signer
    cdef bytes _method
    cdef bytes _header_block
    cdef bytes _signed_headers
    cdef bytes _payload_hash
    cdef bint _ascii            # the signer's and the signed header names': ASCII output
