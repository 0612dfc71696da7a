/* SIMD micro-kernels of the direct engine, one set per instruction set.
 *
 * direct_kernels.c is compiled once per ISA (meson: one static library each, with
 * its own -m flags and a name suffix); fc_select() in direct_dispatch.c picks one set
 * at import time. The kernels take raw pointers and ptrdiff_t integers only.
 *
 * Every kernel works on a *tile*: a zero-padded copy of a few rows of the input
 * channels, split by stride phase, so that output position m (flattened over the
 * tile's output rows, row pitch L) and filter tap t read tile[c*cs + tapoff[t] + m].
 * See _direct.pyx for how tiles are built and why.
 */
#ifndef FASTCONV_DIRECT_KERNELS_H
#define FASTCONV_DIRECT_KERNELS_H

#include <stddef.h>

#define FC_DECLARE_KERNELS(T, TS, SUFFIX)                                                  \
    void fc_conv_##TS##_##SUFFIX(const T *x, ptrdiff_t cs, ptrdiff_t Cn,                  \
                                 const ptrdiff_t *tapoff, ptrdiff_t ntaps, const T *wp,    \
                                 T *out, ptrdiff_t ldo, int nvec);                         \
    void fc_conv1_##TS##_##SUFFIX(const T *x, ptrdiff_t cs, ptrdiff_t Cn,                 \
                                  const ptrdiff_t *tapoff, ptrdiff_t ntaps, const T *wp,   \
                                  T *out, int nvec);                                       \
    void fc_wgrad_##TS##_##SUFFIX(const T *dy, ptrdiff_t ldd, ptrdiff_t nk, const T *x,   \
                                  const ptrdiff_t *xoff, ptrdiff_t nct, ptrdiff_t M,       \
                                  T *acc);                                                 \
    void fc_kvec_##TS##_##SUFFIX(const T *x, const ptrdiff_t *rowoff, int nrows,          \
                                 const ptrdiff_t *stepoff, ptrdiff_t nsteps, const T *b,   \
                                 ptrdiff_t ldb, T *out, ptrdiff_t ldo, int nvec,          \
                                 int accumulate);                                          \
    void fc_dw_##TS##_##SUFFIX(const T *x, ptrdiff_t xs_h, ptrdiff_t Hi, ptrdiff_t Wi,    \
                               const T *w, int R, int S, ptrdiff_t pt, ptrdiff_t pl,      \
                               T bias, T *y, ptrdiff_t ys_p, ptrdiff_t p_lo,              \
                               ptrdiff_t p_hi, ptrdiff_t Q, T *ring);                     \
    void fc_dww_##TS##_##SUFFIX(const T *x, ptrdiff_t xs_h, ptrdiff_t Hi, ptrdiff_t Wi,   \
                                const T *dy, ptrdiff_t ys_p, ptrdiff_t P, ptrdiff_t Q,     \
                                int R, int S, ptrdiff_t pt, ptrdiff_t pl, T *acc,          \
                                T *ring);                                                  \
    void fc_pw_pack_##TS##_##SUFFIX(const T *a, ptrdiff_t rs, ptrdiff_t cs, ptrdiff_t m,  \
                                    ptrdiff_t k, T *ap);                                   \
    void fc_pw_gemm_##TS##_##SUFFIX(ptrdiff_t m, ptrdiff_t n, ptrdiff_t k, const T *ap,   \
                                    ptrdiff_t ablock, ptrdiff_t lda, const T *b,           \
                                    ptrdiff_t ldb,                                         \
                                    const ptrdiff_t *rowoff,                               \
                                    T *c, ptrdiff_t ldc, const T *bias, const T *cbias,    \
                                    int accumulate, int nt, T *buf);                   \
    void fc_wino_in_##TS##_##SUFFIX(const T *src, const ptrdiff_t *off, ptrdiff_t pitch,  \
                                    ptrdiff_t pf, const T *bt, int alpha, T *v,            \
                                    ptrdiff_t ldv);                                        \
    void fc_wino_out_##TS##_##SUFFIX(const T *mm, ptrdiff_t ldm, const T *at, int m,      \
                                     int alpha, T *y);                                     \
    void fc_wino_out_rows_##TS##_##SUFFIX(const T *mm, ptrdiff_t ldm, const T *at, int m, \
                                          int alpha, T bias, T *y, const ptrdiff_t *off,   \
                                          ptrdiff_t pitch, const ptrdiff_t *nr,            \
                                          const ptrdiff_t *nc, ptrdiff_t pfm,              \
                                          ptrdiff_t pfy);                                  \
    void fc_dwl_stage_##TS##_##SUFFIX(const T *src, ptrdiff_t plane, int nc, ptrdiff_t rows, \
                                      ptrdiff_t cols, ptrdiff_t spitch, ptrdiff_t dpitch,  \
                                      T *dst);                                             \
    void fc_dwl_unstage_##TS##_##SUFFIX(const T *src, const ptrdiff_t *pos, ptrdiff_t n,  \
                                        int nc, const T *bias, T *dst, ptrdiff_t plane);   \
    void fc_dwl_corr_##TS##_##SUFFIX(const T *src, const ptrdiff_t *posoff, ptrdiff_t npos, \
                                     const ptrdiff_t *tapoff, ptrdiff_t ntaps, const T *wv, \
                                     T *out);                                              \
    void fc_dwl_wgrad_##TS##_##SUFFIX(const T *src, const ptrdiff_t *posoff,              \
                                      ptrdiff_t npos, const ptrdiff_t *tapoff,             \
                                      ptrdiff_t ntaps, const T *g, T *acc);

#define FC_DECLARE_ISA(SUFFIX)                  \
    FC_DECLARE_KERNELS(float, f32, SUFFIX)      \
    FC_DECLARE_KERNELS(double, f64, SUFFIX)

FC_DECLARE_ISA(baseline)
FC_DECLARE_ISA(avx2)
FC_DECLARE_ISA(avx512)

/* Register-block sizes shared by every ISA: the driver packs weights by FC_KB output
 * channels and asks for at most FC_NV (conv) / FC_NV1 (conv1) vectors per call. */
#define FC_NV 3
#define FC_NV1 6
#define FC_KW 4 /* output channels per wgrad register block */
/* fc_kvec: mr broadcast rows x up to nvk weight vectors, per ISA (8 x 3 = 24
 * accumulators with AVX-512; 6 x 2 = 12 of 16 registers with AVX2 and the baseline). */
#define FC_MR_MAX 8
#define FC_NVK_MAX 3
/* fc_dw / fc_dww (depthwise, stride 1): output rows per register block, and the
 * elements of the per-thread ring they need, FC_DW_RING(R, S, Q, VL) (see the kernel). */
#define FC_DW_RB 4
#define FC_DW_MAXK 7 /* largest R and S they take */
#define FC_DW_PITCH(S, Q, VL) ((((Q) + (VL) - 1) / (VL) * (VL) + (S) - 1 + 15) / 16 * 16)
#define FC_DW_RING(R, S, Q, VL) ((2 * FC_DW_RB + (R)) * FC_DW_PITCH(S, Q, VL) + 2 * (VL) * FC_DW_RB + 16)

/* fc_pw_gemm's scratch, in elements: a k x nr sliver, an mr x nr block, mr row biases,
 * nr column biases, a packed mr x k row block (A in place: its partial last block), and
 * room to align the sliver and that block to 64 bytes (nr = pw_nv vectors, mr = pw_mr
 * of the set). */
#define FC_PW_BUF(k, nr, mr, itemsize) \
    ((k) * (nr) + (mr) * (nr) + (mr) + (nr) + (k) * (mr) + 128 / (itemsize))

/* The Winograd transforms (fc_wino_in, fc_wino_out): tiles per call, the innermost
 * dimension of their arrays (a multiple of every ISA's vector length), and the largest
 * tile, alpha = m + 2 for F(6, 3). */
#define FC_WINO_TB 16
#define FC_WINO_MAXA 8
/* fc_dwl_wgrad: taps per register block (its callers pad the taps to a multiple). */
#define FC_DWL_TB 9

typedef struct {
    const char *name;
    int vbytes;      /* vector width in bytes */
    int kb;          /* output channels per conv register block */
    int mr;          /* rows per fc_kvec block */
    int nvk;         /* vectors per fc_kvec block */
    int pw_mr;       /* rows per fc_pw_gemm block */
    int pw_nv;       /* vectors per fc_pw_gemm block */
    void (*conv_f32)(const float *, ptrdiff_t, ptrdiff_t, const ptrdiff_t *, ptrdiff_t,
                     const float *, float *, ptrdiff_t, int);
    void (*conv_f64)(const double *, ptrdiff_t, ptrdiff_t, const ptrdiff_t *, ptrdiff_t,
                     const double *, double *, ptrdiff_t, int);
    void (*conv1_f32)(const float *, ptrdiff_t, ptrdiff_t, const ptrdiff_t *, ptrdiff_t,
                      const float *, float *, int);
    void (*conv1_f64)(const double *, ptrdiff_t, ptrdiff_t, const ptrdiff_t *, ptrdiff_t,
                      const double *, double *, int);
    void (*wgrad_f32)(const float *, ptrdiff_t, ptrdiff_t, const float *, const ptrdiff_t *,
                      ptrdiff_t, ptrdiff_t, float *);
    void (*wgrad_f64)(const double *, ptrdiff_t, ptrdiff_t, const double *,
                      const ptrdiff_t *, ptrdiff_t, ptrdiff_t, double *);
    void (*kvec_f32)(const float *, const ptrdiff_t *, int, const ptrdiff_t *, ptrdiff_t,
                     const float *, ptrdiff_t, float *, ptrdiff_t, int, int);
    void (*kvec_f64)(const double *, const ptrdiff_t *, int, const ptrdiff_t *, ptrdiff_t,
                     const double *, ptrdiff_t, double *, ptrdiff_t, int, int);
    void (*dw_f32)(const float *, ptrdiff_t, ptrdiff_t, ptrdiff_t, const float *, int, int,
                   ptrdiff_t, ptrdiff_t, float, float *, ptrdiff_t, ptrdiff_t, ptrdiff_t,
                   ptrdiff_t, float *);
    void (*dw_f64)(const double *, ptrdiff_t, ptrdiff_t, ptrdiff_t, const double *, int, int,
                   ptrdiff_t, ptrdiff_t, double, double *, ptrdiff_t, ptrdiff_t, ptrdiff_t,
                   ptrdiff_t, double *);
    void (*dww_f32)(const float *, ptrdiff_t, ptrdiff_t, ptrdiff_t, const float *, ptrdiff_t,
                    ptrdiff_t, ptrdiff_t, int, int, ptrdiff_t, ptrdiff_t, float *, float *);
    void (*dww_f64)(const double *, ptrdiff_t, ptrdiff_t, ptrdiff_t, const double *,
                    ptrdiff_t, ptrdiff_t, ptrdiff_t, int, int, ptrdiff_t, ptrdiff_t, double *,
                    double *);
    void (*pw_pack_f32)(const float *, ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t, float *);
    void (*pw_pack_f64)(const double *, ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t, double *);
    void (*pw_gemm_f32)(ptrdiff_t, ptrdiff_t, ptrdiff_t, const float *, ptrdiff_t,
                        ptrdiff_t, const float *,
                        ptrdiff_t, const ptrdiff_t *, float *, ptrdiff_t, const float *,
                        const float *, int, int, float *);
    void (*pw_gemm_f64)(ptrdiff_t, ptrdiff_t, ptrdiff_t, const double *, ptrdiff_t,
                        ptrdiff_t, const double *,
                        ptrdiff_t, const ptrdiff_t *, double *, ptrdiff_t, const double *,
                        const double *, int, int, double *);
    void (*wino_in_f32)(const float *, const ptrdiff_t *, ptrdiff_t, ptrdiff_t,
                        const float *, int, float *, ptrdiff_t);
    void (*wino_in_f64)(const double *, const ptrdiff_t *, ptrdiff_t, ptrdiff_t,
                        const double *, int, double *, ptrdiff_t);
    void (*wino_out_f32)(const float *, ptrdiff_t, const float *, int, int, float *);
    void (*wino_out_f64)(const double *, ptrdiff_t, const double *, int, int, double *);
    void (*wino_out_rows_f32)(const float *, ptrdiff_t, const float *, int, int, float,
                              float *, const ptrdiff_t *, ptrdiff_t, const ptrdiff_t *,
                              const ptrdiff_t *, ptrdiff_t, ptrdiff_t);
    void (*wino_out_rows_f64)(const double *, ptrdiff_t, const double *, int, int, double,
                              double *, const ptrdiff_t *, ptrdiff_t, const ptrdiff_t *,
                              const ptrdiff_t *, ptrdiff_t, ptrdiff_t);
    /* depthwise with the channels in the lanes (depthwise_lanes_tmpl.h) */
    void (*dwl_stage_f32)(const float *, ptrdiff_t, int, ptrdiff_t, ptrdiff_t, ptrdiff_t,
                          ptrdiff_t, float *);
    void (*dwl_stage_f64)(const double *, ptrdiff_t, int, ptrdiff_t, ptrdiff_t, ptrdiff_t,
                          ptrdiff_t, double *);
    void (*dwl_unstage_f32)(const float *, const ptrdiff_t *, ptrdiff_t, int, const float *,
                            float *, ptrdiff_t);
    void (*dwl_unstage_f64)(const double *, const ptrdiff_t *, ptrdiff_t, int,
                            const double *, double *, ptrdiff_t);
    void (*dwl_corr_f32)(const float *, const ptrdiff_t *, ptrdiff_t, const ptrdiff_t *,
                         ptrdiff_t, const float *, float *);
    void (*dwl_corr_f64)(const double *, const ptrdiff_t *, ptrdiff_t, const ptrdiff_t *,
                         ptrdiff_t, const double *, double *);
    void (*dwl_wgrad_f32)(const float *, const ptrdiff_t *, ptrdiff_t, const ptrdiff_t *,
                          ptrdiff_t, const float *, float *);
    void (*dwl_wgrad_f64)(const double *, const ptrdiff_t *, ptrdiff_t, const ptrdiff_t *,
                          ptrdiff_t, const double *, double *);
} fc_kernels;

/* The kernel set for `request` ("avx512", "avx2", "baseline", or NULL/"" for the best
 * this CPU supports). Returns NULL when the request is unknown or unsupported here. */
const fc_kernels *fc_select(const char *request);
/* Comma-separated names of the sets this build has and this CPU can run. */
const char *fc_supported(void);

/* FTZ/DAZ on in the calling thread; returns the state fc_ftz_leave restores. */
unsigned fc_ftz_enter(void);
void fc_ftz_leave(unsigned old);

#endif
