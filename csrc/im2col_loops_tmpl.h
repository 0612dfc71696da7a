/* The im2col engine's data movement for one element type, included twice by
 * im2col_loops.c with REAL = float / double and FN(name) = fc_<name>_f32 / _f64.
 *
 * Every function works on flat buffers with element offsets computed by the caller
 * (fastconv/engines/im2col.py), which has checked every shape: no bounds tests here.
 * Index conventions are those of the Numba kernels that call them (see there).
 */

/* cols rows row0:row1 of images n0:n0+nb, output rows p0:p0+pb -> cols. Column row
 * row = c*R*S + r*S + s of image j, position t = (p - p0)*Q + q, lands at
 * cols[(row - row0)*row_stride + j*img_stride + t]. Written in order, with the padding
 * found once per tap (valid_range) rather than tested per element. */
void FN(unroll_nchw)(const REAL *restrict x, int64_t C, int64_t H, int64_t W,
                            int64_t n0, int64_t nb, int64_t p0, int64_t pb,
                            int64_t row0, int64_t row1, REAL *restrict cols,
                            int64_t row_stride, int64_t img_stride,
                            int64_t R, int64_t S, int64_t Q, int64_t sh, int64_t sw,
                            int64_t dh, int64_t dw, int64_t pt, int64_t pl)
{
    /* Stride 1 with the output as wide as the input ("same" width): the band of a tap
     * is one run of x, shifted by the tap's offset, with the padding columns zeroed
     * afterwards. One long copy instead of a short one per output row: resnet_c4_3x3's
     * pieces (rows of 14) 4.3 -> 15 GB/s, resnet_c2_3x3 13 -> 33 GB/s on one thread
     * (measured on the Numba twin of this loop). */
    const int runs = sh == 1 && sw == 1 && Q == W;
    int64_t *p_range = (int64_t *)malloc(sizeof(int64_t) * 2 * (size_t)(R + S));
    if (!p_range)
        abort();  /* 16*(R+S) bytes: only a broken process fails this */
    int64_t *q_range = p_range + 2 * R;
    for (int64_t r = 0; r < R; r++)
        valid_range(p0 * sh + r * dh - pt, sh, H, pb, &p_range[2 * r], &p_range[2 * r + 1]);
    for (int64_t s = 0; s < S; s++)
        valid_range(s * dw - pl, sw, W, Q, &q_range[2 * s], &q_range[2 * s + 1]);
    int64_t c = row0 / (R * S), r = (row0 / S) % R, s = row0 % S;
    for (int64_t row = row0; row < row1; row++) {
        if (row > row0) {  /* the next (c, r, s), without dividing */
            if (++s == S) {
                s = 0;
                if (++r == R) {
                    r = 0;
                    c++;
                }
            }
        }
        const int64_t p_lo = p_range[2 * r], p_hi = p_range[2 * r + 1];  /* from p0 */
        const int64_t q_lo = q_range[2 * s], q_hi = q_range[2 * s + 1];
        const int64_t off = s * dw - pl;
        for (int64_t j = 0; j < nb; j++) {
            REAL *dst = cols + (row - row0) * row_stride + j * img_stride;
            const REAL *xc = x + ((n0 + j) * C + c) * H * W;
            memset(dst, 0, sizeof(REAL) * (size_t)(p_lo * Q));
            if (runs) {
                /* dst[p_lo*Q : p_hi*Q] = the plane's elements src : src + count,
                 * clipped to the plane, then the padding columns of each row zeroed */
                const int64_t src = (p0 + p_lo + r * dh - pt) * W + off;
                const int64_t count = (p_hi - p_lo) * Q, plane = H * W;
                const int64_t lo = src > 0 ? src : 0;
                const int64_t hi = src + count < plane ? src + count : plane;
                REAL *d = dst + p_lo * Q;
                if (hi > lo)
                    memcpy(d + (lo - src), xc + lo, sizeof(REAL) * (size_t)(hi - lo));
                for (int64_t k = 0; k < count / Q; k++) {
                    REAL *t = d + k * Q;
                    for (int64_t q = 0; q < q_lo; q++)
                        t[q] = 0;
                    for (int64_t q = q_hi; q < Q; q++)
                        t[q] = 0;
                }
            } else {
                for (int64_t pp = p_lo; pp < p_hi; pp++) {
                    REAL *o = dst + pp * Q;
                    /* x[n, c, h, off]: an index, since off may be negative (only the
                     * valid q from q_lo on are read) */
                    const int64_t xo = ((p0 + pp) * sh + r * dh - pt) * W + off;
                    for (int64_t q = 0; q < q_lo; q++)
                        o[q] = 0;
                    if (sw == 1) {
                        for (int64_t q = q_lo; q < q_hi; q++)
                            o[q] = xc[xo + q];
                    } else {
                        for (int64_t q = q_lo; q < q_hi; q++)
                            o[q] = xc[xo + q * sw];
                    }
                    for (int64_t q = q_hi; q < Q; q++)
                        o[q] = 0;
                }
            }
            memset(dst + p_hi * Q, 0, sizeof(REAL) * (size_t)((pb - p_hi) * Q));
        }
    }
    free(p_range);
}

/* col2im: dcols (C*R*S rows, ld apart, of pb*Q columns) of image n, output rows
 * p0:p0+pb -> added into gx[n] (C, H, W); ld > pb*Q when several images' columns lie
 * side by side. Input row by input row, each gathering every tap that lands on it,
 * last tap first: output rows in increasing order, so a band adds up in the unsplit
 * order. */
void FN(fold_nchw)(const REAL *restrict dcols, int64_t ld, int64_t n, int64_t p0,
                   int64_t pb, REAL *restrict gx, int64_t C, int64_t H, int64_t W,
                   int64_t R, int64_t S, int64_t Q, int64_t sh, int64_t sw, int64_t dh,
                   int64_t dw, int64_t pt, int64_t pl)
{
    const unsigned csr = ftz_enter();
    int64_t h_lo, h_hi;
    band_input_rows(p0, pb, sh, dh, pt, R, H, &h_lo, &h_hi);
    for (int64_t c = 0; c < C; c++) {
        for (int64_t h = h_lo; h < h_hi; h++) {
            for (int64_t r = R - 1; r >= 0; r--) {
                const int64_t pp = band_row(h, r, p0, pb, sh, dh, pt);
                if (pp < 0)
                    continue;
                for (int64_t s = 0; s < S; s++) {
                    int64_t q_lo, q_hi;
                    valid_range(s * dw - pl, sw, W, Q, &q_lo, &q_hi);
                    const REAL *src = dcols + ((c * R + r) * S + s) * ld + pp * Q;
                    const int64_t xo = ((n * C + c) * H + h) * W + s * dw - pl;
                    for (int64_t q = q_lo; q < q_hi; q++)  /* valid q only: see above */
                        gx[xo + q * sw] += src[q];
                }
            }
        }
    }
    ftz_leave(csr);
}

/* NHWC: output rows i0:i1 (i = n*P + p), column entries f0:f1 of f = (g*R*S + r*S + s)*Cg
 * + cg -> cols[((i - i0)*Q + q)*(f1 - f0) + f - f0]. */
void FN(unroll_nhwc)(const REAL *restrict x, int64_t H, int64_t W, int64_t C,
                            int64_t i0, int64_t i1, int64_t f0, int64_t f1, int64_t G,
                            REAL *restrict cols, int64_t R, int64_t S, int64_t P,
                            int64_t Q, int64_t sh, int64_t sw, int64_t dh, int64_t dw,
                            int64_t pt, int64_t pl)
{
    const int64_t Cg = C / G, ld = f1 - f0, RSC = R * S * Cg;
    const int64_t g_lo = f0 / RSC, g_hi = (f1 - 1) / RSC + 1 < G ? (f1 - 1) / RSC + 1 : G;
    for (int64_t i = i0; i < i1; i++) {
        const int64_t n = i / P, p = i % P;
        for (int64_t q = 0; q < Q; q++) {
            REAL *o = cols + ((i - i0) * Q + q) * ld;  /* entry f: o[f - f0] */
            for (int64_t g = g_lo; g < g_hi; g++) {
                for (int64_t r = 0; r < R; r++) {
                    const int64_t h = p * sh + r * dh - pt;
                    for (int64_t s = 0; s < S; s++) {
                        const int64_t f = ((g * R + r) * S + s) * Cg;
                        const int64_t lo = f > f0 ? f : f0;
                        const int64_t hi = f + Cg < f1 ? f + Cg : f1;
                        if (lo >= hi)
                            continue;
                        const int64_t w = q * sw + s * dw - pl;
                        if (0 <= h && h < H && 0 <= w && w < W) {
                            const REAL *src = x + ((n * H + h) * W + w) * C + g * Cg + lo - f;
                            memcpy(o + lo - f0, src, sizeof(REAL) * (size_t)(hi - lo));
                        } else {
                            memset(o + lo - f0, 0, sizeof(REAL) * (size_t)(hi - lo));
                        }
                    }
                }
            }
        }
    }
}

/* col2im, NHWC: dcols (pb*Q, G*R*S*Cg) of image n, output rows p0:p0+pb -> added into
 * gx[n] (H, W, C), taps in increasing output-row order (last r first). */
void FN(fold_nhwc)(const REAL *restrict dcols, int64_t n, int64_t p0, int64_t pb,
                          int64_t G, REAL *restrict gx, int64_t H, int64_t W, int64_t C,
                          int64_t R, int64_t S, int64_t Q, int64_t sh, int64_t sw,
                          int64_t dh, int64_t dw, int64_t pt, int64_t pl)
{
    const unsigned csr = ftz_enter();
    const int64_t Cg = C / G, F = R * S * C;
    int64_t h_lo, h_hi;
    band_input_rows(p0, pb, sh, dh, pt, R, H, &h_lo, &h_hi);
    for (int64_t h = h_lo; h < h_hi; h++) {
        for (int64_t r = R - 1; r >= 0; r--) {
            const int64_t pp = band_row(h, r, p0, pb, sh, dh, pt);
            if (pp < 0)
                continue;
            for (int64_t q = 0; q < Q; q++) {
                int64_t s_lo, s_hi;
                valid_range(q * sw - pl, dw, W, S, &s_lo, &s_hi);
                for (int64_t s = s_lo; s < s_hi; s++) {
                    REAL *dst = gx + ((n * H + h) * W + q * sw + s * dw - pl) * C;
                    for (int64_t g = 0; g < G; g++) {
                        const REAL *src = dcols + (pp * Q + q) * F + ((g * R + r) * S + s) * Cg;
                        REAL *d = dst + g * Cg;
                        for (int64_t cg = 0; cg < Cg; cg++)
                            d[cg] += src[cg];
                    }
                }
            }
        }
    }
    ftz_leave(csr);
}

/* out[g, c, k, j] = w[g, k, c, RS-1-j]: filters flipped, filter and channel axes
 * swapped, for the blocks b0:b1 of 16 channels of every group (block b: group
 * b / nblk, channels (b % nblk)*16 ...): each read is a 16*RS run of w (numpy's
 * strided copy took 5 ms of resnet_c5_3x3's grad_input). */
void FN(flip_swap)(const REAL *restrict w, REAL *restrict out, int64_t G,
                          int64_t Kg, int64_t Cg, int64_t RS, int64_t b0, int64_t b1)
{
    const int64_t nblk = (Cg + 15) / 16;
    for (int64_t b = b0; b < b1; b++) {
        const int64_t g = b / nblk, c0 = b % nblk * 16;
        const int64_t c1 = c0 + 16 < Cg ? c0 + 16 : Cg;
        for (int64_t k = 0; k < Kg; k++)
            for (int64_t c = c0; c < c1; c++) {
                const REAL *src = w + ((g * Kg + k) * Cg + c) * RS;
                REAL *dst = out + ((g * Cg + c) * Kg + k) * RS;
                for (int64_t j = 0; j < RS; j++)
                    dst[j] = src[RS - 1 - j];
            }
    }
}

/* HWIO: out[RS-1-j, k, g, c] = w[j, c, g, k], (RS, Cg, G, Kg) -> (RS, Kg, G, Cg), for
 * the rows i = j*Kg + k of out's source order from i0 to i1. */
void FN(flip_swap_hwio)(const REAL *restrict w, REAL *restrict out, int64_t RS,
                               int64_t Cg, int64_t G, int64_t Kg, int64_t i0, int64_t i1)
{
    for (int64_t i = i0; i < i1; i++) {
        const int64_t j = i / Kg, k = i % Kg;
        REAL *dst = out + ((RS - 1 - j) * Kg + k) * G * Cg;
        for (int64_t g = 0; g < G; g++)
            for (int64_t c = 0; c < Cg; c++)
                dst[g * Cg + c] = w[((j * Cg + c) * G + g) * Kg + k];
    }
}

/* y[n + j, k, :] = prod[k*M + j*PQ + i] (+ bias[k]) for the nu images side by side in a
 * folded product (K, M = nu*PQ). */
void FN(unfold_images)(const REAL *restrict prod, int64_t M, REAL *restrict y,
                              int64_t n, int64_t nu, int64_t K, int64_t PQ,
                              const REAL *restrict bias, int64_t has_bias)
{
    const unsigned csr = ftz_enter();
    for (int64_t j = 0; j < nu; j++)
        for (int64_t k = 0; k < K; k++) {
            REAL *o = y + ((n + j) * K + k) * PQ;
            const REAL *src = prod + k * M + j * PQ;
            const REAL b = has_bias ? bias[k] : (REAL)0;
            if (has_bias) {
                for (int64_t i = 0; i < PQ; i++)
                    o[i] = src[i] + b;
            } else {
                memcpy(o, src, sizeof(REAL) * (size_t)PQ);
            }
        }
    ftz_leave(csr);
}

/* dst[k*M + j*PQ + i] = gy[n0 + j, k, i]: nimg images of dY side by side (K, M). */
void FN(stage_images)(const REAL *restrict gy, int64_t n0, int64_t nimg, int64_t K,
                             int64_t PQ, REAL *restrict dst, int64_t M)
{
    for (int64_t j = 0; j < nimg; j++)
        for (int64_t k = 0; k < K; k++)
            memcpy(dst + k * M + j * PQ, gy + ((n0 + j) * K + k) * PQ,
                   sizeof(REAL) * (size_t)PQ);
}

/* y[off + k*ld + i] += bias[k] for k < K, i < L: NCHW, channel rows. */
void FN(bias_rows)(REAL *restrict y, int64_t off, int64_t ld, int64_t K, int64_t L,
                          const REAL *restrict bias)
{
    const unsigned csr = ftz_enter();
    for (int64_t k = 0; k < K; k++) {
        REAL *o = y + off + k * ld;
        const REAL b = bias[k];
        for (int64_t i = 0; i < L; i++)
            o[i] += b;
    }
    ftz_leave(csr);
}

/* c[c0 + j*ldc + r] += bias[b0 + (per_row ? r : j)] for r < m, j < n: a column-major
 * (m x n) block of a product (engines/_products.py). */
void FN(bias_block)(REAL *restrict c, int64_t c0, int64_t m, int64_t n, int64_t ldc,
                    const REAL *restrict bias, int64_t b0, int64_t per_row)
{
    const unsigned csr = ftz_enter();
    for (int64_t j = 0; j < n; j++) {
        REAL *o = c + c0 + j * ldc;
        if (per_row) {
            for (int64_t r = 0; r < m; r++)
                o[r] += bias[b0 + r];
        } else {
            const REAL v = bias[b0 + j];
            for (int64_t r = 0; r < m; r++)
                o[r] += v;
        }
    }
    ftz_leave(csr);
}

/* y[off + m*K + k] += bias[k] for m < M, k < K: NHWC, channel columns. */
void FN(bias_cols)(REAL *restrict y, int64_t off, int64_t M, int64_t K,
                          const REAL *restrict bias)
{
    const unsigned csr = ftz_enter();
    for (int64_t m = 0; m < M; m++) {
        REAL *o = y + off + m * K;
        for (int64_t k = 0; k < K; k++)
            o[k] += bias[k];
    }
    ftz_leave(csr);
}

/* c[c_off:] (m x n) = op(a[a_off:]) (m x k) . op(b[b_off:]) (k x n) + beta * c,
 * column-major, alpha 1: BLAS's gemm with offsets into flat buffers, arguments by
 * value. transa, transb: the characters 'N' or 'T'. */
void FN(gemm)(int64_t transa, int64_t transb, int64_t m, int64_t n, int64_t k,
              const REAL *a, int64_t a_off, int64_t lda, const REAL *b, int64_t b_off,
              int64_t ldb, double beta, REAL *c, int64_t c_off, int64_t ldc)
{
    if (!blas_warmed)
        warm_blas();
    const unsigned csr = ftz_enter();
    const char ta = (char)transa, tb = (char)transb;
    const int im = (int)m, in = (int)n, ik = (int)k;
    const int ilda = (int)lda, ildb = (int)ldb, ildc = (int)ldc;
    const REAL one = 1, rbeta = (REAL)beta;
    BLAS_GEMM(&ta, &tb, &im, &in, &ik, &one, a + a_off, &ilda, b + b_off, &ildb, &rbeta,
              c + c_off, &ildc);
    ftz_leave(csr);
}
