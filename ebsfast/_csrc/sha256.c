/* SHA-256 (FIPS 180-4): portable compression, streaming and one-shot interfaces, the pairwise
 * interface, CPU detection and path dispatch. No Python here: the SigV4 extension links this file
 * too, and each extension gets its own copy of the dispatch state. */
#include "sha256.h"

#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#define EBS_X86 1
#endif

/* FIPS 180-4 section 4.2.2. */
const uint32_t ebs_sha256_K[64] __attribute__((aligned(16))) = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

/* FIPS 180-4 section 5.3.3. */
static const uint32_t H0[8] = {
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
};

static inline uint32_t load_be32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, sizeof v);
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    v = __builtin_bswap32(v);
#endif
    return v;
}

static inline void store_be32(uint8_t *p, uint32_t v)
{
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    v = __builtin_bswap32(v);
#endif
    memcpy(p, &v, sizeof v);
}

static inline void store_be64(uint8_t *p, uint64_t v)
{
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    memcpy(p, &v, sizeof v);
}

static inline uint32_t rotr(uint32_t x, unsigned n) { return (x >> n) | (x << (32 - n)); }

/* ------------------------------------------------------------------------------------------ */
/* Portable compression (FIPS 180-4 section 6.2.2). */

void ebs_sha256_compress_portable(uint32_t state[8], const uint8_t *blocks, size_t nblocks)
{
    uint32_t w[64];
    for (; nblocks; nblocks--, blocks += EBS_SHA256_BLOCK) {
        for (int t = 0; t < 16; t++)
            w[t] = load_be32(blocks + 4 * t);
        for (int t = 16; t < 64; t++) {
            uint32_t s0 = rotr(w[t - 15], 7) ^ rotr(w[t - 15], 18) ^ (w[t - 15] >> 3);
            uint32_t s1 = rotr(w[t - 2], 17) ^ rotr(w[t - 2], 19) ^ (w[t - 2] >> 10);
            w[t] = s1 + w[t - 7] + s0 + w[t - 16];
        }
        uint32_t a = state[0], b = state[1], c = state[2], d = state[3];
        uint32_t e = state[4], f = state[5], g = state[6], h = state[7];
        for (int t = 0; t < 64; t++) {
            uint32_t t1 = h + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) +
                          ebs_sha256_K[t] + w[t];
            uint32_t t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
            h = g;
            g = f;
            f = e;
            e = d + t1;
            d = c;
            c = b;
            b = a;
            a = t1 + t2;
        }
        state[0] += a;
        state[1] += b;
        state[2] += c;
        state[3] += d;
        state[4] += e;
        state[5] += f;
        state[6] += g;
        state[7] += h;
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Dispatch state. g_path stays -1 until the first setup finishes; everything else is written
 * before g_path (release) and read after it (acquire), so a reader that sees a path also sees the
 * features and self-test results it was chosen from. Setup is idempotent, so two threads racing
 * through it store the same values. */

static int g_path = -1;
static unsigned g_features;
static unsigned g_supported; /* bit (1 << path) per usable path */
static int g_env_request = -1;

typedef void (*compress_fn)(uint32_t state[8], const uint8_t *blocks, size_t nblocks);

static compress_fn single_lane(int path)
{
#ifdef EBS_SHA256_HAVE_SHANI
    if (path != EBS_SHA256_PORTABLE)
        return ebs_sha256_compress_shani;
#endif
    (void)path;
    return ebs_sha256_compress_portable;
}

static int current_path(void)
{
    int p = __atomic_load_n(&g_path, __ATOMIC_ACQUIRE);
    if (p < 0) {
        ebs_sha256_setup();
        p = __atomic_load_n(&g_path, __ATOMIC_ACQUIRE);
    }
    return p;
}

/* ------------------------------------------------------------------------------------------ */
/* Message padding (FIPS 180-4 section 5.1.1) of the last len % 64 bytes into one or two blocks. */

static size_t pad_tail(uint8_t tail[2 * EBS_SHA256_BLOCK], const uint8_t *rest, size_t restlen,
                       uint64_t total_len)
{
    size_t nblocks = restlen < EBS_SHA256_BLOCK - 8 ? 1 : 2;
    if (restlen)
        memcpy(tail, rest, restlen);
    tail[restlen] = 0x80;
    memset(tail + restlen + 1, 0, nblocks * EBS_SHA256_BLOCK - 8 - restlen - 1);
    store_be64(tail + nblocks * EBS_SHA256_BLOCK - 8, total_len * 8);
    return nblocks;
}

static void store_digest(const uint32_t state[8], uint8_t out[EBS_SHA256_DIGEST])
{
    for (int i = 0; i < 8; i++)
        store_be32(out + 4 * i, state[i]);
}

static void oneshot_on(int path, const uint8_t *data, size_t len, uint8_t out[EBS_SHA256_DIGEST])
{
    compress_fn compress = single_lane(path);
    uint32_t st[8];
    uint8_t tail[2 * EBS_SHA256_BLOCK];
    size_t whole = len / EBS_SHA256_BLOCK;

    memcpy(st, H0, sizeof st);
    if (whole)
        compress(st, data, whole);
    size_t rest = len % EBS_SHA256_BLOCK;
    size_t nt = pad_tail(tail, rest ? data + whole * EBS_SHA256_BLOCK : NULL, rest, len);
    compress(st, tail, nt);
    store_digest(st, out);
}

static void x2_on(int path, const uint8_t *a, size_t alen, const uint8_t *b, size_t blen,
                  uint8_t outa[EBS_SHA256_DIGEST], uint8_t outb[EBS_SHA256_DIGEST])
{
#ifdef EBS_SHA256_HAVE_SHANI
    if (path == EBS_SHA256_SHANI_X2) {
        uint32_t sa[8], sb[8];
        uint8_t ta[2 * EBS_SHA256_BLOCK], tb[2 * EBS_SHA256_BLOCK];
        size_t na = alen / EBS_SHA256_BLOCK, nb = blen / EBS_SHA256_BLOCK;
        size_t common = na < nb ? na : nb;

        memcpy(sa, H0, sizeof sa);
        memcpy(sb, H0, sizeof sb);
        if (common)
            ebs_sha256_compress_shani_x2(sa, a, sb, b, common);
        if (na > common)
            ebs_sha256_compress_shani(sa, a + common * EBS_SHA256_BLOCK, na - common);
        if (nb > common)
            ebs_sha256_compress_shani(sb, b + common * EBS_SHA256_BLOCK, nb - common);
        size_t ra = alen % EBS_SHA256_BLOCK, rb = blen % EBS_SHA256_BLOCK;
        size_t pa = pad_tail(ta, ra ? a + na * EBS_SHA256_BLOCK : NULL, ra, alen);
        size_t pb = pad_tail(tb, rb ? b + nb * EBS_SHA256_BLOCK : NULL, rb, blen);
        if (pa == pb) {
            ebs_sha256_compress_shani_x2(sa, ta, sb, tb, pa);
        } else {
            ebs_sha256_compress_shani(sa, ta, pa);
            ebs_sha256_compress_shani(sb, tb, pb);
        }
        store_digest(sa, outa);
        store_digest(sb, outb);
        return;
    }
#endif
    oneshot_on(path, a, alen, outa);
    oneshot_on(path, b, blen, outb);
}

/* ------------------------------------------------------------------------------------------ */
/* Public hashing entry points. */

void ebs_sha256_init(ebs_sha256_ctx *ctx)
{
    memcpy(ctx->state, H0, sizeof ctx->state);
    ctx->total = 0;
    ctx->buflen = 0;
}

void ebs_sha256_update(ebs_sha256_ctx *ctx, const void *data, size_t len)
{
    const uint8_t *p = data;
    if (len == 0)
        return;
    compress_fn compress = single_lane(current_path());
    ctx->total += len;
    if (ctx->buflen) {
        size_t take = EBS_SHA256_BLOCK - ctx->buflen;
        if (take > len)
            take = len;
        memcpy(ctx->buf + ctx->buflen, p, take);
        ctx->buflen += (uint32_t)take;
        p += take;
        len -= take;
        if (ctx->buflen < EBS_SHA256_BLOCK)
            return;
        compress(ctx->state, ctx->buf, 1);
        ctx->buflen = 0;
    }
    size_t whole = len / EBS_SHA256_BLOCK;
    if (whole) {
        compress(ctx->state, p, whole);
        p += whole * EBS_SHA256_BLOCK;
        len -= whole * EBS_SHA256_BLOCK;
    }
    if (len) {
        memcpy(ctx->buf, p, len);
        ctx->buflen = (uint32_t)len;
    }
}

void ebs_sha256_final(ebs_sha256_ctx *ctx, uint8_t out[EBS_SHA256_DIGEST])
{
    uint8_t tail[2 * EBS_SHA256_BLOCK];
    size_t nt = pad_tail(tail, ctx->buflen ? ctx->buf : NULL, ctx->buflen, ctx->total);
    single_lane(current_path())(ctx->state, tail, nt);
    store_digest(ctx->state, out);
    /* HMAC keys pass through contexts; leave nothing behind in a reused one. */
    memset(ctx, 0, sizeof *ctx);
}

void ebs_sha256(const void *data, size_t len, uint8_t out[EBS_SHA256_DIGEST])
{
    oneshot_on(current_path(), data, len, out);
}

void ebs_sha256_x2(const void *a, size_t alen, const void *b, size_t blen,
                   uint8_t outa[EBS_SHA256_DIGEST], uint8_t outb[EBS_SHA256_DIGEST])
{
    x2_on(current_path(), a, alen, b, blen, outa, outb);
}

/* Callers guarantee block i starts inside data, so i * block_size < len cannot overflow. */
static inline size_t block_len(size_t len, size_t block_size, size_t i)
{
    size_t left = len - i * block_size;
    return left < block_size ? left : block_size;
}

void ebs_sha256_blocks(const uint8_t *data, size_t len, size_t block_size, size_t first,
                       size_t count, uint8_t *out)
{
    int path = current_path();
    size_t i = first, end = first + count;
    for (; end - i >= 2; i += 2, out += 2 * EBS_SHA256_DIGEST)
        x2_on(path, data + i * block_size, block_len(len, block_size, i),
              data + (i + 1) * block_size, block_len(len, block_size, i + 1), out,
              out + EBS_SHA256_DIGEST);
    if (i < end)
        oneshot_on(path, data + i * block_size, block_len(len, block_size, i), out);
}

size_t ebs_sha256_verify_blocks(const uint8_t *data, size_t len, size_t block_size, size_t first,
                                size_t count, const uint8_t *expected, uint8_t *result)
{
    int path = current_path();
    size_t bad = 0;
    uint8_t got[2 * EBS_SHA256_DIGEST];
    for (size_t k = 0; k < count; k += 2) {
        size_t i = first + k;
        size_t n = count - k >= 2 ? 2 : 1;
        if (n == 2)
            x2_on(path, data + i * block_size, block_len(len, block_size, i),
                  data + (i + 1) * block_size, block_len(len, block_size, i + 1), got,
                  got + EBS_SHA256_DIGEST);
        else
            oneshot_on(path, data + i * block_size, block_len(len, block_size, i), got);
        for (size_t j = 0; j < n; j++) {
            int ok = memcmp(got + j * EBS_SHA256_DIGEST, expected + (k + j) * EBS_SHA256_DIGEST,
                            EBS_SHA256_DIGEST) == 0;
            result[k + j] = (uint8_t)ok;
            bad += !ok;
        }
    }
    return bad;
}

/* ------------------------------------------------------------------------------------------ */
/* Known-answer self-tests. The fixed vectors check a path against FIPS 180-4; the generated
 * messages then compare it with the portable path over every padding shape (lengths around 55, 56,
 * 64 and multiples) and, for the two-lane path, with different data and lengths in each lane so a
 * swapped or shared lane shows up. */

struct kat {
    const char *msg;
    uint8_t digest[EBS_SHA256_DIGEST];
};

static const struct kat KATS[] = {
    {"", {0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9, 0x24,
          0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55}},
    {"abc", {0xba, 0x78, 0x16, 0xbf, 0x8f, 0x01, 0xcf, 0xea, 0x41, 0x41, 0x40, 0xde, 0x5d, 0xae, 0x22, 0x23,
             0xb0, 0x03, 0x61, 0xa3, 0x96, 0x17, 0x7a, 0x9c, 0xb4, 0x10, 0xff, 0x61, 0xf2, 0x00, 0x15, 0xad}},
    {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
     {0x24, 0x8d, 0x6a, 0x61, 0xd2, 0x06, 0x38, 0xb8, 0xe5, 0xc0, 0x26, 0x93, 0x0c, 0x3e, 0x60, 0x39,
      0xa3, 0x3c, 0xe4, 0x59, 0x64, 0xff, 0x21, 0x67, 0xf6, 0xec, 0xed, 0xd4, 0x19, 0xdb, 0x06, 0xc1}},
    {"abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrs"
     "mnopqrstnopqrstu",
     {0xcf, 0x5b, 0x16, 0xa7, 0x78, 0xaf, 0x83, 0x80, 0x03, 0x6c, 0xe5, 0x9e, 0x7b, 0x04, 0x92, 0x37,
      0x0b, 0x24, 0x9b, 0x11, 0xe8, 0xf0, 0x7a, 0x51, 0xaf, 0xac, 0x45, 0x03, 0x7a, 0xfe, 0xe9, 0xd1}},
};

#define SELFTEST_MAX 300

int ebs_sha256_self_test(int path)
{
    uint8_t got[EBS_SHA256_DIGEST], got2[EBS_SHA256_DIGEST];
    uint8_t want[EBS_SHA256_DIGEST], want2[EBS_SHA256_DIGEST];
    uint8_t ma[SELFTEST_MAX], mb[SELFTEST_MAX];

    if (path < EBS_SHA256_PORTABLE || path > EBS_SHA256_SHANI_X2)
        return -1;
#ifndef EBS_SHA256_HAVE_SHANI
    if (path != EBS_SHA256_PORTABLE)
        return -1;
#endif
    for (size_t k = 0; k < sizeof KATS / sizeof KATS[0]; k++) {
        const uint8_t *m = (const uint8_t *)KATS[k].msg;
        size_t n = strlen(KATS[k].msg);
        oneshot_on(path, m, n, got);
        if (memcmp(got, KATS[k].digest, EBS_SHA256_DIGEST) != 0)
            return -1;
        /* Same message through the pairwise entry point, in both lanes. */
        x2_on(path, m, n, m, n, got, got2);
        if (memcmp(got, KATS[k].digest, EBS_SHA256_DIGEST) != 0 ||
            memcmp(got2, KATS[k].digest, EBS_SHA256_DIGEST) != 0)
            return -1;
    }
    if (path == EBS_SHA256_PORTABLE)
        return 0;

    for (size_t i = 0; i < SELFTEST_MAX; i++) {
        ma[i] = (uint8_t)(i * 131u + 7u);
        mb[i] = (uint8_t)(i * 29u + 101u);
    }
    for (size_t n = 0; n <= SELFTEST_MAX; n++) {
        size_t nb = (n * 7 + 13) % (SELFTEST_MAX + 1); /* a different length in lane b */
        oneshot_on(EBS_SHA256_PORTABLE, ma, n, want);
        oneshot_on(EBS_SHA256_PORTABLE, mb, nb, want2);
        oneshot_on(path, ma, n, got);
        if (memcmp(got, want, EBS_SHA256_DIGEST) != 0)
            return -1;
        x2_on(path, ma, n, mb, nb, got, got2);
        if (memcmp(got, want, EBS_SHA256_DIGEST) != 0 || memcmp(got2, want2, EBS_SHA256_DIGEST) != 0)
            return -1;
        /* Equal lengths take the fully interleaved route, padding blocks included. */
        oneshot_on(EBS_SHA256_PORTABLE, mb, n, want2);
        x2_on(path, ma, n, mb, n, got, got2);
        if (memcmp(got, want, EBS_SHA256_DIGEST) != 0 || memcmp(got2, want2, EBS_SHA256_DIGEST) != 0)
            return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* CPU detection and path selection. */

static unsigned detect_features(void)
{
    unsigned f = 0;
#ifdef EBS_X86
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d))
        return 0;
    if (c & bit_SSE4_1)
        f |= EBS_CPU_SSE41;
    if (c & bit_SSSE3)
        f |= EBS_CPU_SSSE3;
    /* AVX2 is usable only when the OS saves the YMM state (XCR0 bits 1 and 2). */
    int ymm_saved = 0;
    if (c & bit_OSXSAVE) {
        unsigned lo, hi;
        __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
        (void)hi;
        ymm_saved = (lo & 6u) == 6u;
    }
    if (__get_cpuid_count(7, 0, &a, &b, &c, &d)) {
        if (b & bit_SHA)
            f |= EBS_CPU_SHA;
        if ((b & bit_AVX2) && ymm_saved)
            f |= EBS_CPU_AVX2;
    }
#endif
    return f;
}

static const char *const PATH_NAMES[] = {"portable", "sha-ni", "sha-ni-x2"};
#define NPATHS ((int)(sizeof PATH_NAMES / sizeof PATH_NAMES[0]))

const char *ebs_sha256_path_name(int path)
{
    return path >= 0 && path < NPATHS ? PATH_NAMES[path] : NULL;
}

static int env_request(void)
{
    const char *v = getenv("EBSFAST_SHA256");
    if (v == NULL || v[0] == '\0' || strcmp(v, "auto") == 0)
        return -1;
    for (int p = 0; p < NPATHS; p++)
        if (strcmp(v, PATH_NAMES[p]) == 0)
            return p;
    return -2;
}

void ebs_sha256_setup(void)
{
    if (__atomic_load_n(&g_path, __ATOMIC_ACQUIRE) >= 0)
        return;
    unsigned features = detect_features();
    /* The portable path is the last resort even if its own self-test fails (a miscompile); the
     * Python module refuses to import in that case, and no accelerated path is trusted, since the
     * self-tests compare them with the portable one. */
    unsigned supported = 1u << EBS_SHA256_PORTABLE;
    const unsigned need = EBS_CPU_SHA | EBS_CPU_SSE41 | EBS_CPU_SSSE3;
#ifdef EBS_SHA256_HAVE_SHANI
    if ((features & need) == need && ebs_sha256_self_test(EBS_SHA256_PORTABLE) == 0) {
        if (ebs_sha256_self_test(EBS_SHA256_SHANI) == 0) {
            supported |= 1u << EBS_SHA256_SHANI;
            if (ebs_sha256_self_test(EBS_SHA256_SHANI_X2) == 0)
                supported |= 1u << EBS_SHA256_SHANI_X2;
        }
    }
#else
    (void)need;
#endif
    int best = EBS_SHA256_PORTABLE;
    for (int p = 0; p < NPATHS; p++)
        if (supported & (1u << p))
            best = p;
    int req = env_request();
    int path = req >= 0 && (supported & (1u << req)) ? req : best;

    __atomic_store_n(&g_features, features, __ATOMIC_RELAXED);
    __atomic_store_n(&g_supported, supported, __ATOMIC_RELAXED);
    __atomic_store_n(&g_env_request, req, __ATOMIC_RELAXED);
    __atomic_store_n(&g_path, path, __ATOMIC_RELEASE);
}

unsigned ebs_cpu_features(void)
{
    current_path();
    return __atomic_load_n(&g_features, __ATOMIC_RELAXED);
}

int ebs_sha256_path_supported(int path)
{
    current_path();
    if (path < 0 || path >= NPATHS)
        return 0;
    return (__atomic_load_n(&g_supported, __ATOMIC_RELAXED) >> path) & 1u;
}

int ebs_sha256_get_path(void) { return current_path(); }

int ebs_sha256_set_path(int path)
{
    if (!ebs_sha256_path_supported(path))
        return -1;
    __atomic_store_n(&g_path, path, __ATOMIC_RELEASE);
    return 0;
}

int ebs_sha256_env_request(void)
{
    current_path();
    return __atomic_load_n(&g_env_request, __ATOMIC_RELAXED);
}
