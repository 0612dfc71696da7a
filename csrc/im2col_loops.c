/* The im2col engine's copy loops (im2col, col2im, filter flips, bias) and its BLAS
 * call, for float and double: the Numba kernels of fastconv/engines/im2col.py call them
 * through function pointers (fastconv/engines/_loops.py).
 *
 * Why C and not Numba: a first call in a fresh environment compiled these loops inside
 * every Numba kernel that used them. Measured on Zen 1 (2026-12-03, empty Numba cache),
 * the im2col engine's first forward + backward took 10.5 s, of which Numba spent 5.5 s
 * on the forward kernel and 4.1 s on grad_weight, mostly typing and inlining the loops
 * (NUMBA_OPT=1 saved 0.5 s: LLVM was not the cost). Compiled here once, at build time,
 * they cost nothing at run time.
 */
#include <stdlib.h>
#include <string.h>

#include "im2col_loops.h"

/* a // b, rounded down as in Python, for b > 0 */
static inline int64_t floordiv(int64_t a, int64_t b)
{
    const int64_t q = a / b;
    return (a % b != 0 && a < 0) ? q - 1 : q;
}

/* [lo, hi): the t < count with 0 <= start + t*step < size; the rest falls in the
 * padding. Found once per tap so the copy loops run without a bounds test. */
static inline void valid_range(int64_t start, int64_t step, int64_t size, int64_t count,
                               int64_t *lo_out, int64_t *hi_out)
{
    int64_t lo = -floordiv(start, step);         /* ceil(-start / step) */
    int64_t hi = -floordiv(start - size, step);  /* ceil((size - start) / step) */
    lo = lo < 0 ? 0 : (lo > count ? count : lo);
    hi = hi < lo ? lo : (hi > count ? count : hi);
    *lo_out = lo;
    *hi_out = hi;
}

/* [h_lo, h_hi): the input rows that output rows p0:p0+pb read. */
static inline void band_input_rows(int64_t p0, int64_t pb, int64_t sh, int64_t dh,
                                   int64_t pt, int64_t R, int64_t H, int64_t *lo,
                                   int64_t *hi)
{
    const int64_t a = p0 * sh - pt, b = (p0 + pb - 1) * sh - pt + (R - 1) * dh + 1;
    *lo = a > 0 ? a : 0;
    *hi = b < H ? b : H;
}

/* pp: the band's output row (p0 + pp) whose tap r reads input row h, or -1. */
static inline int64_t band_row(int64_t h, int64_t r, int64_t p0, int64_t pb, int64_t sh,
                               int64_t dh, int64_t pt)
{
    const int64_t t = h + pt - r * dh;  /* p * sh for that output row */
    if (t < 0 || t % sh != 0 || t / sh < p0 || t / sh >= p0 + pb)
        return -1;
    return t / sh - p0;
}

/* FTZ/DAZ around every loop that computes (the products, col2im's sums, the bias):
 * subnormal operands send BLAS down a microcode path 7-100x slower, so they are read
 * as zero and subnormal results written as zero, as in the direct engine
 * (direct_dispatch.c). Each call restores the thread's mode before it returns, so the
 * caller's threads keep theirs; saving and setting MXCSR costs nanoseconds a call.
 * The copies need neither: a move is bitwise. Elsewhere a no-op, and fastconv reads
 * subnormal inputs as zero by scanning them (fastconv/engines/_fpmode.py). */
#if defined(__SSE__) || defined(__x86_64__)
#include <xmmintrin.h>
#define FC_FLUSHES 1
static inline unsigned ftz_enter(void)
{
    const unsigned old = _mm_getcsr();
    _mm_setcsr(old | 0x8040u);
    return old;
}
static inline void ftz_leave(unsigned old) { _mm_setcsr(old); }
#else
#define FC_FLUSHES 0
static inline unsigned ftz_enter(void) { return 0; }
static inline void ftz_leave(unsigned old) { (void)old; }
#endif

int fc_flushes(void) { return FC_FLUSHES; }

/* FTZ/DAZ on (1) or off (0) in the calling thread. The share workers start with them
 * off whatever thread made them: a new thread inherits its creator's MXCSR, and the
 * first caller may be a thread that flushes (seen: XLA's callback thread under
 * fastconv.jax). */
void fc_set_flushing(int on)
{
#if FC_FLUSHES
    _mm_setcsr(on ? _mm_getcsr() | 0x8040u : _mm_getcsr() & ~0x8040u);
#else
    (void)on;
#endif
}

/* SciPy's Fortran BLAS (scipy.linalg.cython_blas), set once at import. */
typedef void (*fgemm_f32)(const char *, const char *, const int *, const int *,
                          const int *, const float *, const float *, const int *,
                          const float *, const int *, const float *, float *, const int *);
typedef void (*fgemm_f64)(const char *, const char *, const int *, const int *,
                          const int *, const double *, const double *, const int *,
                          const double *, const int *, const double *, double *,
                          const int *);
static fgemm_f32 blas_sgemm;
static fgemm_f64 blas_dgemm;

void fc_set_blas(void *sgemm, void *dgemm)
{
    blas_sgemm = (fgemm_f32)sgemm;
    blas_dgemm = (fgemm_f64)dgemm;
}

/* SciPy's OpenBLAS (0.3.30, Haswell kernels) ran every product of a thread 3-4x below
 * its speed until that thread had made one large product: on Zen 1 (2026-12-03), a
 * (192 x 512) . (512 x 4096) sgemm took 86-104 ms, and 23 ms in every call after a
 * 512^3 one, in the same thread and for the rest of the process (from M >= 384 on;
 * NumPy's OpenBLAS 0.3.31 did not show it). vgg_conv1_2's im2col forward: 231 ms,
 * then 137 ms. So each thread's first product is preceded by one such product, on
 * scratch memory: about 14 ms, once per thread. */
#define WARM_N 512
static _Thread_local int blas_warmed;

static void warm_blas(void)
{
    blas_warmed = 1;
    float *m = (float *)calloc(3 * WARM_N * WARM_N, sizeof(float));
    if (!m)
        return;  /* only the speed is lost */
    const char t = 'N';
    const int n = WARM_N;
    const float one = 1, zero = 0;
    blas_sgemm(&t, &t, &n, &n, &n, &one, m, &n, m + WARM_N * WARM_N, &n, &zero,
               m + 2 * WARM_N * WARM_N, &n);
    free(m);
}

#define REAL float
#define FN(name) fc_##name##_f32
#define BLAS_GEMM blas_sgemm
#include "im2col_loops_tmpl.h"
#undef REAL
#undef FN
#undef BLAS_GEMM

#define REAL double
#define FN(name) fc_##name##_f64
#define BLAS_GEMM blas_dgemm
#include "im2col_loops_tmpl.h"
#undef REAL
#undef FN
#undef BLAS_GEMM

#define ENTRIES(name) {#name "_f32", (void *)fc_##name##_f32}, {#name "_f64", (void *)fc_##name##_f64}
const fc_loop_entry fc_loops[] = {
    ENTRIES(unroll_nchw), ENTRIES(fold_nchw), ENTRIES(unroll_nhwc), ENTRIES(fold_nhwc),
    ENTRIES(flip_swap), ENTRIES(flip_swap_hwio), ENTRIES(unfold_images),
    ENTRIES(stage_images), ENTRIES(bias_rows), ENTRIES(bias_cols), ENTRIES(bias_block),
    ENTRIES(gemm),
    {NULL, NULL},
};
