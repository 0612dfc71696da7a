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
