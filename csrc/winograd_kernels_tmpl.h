/* The Winograd engine's transforms, for one element type: included by direct_kernels_tmpl.h
 * (which defines V, VL, LOAD, STORE, SPLAT for T). Not a public header.
 *
 * Both work on FC_WINO_TB tiles at once, the innermost dimension of every array they
 * touch, so each step is a few whole vectors whatever the tile size; the transform
 * matrices are data (fastconv/_winograd_mats.py builds them for F(2,3), F(4,3), F(6,3)),
 * and their zero entries are skipped. One fixed order of operations: results are the same
 * for any thread count. The products between the two transforms are fc_pw_gemm's.
 */

#define WINO_PASS FC_CAT3(fc_wino_pass, TS, FC_SUFFIX)
#define WINO_IN_BODY FC_CAT3(fc_wino_in_body, TS, FC_SUFFIX)
#define WINO_OUT_BODY FC_CAT3(fc_wino_out_body, TS, FC_SUFFIX)
#define T8X8 FC_CAT3(fc_t8x8, TS, FC_SUFFIX)
#define SPLAT8 FC_CAT3(fc_splat8, TS, FC_SUFFIX)
#define R8 FC_CAT3(fcr8, TS, FC_SUFFIX)
#define I8 FC_CAT3(fci8, TS, FC_SUFFIX)

/* Eight elements of T, and the matching shuffle mask (TI: an integer of T's size), for
 * the transposes between tile rows and tile-innermost vectors: whatever the ISA's
 * vector length, a 3 x 3 tile row (alpha <= 8) is one of them. */
typedef T R8 __attribute__((vector_size(8 * sizeof(T))));
typedef TI I8 __attribute__((vector_size(8 * sizeof(T))));

/* One pass of a transform, both sides of either matrix product it takes:
 * out[(r*nq + q)*ldo + t] = sum_{u < nk} c[r*cr + q*cq + u] * src[r*sr + q*sq + u*su + t]
 * for r < nr, q < nq and the FC_WINO_TB tiles t; zero coefficients skipped, u in order. */
FC_INLINE void WINO_PASS(const T *c, ptrdiff_t cr, ptrdiff_t cq, int nk, const T *src,
                         ptrdiff_t sr, ptrdiff_t sq, ptrdiff_t su, int nr, int nq, T *out,
                         ptrdiff_t ldo)
{
    enum { NV = FC_WINO_TB / VL };
    for (int r = 0; r < nr; r++)
        for (int q = 0; q < nq; q++) {
            V acc[NV];
            for (int v = 0; v < NV; v++) acc[v] = (V){0};
            for (int u = 0; u < nk; u++) {
                const T cu = c[r * cr + q * cq + u];
                if (cu == 0) continue;
                const V cv = SPLAT(cu);
                const T *s = src + r * sr + q * sq + u * su;
                for (int v = 0; v < NV; v++) acc[v] += cv * LOAD(s + v * VL);
            }
            for (int v = 0; v < NV; v++) STORE(out + (r * nq + q) * ldo + v * VL, acc[v]);
        }
}

/* Eight rows of eight elements, r[k][j], transposed in place to r[j][k]: three stages of
 * two-source shuffles within 128-bit halves, then across them (with AVX2 float32:
 * vunpck*ps, vshufps, vperm2f128, 24 shuffles for 64 elements). */
FC_INLINE void T8X8(R8 r[8])
{
#define SH(a, b, ...) __builtin_shuffle((a), (b), (I8){__VA_ARGS__})
    R8 t[8], s[8];
    for (int k = 0; k < 8; k += 2) {
        t[k] = SH(r[k], r[k + 1], 0, 8, 1, 9, 4, 12, 5, 13);
        t[k + 1] = SH(r[k], r[k + 1], 2, 10, 3, 11, 6, 14, 7, 15);
    }
    for (int k = 0; k < 8; k += 4)
        for (int u = 0; u < 2; u++) {
            s[k + 2 * u] = SH(t[k + u], t[k + u + 2], 0, 1, 8, 9, 4, 5, 12, 13);
            s[k + 2 * u + 1] = SH(t[k + u], t[k + u + 2], 2, 3, 10, 11, 6, 7, 14, 15);
        }
    for (int j = 0; j < 4; j++) {
        r[j] = SH(s[j], s[j + 4], 0, 1, 2, 3, 8, 9, 10, 11);
        r[j + 4] = SH(s[j], s[j + 4], 4, 5, 6, 7, 12, 13, 14, 15);
    }
#undef SH
}

FC_INLINE R8 SPLAT8(T s) { return ((R8){0} + 1) * s; }

FC_INLINE void WINO_IN_BODY(const T *src, const ptrdiff_t *off, ptrdiff_t pitch,
                            ptrdiff_t pf, const T *bt, const int alpha, T *v, ptrdiff_t ldv)
{
    enum { TB = FC_WINO_TB };
    T tmp[FC_WINO_MAXA * FC_WINO_MAXA * TB] __attribute__((aligned(64)));
    for (int h = 0; h < TB; h += 8)
        for (int i = 0; i < alpha; i++) {
            /* row i of tiles h .. h+7, transposed: r[j] = element (i, j) of the 8 tiles */
            R8 r[8];
            for (int k = 0; k < 8; k++) {
                memcpy(&r[k], src + off[h + k] + i * pitch, sizeof r[k]);
                __builtin_prefetch(src + pf + off[h + k] + i * pitch);
            }
            T8X8(r);
            /* tmp[i][b] = sum_j bt[b][j] d[i][j], j in order, zero coefficients included
             * (constant trip counts, no branch on the data) */
            for (int b = 0; b < alpha; b++) {
                R8 acc = (R8){0};
                for (int j = 0; j < alpha; j++) acc += SPLAT8(bt[b * alpha + j]) * r[j];
                memcpy(tmp + (i * alpha + b) * TB + h, &acc, sizeof acc);
            }
        }
    /* v[a][b] = sum_i bt[a][i] tmp[i][b] */
    WINO_PASS(bt, alpha, 0, alpha, tmp, 0, TB, (ptrdiff_t)alpha * TB, alpha, alpha, v, ldv);
}

/* v[xi*ldv + t] = (BT d_t B)[xi], xi = a*alpha + b, for the tiles t < FC_WINO_TB, where
 * d_t[i][j] = src[off[t] + i*pitch + j] (an alpha x alpha input tile of a zero-padded
 * plane); each row is read as 8 elements, so src[off[t] + i*pitch + 7] must exist.
 * The same rows pf elements on (the next channel's plane) are prefetched.
 * bt: alpha x alpha, row-major. The gather is eight row loads and one 8 x 8 transpose
 * per tile row and eight tiles, with the column pass applied to the transposed rows in
 * registers (a scalar gather into a tile-innermost array was 37% of the engine's time on
 * resnet_c2_3x3, Zen 3). */
void FC_CAT3(fc_wino_in, TS, FC_SUFFIX)(const T *src, const ptrdiff_t *off, ptrdiff_t pitch,
                                        ptrdiff_t pf, const T *bt, int alpha, T *v,
                                        ptrdiff_t ldv)
{
    if (alpha == 6)  /* F(4, 3): constant trip counts, r[] held in registers */
        WINO_IN_BODY(src, off, pitch, pf, bt, 6, v, ldv);
    else
        WINO_IN_BODY(src, off, pitch, pf, bt, alpha, v, ldv);
}

/* y[(i*m + j)*TB + t] = (AT M A)[i][j] for the tiles t < FC_WINO_TB, from
 * M[xi] at mm + xi*ldm + t (xi = a*alpha + b); at: m x alpha, row-major. */
void FC_CAT3(fc_wino_out, TS, FC_SUFFIX)(const T *mm, ptrdiff_t ldm, const T *at, int m,
                                         int alpha, T *y)
{
    enum { TB = FC_WINO_TB };
    T tmp[FC_WINO_MAXA * FC_WINO_MAXA * TB] __attribute__((aligned(64)));
    /* tmp[i][b] = sum_a at[i][a] M[a][b] */
    WINO_PASS(at, alpha, 0, alpha, mm, 0, ldm, (ptrdiff_t)alpha * ldm, m, alpha, tmp, TB);
    /* y[i][j] = sum_b tmp[i][b] at[j][b] */
    WINO_PASS(at, 0, alpha, alpha, tmp, (ptrdiff_t)alpha * TB, 0, TB, m, m, y, TB);
}

FC_INLINE void WINO_OUT_BODY(const T *mm, ptrdiff_t ldm, const T *at, const int m,
                             const int alpha, T bias, T *y, const ptrdiff_t *off,
                             ptrdiff_t pitch, const ptrdiff_t *nr, const ptrdiff_t *nc,
                             ptrdiff_t pfm, ptrdiff_t pfy)
{
    enum { TB = FC_WINO_TB };
    T tmp[FC_WINO_MAXA * FC_WINO_MAXA * TB] __attribute__((aligned(64)));
    for (int xi = 0; xi < alpha * alpha; xi++) __builtin_prefetch(mm + pfm + xi * ldm);
    /* tmp[i][b] = sum_a at[i][a] M[a][b] */
    WINO_PASS(at, alpha, 0, alpha, mm, 0, ldm, (ptrdiff_t)alpha * ldm, m, alpha, tmp, TB);
    for (int h = 0; h < TB; h += 8) {
        if (nr[h] == 0) break;  /* tiles past the last come last */
        for (int i = 0; i < m; i++) {
            /* r[j] = y[i][j] = sum_b tmp[i][b] at[j][b] + bias for tiles h .. h+7 */
            R8 r[8];
            for (int j = 0; j < 8; j++) {
                R8 acc = (R8){0};
                if (j < m) {
                    for (int b = 0; b < alpha; b++) {
                        const T c = at[j * alpha + b];
                        R8 tv;
                        memcpy(&tv, tmp + (i * alpha + b) * TB + h, sizeof tv);
                        acc += SPLAT8(c) * tv;
                    }
                    acc += SPLAT8(bias);
                }
                r[j] = acc;
            }
            T8X8(r);  /* r[k]: row i of tile h + k */
            for (int k = 0; k < 8; k++) {
                const int t = h + k;
                if (i >= nr[t]) continue;
                T *d = y + off[t] + i * pitch;
                __builtin_prefetch(d + pfy, 1);
                if (nc[t] == m)
                    memcpy(d, &r[k], m * sizeof(T));
                else
                    for (int j = 0; j < nc[t]; j++) d[j] = r[k][j];
            }
        }
    }
}

/* y[off[t] + i*pitch + j] = (AT M_t A)[i][j] + bias for i < nr[t] and j < nc[t], the tiles
 * t < FC_WINO_TB (nr[t] = 0: no tile; such tiles come last), from M_t[xi] at
 * mm + xi*ldm + t; at: m x alpha, row-major. Rows of the output are contiguous: the
 * results go back through the 8 x 8 transpose and out as row segments, not element by
 * element. The sums of fc_wino_out, in the same order; its second pass skips zero
 * coefficients, this one adds their zero products (the tests on them were most of this
 * kernel's samples), so for finite M the values are the same. M pfm elements on and
 * the outputs pfy elements on (the next filter's) are prefetched. */
void FC_CAT3(fc_wino_out_rows, TS, FC_SUFFIX)(const T *mm, ptrdiff_t ldm, const T *at,
                                              int m, int alpha, T bias, T *y,
                                              const ptrdiff_t *off, ptrdiff_t pitch,
                                              const ptrdiff_t *nr, const ptrdiff_t *nc,
                                              ptrdiff_t pfm, ptrdiff_t pfy)
{
    if (m == 4 && alpha == 6)
        WINO_OUT_BODY(mm, ldm, at, 4, 6, bias, y, off, pitch, nr, nc, pfm, pfy);
    else
        WINO_OUT_BODY(mm, ldm, at, m, alpha, bias, y, off, pitch, nr, nc, pfm, pfy);
}

#undef WINO_PASS
#undef WINO_IN_BODY
#undef WINO_OUT_BODY
#undef T8X8
#undef SPLAT8
#undef R8
#undef I8
