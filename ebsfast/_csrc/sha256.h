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

/* Added by the SHA-256 module (kept after the lead's contract above). */

/* Digests of blocks first .. first+count-1 of data, where block i is
 * data[i*block_size : min((i+1)*block_size, len)]. Writes count*32 bytes to out. Pairs of blocks go
 * through ebs_sha256_x2 so the two-lane path sees them. The caller guarantees block_size > 0 and
 * that every block it names starts inside data (first+count <= ceil(len/block_size)). */
void ebs_sha256_blocks(const uint8_t *data, size_t len, size_t block_size, size_t first,
                       size_t count, uint8_t *out);

/* As ebs_sha256_blocks, but compares each digest with expected[k*32 .. k*32+31] and writes 1 (equal)
 * or 0 to result[k]. Returns the number of mismatches. */
size_t ebs_sha256_verify_blocks(const uint8_t *data, size_t len, size_t block_size, size_t first,
                                size_t count, const uint8_t *expected, uint8_t *result);

/* What EBSFAST_SHA256 asked for when the path was chosen: -1 unset or empty, -2 a value that names
 * no path, else the path id. Python compares it with ebs_sha256_get_path() to report a request it
 * could not honour. */
int ebs_sha256_env_request(void);

/* Runs the known-answer tests against one path (CPU support is not checked: the caller must).
 * Returns 0 on success. The setup already ran this; it is exported for the test suite. */
int ebs_sha256_self_test(int path);

/* Block compression entry points, state in FIPS 180-4 order (a..h). The SHA-NI ones live in
 * sha256_shani.c and exist only on x86-64; call them only when the CPU has SHA, SSE4.1, SSSE3. */
extern const uint32_t ebs_sha256_K[64]; /* FIPS 180-4 section 4.2.2 round constants */
void ebs_sha256_compress_portable(uint32_t state[8], const uint8_t *blocks, size_t nblocks);
#if defined(__x86_64__)
#define EBS_SHA256_HAVE_SHANI 1
void ebs_sha256_compress_shani(uint32_t state[8], const uint8_t *blocks, size_t nblocks);
void ebs_sha256_compress_shani_x2(uint32_t state_a[8], const uint8_t *blocks_a,
                                  uint32_t state_b[8], const uint8_t *blocks_b, size_t nblocks);
#endif

#endif
