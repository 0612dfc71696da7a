# ---------------------------------------------------------------------------------------
# Depthwise layers on small maps (NCHW, any stride, dilation and padding): the channels
# in the vector lanes (fc_dwl_* in csrc/depthwise_lanes_tmpl.h).
#
# A work item is VL channels (one vector of them) of one image. Their planes are staged,
# zero-padded, into one buffer with the channel innermost, so every tap of every output
# is one vector FMA however narrow the rows are, and the result is transposed back into
# the channels' planes. On 7x7 and 14x14 maps the flat planes (_depthwise_flat.pxi) fill
# 7 or 14 of 16 lanes per row and pay their set-up once per plane; here nothing depends
# on the width.
#   forward:     y[p, q] = sum_t w[t] x[p*sh + r*dh - pt, q*sw + s*dw - pl];
#   grad_input:  each phase (alpha, beta) of grad_x is a correlation of grad_y, staged
#                with Kmax rows and Lmax columns of zeros in front, over the taps that
#                land on that phase (as in _dwf_grad_input): no inserted zero is read;
#   grad_weight: an item is a channel block; it sums its images in order n = 0, 1, ...
# Every output element is written by one item in one fixed order, and grad_weight's
# sums do not depend on the split: bitwise the same results for any thread count.
# _DWL_MODE: 0 auto (the rule in _dwl_fits), 1 never, 2 always (tests, measurements).
cdef int _DWL_MODE = 0
# The workspace bound: staged positions of one item (rows x columns of the padded
# plane). 64 x 64 positions of 16 lanes are 256 KiB a thread (float32, AVX-512).
cdef Py_ssize_t _DWL_MAX_POS = 64 * 64
# The auto rule: output maps of at most this many positions, at stride 1 and dilation 1
# (where the ring kernel takes wide rows) and otherwise (see _dwl_fits).
cdef Py_ssize_t _DWL_AUTO_MAX_OUT_UNIT = 14 * 14
cdef Py_ssize_t _DWL_AUTO_MAX_OUT = 28 * 28


def _set_depthwise_lanes(int mode):
    """Testing and tuning hook: 0 lets dispatch choose the lane-channel depthwise path,
    1 forbids it, 2 sends every NCHW depthwise layer that fits its workspace to it."""
    global _DWL_MODE
    if mode not in (0, 1, 2):
        raise ValueError(f"mode must be 0 (auto), 1 (never) or 2 (always); got {mode!r}")
    _DWL_MODE = mode


cdef inline Py_ssize_t _dwl_grad_input_rows(const _Conv* cv) noexcept:
    # Rows of grad_y's staged plane: Umax + Kmax + 1 (see _dwl_grad_input).
    return ((cv.pad_top + cv.H - 1) // cv.stride_h
            + ((cv.R - 1) * cv.dil_h) // cv.stride_h + 1)


cdef inline Py_ssize_t _dwl_grad_input_cols(const _Conv* cv) noexcept:
    return ((cv.pad_left + cv.W - 1) // cv.stride_w
            + ((cv.S - 1) * cv.dil_w) // cv.stride_w + 1)


cdef bint _dwl_fits(const _Conv* cv, int layout) noexcept:
    if (_DWL_MODE == 1 or _DW_MODE != 0 or layout != LAYOUT_NCHW or cv.Cg != 1
            or cv.Kg != 1 or cv.pad_top < 0 or cv.pad_left < 0):
        return False
    cdef Py_ssize_t hs = (cv.P - 1) * cv.stride_h + (cv.R - 1) * cv.dil_h + 1
    cdef Py_ssize_t ws = (cv.Q - 1) * cv.stride_w + (cv.S - 1) * cv.dil_w + 1
    if (hs * ws > _DWL_MAX_POS or cv.H * cv.W > _DWL_MAX_POS
            or _dwl_grad_input_rows(cv) * _dwl_grad_input_cols(cv) > _DWL_MAX_POS):
        return False
    # Measured (Sapphire Rapids, AVX-512, 2 threads, MobileNetV2's depthwise layers at
    # N = 8, 3 x 3; ms lanes / the flat planes or the ring kernel, forward, grad_input,
    # grad_weight): 960@7 0.36/0.69, 0.21/0.60, 0.18/0.81; 384@14 0.34/0.43, 0.33/0.41,
    # 0.31/0.53; 576@14 s2 0.36/0.97, 0.27/1.14, 0.31/1.14; 144@56 s2 0.93/1.28,
    # 1.26/2.05, 0.84/1.06. The ring kernel keeps stride-1 maps from 28 x 28 on (192@28
    # 0.67/0.50, 0.66/0.53, 0.55/0.48; 144@56 2.20/1.17).
    if _DWL_MODE == 2:
        return True
    if cv.stride_h == 1 and cv.stride_w == 1 and cv.dil_h == 1 and cv.dil_w == 1:
        return cv.P * cv.Q <= _DWL_AUTO_MAX_OUT_UNIT
    return cv.P * cv.Q <= _DWL_AUTO_MAX_OUT


cdef floating* _dwl_weights(const floating* w, Py_ssize_t C, Py_ssize_t taps,
                            const Py_ssize_t* order, Py_ssize_t vl) noexcept nogil:
    # wv[(cb*taps + j)*vl + l] = w[(cb*vl + l)*taps + order[j]], zero past channel C:
    # each tap's weights of a channel block as one vector. NULL when out of memory.
    cdef Py_ssize_t cbs = (C + vl - 1) // vl, c, j
    cdef floating* wv = <floating*>calloc(cbs * taps * vl + 1, sizeof(floating))
    if wv == NULL:
        return NULL
    for c in range(C):
        for j in range(taps):
            wv[((c // vl) * taps + j) * vl + c % vl] = w[c * taps + order[j]]
    return wv


cdef inline void _dwl_stage(const floating* src, Py_ssize_t plane, int nc, Py_ssize_t rows,
                            Py_ssize_t cols, Py_ssize_t spitch, Py_ssize_t dpitch,
                            floating* dst) noexcept nogil:
    if floating is float:
        _K.dwl_stage_f32(src, plane, nc, rows, cols, spitch, dpitch, dst)
    else:
        _K.dwl_stage_f64(src, plane, nc, rows, cols, spitch, dpitch, dst)


cdef inline void _dwl_unstage(const floating* src, const ptrdiff_t* pos, Py_ssize_t n,
                              int nc, const floating* bias, floating* dst,
                              Py_ssize_t plane) noexcept nogil:
    if floating is float:
        _K.dwl_unstage_f32(src, pos, n, nc, bias, dst, plane)
    else:
        _K.dwl_unstage_f64(src, pos, n, nc, bias, dst, plane)


cdef inline void _dwl_corr(const floating* src, const ptrdiff_t* posoff, Py_ssize_t npos,
                           const ptrdiff_t* tapoff, Py_ssize_t ntaps, const floating* wv,
                           floating* out) noexcept nogil:
    if floating is float:
        _K.dwl_corr_f32(src, posoff, npos, tapoff, ntaps, wv, out)
    else:
        _K.dwl_corr_f64(src, posoff, npos, tapoff, ntaps, wv, out)


cdef int _dwl_source(const _Conv* cv, Py_ssize_t vl, ptrdiff_t* posoff, ptrdiff_t* tapoff,
                     Py_ssize_t* dims) noexcept:
    # x's staged plane (forward, grad_weight): dims = (rows, pitch, staged rows, staged
    # columns) with x[h, w] at buffer position (h + pt)*pitch + w + pl, and the offsets
    # of output p*Q + q and of tap r*S + s from it, in elements.
    cdef Py_ssize_t hs = (cv.P - 1) * cv.stride_h + (cv.R - 1) * cv.dil_h + 1
    cdef Py_ssize_t ws = (cv.Q - 1) * cv.stride_w + (cv.S - 1) * cv.dil_w + 1
    cdef Py_ssize_t p, q, r, s
    for p in range(cv.P):
        for q in range(cv.Q):
            posoff[p * cv.Q + q] = (p * cv.stride_h * ws + q * cv.stride_w) * vl
    for r in range(cv.R):
        for s in range(cv.S):
            tapoff[r * cv.S + s] = (r * cv.dil_h * ws + s * cv.dil_w) * vl
    dims[0], dims[1] = hs, ws
    # Rows past hs - pt (columns past ws - pl) meet no output.
    dims[2] = max(0, min(cv.H, hs - cv.pad_top))
    dims[3] = max(0, min(cv.W, ws - cv.pad_left))
    return 0


cdef int _dwl_forward(const floating* x, const floating* w, const floating* bias,
                      floating* y, const _Conv* cv, int n_threads) except -1:
    cdef:
        Py_ssize_t vl = _K.vbytes // sizeof(floating), taps = cv.R * cv.S
        Py_ssize_t C = cv.C, HW = cv.H * cv.W, PQ = cv.P * cv.Q
        Py_ssize_t cbs = (C + vl - 1) // vl, items = cv.N * cbs, i, n, cb, nthr, tid, per
        Py_ssize_t dims[4]
        Py_ssize_t* order = <Py_ssize_t*>malloc((taps + 1) * sizeof(Py_ssize_t))
        ptrdiff_t* posoff = <ptrdiff_t*>malloc((PQ + 1) * sizeof(ptrdiff_t))
        ptrdiff_t* tapoff = <ptrdiff_t*>malloc((taps + 1) * sizeof(ptrdiff_t))
        floating* wv = NULL
        floating* buf = NULL
        floating* xs
        int nc
        unsigned csr
    nthr = max(1, min(n_threads, items))
    try:
        if order == NULL or posoff == NULL or tapoff == NULL:
            raise MemoryError()
        for i in range(taps):
            order[i] = i
        _dwl_source(cv, vl, posoff, tapoff, dims)
        wv = _dwl_weights(w, C, taps, order, vl)
        per = _round_up(dims[0] * dims[1] * vl, 16) + _round_up(PQ * vl, 16)
        # zeroed once: every item writes the same positions, so the padding stays zero
        buf = <floating*>calloc(nthr * per + 16, sizeof(floating))
        if wv == NULL or buf == NULL:
            raise MemoryError()
        with nogil, parallel(num_threads=nthr):
            tid = threadid()
            csr = fc_ftz_enter()
            for i in prange(items, schedule='static'):
                n, cb = i // cbs, i % cbs
                nc = <int>min(vl, C - cb * vl)
                xs = buf + tid * per
                _dwl_stage(x + (n * C + cb * vl) * HW, HW, nc, dims[2], dims[3], cv.W,
                           dims[1], xs + (cv.pad_top * dims[1] + cv.pad_left) * vl)
                _dwl_corr(xs, posoff, PQ, tapoff, taps, wv + cb * taps * vl,
                          xs + _round_up(dims[0] * dims[1] * vl, 16))
                _dwl_unstage(xs + _round_up(dims[0] * dims[1] * vl, 16), NULL, PQ, nc,
                             bias + cb * vl if bias != NULL else NULL,
                             y + (n * C + cb * vl) * PQ, PQ)
            fc_ftz_leave(csr)
    finally:
        free(order)
        free(posoff)
        free(tapoff)
        free(wv)
        free(buf)
    return 0


cdef int _dwl_grad_input(const floating* grad_y, const floating* w, floating* grad_x,
                         const _Conv* cv, int n_threads) except -1:
    # grad_x[h, w] for h + pt = u0*sh + alpha, w + pl = v0*sw + beta is the sum over the
    # taps with r*dh = alpha (mod sh), s*dw = beta (mod sw) of w[r, s] * grad_y[u0 -
    # (r*dh)//sh, v0 - (s*dw)//sw]; grad_y is staged with Kmax rows and Lmax columns of
    # zeros in front, and zeros behind up to row Umax, column Vmax. Positions are listed
    # phase by phase (pos[k]: where in the plane), each phase with its own taps.
    cdef:
        Py_ssize_t vl = _K.vbytes // sizeof(floating), sh = cv.stride_h, sw = cv.stride_w
        Py_ssize_t R = cv.R, S = cv.S, taps = R * S, C = cv.C, HW = cv.H * cv.W
        Py_ssize_t PQ = cv.P * cv.Q, nph = sh * sw
        Py_ssize_t Kmax = ((R - 1) * cv.dil_h) // sh, Lmax = ((S - 1) * cv.dil_w) // sw
        Py_ssize_t Umax = (cv.pad_top + cv.H - 1) // sh, Vmax = (cv.pad_left + cv.W - 1) // sw
        Py_ssize_t Hg = Umax + Kmax + 1, Wg = Vmax + Lmax + 1
        Py_ssize_t cbs = (C + vl - 1) // vl, items = cv.N * cbs
        Py_ssize_t i, n, cb, nthr, tid, per, gsz, ph, j, k, h, ww, r, s, a, b
        Py_ssize_t* order = <Py_ssize_t*>malloc((taps + 1) * sizeof(Py_ssize_t))
        Py_ssize_t* first = <Py_ssize_t*>malloc((nph + 1) * sizeof(Py_ssize_t))
        Py_ssize_t* pfirst = <Py_ssize_t*>malloc((nph + 1) * sizeof(Py_ssize_t))
        ptrdiff_t* tapoff = <ptrdiff_t*>malloc((taps + 1) * sizeof(ptrdiff_t))
        ptrdiff_t* posoff = <ptrdiff_t*>malloc((HW + 1) * sizeof(ptrdiff_t))
        ptrdiff_t* pos = <ptrdiff_t*>malloc((HW + 1) * sizeof(ptrdiff_t))
        floating* wv = NULL
        floating* buf = NULL
        floating* gs
        floating* out
        int nc
        unsigned csr
    nthr = max(1, min(n_threads, items))
    try:
        if (order == NULL or first == NULL or pfirst == NULL or tapoff == NULL
                or posoff == NULL or pos == NULL):
            raise MemoryError()
        j = 0
        k = 0
        for ph in range(nph):
            a, b = ph // sw, ph % sw
            first[ph] = j
            for r in range(R):
                for s in range(S):
                    if (r * cv.dil_h) % sh == a and (s * cv.dil_w) % sw == b:
                        order[j] = r * S + s
                        tapoff[j] = ((Kmax - (r * cv.dil_h) // sh) * Wg
                                     + Lmax - (s * cv.dil_w) // sw) * vl
                        j += 1
            pfirst[ph] = k
            for h in range(cv.H):
                if (h + cv.pad_top) % sh != a:
                    continue
                for ww in range(cv.W):
                    if (ww + cv.pad_left) % sw == b:
                        pos[k] = h * cv.W + ww
                        posoff[k] = (((h + cv.pad_top) // sh) * Wg
                                     + (ww + cv.pad_left) // sw) * vl
                        k += 1
        first[nph], pfirst[nph] = j, k
        wv = _dwl_weights(w, C, taps, order, vl)
        gsz = _round_up(Hg * Wg * vl, 16)
        per = gsz + _round_up(HW * vl, 16)
        buf = <floating*>calloc(nthr * per + 16, sizeof(floating))
        if wv == NULL or buf == NULL:
            raise MemoryError()
        with nogil, parallel(num_threads=nthr):
            tid = threadid()
            csr = fc_ftz_enter()
            for i in prange(items, schedule='static'):
                n, cb = i // cbs, i % cbs
                nc = <int>min(vl, C - cb * vl)
                gs = buf + tid * per
                out = gs + gsz
                _dwl_stage(grad_y + (n * C + cb * vl) * PQ, PQ, nc, min(cv.P, Umax + 1),
                           min(cv.Q, Vmax + 1), cv.Q, Wg, gs + (Kmax * Wg + Lmax) * vl)
                for ph in range(nph):
                    _dwl_corr(gs, posoff + pfirst[ph], pfirst[ph + 1] - pfirst[ph],
                              tapoff + first[ph], first[ph + 1] - first[ph],
                              wv + (cb * taps + first[ph]) * vl, out + pfirst[ph] * vl)
                _dwl_unstage(out, pos, HW, nc, NULL, grad_x + (n * C + cb * vl) * HW, HW)
            fc_ftz_leave(csr)
    finally:
        free(order)
        free(first)
        free(pfirst)
        free(tapoff)
        free(posoff)
        free(pos)
        free(wv)
        free(buf)
    return 0


cdef int _dwl_grad_weight(const floating* grad_y, const floating* x, floating* grad_w,
                          const _Conv* cv, int n_threads) except -1:
    # grad_w[c, t] = sum_n sum_i grad_y[n, c, i] * xs_n,c[posoff[i] + tapoff[t]], the
    # taps padded to a multiple of FC_DWL_TB with offset 0 (their sums are dropped).
    cdef:
        Py_ssize_t vl = _K.vbytes // sizeof(floating), taps = cv.R * cv.S
        Py_ssize_t tpad = (taps + FC_DWL_TB - 1) // FC_DWL_TB * FC_DWL_TB
        Py_ssize_t C = cv.C, HW = cv.H * cv.W, PQ = cv.P * cv.Q
        Py_ssize_t cbs = (C + vl - 1) // vl, cb, n, t, l, nthr, tid, per, xsz, gsz
        Py_ssize_t dims[4]
        ptrdiff_t* posoff = <ptrdiff_t*>malloc((PQ + 1) * sizeof(ptrdiff_t))
        ptrdiff_t* tapoff = <ptrdiff_t*>calloc(tpad + 1, sizeof(ptrdiff_t))
        floating* buf = NULL
        floating* xs
        floating* g
        floating* acc
        int nc
        unsigned csr
    nthr = max(1, min(n_threads, cbs))
    try:
        if posoff == NULL or tapoff == NULL:
            raise MemoryError()
        _dwl_source(cv, vl, posoff, tapoff, dims)
        xsz = _round_up(dims[0] * dims[1] * vl, 16)
        gsz = _round_up(PQ * vl, 16)
        per = xsz + gsz + _round_up(tpad * vl, 16)
        buf = <floating*>calloc(nthr * per + 16, sizeof(floating))
        if buf == NULL:
            raise MemoryError()
        with nogil, parallel(num_threads=nthr):
            tid = threadid()
            csr = fc_ftz_enter()
            for cb in prange(cbs, schedule='static'):
                nc = <int>min(vl, C - cb * vl)
                xs = buf + tid * per
                g = xs + xsz
                acc = g + gsz
                memset(acc, 0, tpad * vl * sizeof(floating))
                for n in range(cv.N):
                    _dwl_stage(x + (n * C + cb * vl) * HW, HW, nc, dims[2], dims[3], cv.W,
                               dims[1], xs + (cv.pad_top * dims[1] + cv.pad_left) * vl)
                    _dwl_stage(grad_y + (n * C + cb * vl) * PQ, PQ, nc, cv.P, cv.Q, cv.Q,
                               cv.Q, g)
                    if floating is float:
                        _K.dwl_wgrad_f32(xs, posoff, PQ, tapoff, tpad, g, acc)
                    else:
                        _K.dwl_wgrad_f64(xs, posoff, PQ, tapoff, tpad, g, acc)
                for l in range(nc):
                    for t in range(taps):
                        grad_w[(cb * vl + l) * taps + t] = acc[t * vl + l]
            fc_ftz_leave(csr)
    finally:
        free(posoff)
        free(tapoff)
        free(buf)
    return 0


def _depthwise_path(Py_ssize_t N, Py_ssize_t C, Py_ssize_t H, Py_ssize_t W, Py_ssize_t R,
                    Py_ssize_t S, Py_ssize_t P, Py_ssize_t Q, Py_ssize_t stride_h,
                    Py_ssize_t stride_w, Py_ssize_t dil_h, Py_ssize_t dil_w,
                    Py_ssize_t pad_top, Py_ssize_t pad_left):
    """Testing hook: which NCHW depthwise path a layer's passes take, "lanes", "flat" or
    "other" (the ring kernel, the plane loops or the tiles)."""
    cdef _Conv cv = _make_conv(N, C, H, W, C, R, S, P, Q, C, stride_h, stride_w, dil_h,
                               dil_w, pad_top, pad_left, LAYOUT_NCHW)
    if _dwl_fits(&cv, LAYOUT_NCHW):
        return "lanes"
    return "flat" if _dwf_fits(&cv, LAYOUT_NCHW) else "other"
