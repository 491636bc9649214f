/* SHA-256 (FIPS 180-4) for ebsfast: a portable C path, an x86-64 SHA-NI path, and a SHA-NI
 * path that runs two independent messages interleaved. The path is chosen once (CPUID, or the
 * EBSFAST_SHA256 environment variable) and every caller in the process goes through it. */
#ifndef EBSFAST_SHA256_H
#define EBSFAST_SHA256_H

#include <stddef.h>
#include <stdint.h>

#define EBS_SHA256_DIGEST 32
#define EBS_SHA256_BLOCK 64

/* Path identifiers, in order of preference. */
#define EBS_SHA256_PORTABLE 0
#define EBS_SHA256_SHANI 1
#define EBS_SHA256_SHANI_X2 2

/* CPU feature bits reported by ebs_cpu_features(). */
#define EBS_CPU_SHA 1u
#define EBS_CPU_SSE41 2u
#define EBS_CPU_SSSE3 4u
#define EBS_CPU_AVX2 8u

typedef struct {
    uint32_t state[8];
    uint64_t total;   /* bytes absorbed so far */
    uint8_t buf[EBS_SHA256_BLOCK];
    uint32_t buflen;  /* bytes waiting in buf, always < 64 */
} ebs_sha256_ctx;

/* Streaming interface; uses the selected single-message path. */
void ebs_sha256_init(ebs_sha256_ctx *ctx);
void ebs_sha256_update(ebs_sha256_ctx *ctx, const void *data, size_t len);
void ebs_sha256_final(ebs_sha256_ctx *ctx, uint8_t out[EBS_SHA256_DIGEST]);

/* One-shot digest of one message. */
void ebs_sha256(const void *data, size_t len, uint8_t out[EBS_SHA256_DIGEST]);

/* Two independent messages at once (lengths may differ). On the two-lane path the common
 * prefix of whole blocks is hashed interleaved; otherwise this is two one-shot calls. */
void ebs_sha256_x2(const void *a, size_t alen, const void *b, size_t blen,
                   uint8_t outa[EBS_SHA256_DIGEST], uint8_t outb[EBS_SHA256_DIGEST]);

/* Dispatch. ebs_sha256_setup() runs CPUID and the known-answer self-tests once; it is safe to
 * call more than once. ebs_sha256_set_path() returns 0, or -1 when the path is not supported
 * on this CPU or failed its self-test (the current path is then unchanged). */
void ebs_sha256_setup(void);
unsigned ebs_cpu_features(void);
int ebs_sha256_path_supported(int path);
int ebs_sha256_get_path(void);
int ebs_sha256_set_path(int path);
const char *ebs_sha256_path_name(int path);

#endif
