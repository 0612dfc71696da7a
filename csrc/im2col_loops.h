/* The im2col engine's copy loops and its BLAS call, in C: fastconv/engines/_loops.py
 * hands their addresses to the Numba kernels of fastconv/engines/im2col.py. */
#ifndef FC_IM2COL_LOOPS_H
#define FC_IM2COL_LOOPS_H
#include <stdint.h>

void fc_set_blas(void *sgemm, void *dgemm);

/* 1 where the loops set FTZ/DAZ (x86), else 0. */
int fc_flushes(void);

/* Sets (on = 1) or clears FTZ/DAZ in the calling thread (x86), else does nothing. */
void fc_set_flushing(int on);

/* Every loop below by name ("unroll_nchw_f32", ...), ending with {NULL, NULL}. */
typedef struct {
    const char *name;
    void *address;
} fc_loop_entry;
extern const fc_loop_entry fc_loops[];

#define FC_DECLARE(REAL, SUF)                                                              \
    void fc_unroll_nchw_##SUF(const REAL *x, int64_t C, int64_t H, int64_t W, int64_t n0,  \
                              int64_t nb, int64_t p0, int64_t pb, int64_t row0,            \
                              int64_t row1, REAL *cols, int64_t row_stride,                \
                              int64_t img_stride, int64_t R, int64_t S, int64_t Q,         \
                              int64_t sh, int64_t sw, int64_t dh, int64_t dw, int64_t pt,  \
                              int64_t pl);                                                 \
    void fc_fold_nchw_##SUF(const REAL *dcols, int64_t ld, int64_t n, int64_t p0,         \
                            int64_t pb, REAL *gx,                                          \
                            int64_t C, int64_t H, int64_t W, int64_t R, int64_t S,         \
                            int64_t Q, int64_t sh, int64_t sw, int64_t dh, int64_t dw,     \
                            int64_t pt, int64_t pl);                                       \
    void fc_unroll_nhwc_##SUF(const REAL *x, int64_t H, int64_t W, int64_t C, int64_t i0,  \
                              int64_t i1, int64_t f0, int64_t f1, int64_t G, REAL *cols,   \
                              int64_t R, int64_t S, int64_t P, int64_t Q, int64_t sh,      \
                              int64_t sw, int64_t dh, int64_t dw, int64_t pt, int64_t pl); \
    void fc_fold_nhwc_##SUF(const REAL *dcols, int64_t n, int64_t p0, int64_t pb,          \
                            int64_t G, REAL *gx, int64_t H, int64_t W, int64_t C,          \
                            int64_t R, int64_t S, int64_t Q, int64_t sh, int64_t sw,       \
                            int64_t dh, int64_t dw, int64_t pt, int64_t pl);               \
    void fc_flip_swap_##SUF(const REAL *w, REAL *out, int64_t G, int64_t Kg, int64_t Cg,   \
                            int64_t RS, int64_t b0, int64_t b1);                           \
    void fc_flip_swap_hwio_##SUF(const REAL *w, REAL *out, int64_t RS, int64_t Cg,         \
                                 int64_t G, int64_t Kg, int64_t i0, int64_t i1);           \
    void fc_unfold_images_##SUF(const REAL *prod, int64_t M, REAL *y, int64_t n,           \
                                int64_t nu, int64_t K, int64_t PQ, const REAL *bias,       \
                                int64_t has_bias);                                         \
    void fc_stage_images_##SUF(const REAL *gy, int64_t n0, int64_t nimg, int64_t K,        \
                               int64_t PQ, REAL *dst, int64_t M);                          \
    void fc_bias_rows_##SUF(REAL *y, int64_t off, int64_t ld, int64_t K, int64_t L,        \
                            const REAL *bias);                                             \
    void fc_bias_cols_##SUF(REAL *y, int64_t off, int64_t M, int64_t K, const REAL *bias); \
    void fc_bias_block_##SUF(REAL *c, int64_t c0, int64_t m, int64_t n, int64_t ldc,         \
                             const REAL *bias, int64_t b0, int64_t per_row);               \
    void fc_gemm_##SUF(int64_t transa, int64_t transb, int64_t m, int64_t n, int64_t k,    \
                       const REAL *a, int64_t a_off, int64_t lda, const REAL *b,           \
                       int64_t b_off, int64_t ldb, double beta, REAL *c, int64_t c_off,    \
                       int64_t ldc);

FC_DECLARE(float, f32)
FC_DECLARE(double, f64)
#undef FC_DECLARE

#endif
