/* SHA-256 block compression with the x86 SHA extensions: one message, and two independent messages
 * interleaved. Compiled for any x86-64 with per-function target attributes, so the rest of the
 * extension keeps the baseline ISA; sha256.c calls these only after CPUID and the self-tests.
 *
 * Register layout (Intel SDM, SHA256RNDS2): one register holds A,B,E,F and the other C,D,G,H, with
 * A and C in the top lane. Each SHA256RNDS2 does two rounds using the low two lanes of the
 * W+K operand and returns the new A,B,E,F; the old A,B,E,F becomes the new C,D,G,H, so the two
 * registers swap roles every call. SHA256RNDS2 latency is several cycles and one block is a chain
 * of 32 of them, so a single message leaves the unit idle most of the time; the two-lane kernel
 * issues a second message's rounds into those gaps. */
#include "sha256.h"

#if defined(__x86_64__)
#include <immintrin.h>

#define SHANI_TARGET __attribute__((target("sha,sse4.1,ssse3")))

/* pshufb control that reverses the bytes of each 32-bit lane: message words are big-endian. */
#define BSWAP32_MASK() _mm_set_epi64x(0x0c0d0e0f08090a0bLL, 0x0405060700010203LL)

/* state[0..7] = a..h in memory order; the low lane of a load is the first word. */
static inline SHANI_TARGET void load_state(const uint32_t s[8], __m128i *abef, __m128i *cdgh)
{
    __m128i abcd = _mm_loadu_si128((const __m128i *)s);
    __m128i efgh = _mm_loadu_si128((const __m128i *)(s + 4));
    __m128i badc = _mm_shuffle_epi32(abcd, 0xB1); /* lanes low..high: b a d c */
    __m128i hgfe = _mm_shuffle_epi32(efgh, 0x1B); /* h g f e */
    *abef = _mm_alignr_epi8(badc, hgfe, 8);       /* f e b a: A in the top lane */
    *cdgh = _mm_blend_epi16(hgfe, badc, 0xF0);    /* h g d c: C in the top lane */
}

static inline SHANI_TARGET void store_state(uint32_t s[8], __m128i abef, __m128i cdgh)
{
    __m128i abef_r = _mm_shuffle_epi32(abef, 0x1B); /* a b e f */
    __m128i ghcd = _mm_shuffle_epi32(cdgh, 0xB1);   /* g h c d */
    _mm_storeu_si128((__m128i *)s, _mm_blend_epi16(abef_r, ghcd, 0xF0));
    _mm_storeu_si128((__m128i *)(s + 4), _mm_alignr_epi8(ghcd, abef_r, 8));
}

static inline SHANI_TARGET __m128i load_words(const uint8_t *p, __m128i mask)
{
    return _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)p), mask);
}

static inline SHANI_TARGET __m128i round_k(int group)
{
    return _mm_load_si128((const __m128i *)(ebs_sha256_K + 4 * group));
}

/* W[t..t+3] from m0 = W[t-16..t-13], m1 = W[t-12..t-9], m2 = W[t-8..t-5], m3 = W[t-4..t-1];
 * the alignr supplies the W[t-7] term (FIPS 180-4 6.2.2 step 1), which MSG1/MSG2 leave out. */
#define SCHEDULE(m0, m1, m2, m3)                                                                  \
    m0 = _mm_sha256msg2_epu32(                                                                    \
        _mm_add_epi32(_mm_sha256msg1_epu32(m0, m1), _mm_alignr_epi8(m3, m2, 4)), m3)

/* Four rounds; after two SHA256RNDS2 the registers are back in their own roles. */
#define ROUNDS4(abef, cdgh, wk)                                                                   \
    do {                                                                                          \
        cdgh = _mm_sha256rnds2_epu32(cdgh, abef, wk);                                             \
        abef = _mm_sha256rnds2_epu32(abef, cdgh, _mm_shuffle_epi32(wk, 0x0E));                    \
    } while (0)

SHANI_TARGET void ebs_sha256_compress_shani(uint32_t state[8], const uint8_t *blocks, size_t nblocks)
{
    const __m128i mask = BSWAP32_MASK();
    __m128i abef, cdgh;
    load_state(state, &abef, &cdgh);

    for (; nblocks; nblocks--, blocks += EBS_SHA256_BLOCK) {
        const __m128i abef0 = abef, cdgh0 = cdgh;
        __m128i m0 = load_words(blocks, mask);
        __m128i m1 = load_words(blocks + 16, mask);
        __m128i m2 = load_words(blocks + 32, mask);
        __m128i m3 = load_words(blocks + 48, mask);
        __m128i wk;

        wk = _mm_add_epi32(m0, round_k(0));
        ROUNDS4(abef, cdgh, wk);
        wk = _mm_add_epi32(m1, round_k(1));
        ROUNDS4(abef, cdgh, wk);
        wk = _mm_add_epi32(m2, round_k(2));
        ROUNDS4(abef, cdgh, wk);
        wk = _mm_add_epi32(m3, round_k(3));
        ROUNDS4(abef, cdgh, wk);
        for (int g = 4; g < 16; g += 4) {
            SCHEDULE(m0, m1, m2, m3);
            wk = _mm_add_epi32(m0, round_k(g));
            ROUNDS4(abef, cdgh, wk);
            SCHEDULE(m1, m2, m3, m0);
            wk = _mm_add_epi32(m1, round_k(g + 1));
            ROUNDS4(abef, cdgh, wk);
            SCHEDULE(m2, m3, m0, m1);
            wk = _mm_add_epi32(m2, round_k(g + 2));
            ROUNDS4(abef, cdgh, wk);
            SCHEDULE(m3, m0, m1, m2);
            wk = _mm_add_epi32(m3, round_k(g + 3));
            ROUNDS4(abef, cdgh, wk);
        }
        abef = _mm_add_epi32(abef, abef0);
        cdgh = _mm_add_epi32(cdgh, cdgh0);
    }
    store_state(state, abef, cdgh);
}

/* Four rounds of each lane, issued alternately so lane b's SHA256RNDS2 fills lane a's latency. */
#define ROUNDS4_X2(ka, kb)                                                                        \
    do {                                                                                          \
        cdgh_a = _mm_sha256rnds2_epu32(cdgh_a, abef_a, ka);                                       \
        cdgh_b = _mm_sha256rnds2_epu32(cdgh_b, abef_b, kb);                                       \
        abef_a = _mm_sha256rnds2_epu32(abef_a, cdgh_a, _mm_shuffle_epi32(ka, 0x0E));              \
        abef_b = _mm_sha256rnds2_epu32(abef_b, cdgh_b, _mm_shuffle_epi32(kb, 0x0E));              \
    } while (0)

/* One round group of both lanes: message words (already scheduled) plus K, then the rounds. */
#define GROUP_X2(ma, mb, g)                                                                       \
    do {                                                                                          \
        const __m128i k_ = round_k(g);                                                            \
        const __m128i wka_ = _mm_add_epi32(ma, k_);                                               \
        const __m128i wkb_ = _mm_add_epi32(mb, k_);                                               \
        ROUNDS4_X2(wka_, wkb_);                                                                   \
    } while (0)

SHANI_TARGET void ebs_sha256_compress_shani_x2(uint32_t state_a[8], const uint8_t *blocks_a,
                                               uint32_t state_b[8], const uint8_t *blocks_b,
                                               size_t nblocks)
{
    const __m128i mask = BSWAP32_MASK();
    __m128i abef_a, cdgh_a, abef_b, cdgh_b;
    load_state(state_a, &abef_a, &cdgh_a);
    load_state(state_b, &abef_b, &cdgh_b);

    for (; nblocks; nblocks--, blocks_a += EBS_SHA256_BLOCK, blocks_b += EBS_SHA256_BLOCK) {
        const __m128i abef0_a = abef_a, cdgh0_a = cdgh_a;
        const __m128i abef0_b = abef_b, cdgh0_b = cdgh_b;
        __m128i a0 = load_words(blocks_a, mask);
        __m128i b0 = load_words(blocks_b, mask);
        __m128i a1 = load_words(blocks_a + 16, mask);
        __m128i b1 = load_words(blocks_b + 16, mask);
        __m128i a2 = load_words(blocks_a + 32, mask);
        __m128i b2 = load_words(blocks_b + 32, mask);
        __m128i a3 = load_words(blocks_a + 48, mask);
        __m128i b3 = load_words(blocks_b + 48, mask);

        GROUP_X2(a0, b0, 0);
        GROUP_X2(a1, b1, 1);
        GROUP_X2(a2, b2, 2);
        GROUP_X2(a3, b3, 3);
        for (int g = 4; g < 16; g += 4) {
            SCHEDULE(a0, a1, a2, a3);
            SCHEDULE(b0, b1, b2, b3);
            GROUP_X2(a0, b0, g);
            SCHEDULE(a1, a2, a3, a0);
            SCHEDULE(b1, b2, b3, b0);
            GROUP_X2(a1, b1, g + 1);
            SCHEDULE(a2, a3, a0, a1);
            SCHEDULE(b2, b3, b0, b1);
            GROUP_X2(a2, b2, g + 2);
            SCHEDULE(a3, a0, a1, a2);
            SCHEDULE(b3, b0, b1, b2);
            GROUP_X2(a3, b3, g + 3);
        }
        abef_a = _mm_add_epi32(abef_a, abef0_a);
        cdgh_a = _mm_add_epi32(cdgh_a, cdgh0_a);
        abef_b = _mm_add_epi32(abef_b, abef0_b);
        cdgh_b = _mm_add_epi32(cdgh_b, cdgh0_b);
    }
    store_state(state_a, abef_a, cdgh_a);
    store_state(state_b, abef_b, cdgh_b);
}

#else
/* ISO C forbids an empty translation unit. */
typedef int ebs_sha256_shani_unused;
#endif
