/* The Winograd engine's transforms, for one element type: included by direct_kernels_tmpl.h
 * (which defines V, VL, LOAD, STORE, SPLAT for T). Not a public header.
 *
 * Both work on FC_WINO_TB tiles at once, the innermost dimension of every array they
 * touch, so each step is a few whole vectors whatever the tile size; the transform
 * matrices are data (fastconv/_winograd_mats.py builds them for F(2,3), F(4,3), F(6,3)),
 * and their zero entries are skipped. One fixed order of operations: results are the same
 * for any thread count. The products between the two transforms are fc_pw_gemm's.
 */

/* v[xi*ldv + t] = (BT d B)[xi], xi = a*alpha + b, for the tiles t < FC_WINO_TB, from
 * d[(i*alpha + j)*TB + t] (an alpha x alpha input tile per t); bt: alpha x alpha, row-major.
 */
void FC_CAT3(fc_wino_in, TS, FC_SUFFIX)(const T *d, const T *bt, int alpha, T *v,
                                        ptrdiff_t ldv)
{
    enum { TB = FC_WINO_TB };
    T tmp[FC_WINO_MAXA * FC_WINO_MAXA * TB] __attribute__((aligned(64)));
    /* tmp[a][j] = sum_i bt[a][i] d[i][j] */
    for (int a = 0; a < alpha; a++)
        for (int j = 0; j < alpha; j++) {
            V acc[TB / VL];
            for (int u = 0; u < TB / VL; u++) acc[u] = (V){0};
            for (int i = 0; i < alpha; i++) {
                const T c = bt[a * alpha + i];
                if (c == 0) continue;
                const V cv = SPLAT(c);
                for (int u = 0; u < TB / VL; u++)
                    acc[u] += cv * LOAD(d + (i * alpha + j) * TB + u * VL);
            }
            for (int u = 0; u < TB / VL; u++) STORE(tmp + (a * alpha + j) * TB + u * VL, acc[u]);
        }
    /* v[a][b] = sum_j tmp[a][j] bt[b][j] */
    for (int a = 0; a < alpha; a++)
        for (int b = 0; b < alpha; b++) {
            V acc[TB / VL];
            for (int u = 0; u < TB / VL; u++) acc[u] = (V){0};
            for (int j = 0; j < alpha; j++) {
                const T c = bt[b * alpha + j];
                if (c == 0) continue;
                const V cv = SPLAT(c);
                for (int u = 0; u < TB / VL; u++)
                    acc[u] += cv * LOAD(tmp + (a * alpha + j) * TB + u * VL);
            }
            for (int u = 0; u < TB / VL; u++) STORE(v + (a * alpha + b) * ldv + u * VL, acc[u]);
        }
}

/* y[(i*m + j)*TB + t] = (AT M A)[i][j] for the tiles t < FC_WINO_TB, from
 * M[xi] at mm + xi*ldm + t (xi = a*alpha + b); at: m x alpha, row-major. */
void FC_CAT3(fc_wino_out, TS, FC_SUFFIX)(const T *mm, ptrdiff_t ldm, const T *at, int m,
                                         int alpha, T *y)
{
    enum { TB = FC_WINO_TB };
    T tmp[FC_WINO_MAXA * FC_WINO_MAXA * TB] __attribute__((aligned(64)));
    /* tmp[i][b] = sum_a at[i][a] M[a][b] */
    for (int i = 0; i < m; i++)
        for (int b = 0; b < alpha; b++) {
            V acc[TB / VL];
            for (int u = 0; u < TB / VL; u++) acc[u] = (V){0};
            for (int a = 0; a < alpha; a++) {
                const T c = at[i * alpha + a];
                if (c == 0) continue;
                const V cv = SPLAT(c);
                for (int u = 0; u < TB / VL; u++)
                    acc[u] += cv * LOAD(mm + (a * alpha + b) * ldm + u * VL);
            }
            for (int u = 0; u < TB / VL; u++) STORE(tmp + (i * alpha + b) * TB + u * VL, acc[u]);
        }
    /* y[i][j] = sum_b tmp[i][b] at[j][b] */
    for (int i = 0; i < m; i++)
        for (int j = 0; j < m; j++) {
            V acc[TB / VL];
            for (int u = 0; u < TB / VL; u++) acc[u] = (V){0};
            for (int b = 0; b < alpha; b++) {
                const T c = at[j * alpha + b];
                if (c == 0) continue;
                const V cv = SPLAT(c);
                for (int u = 0; u < TB / VL; u++)
                    acc[u] += cv * LOAD(tmp + (i * alpha + b) * TB + u * VL);
            }
            for (int u = 0; u < TB / VL; u++) STORE(y + (i * m + j) * TB + u * VL, acc[u]);
        }
}
