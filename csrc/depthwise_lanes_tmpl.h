/* Depthwise kernels with the channels in the vector lanes, for one element type;
 * included by direct_kernels_tmpl.h (which defines V, VL, LOAD, STORE for T). Not a
 * public header.
 *
 * A depthwise layer on a small map has rows too short for vectors along them: a 7-wide
 * row fills 7 of 16 AVX-512 lanes, and MobileNetV2's 960-channel 7x7 layers ran 2.5-3x
 * slower than PyTorch in every pass on the flat-plane path (Sapphire Rapids, 2 threads,
 * 2026-12-07). Here VL channels of one image are staged into one buffer with the
 * channel innermost, buf[(u*pitch + v)*VL + l] (channel c0 + l at row u, column v), so
 * every tap of every output position is one vector FMA whatever the map's width, and
 * the weights of a tap are one vector (wv[t*VL + l]). The caller (_depthwise_lanes.pxi)
 * builds the offset tables, so the kernels take no shape at all: posoff[i] is where
 * output position i's window starts in the buffer, tapoff[t] where tap t sits from
 * there, both in elements (multiples of VL).
 */

#define DWL_PB 8 /* output positions per register block of fc_dwl_corr */
#define DWL_TB FC_DWL_TB /* taps per register block of fc_dwl_wgrad: a 3 x 3 filter */

/* Staging (a transpose): dst[(h*dpitch + w)*VL + l] = src[l*plane + h*spitch + w] for
 * l < nc, h < rows, w < cols. Lanes l >= nc are left as they are. */
void FC_CAT3(fc_dwl_stage, TS, FC_SUFFIX)(const T *src, ptrdiff_t plane, int nc,
                                          ptrdiff_t rows, ptrdiff_t cols, ptrdiff_t spitch,
                                          ptrdiff_t dpitch, T *dst)
{
    for (ptrdiff_t h = 0; h < rows; h++) {
        const T *s = src + h * spitch;
        T *d = dst + h * dpitch * VL;
        if (nc == VL) {
            for (ptrdiff_t w = 0; w < cols; w++)
                for (int l = 0; l < VL; l++) d[w * VL + l] = s[l * plane + w];
        } else {
            for (ptrdiff_t w = 0; w < cols; w++)
                for (int l = 0; l < nc; l++) d[w * VL + l] = s[l * plane + w];
        }
    }
}

/* Unstaging (the transpose back): dst[l*plane + pos[i]] = src[i*VL + l] + bias[l] for
 * i < n, l < nc; pos NULL means pos[i] = i, bias NULL means no bias. */
void FC_CAT3(fc_dwl_unstage, TS, FC_SUFFIX)(const T *src, const ptrdiff_t *pos,
                                            ptrdiff_t n, int nc, const T *bias, T *dst,
                                            ptrdiff_t plane)
{
    T b[VL];
    for (int l = 0; l < VL; l++) b[l] = (bias != NULL && l < nc) ? bias[l] : 0;
    if (pos == NULL && nc == VL) {
        for (ptrdiff_t i = 0; i < n; i++)
            for (int l = 0; l < VL; l++) dst[l * plane + i] = src[i * VL + l] + b[l];
        return;
    }
    for (ptrdiff_t i = 0; i < n; i++) {
        const ptrdiff_t o = pos == NULL ? i : pos[i];
        for (int l = 0; l < nc; l++) dst[l * plane + o] = src[i * VL + l] + b[l];
    }
}

/* out[i*VL + l] = sum_{t < ntaps} wv[t*VL + l] * src[posoff[i] + tapoff[t] + l] for
 * i < npos, the taps added in order (ntaps 0 writes zeros). */
void FC_CAT3(fc_dwl_corr, TS, FC_SUFFIX)(const T *src, const ptrdiff_t *posoff,
                                         ptrdiff_t npos, const ptrdiff_t *tapoff,
                                         ptrdiff_t ntaps, const T *wv, T *out)
{
    ptrdiff_t i = 0;
    /* DWL_PB independent accumulators: the 4-cycle FMA latency times two FMA ports. */
    for (; i + DWL_PB <= npos; i += DWL_PB) {
        V acc[DWL_PB];
        const T *s[DWL_PB];
        for (int j = 0; j < DWL_PB; j++) {
            acc[j] = (V){0};
            s[j] = src + posoff[i + j];
        }
        for (ptrdiff_t t = 0; t < ntaps; t++) {
            const V w = LOAD(wv + t * VL);
            const ptrdiff_t to = tapoff[t];
            for (int j = 0; j < DWL_PB; j++) acc[j] += w * LOAD(s[j] + to);
        }
        for (int j = 0; j < DWL_PB; j++) STORE(out + (i + j) * VL, acc[j]);
    }
    for (; i < npos; i++) {
        V acc = (V){0};
        const T *s = src + posoff[i];
        for (ptrdiff_t t = 0; t < ntaps; t++) acc += LOAD(wv + t * VL) * LOAD(s + tapoff[t]);
        STORE(out + i * VL, acc);
    }
}

/* acc[t*VL + l] += sum_{i < npos} g[i*VL + l] * src[posoff[i] + tapoff[t] + l] for
 * t < ntaps, a multiple of DWL_TB (the caller pads the taps with offset 0 and
 * discards their sums); positions added in order. */
void FC_CAT3(fc_dwl_wgrad, TS, FC_SUFFIX)(const T *src, const ptrdiff_t *posoff,
                                          ptrdiff_t npos, const ptrdiff_t *tapoff,
                                          ptrdiff_t ntaps, const T *g, T *acc)
{
    for (ptrdiff_t t0 = 0; t0 + DWL_TB <= ntaps; t0 += DWL_TB) {
        V a[DWL_TB];
        ptrdiff_t to[DWL_TB];
        for (int j = 0; j < DWL_TB; j++) {
            a[j] = LOAD(acc + (t0 + j) * VL);
            to[j] = tapoff[t0 + j];
        }
        for (ptrdiff_t i = 0; i < npos; i++) {
            const V gv = LOAD(g + i * VL);
            const T *s = src + posoff[i];
            for (int j = 0; j < DWL_TB; j++) a[j] += gv * LOAD(s + to[j]);
        }
        for (int j = 0; j < DWL_TB; j++) STORE(acc + (t0 + j) * VL, a[j]);
    }
}

#undef DWL_PB
#undef DWL_TB
