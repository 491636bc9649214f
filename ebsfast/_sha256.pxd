# C API of ebsfast/_csrc/sha256.h, declared once for every Cython module that hashes.
from libc.stdint cimport uint8_t, uint32_t, uint64_t


cdef extern from "sha256.h" nogil:
    enum:
        EBS_SHA256_DIGEST
        EBS_SHA256_BLOCK
        EBS_SHA256_PORTABLE
        EBS_SHA256_SHANI
        EBS_SHA256_SHANI_X2
        EBS_CPU_SHA
        EBS_CPU_SSE41
        EBS_CPU_SSSE3
        EBS_CPU_AVX2

    ctypedef struct ebs_sha256_ctx:
        uint32_t state[8]
        uint64_t total
        uint8_t buf[64]
        uint32_t buflen

    void ebs_sha256_init(ebs_sha256_ctx *ctx)
    void ebs_sha256_update(ebs_sha256_ctx *ctx, const void *data, size_t len)
    void ebs_sha256_final(ebs_sha256_ctx *ctx, uint8_t *out)
    void ebs_sha256(const void *data, size_t len, uint8_t *out)
    void ebs_sha256_x2(const void *a, size_t alen, const void *b, size_t blen,
                       uint8_t *outa, uint8_t *outb)
    void ebs_sha256_blocks(const uint8_t *data, size_t len, size_t block_size, size_t first,
                           size_t count, uint8_t *out)
    size_t ebs_sha256_verify_blocks(const uint8_t *data, size_t len, size_t block_size,
                                    size_t first, size_t count, const uint8_t *expected,
                                    uint8_t *result)

    void ebs_sha256_setup()
    unsigned ebs_cpu_features()
    int ebs_sha256_path_supported(int path)
    int ebs_sha256_get_path()
    int ebs_sha256_set_path(int path)
    const char *ebs_sha256_path_name(int path)
    int ebs_sha256_env_request()
    int ebs_sha256_self_test(int path)
