# C API of ebsfast/_csrc/pages.h, declared once.
from libc.stdint cimport int64_t, uint8_t


cdef extern from "pages.h" nogil:
    enum:
        EBS_PAGE_OK
        EBS_PAGE_ENOMEM
        EBS_PAGE_ETYPE
        EBS_PAGE_ERANGE
        EBS_PAGE_EMISSING
        EBS_PAGE_BLOCKS
        EBS_PAGE_CHANGED
        EBS_ENTRY_INDEX
        EBS_ENTRY_TOKEN0
        EBS_ENTRY_TOKEN1
        EBS_ENTRY_NULL
        EBS_PAGE_LIST
        EBS_PAGE_EXPIRY
        EBS_PAGE_VOLUME_SIZE
        EBS_PAGE_BLOCK_SIZE
        EBS_PAGE_NEXT_TOKEN
        EBS_PAGE_NONASCII_TOKEN0
        EBS_PAGE_NONASCII_TOKEN1
        EBS_PAGE_NONASCII_NEXT

    ctypedef struct ebs_page_buf:
        char *data
        size_t len
        size_t cap

    ctypedef struct ebs_page:
        int kind
        int strict
        size_t n
        size_t cap
        int64_t *index
        uint8_t *flags
        int64_t *off[2]
        ebs_page_buf tok[2]
        unsigned non_ascii
        unsigned present
        int64_t volume_size
        int64_t block_size
        ebs_page_buf expiry
        int expiry_is_int
        ebs_page_buf next_token
        size_t err_pos
        const char *err_key

    const char *ebs_page_strerror(int err)
    void ebs_page_init(ebs_page *pg, int kind, int strict)
    void ebs_page_free(ebs_page *pg)
    void ebs_page_reset(ebs_page *pg, int kind, int strict)
    size_t ebs_page_footprint(const ebs_page *pg)
    int ebs_page_parse(ebs_page *pg, const void *body, size_t len)


cdef class Columns:
    cdef readonly str kind
    cdef readonly object indexes
    cdef readonly object tokens
    cdef readonly object offsets
    cdef readonly object first
    cdef readonly object first_offsets
    cdef readonly object second
    cdef readonly object second_offsets
    cdef readonly object has_first
    cdef readonly object has_second
    cdef readonly object expiry_time
    cdef readonly object volume_size
    cdef readonly object block_size
    cdef readonly object next_token
