/* Fused one-prompt block sampler of ustat_grpo.finite_action (the C twin of _OnePromptSampler).
 *
 * Compiled on first use by ustat_grpo/_ckernel.py (system C compiler, -O2, no fast-math) and
 * loaded with ctypes; no Python headers.  Integer arithmetic only.
 *
 * Stream order (finite_action module notes): n prompt-slot words (drawn, unused: P = 1), then the
 * n*G arm words of the block, group by group, then (M = 2) its n*G reward words.  The uniform of a
 * word w is u = k * 2**-53 with k = w >> 11 (Generator.random, exactly), so for a double c,
 * u >= c  <=>  k >= ceil(c * 2**53)  (c * 2**53 is exact: a power-of-two scaling), and the
 * comparisons of the numpy path are done on k against thresholds computed once in Python:
 *   athr[a] = ceil(cdf[a] * 2**53) for the K-1 points of the arm CDF, athr[K-1] = UINT64_MAX;
 *   the arm is #{a : athr[a] <= k} = np.searchsorted(cdf, u, side="right") (sorted CDF): a table
 *   over the top lut_bits bits of w gives the count at the bin's left edge, a scan the rest;
 *   rthr[a] = ceil(P(m = 0 | a) * 2**53) (clipped to [0, 2**53]; NaN: 2**53), m = (k >= rthr[a]).
 * hist (n, K*M) float64 is overwritten with the counts, row g = group g, column a*M + m.
 *
 * Word sources: ustat_hist_block reads any numpy bit generator through its public C interface
 * (numpy/random/bitgen.h, the "BitGenerator" capsule): next_raw, which is what random_raw calls.
 * ustat_hist_block_pcg64 steps numpy's PCG64 (XSL-RR 128/64) itself on a copy of its state;
 * one LCG step is a 128-bit multiply-add, so a single chain of words is latency-bound (numpy's
 * speed), and the block is drawn as several chains at once, each started at its own position of
 * the same stream by the LCG jump-ahead (numpy's PCG64.advance): each word is still the one at its
 * position, and the state written back is the one after the block's last word.  _ckernel.py
 * checks this PCG64 against numpy's random_raw before using it.
 */
#include <stdint.h>
#include <string.h>

typedef struct bitgen {
    void *state;
    uint64_t (*next_uint64)(void *st);
    uint32_t (*next_uint32)(void *st);
    double (*next_double)(void *st);
    uint64_t (*next_raw)(void *st);
} bitgen_t;

/* Counts of a group go to int32 copies on the stack when there are at most SMALL_KM cells
   (written to hist once per group), else straight into hist (zeroed first). */
#define SMALL_KM 256

#define BAD_ARGS                                                                               \
    (n < 0 || G < 0 || G > INT32_MAX || K < 1 || K > (1 << 28) || lut_bits < 1 || lut_bits > 32)

static inline int64_t arm_of(uint64_t w, const uint64_t *athr, const int32_t *lut, int lut_shift)
{
    uint64_t k = w >> 11;
    int64_t a = lut[w >> lut_shift];
    while (athr[a] <= k)            /* athr[K-1] = UINT64_MAX: one well-predicted branch */
        a++;
    return a;
}

/* The histogram cell a*2 + m of arm a and reward word w (M = 2). */
static inline int64_t reward_cell(int64_t a, uint64_t w, const uint64_t *rthr)
{
    return 2 * a + ((w >> 11) >= rthr[a]);
}

static inline void flush_group(double *h, int32_t *cnt, int64_t KM)
{
    for (int64_t c = 0; c < KM; c++) {
        h[c] = (double)cnt[c];
        cnt[c] = 0;
    }
}

/* Any numpy bit generator, one chain.  arms: int32 scratch of n*G (M = 2).
   Returns 0, or -1 on bad arguments (nothing drawn then). */
int ustat_hist_block(bitgen_t *bg, int64_t n, int64_t G, const uint64_t *athr, int64_t K,
                     const int32_t *lut, int lut_bits, const uint64_t *rthr, int32_t *arms,
                     double *hist)
{
    if (bg == 0 || BAD_ARGS)
        return -1;
    uint64_t (*next)(void *) = bg->next_raw;
    void *st = bg->state;
    const int lut_shift = 64 - lut_bits;
    const int64_t M = rthr ? 2 : 1, KM = K * M;
    const int small = KM <= SMALL_KM;
    int32_t cnt[SMALL_KM];
    memset(cnt, 0, sizeof(cnt));
    if (!small)
        memset(hist, 0, (size_t)(n * KM) * sizeof(double));
    for (int64_t i = 0; i < n; i++)                  /* prompt slots */
        (void)next(st);
    if (M == 2)
        for (int64_t i = 0; i < n * G; i++)          /* all arm words of the block ... */
            arms[i] = (int32_t)arm_of(next(st), athr, lut, lut_shift);
    const int32_t *ap = arms;
    for (int64_t g = 0; g < n; g++) {                /* ... then its reward words */
        double *h = hist + g * KM;
        for (int64_t j = 0; j < G; j++) {
            uint64_t w = next(st);
            int64_t c;
            if (M == 1) {
                c = arm_of(w, athr, lut, lut_shift);
            } else {
                int32_t a = *ap++;
                c = reward_cell(a, w, rthr);
            }
            if (small)
                cnt[c]++;
            else
                h[c] += 1.0;
        }
        if (small)
            flush_group(h, cnt, KM);
    }
    return 0;
}

#ifdef __SIZEOF_INT128__
typedef unsigned __int128 u128;
#define PCG_MULT (((u128)2549297995355413924ULL << 64) | 4865540595714422341ULL)

static inline uint64_t pcg64_next(u128 *state, u128 inc)
{
    *state = *state * PCG_MULT + inc;
    uint64_t x = (uint64_t)(*state >> 64) ^ (uint64_t)*state;
    unsigned rot = (unsigned)(*state >> 122);
    return (x >> rot) | (x << ((-rot) & 63));
}

static u128 pcg64_jump(u128 state, u128 inc, uint64_t delta)   /* delta steps ahead */
{
    u128 acc_mult = 1, acc_plus = 0, cur_mult = PCG_MULT, cur_plus = inc;
    while (delta > 0) {
        if (delta & 1) {
            acc_mult *= cur_mult;
            acc_plus = acc_plus * cur_mult + cur_plus;
        }
        cur_plus = (cur_mult + 1) * cur_plus;
        cur_mult *= cur_mult;
        delta >>= 1;
    }
    return acc_mult * state + acc_plus;
}

/* n words of PCG64 state s = {state >> 64, state % 2**64, inc >> 64, inc % 2**64} (in/out). */
int ustat_pcg64_raw(uint64_t *s, int64_t n, uint64_t *out)
{
    u128 state = ((u128)s[0] << 64) | s[1], inc = ((u128)s[2] << 64) | s[3];
    for (int64_t i = 0; i < n; i++)
        out[i] = pcg64_next(&state, inc);
    s[0] = (uint64_t)(state >> 64);
    s[1] = (uint64_t)state;
    return 0;
}

/* Words of state s jumped by delta (for tests of the jump-ahead). */
int ustat_pcg64_jump(uint64_t *s, uint64_t delta)
{
    u128 state = ((u128)s[0] << 64) | s[1], inc = ((u128)s[2] << 64) | s[3];
    state = pcg64_jump(state, inc, delta);
    s[0] = (uint64_t)(state >> 64);
    s[1] = (uint64_t)state;
    return 0;
}

/* One pull of group row h: its arm word from chain a, its reward word (M = 2) from chain r (the
   cell functions are those of ustat_hist_block, which tests drive with chosen words). */
#define PULL(a, r, cnt, h)                                                                     \
    do {                                                                                       \
        int64_t c_ = arm_of(pcg64_next(&(a), inc), athr, lut, lut_shift);                      \
        if (M == 2)                                                                            \
            c_ = reward_cell(c_, pcg64_next(&(r), inc), rthr);                                 \
        if (small)                                                                             \
            (cnt)[c_]++;                                                                       \
        else                                                                                   \
            (h)[c_] += 1.0;                                                                    \
    } while (0)

/* The groups of a block in two halves drawn together: 2 chains (M = 1) or 4 (M = 2).  Same
   arguments as ustat_hist_block but the PCG64 state words s (in/out) instead of a bitgen; arms
   is unused.  Returns 0, or -1 on bad arguments (nothing drawn then). */
int ustat_hist_block_pcg64(uint64_t *s, int64_t n, int64_t G, const uint64_t *athr, int64_t K,
                           const int32_t *lut, int lut_bits, const uint64_t *rthr, int32_t *arms,
                           double *hist)
{
    (void)arms;
    if (BAD_ARGS)
        return -1;
    const u128 s0 = ((u128)s[0] << 64) | s[1], inc = ((u128)s[2] << 64) | s[3];
    const int lut_shift = 64 - lut_bits;
    const int64_t M = rthr ? 2 : 1, KM = K * M, nG = n * G;
    const int small = KM <= SMALL_KM;
    int32_t c0[SMALL_KM], c1[SMALL_KM];
    memset(c0, 0, sizeof(c0));
    memset(c1, 0, sizeof(c1));
    if (!small)
        memset(hist, 0, (size_t)(n * KM) * sizeof(double));
    const int64_t half = n / 2;                  /* groups 0..half-1 and half..n-1 */
    /* word positions: n prompt slots, then the arms of groups 0..n-1, then their rewards */
    u128 a0 = pcg64_jump(s0, inc, (uint64_t)n), a1 = pcg64_jump(s0, inc, (uint64_t)(n + half * G));
    u128 r0 = pcg64_jump(s0, inc, (uint64_t)(n + nG));
    u128 r1 = pcg64_jump(s0, inc, (uint64_t)(n + nG + half * G));
    for (int64_t g = 0; g < half; g++) {
        double *h0 = hist + g * KM, *h1 = hist + (half + g) * KM;
        for (int64_t j = 0; j < G; j++) {
            PULL(a0, r0, c0, h0);
            PULL(a1, r1, c1, h1);
        }
        if (small) {
            flush_group(h0, c0, KM);
            flush_group(h1, c1, KM);
        }
    }
    for (int64_t g = 2 * half; g < n; g++) {      /* odd n: the last group */
        double *h1 = hist + g * KM;
        for (int64_t j = 0; j < G; j++)
            PULL(a1, r1, c1, h1);
        if (small)
            flush_group(h1, c1, KM);
    }
    const u128 end = pcg64_jump(s0, inc, (uint64_t)(n + M * nG));
    s[0] = (uint64_t)(end >> 64);
    s[1] = (uint64_t)end;
    return 0;
}
#else
int ustat_pcg64_raw(uint64_t *s, int64_t n, uint64_t *out) { return -2; }
int ustat_pcg64_jump(uint64_t *s, uint64_t delta) { return -2; }
int ustat_hist_block_pcg64(uint64_t *s, int64_t n, int64_t G, const uint64_t *athr, int64_t K,
                           const int32_t *lut, int lut_bits, const uint64_t *rthr, int32_t *arms,
                           double *hist) { return -2; }
#endif

/* The per-replicate differences g_hat - g of E affine estimators at B = 1, element by element as
 * finite_action._affine_errors_one_prompt computes them (the same IEEE operations in the same
 * order, so the same bits): t = a[e,r] * ZW[r,k]; with use_c[e], t = t + c[e,r] * NW[r,k]; then
 * t * (1/G) (pow2: G a power of two) or t / G; out[e,r,k] = t - grad[k].  ZW and NW are rows of
 * d doubles, ldz / ldn doubles apart.  (A = 1 or a constant a is the same product: x * 1 == x,
 * x * a == a * x.)  The squared norms stay in numpy (its einsum's summation order). */
int ustat_affine_diff(int64_t E, int64_t R, int64_t d, const double *ZW, int64_t ldz,
                      const double *NW, int64_t ldn, const double *a, const double *c,
                      const int32_t *use_c, double G, int pow2, const double *grad, double *out)
{
    if (E < 0 || R < 0 || d < 0)
        return -1;
    const double inv = 1.0 / G;
    for (int64_t e = 0; e < E; e++) {
        const double *ae = a + e * R, *ce = c + e * R;
        double *oe = out + e * R * d;
#define AFFINE_ROWS(EXPR)                                                                      \
        for (int64_t r = 0; r < R; r++) {                                                      \
            const double *z = ZW + r * ldz, *w = NW + r * ldn;                                 \
            double *o = oe + r * d;                                                            \
            const double ar = ae[r], cr = ce[r];                                               \
            (void)w;                                                                           \
            (void)cr;                                                                          \
            for (int64_t k = 0; k < d; k++)                                                    \
                o[k] = (EXPR) - grad[k];                                                       \
        }
        if (use_c[e] && pow2) {
            AFFINE_ROWS((ar * z[k] + cr * w[k]) * inv)
        } else if (use_c[e]) {
            AFFINE_ROWS((ar * z[k] + cr * w[k]) / G)
        } else if (pow2) {
            AFFINE_ROWS((ar * z[k]) * inv)
        } else {
            AFFINE_ROWS((ar * z[k]) / G)
        }
#undef AFFINE_ROWS
    }
    return 0;
}
