/* Body of the micro-kernels for one element type; included by direct_kernels.c with
 * T (float or double) and TS (f32 or f64) defined. Not a public header. */

#define V FC_CAT3(fcv, TS, FC_SUFFIX)
#define VL ((int)(FC_VBYTES / sizeof(T)))
#define LOAD FC_CAT3(fc_load, TS, FC_SUFFIX)
#define STORE FC_CAT3(fc_store, TS, FC_SUFFIX)
#define HSUM FC_CAT3(fc_hsum, TS, FC_SUFFIX)
#define SPLAT FC_CAT3(fc_splat, TS, FC_SUFFIX)
#define CONV_BODY FC_CAT3(fc_conv_body, TS, FC_SUFFIX)
#define CONV1_BODY FC_CAT3(fc_conv1_body, TS, FC_SUFFIX)
#define WGRAD_BODY FC_CAT3(fc_wgrad_body, TS, FC_SUFFIX)
#define KVEC_BODY FC_CAT3(fc_kvec_body, TS, FC_SUFFIX)

typedef T V __attribute__((vector_size(FC_VBYTES)));

/* memcpy is how C spells an unaligned vector load/store; it compiles to one instruction. */
FC_INLINE V LOAD(const T *p) { V v; memcpy(&v, p, sizeof v); return v; }
FC_INLINE void STORE(T *p, V v) { memcpy(p, &v, sizeof v); }
/* A broadcast: 1*s is exactly s, so the compiler folds the product away and emits one
 * vbroadcastss from memory (a load-port op). Written as (V){0} + s it became a scalar
 * add (0 + s is not s for s = -0 without -ffast-math) plus a register broadcast, and a
 * lane loop became a 256-bit broadcast plus vinsertf64x4: extra ops on the FMA ports
 * for every weight or input element (the kvec kernel ran at 60% of peak behind them). */
FC_INLINE V SPLAT(T s) { return ((V){0} + 1) * s; }
FC_INLINE T HSUM(V v)
{
    T s = 0;
    for (int l = 0; l < VL; l++) s += v[l];
    return s;
}

FC_INLINE void CONV_BODY(const T *x, ptrdiff_t cs, ptrdiff_t Cn, const ptrdiff_t *tapoff,
                         ptrdiff_t ntaps, const T *wp, T *out, ptrdiff_t ldo, const int nv)
{
    V acc[FC_KB_ISA][FC_NV];
    for (int i = 0; i < FC_KB_ISA; i++)
        for (int j = 0; j < nv; j++) acc[i][j] = (V){0};
    for (ptrdiff_t c = 0; c < Cn; c++) {
        const T *xc = x + c * cs;
        for (ptrdiff_t t = 0; t < ntaps; t++) {
            const T *xp = xc + tapoff[t];
            V xv[FC_NV];
            for (int j = 0; j < nv; j++) xv[j] = LOAD(xp + j * VL);
            for (int i = 0; i < FC_KB_ISA; i++) {
                const V wb = SPLAT(wp[i]);
                for (int j = 0; j < nv; j++) acc[i][j] += wb * xv[j];
            }
            wp += FC_KB_ISA;
        }
    }
    for (int i = 0; i < FC_KB_ISA; i++)
        for (int j = 0; j < nv; j++) STORE(out + i * ldo + j * VL, acc[i][j]);
}

/* out[i*ldo + m] = sum_{c,t} wp[(c*ntaps + t)*KB + i] * x[c*cs + tapoff[t] + m]
 * for i < KB and m < nvec*VL (nvec in 1..FC_NV). */
void FC_CAT3(fc_conv, TS, FC_SUFFIX)(const T *x, ptrdiff_t cs, ptrdiff_t Cn,
                                     const ptrdiff_t *tapoff, ptrdiff_t ntaps, const T *wp,
                                     T *out, ptrdiff_t ldo, int nvec)
{
    switch (nvec) {  /* a constant nv lets the compiler keep acc[][] in registers */
    case 1: CONV_BODY(x, cs, Cn, tapoff, ntaps, wp, out, ldo, 1); break;
    case 2: CONV_BODY(x, cs, Cn, tapoff, ntaps, wp, out, ldo, 2); break;
    default: CONV_BODY(x, cs, Cn, tapoff, ntaps, wp, out, ldo, 3); break;
    }
}

FC_INLINE void CONV1_BODY(const T *x, ptrdiff_t cs, ptrdiff_t Cn, const ptrdiff_t *tapoff,
                          ptrdiff_t ntaps, const T *wp, T *out, const int nv)
{
    V acc[FC_NV1];
    for (int j = 0; j < nv; j++) acc[j] = (V){0};
    for (ptrdiff_t c = 0; c < Cn; c++) {
        const T *xc = x + c * cs;
        for (ptrdiff_t t = 0; t < ntaps; t++) {
            const T *xp = xc + tapoff[t];
            const V wb = SPLAT(wp[c * ntaps + t]);
            for (int j = 0; j < nv; j++) acc[j] += wb * LOAD(xp + j * VL);
        }
    }
    for (int j = 0; j < nv; j++) STORE(out + j * VL, acc[j]);
}

/* out[m] = sum_{c,t} wp[c*ntaps + t] * x[c*cs + tapoff[t] + m], m < nvec*VL (1..FC_NV1). */
void FC_CAT3(fc_conv1, TS, FC_SUFFIX)(const T *x, ptrdiff_t cs, ptrdiff_t Cn,
                                      const ptrdiff_t *tapoff, ptrdiff_t ntaps, const T *wp,
                                      T *out, int nvec)
{
    switch (nvec) {
    case 1: CONV1_BODY(x, cs, Cn, tapoff, ntaps, wp, out, 1); break;
    case 2: CONV1_BODY(x, cs, Cn, tapoff, ntaps, wp, out, 2); break;
    case 3: CONV1_BODY(x, cs, Cn, tapoff, ntaps, wp, out, 3); break;
    case 4: CONV1_BODY(x, cs, Cn, tapoff, ntaps, wp, out, 4); break;
    case 5: CONV1_BODY(x, cs, Cn, tapoff, ntaps, wp, out, 5); break;
    default: CONV1_BODY(x, cs, Cn, tapoff, ntaps, wp, out, 6); break;
    }
}

FC_INLINE void WGRAD_BODY(const T *dy, ptrdiff_t ldd, ptrdiff_t nk, ptrdiff_t k0,
                          const T *x, const ptrdiff_t *xoff, ptrdiff_t ct0, ptrdiff_t M,
                          T *acc, const int nct)
{
    V a[FC_KW][4];
    const T *xp[4];
    for (int j = 0; j < nct; j++) {
        xp[j] = x + xoff[ct0 + j];
        for (int i = 0; i < FC_KW; i++) a[i][j] = (V){0};
    }
    for (ptrdiff_t m = 0; m < M; m += VL) {
        V d[FC_KW];
        for (int i = 0; i < FC_KW; i++) d[i] = LOAD(dy + (k0 + i) * ldd + m);
        for (int j = 0; j < nct; j++) {
            const V xv = LOAD(xp[j] + m);
            for (int i = 0; i < FC_KW; i++) a[i][j] += d[i] * xv;
        }
    }
    for (int j = 0; j < nct; j++)
        for (int i = 0; i < FC_KW; i++) acc[(ct0 + j) * nk + k0 + i] += HSUM(a[i][j]);
}

/* acc[ct*nk + k] += sum_{m < M} dy[k*ldd + m] * x[xoff[ct] + m]
 * for k < nk (1, or a multiple of FC_KW) and ct < nct; M is a multiple of VL. */
void FC_CAT3(fc_wgrad, TS, FC_SUFFIX)(const T *dy, ptrdiff_t ldd, ptrdiff_t nk, const T *x,
                                      const ptrdiff_t *xoff, ptrdiff_t nct, ptrdiff_t M,
                                      T *acc)
{
    if (nk == 1) {  /* depthwise: one filter, 8 (channel, tap) pairs at a time */
        for (ptrdiff_t ct0 = 0; ct0 < nct; ct0 += 8) {
            const int nj = nct - ct0 < 8 ? (int)(nct - ct0) : 8;
            V a[8];
            for (int j = 0; j < 8; j++) a[j] = (V){0};
            if (nj == 8) {
                for (ptrdiff_t m = 0; m < M; m += VL) {
                    const V d = LOAD(dy + m);
                    for (int j = 0; j < 8; j++) a[j] += d * LOAD(x + xoff[ct0 + j] + m);
                }
            } else {
                for (ptrdiff_t m = 0; m < M; m += VL) {
                    const V d = LOAD(dy + m);
                    for (int j = 0; j < nj; j++) a[j] += d * LOAD(x + xoff[ct0 + j] + m);
                }
            }
            for (int j = 0; j < nj; j++) acc[ct0 + j] += HSUM(a[j]);
        }
        return;
    }
    for (ptrdiff_t k0 = 0; k0 < nk; k0 += FC_KW) {
        ptrdiff_t ct0 = 0;
        for (; ct0 + 4 <= nct; ct0 += 4) WGRAD_BODY(dy, ldd, nk, k0, x, xoff, ct0, M, acc, 4);
        for (; ct0 < nct; ct0++) WGRAD_BODY(dy, ldd, nk, k0, x, xoff, ct0, M, acc, 1);
    }
}

FC_INLINE void KVEC_BODY(const T *x, const ptrdiff_t *rowoff, int nrows,
                         const ptrdiff_t *stepoff, ptrdiff_t nsteps, const T *b,
                         ptrdiff_t ldb, T *out, ptrdiff_t ldo, const int nv, int accumulate)
{
    V acc[FC_MR][FC_NVK];
    const T *xr[FC_MR];
    for (int i = 0; i < FC_MR; i++) {
        xr[i] = x + rowoff[i < nrows ? i : 0];  /* missing rows recompute row 0, unstored */
        for (int j = 0; j < nv; j++)
            acc[i][j] = accumulate && i < nrows ? LOAD(out + i * ldo + j * VL) : (V){0};
    }
    for (ptrdiff_t s = 0; s < nsteps; s++) {
        const ptrdiff_t off = stepoff[s];
        const T *bs = b + s * ldb;
        V bv[FC_NVK];
        for (int j = 0; j < nv; j++) bv[j] = LOAD(bs + j * VL);
        for (int i = 0; i < FC_MR; i++) {
            const V a = SPLAT(xr[i][off]);
            for (int j = 0; j < nv; j++) acc[i][j] += a * bv[j];
        }
    }
    for (int i = 0; i < nrows; i++)
        for (int j = 0; j < nv; j++) STORE(out + i * ldo + j * VL, acc[i][j]);
}

/* out[i*ldo + v] (+)= sum_{s < nsteps} x[rowoff[i] + stepoff[s]] * b[s*ldb + v]
 * for i < nrows (1..FC_MR) and v < nvec*VL (nvec in 1..FC_NVK); with accumulate the
 * sum starts from out (so a reduction split into chunks adds in the same order). */
void FC_CAT3(fc_kvec, TS, FC_SUFFIX)(const T *x, const ptrdiff_t *rowoff, int nrows,
                                     const ptrdiff_t *stepoff, ptrdiff_t nsteps, const T *b,
                                     ptrdiff_t ldb, T *out, ptrdiff_t ldo, int nvec,
                                     int accumulate)
{
    switch (nvec) {
    case 1: KVEC_BODY(x, rowoff, nrows, stepoff, nsteps, b, ldb, out, ldo, 1, accumulate); break;
    case 2: KVEC_BODY(x, rowoff, nrows, stepoff, nsteps, b, ldb, out, ldo, 2, accumulate); break;
    default:
        KVEC_BODY(x, rowoff, nrows, stepoff, nsteps, b, ldb, out, ldo, FC_NVK, accumulate);
        break;
    }
}

/* ------------------------------------------------------------------ depthwise
 * fc_dw and fc_dww: one channel plane of a depthwise convolution (one filter per
 * channel, stride 1, dilation 1, unit column stride), its own loop nest.
 *
 * Blocking (mobilenet_dw: 8 x 32 x 112 x 112, 3 x 3, 12.8 MB in and 12.8 MB out):
 *   each input row is copied once from the image into a per-thread ring of
 *   2*FC_DW_RB + R - 1 zero-padded rows (a few KiB, in L1; the padding columns are
 *   zeroed once per call), so padding costs no test and the image is read from memory
 *   once. A row is staged one register block ahead of its first use (loads straight
 *   after the copy stalled on store forwarding). A register block is FC_DW_RB = 4
 *   output rows x one vector of columns: it walks the 4 + R - 1 input rows, and each
 *   loaded input vector feeds every output row it meets (up to R), with the R*S
 *   weights held in registers as broadcasts (3 x 3: 9 weights + 4 accumulators +
 *   3 loads, so AVX2 and SSE keep them too): 18 loads for 36 FMAs instead of 36, and
 *   each output vector is stored once, straight into y. fc_dww is the same walk with
 *   the R*S weight gradients as the accumulators and 4 rows of grad_y as the second
 *   operand; its vectors are summed into acc once per plane, in a fixed order.
 * Measured (AVX-512, float32; one 112 x 112 plane in L1/L2 per call, us per plane):
 *   first version 4.0 (fwd); one load per input vector, not one per FMA, 3.4; staging
 *   a block ahead 3.3; inline row copies instead of memset/memcpy/memset 3.0 (fc_dww
 *   2.9). No gain, so not kept: 8 accumulators (2 column vectors per block, -10%),
 *   aligned loads + permutes instead of cache-line-split loads (same). 8-row blocks
 *   measured 5% faster but need twice the ring. 3 us is still ~3x the FMA-port time
 *   (7056 FMAs at 2 a cycle): staging and block set-up take about a third.
 *   The whole layer (fastconv bench, 2 threads, ms): forward 1.46 -> 0.73, grad_input
 *   1.44 -> 0.68, grad_weight 1.32 -> 0.66, from the tiled fc_conv1 / fc_wgrad path;
 *   the raw kernel call without the output allocation: 0.58 / 0.57 / 0.62.
 */
/* Keeps a loaded vector in a register: without it GCC folds the load into each of the
 * up-to-R FMAs that use it, and the depthwise kernels issue R times the loads (most of
 * them cache-line splits). An empty asm the compiler cannot see through. */
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#if defined(__AVX512F__)
#define FC_IN_REGISTER(v) __asm__("" : "+v"(v)) /* any of the 32 vector registers */
#else
#define FC_IN_REGISTER(v) __asm__("" : "+x"(v))
#endif
#else
#define FC_IN_REGISTER(v) ((void)0)
#endif
#define DW_ROW_VECS FC_CAT3(fc_dw_row_vecs, TS, FC_SUFFIX)

/* v[s] = row[q + s .. q + s + VL) for s < S: S unaligned loads, each kept in a register
 * for the up-to-R FMAs that use it. Measured: building the shifted vectors from two
 * aligned loads with a permute each (no cache-line splits) was no faster. */
FC_INLINE void DW_ROW_VECS(const T *row, ptrdiff_t q, const int S, V *v)
{
    for (int s = 0; s < S; s++) {
        v[s] = LOAD(row + q + s);
        FC_IN_REGISTER(v[s]);
    }
}

#define DW_ROWS FC_CAT3(fc_dw_rows, TS, FC_SUFFIX)
#define DW_VEC FC_CAT3(fc_dw_vec, TS, FC_SUFFIX)
#define DW_RING_INIT FC_CAT3(fc_dw_ring_init, TS, FC_SUFFIX)
#define DW_BLOCK FC_CAT3(fc_dw_block, TS, FC_SUFFIX)
#define DW_PLANE FC_CAT3(fc_dw_plane, TS, FC_SUFFIX)
#define DWW_BLOCK FC_CAT3(fc_dww_block, TS, FC_SUFFIX)
#define DWW_PLANE FC_CAT3(fc_dww_plane, TS, FC_SUFFIX)

/* rows[i] = input row hb + i zero-padded (column j holds image column j - pl), staged
 * in ring slot h % nr unless already there (*staged: first row not yet staged), or
 * the shared zero row outside the image. Only columns [j0, j1) are copied: the padding
 * columns of every slot are zeroed once per call (DW_RING_INIT). The copy is inline
 * vector code: three libc calls per row (memset, memcpy, memset) cost 1.3 us of a
 * 3.5 us plane. */
FC_INLINE void DW_ROWS(const T *x, ptrdiff_t xs_h, ptrdiff_t Hi, ptrdiff_t j0, ptrdiff_t j1,
                       ptrdiff_t pl, ptrdiff_t Lp, int nr, T *ring, const T *zero,
                       ptrdiff_t hb, int n, ptrdiff_t *staged, const T **rows)
{
    for (int i = 0; i < n; i++) {
        const ptrdiff_t h = hb + i;
        if (h < 0 || h >= Hi) {
            rows[i] = zero;
            continue;
        }
        T *row = ring + (h % nr) * Lp;
        if (h >= *staged) {
            const T *src = x + h * xs_h + (j0 - pl);
            T *dst = row + j0;
            const ptrdiff_t len = j1 - j0;
            ptrdiff_t j = 0;
            for (; j + VL <= len; j += VL) STORE(dst + j, LOAD(src + j));
            for (; j < len; j++) dst[j] = src[j];
            *staged = h + 1;
        }
        rows[i] = row;
    }
}

/* Zeroes the ring (its rows' padding columns stay zero: only [j0, j1) is ever
 * copied) and the zero row after it; returns the 64-byte aligned ring. */
FC_INLINE T *DW_RING_INIT(T *ring, ptrdiff_t Wi, ptrdiff_t pl, ptrdiff_t Lp, int nr,
                          ptrdiff_t *j0, ptrdiff_t *j1)
{
    ring = (T *)(((uintptr_t)ring + 63) & ~(uintptr_t)63);
    *j0 = pl < 0 ? 0 : (pl > Lp ? Lp : pl);
    *j1 = pl + Wi < *j0 ? *j0 : (pl + Wi > Lp ? Lp : pl + Wi);
    memset(ring, 0, (nr + 1) * Lp * sizeof(T));
    return ring;
}

/* acc[o] = vb + the taps of output row o (< nout) at columns [q, q + VL). */
FC_INLINE void DW_VEC(const T *const *rows, const V *wv, const int R, const int S, V vb,
                      ptrdiff_t q, V *acc, const int nout)
{
    for (int o = 0; o < nout; o++) acc[o] = vb;
    _Pragma("GCC unroll 16") for (int i = 0; i < nout + R - 1; i++) {
        V v[FC_DW_MAXK];
        DW_ROW_VECS(rows[i], q, S, v);
        _Pragma("GCC unroll 16") for (int s = 0; s < S; s++)
            _Pragma("GCC unroll 16") for (int o = 0; o < nout; o++)
                if (i - o >= 0 && i - o < R) acc[o] += wv[(i - o) * S + s] * v[s];
    }
}

/* Output rows out[0 .. nout) x all Q columns, one vector of columns at a time; the
 * last, partial vector apart, so that the main loop keeps acc[] in registers (4%).
 * Measured, no gain: two column vectors per block (8 accumulators, 10% slower), or a
 * partial accumulator per filter row (shorter FMA chains: not latency bound). */
FC_INLINE void DW_BLOCK(const T *const *rows, const T *w, const int R, const int S,
                        V vb, T *const *out, ptrdiff_t Q, T *tmp, const int nout)
{
    V wv[FC_DW_MAXK * FC_DW_MAXK];  /* broadcast weights, in registers when R, S are fixed */
    for (int t = 0; t < R * S; t++) wv[t] = SPLAT(w[t]);
    V acc[FC_DW_RB];
    ptrdiff_t q = 0;
    for (; q + VL <= Q; q += VL) {
        DW_VEC(rows, wv, R, S, vb, q, acc, nout);
        for (int o = 0; o < nout; o++) STORE(out[o] + q, acc[o]);
    }
    if (q < Q) {  /* the last columns: only Q - q lanes are outputs */
        DW_VEC(rows, wv, R, S, vb, q, acc, nout);
        for (int o = 0; o < nout; o++) {
            STORE(tmp, acc[o]);
            memcpy(out[o] + q, tmp, (Q - q) * sizeof(T));
        }
    }
}

FC_INLINE void DW_PLANE(const T *x, ptrdiff_t xs_h, ptrdiff_t Hi, ptrdiff_t Wi, const T *w,
                        const int R, const int S, ptrdiff_t pt, ptrdiff_t pl, T bias, T *y,
                        ptrdiff_t ys_p, ptrdiff_t p_lo, ptrdiff_t p_hi, ptrdiff_t Q, T *ring)
{
    const ptrdiff_t Lp = FC_DW_PITCH(S, Q, VL);
    const int nr = 2 * FC_DW_RB + R - 1;  /* this block's rows and the next block's */
    ptrdiff_t j0, j1;
    ring = DW_RING_INIT(ring, Wi, pl, Lp, nr, &j0, &j1);
    T *zero = ring + nr * Lp, *tmp = zero + Lp;
    const V vb = SPLAT(bias);
    ptrdiff_t staged = p_lo - pt;
    for (ptrdiff_t p0 = p_lo; p0 < p_hi; p0 += FC_DW_RB) {
        const int nout = p_hi - p0 < FC_DW_RB ? (int)(p_hi - p0) : FC_DW_RB;
        const T *rows[FC_DW_RB + FC_DW_MAXK];
        T *out[FC_DW_RB];
        DW_ROWS(x, xs_h, Hi, j0, j1, pl, Lp, nr, ring, zero, p0 - pt, nout + R - 1, &staged, rows);
        for (int o = 0; o < nout; o++) out[o] = y + (p0 + o) * ys_p;
        switch (nout) {  /* a constant block height keeps acc[] in registers */
        case 1: DW_BLOCK(rows, w, R, S, vb, out, Q, tmp, 1); break;
        case 2: DW_BLOCK(rows, w, R, S, vb, out, Q, tmp, 2); break;
        case 3: DW_BLOCK(rows, w, R, S, vb, out, Q, tmp, 3); break;
        default: DW_BLOCK(rows, w, R, S, vb, out, Q, tmp, FC_DW_RB); break;
        }
        /* Stage the next block's rows now: loaded right after the copy, they stalled on
         * store forwarding (the unaligned loads straddle the copy's stores). */
        DW_ROWS(x, xs_h, Hi, j0, j1, pl, Lp, nr, ring, zero, p0 + FC_DW_RB - pt, FC_DW_RB + R - 1,
                &staged, rows);
    }
}

/* y[p*ys_p + q] = bias + sum_{r<R, s<S} w[r*S + s] * x[(p + r - pt)*xs_h + q + s - pl]
 * (zero outside Hi x Wi) for p_lo <= p < p_hi, q < Q; R, S <= FC_DW_MAXK; ring holds
 * FC_DW_RING(R, S, Q, VL) elements. */
void FC_CAT3(fc_dw, TS, FC_SUFFIX)(const T *x, ptrdiff_t xs_h, ptrdiff_t Hi, ptrdiff_t Wi,
                                   const T *w, int R, int S, ptrdiff_t pt, ptrdiff_t pl,
                                   T bias, T *y, ptrdiff_t ys_p, ptrdiff_t p_lo,
                                   ptrdiff_t p_hi, ptrdiff_t Q, T *ring)
{
    if (R == 3 && S == 3)  /* constant taps: the weights live in registers */
        DW_PLANE(x, xs_h, Hi, Wi, w, 3, 3, pt, pl, bias, y, ys_p, p_lo, p_hi, Q, ring);
    else
        DW_PLANE(x, xs_h, Hi, Wi, w, R, S, pt, pl, bias, y, ys_p, p_lo, p_hi, Q, ring);
}

FC_INLINE void DWW_BLOCK(const T *const *rows, const T *const *dys, const int R, const int S,
                         ptrdiff_t Q, V *acc, T *tmp, const int nout)
{
    V a[FC_DW_MAXK * FC_DW_MAXK];  /* a local copy the compiler keeps in registers */
    for (int t = 0; t < R * S; t++) a[t] = acc[t];
    for (ptrdiff_t q = 0; q < Q; q += VL) {
        V d[FC_DW_RB];
        if (q + VL <= Q) {
            for (int o = 0; o < nout; o++) d[o] = LOAD(dys[o] + q);
        } else {  /* the last columns: lanes past Q must be zero */
            for (int o = 0; o < nout; o++) {
                memset(tmp, 0, VL * sizeof(T));
                memcpy(tmp, dys[o] + q, (Q - q) * sizeof(T));
                d[o] = LOAD(tmp);
            }
        }
        _Pragma("GCC unroll 16") for (int i = 0; i < nout + R - 1; i++) {
            V v[FC_DW_MAXK];
            DW_ROW_VECS(rows[i], q, S, v);
            _Pragma("GCC unroll 16") for (int s = 0; s < S; s++)
                _Pragma("GCC unroll 16") for (int o = 0; o < nout; o++)
                    if (i - o >= 0 && i - o < R) a[(i - o) * S + s] += d[o] * v[s];
        }
    }
    for (int t = 0; t < R * S; t++) acc[t] = a[t];
}

FC_INLINE void DWW_PLANE(const T *x, ptrdiff_t xs_h, ptrdiff_t Hi, ptrdiff_t Wi, const T *dy,
                         ptrdiff_t ys_p, ptrdiff_t P, ptrdiff_t Q, const int R, const int S,
                         ptrdiff_t pt, ptrdiff_t pl, T *acc, T *ring)
{
    const ptrdiff_t Lp = FC_DW_PITCH(S, Q, VL);
    const int nr = 2 * FC_DW_RB + R - 1;  /* this block's rows and the next block's */
    ptrdiff_t j0, j1;
    ring = DW_RING_INIT(ring, Wi, pl, Lp, nr, &j0, &j1);
    T *zero = ring + nr * Lp, *tmp = zero + Lp;
    V a[FC_DW_MAXK * FC_DW_MAXK];
    for (int t = 0; t < R * S; t++) a[t] = (V){0};
    ptrdiff_t staged = -pt;
    for (ptrdiff_t p0 = 0; p0 < P; p0 += FC_DW_RB) {
        const int nout = P - p0 < FC_DW_RB ? (int)(P - p0) : FC_DW_RB;
        const T *rows[FC_DW_RB + FC_DW_MAXK];
        const T *dys[FC_DW_RB];
        DW_ROWS(x, xs_h, Hi, j0, j1, pl, Lp, nr, ring, zero, p0 - pt, nout + R - 1, &staged, rows);
        for (int o = 0; o < nout; o++) dys[o] = dy + (p0 + o) * ys_p;
        switch (nout) {
        case 1: DWW_BLOCK(rows, dys, R, S, Q, a, tmp, 1); break;
        case 2: DWW_BLOCK(rows, dys, R, S, Q, a, tmp, 2); break;
        case 3: DWW_BLOCK(rows, dys, R, S, Q, a, tmp, 3); break;
        default: DWW_BLOCK(rows, dys, R, S, Q, a, tmp, FC_DW_RB); break;
        }
        DW_ROWS(x, xs_h, Hi, j0, j1, pl, Lp, nr, ring, zero, p0 + FC_DW_RB - pt, FC_DW_RB + R - 1,
                &staged, rows);  /* ahead, as in DW_PLANE */
    }
    for (int t = 0; t < R * S; t++) acc[t] += HSUM(a[t]);
}

/* acc[r*S + s] += sum_{p<P, q<Q} dy[p*ys_p + q] * x[(p + r - pt)*xs_h + q + s - pl]
 * (zero outside Hi x Wi), one fixed order; R, S <= FC_DW_MAXK. */
void FC_CAT3(fc_dww, TS, FC_SUFFIX)(const T *x, ptrdiff_t xs_h, ptrdiff_t Hi, ptrdiff_t Wi,
                                    const T *dy, ptrdiff_t ys_p, ptrdiff_t P, ptrdiff_t Q,
                                    int R, int S, ptrdiff_t pt, ptrdiff_t pl, T *acc, T *ring)
{
    if (R == 3 && S == 3)
        DWW_PLANE(x, xs_h, Hi, Wi, dy, ys_p, P, Q, 3, 3, pt, pl, acc, ring);
    else
        DWW_PLANE(x, xs_h, Hi, Wi, dy, ys_p, P, Q, R, S, pt, pl, acc, ring);
}

#undef DW_ROWS
#undef DW_VEC
#undef DW_RING_INIT
#undef DW_ROW_VECS
#undef DW_BLOCK
#undef DW_PLANE
#undef DWW_BLOCK
#undef DWW_PLANE

#include "pointwise_kernels_tmpl.h"
#include "winograd_kernels_tmpl.h"
#include "depthwise_lanes_tmpl.h"

#undef V
#undef VL
#undef LOAD
#undef STORE
#undef HSUM
#undef SPLAT
#undef CONV_BODY
#undef CONV1_BODY
#undef WGRAD_BODY
#undef KVEC_BODY
