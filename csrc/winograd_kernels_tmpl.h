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

/* v[xi*ldv + t] = (BT d B)[xi], xi = a*alpha + b, for the tiles t < FC_WINO_TB, from
 * d[(i*alpha + j)*TB + t] (an alpha x alpha input tile per t); bt: alpha x alpha, row-major.
 */
void FC_CAT3(fc_wino_in, TS, FC_SUFFIX)(const T *d, const T *bt, int alpha, T *v,
                                        ptrdiff_t ldv)
{
    enum { TB = FC_WINO_TB };
    T tmp[FC_WINO_MAXA * FC_WINO_MAXA * TB] __attribute__((aligned(64)));
    /* tmp[a][j] = sum_i bt[a][i] d[i][j] */
    WINO_PASS(bt, alpha, 0, alpha, d, 0, TB, (ptrdiff_t)alpha * TB, alpha, alpha, tmp, TB);
    /* v[a][b] = sum_j tmp[a][j] bt[b][j] */
    WINO_PASS(bt, 0, alpha, alpha, tmp, (ptrdiff_t)alpha * TB, 0, TB, alpha, alpha, v, ldv);
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

#undef WINO_PASS
