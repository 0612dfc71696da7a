# ---------------------------------------------------------------------------------------
# Depthwise layers on small maps (NCHW, any stride and dilation): the flat-plane path.
#
# The ring kernel (fc_dw) computes an output row as vectors across its Q columns, so a
# 7-wide row fills 7 of 16 AVX-512 lanes and pays its set-up on every plane, and the
# strided plane loops (_dws_run) are scalar. MobileNetV2's depthwise layers on 14x14
# and 7x7 maps ran 3-5x slower than PyTorch in every pass (Zen 4, 2026-12-07).
#
# Here one channel plane is staged, zero-padded, into sh*sw phase planes of pitch Wph:
#     ph[a, b][u, v] = x[u*sh + a - pt, v*sw + b - pl]      (0 outside x)
# so that tap (r, s) of output (p, q) is ph[r*dh % sh, s*dw % sw][p + r*dh // sh,
# q + s*dw // sw]: one constant offset per tap from the flat index p*Wph + q. All P*Wph
# flat outputs are then one run of whole vectors, computed by fc_conv1 (forward,
# grad_input) or reduced by fc_wgrad (grad_weight); only the Wph - Q columns past each
# output row are wasted. A thread's staging buffer is zeroed once and every plane writes
# the same positions into it, so its padding stays zero.
#
# grad_input stages grad_y the same way, padded by Kmax rows and Lmax columns, and
# computes each phase (alpha, beta) of grad_x as a stride-1 correlation over the taps
# that land on it (r*dh = alpha mod sh, s*dw = beta mod sw): no inserted zero is read.
# grad_weight gives each channel to one thread, which sums its images in order n = 0,
# 1, ...: bitwise the same result for any thread count.
#
# _DWF_MODE: 0 auto (the rule in _dwf_fits), 1 never, 2 always (tests, measurements).
cdef int _DWF_MODE = 0
# The auto rule for layers the ring kernel can take: output rows at most this wide.
cdef Py_ssize_t _DWF_MAX_Q = 16


def _set_depthwise_flat(int mode):
    """Testing and tuning hook: 0 lets dispatch choose the flat-plane depthwise path,
    1 forbids it, 2 sends every NCHW depthwise layer to it."""
    global _DWF_MODE
    if mode not in (0, 1, 2):
        raise ValueError(f"mode must be 0 (auto), 1 (never) or 2 (always); got {mode!r}")
    _DWF_MODE = mode


cdef bint _dwf_fits(const _Conv* cv, int layout) noexcept:
    if (_DWF_MODE == 1 or _DW_MODE != 0 or layout != LAYOUT_NCHW or cv.Cg != 1
            or cv.Kg != 1):
        return False
    # Stride 1, dilation 1: the ring kernel wins from 28-wide rows on (Zen 4, AVX-512,
    # N=8, 3x3, ms ring / flat: 192@28 forward 0.78/0.81, 144@56 0.93/2.07, 32@112
    # 0.89/1.52) and loses below (576@14 0.72/0.47, 960@7 0.91/0.52 forward; 0.81/0.52
    # and 1.45/0.78 grad_weight). Strided, dilated or larger filters: the flat planes
    # beat the scalar plane loops in every pass, 1.4-3.5x from 7x7 to 56x56 outputs
    # (192@28 s2 grad_input 2.45/0.70), and tie at 112 -> 56 (96 channels, forward
    # 3.06/3.09, grad_input 5.54/4.69).
    return _DWF_MODE == 2 or not _dw_fits(cv, layout) or cv.Q <= _DWF_MAX_Q


ctypedef struct _Flat:
    Py_ssize_t sh, sw      # the stride: phase planes per row and per column
    Py_ssize_t Hph, Wph    # rows and pitch of one phase plane
    Py_ssize_t plane       # Hph * Wph
    Py_ssize_t pt, pl      # padding in front (>= 0)
    Py_ssize_t h1, w1      # staged part of the source plane: rows < h1, columns < w1
    Py_ssize_t size        # elements of the staging buffer, zero slack included
    Py_ssize_t* rowoff     # h < h1: where source row h starts in the buffer (phase b 0)


cdef _Flat _flat_phases(Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t Hph, Py_ssize_t Wph,
                        Py_ssize_t pt, Py_ssize_t pl, Py_ssize_t H, Py_ssize_t W,
                        Py_ssize_t vl) except *:
    # The caller frees f.rowoff.
    cdef _Flat f
    f.sh, f.sw, f.Hph, f.Wph, f.plane, f.pt, f.pl = sh, sw, Hph, Wph, Hph * Wph, pt, pl
    # Rows past sh*Hph - pt (and columns past sw*Wph - pl) meet no output.
    f.h1 = max(0, min(H, sh * Hph - pt))
    f.w1 = max(0, min(W, sw * Wph - pl))
    # The last flat vector of outputs reads up to vl - 1 + Wph elements past the
    # planes; the slack is zero (or any finite value: those outputs are discarded).
    f.size = _round_up(sh * sw * f.plane + Wph + (FC_NV1 + 1) * vl, 16)
    # Worked out once: a division per row and plane cost half the forward's time on
    # 7x7 maps (idiv, Zen 4).
    f.rowoff = <Py_ssize_t*>malloc((f.h1 + 1) * sizeof(Py_ssize_t))
    if f.rowoff == NULL:
        raise MemoryError()
    cdef Py_ssize_t h
    for h in range(f.h1):
        f.rowoff[h] = ((h + pt) % sh) * sw * f.plane + ((h + pt) // sh) * Wph
    return f


cdef _Flat _flat_source(const _Conv* cv, Py_ssize_t vl, ptrdiff_t* tapoff) except *:
    # The phase planes of x (forward, grad_weight), and tapoff[r*S + s] of each tap from
    # the flat output index p*Wph + q.
    cdef Py_ssize_t sh = cv.stride_h, sw = cv.stride_w, r, s, dr, ds
    cdef Py_ssize_t Wph = cv.Q + ((cv.S - 1) * cv.dil_w) // sw
    cdef _Flat f = _flat_phases(sh, sw, cv.P + ((cv.R - 1) * cv.dil_h) // sh, Wph,
                                cv.pad_top, cv.pad_left, cv.H, cv.W, vl)
    for r in range(cv.R):
        for s in range(cv.S):
            dr, ds = r * cv.dil_h, s * cv.dil_w
            tapoff[r * cv.S + s] = (((dr % sh) * sw + ds % sw) * f.plane
                                    + (dr // sh) * Wph + ds // sw)
    return f


cdef inline void _flat_stage(const floating* src, Py_ssize_t W, const _Flat* f,
                             floating* ph) noexcept nogil:
    # ph[(a*sw + b)*plane + u*Wph + v] = src[h, w] where h + pt = u*sh + a and
    # w + pl = v*sw + b, for h < h1 and w < w1.
    cdef Py_ssize_t h, b, w, w0, j, sw = f.sw
    cdef floating* dst
    cdef const floating* sr
    for h in range(f.h1):
        sr = src + h * W
        dst = ph + f.rowoff[h]
        if sw == 1:
            dst = dst + f.pl
            for w in range(f.w1):  # a loop: memcpy calls cost 18% of 7x7 forwards
                dst[w] = sr[w]
            continue
        for b in range(sw):
            w0 = (b + sw - f.pl % sw) % sw  # the first column of phase b
            j = b * f.plane + (w0 + f.pl) // sw
            w = w0
            if sw == 2:  # a constant stride, which the compiler vectorises
                while w < f.w1:
                    dst[j] = sr[w]
                    j = j + 1
                    w = w + 2
            else:
                while w < f.w1:
                    dst[j] = sr[w]
                    j = j + 1
                    w = w + sw


cdef inline void _flat_corr(const floating* src, const ptrdiff_t* tapoff, Py_ssize_t ntaps,
                            const floating* wt, floating* out, Py_ssize_t m_lo,
                            Py_ssize_t m_hi, Py_ssize_t vl) noexcept nogil:
    # out[m] = sum_t wt[t] * src[tapoff[t] + m] for m_lo <= m < m_hi (multiples of vl).
    cdef Py_ssize_t m = m_lo, nv
    while m < m_hi:
        nv = min(<Py_ssize_t>FC_NV1, (m_hi - m) // vl)
        if floating is float:
            _K.conv1_f32(src + m, 0, 1, tapoff, ntaps, wt, out + m, <int>nv)
        else:
            _K.conv1_f64(src + m, 0, 1, tapoff, ntaps, wt, out + m, <int>nv)
        m = m + nv * vl


cdef void _dwf_forward_plane(const floating* x, const floating* wt, floating b,
                             floating* y, const _Conv* cv, const _Flat* f,
                             const ptrdiff_t* tapoff, Py_ssize_t M, floating* ph,
                             floating* out, Py_ssize_t vl) noexcept nogil:
    cdef Py_ssize_t p, q
    cdef floating* yr
    cdef const floating* orow
    _flat_stage(x, cv.W, f, ph)
    _flat_corr(ph, tapoff, cv.R * cv.S, wt, out, 0, M, vl)
    for p in range(cv.P):
        yr = y + p * cv.Q
        orow = out + p * f.Wph
        for q in range(cv.Q):
            yr[q] = orow[q] + b


cdef int _dwf_forward(const floating* x, const floating* w, const floating* bias,
                      floating* y, const _Conv* cv, int n_threads) except -1:
    # y[n, c, p, q] = bias[c] + sum_{r, s} w[c, r, s] * x[n, c, p*sh + r*dh - pt,
    # q*sw + s*dw - pl]; one plane per work item.
    cdef:
        Py_ssize_t vl = _K.vbytes // sizeof(floating)
        Py_ssize_t taps = cv.R * cv.S, C = cv.C, planes = cv.N * cv.C
        Py_ssize_t M, per, nthr, tid, i, c
        _Flat f
        unsigned csr
        ptrdiff_t* tapoff = <ptrdiff_t*>malloc((taps + 1) * sizeof(ptrdiff_t))
        floating* buf = NULL
    f.rowoff = NULL
    nthr = max(1, min(n_threads, planes))
    try:
        if tapoff == NULL:
            raise MemoryError()
        f = _flat_source(cv, vl, tapoff)
        M = _round_up(cv.P * f.Wph, vl)
        per = f.size + _round_up(M, 16)
        buf = <floating*>calloc(nthr * per + 16, sizeof(floating))
        if buf == NULL:
            raise MemoryError()
        with nogil, parallel(num_threads=nthr):
            tid = threadid()
            csr = fc_ftz_enter()
            for i in prange(planes, schedule='static'):
                c = i % C
                _dwf_forward_plane(x + i * cv.H * cv.W, w + c * taps,
                                   bias[c] if bias != NULL else 0, y + i * cv.P * cv.Q,
                                   cv, &f, tapoff, M, buf + tid * per,
                                   buf + tid * per + f.size, vl)
            fc_ftz_leave(csr)
    finally:
        free(f.rowoff)
        free(tapoff)
        free(buf)
    return 0


cdef void _dwf_grad_input_plane(const floating* gy, const floating* wq, floating* gx,
                                const _Conv* cv, const _Flat* g, const ptrdiff_t* tapoff,
                                const Py_ssize_t* first, const Py_ssize_t* lim,
                                floating* G, floating* out, Py_ssize_t vl) noexcept nogil:
    # Phase ph = (alpha, beta) of grad_x: gx[u*sh + alpha - pt, v*sw + beta - pl] =
    # sum over its taps of w[r, s] * G[flat u*Wg + v + tapoff[t]], for lim[6*ph] <= u <
    # lim[6*ph + 1] and lim[6*ph + 2] <= v < lim[6*ph + 3]; lim[6*ph + 4] is the first
    # grad_x row of the phase, lim[6*ph + 5] its first column.
    cdef Py_ssize_t ph, u0, u1, v0, v1, u, v, nt, sh = cv.stride_h, sw = cv.stride_w
    cdef floating* gxr
    cdef const floating* orow
    _flat_stage(gy, cv.Q, g, G)
    for ph in range(sh * sw):
        u0, u1, v0, v1 = lim[6 * ph], lim[6 * ph + 1], lim[6 * ph + 2], lim[6 * ph + 3]
        if u1 <= u0 or v1 <= v0:
            continue
        nt = first[ph + 1] - first[ph]
        if nt > 0:
            _flat_corr(G, tapoff + first[ph], nt, wq + first[ph], out,
                       (u0 * g.Wph) // vl * vl, _round_up((u1 - 1) * g.Wph + v1, vl), vl)
        gxr = gx + lim[6 * ph + 4] * cv.W + lim[6 * ph + 5]
        for u in range(u1 - u0):
            orow = out + (u0 + u) * g.Wph + v0
            if nt == 0:  # no tap lands on this phase
                for v in range(v1 - v0):
                    gxr[v * sw] = 0
            elif sw == 1:
                for v in range(v1 - v0):
                    gxr[v] = orow[v]
            else:
                for v in range(v1 - v0):
                    gxr[v * sw] = orow[v]
            gxr = gxr + sh * cv.W


cdef int _dwf_grad_input(const floating* grad_y, const floating* w, floating* grad_x,
                         const _Conv* cv, int n_threads) except -1:
    cdef:
        Py_ssize_t vl = _K.vbytes // sizeof(floating), sh = cv.stride_h, sw = cv.stride_w
        Py_ssize_t R = cv.R, S = cv.S, taps = R * S, C = cv.C, planes = cv.N * cv.C
        Py_ssize_t Kmax = ((R - 1) * cv.dil_h) // sh, Lmax = ((S - 1) * cv.dil_w) // sw
        Py_ssize_t Umax = (cv.pad_top + cv.H - 1) // sh, Vmax = (cv.pad_left + cv.W - 1) // sw
        Py_ssize_t Wg = max(Vmax + 1, cv.Q + Lmax), Hg = Umax + Kmax + 1
        Py_ssize_t M = _round_up((Umax + 1) * Wg, vl), per, nthr, tid, i, c, t, j, ph
        Py_ssize_t r, s, alpha, beta
        # grad_y staged as one plane (stride 1) padded by Kmax rows and Lmax columns
        _Flat g = _flat_phases(1, 1, Hg, Wg, Kmax, Lmax, cv.P, cv.Q, vl)
        unsigned csr
        ptrdiff_t* tapoff = <ptrdiff_t*>malloc((taps + 1) * sizeof(ptrdiff_t))
        Py_ssize_t* first = <Py_ssize_t*>malloc((sh * sw + 2) * sizeof(Py_ssize_t))
        Py_ssize_t* lim = <Py_ssize_t*>malloc((6 * sh * sw + 1) * sizeof(Py_ssize_t))
        Py_ssize_t* order = <Py_ssize_t*>malloc((taps + 1) * sizeof(Py_ssize_t))
        floating* wq = <floating*>malloc((C * taps + 1) * sizeof(floating))
        floating* buf = NULL
    per = g.size + _round_up(M, 16)
    nthr = max(1, min(n_threads, planes))
    try:
        if tapoff == NULL or first == NULL or lim == NULL or order == NULL or wq == NULL:
            raise MemoryError()
        # The taps grouped by the phase of grad_x they land on, in (r, s) order within.
        j = 0
        for ph in range(sh * sw):
            first[ph] = j
            for r in range(R):
                if (r * cv.dil_h) % sh != ph // sw:
                    continue
                for s in range(S):
                    if (s * cv.dil_w) % sw != ph % sw:
                        continue
                    order[j] = r * S + s
                    tapoff[j] = ((Kmax - (r * cv.dil_h) // sh) * Wg
                                 + Lmax - (s * cv.dil_w) // sw)
                    j += 1
        first[sh * sw] = j
        for ph in range(sh * sw):
            alpha, beta = ph // sw, ph % sw
            # The rows u of this phase with 0 <= u*sh + alpha - pt < H; likewise columns.
            # (_end_out floors: a 1-row map at stride 2 has a phase whose last row is
            # negative, and a truncating // once wrote a row past grad_x there.)
            lim[6 * ph] = _first_out(alpha - cv.pad_top, sh)
            lim[6 * ph + 1] = _end_out(alpha - cv.pad_top, sh, cv.H, Umax + 1)
            lim[6 * ph + 2] = _first_out(beta - cv.pad_left, sw)
            lim[6 * ph + 3] = _end_out(beta - cv.pad_left, sw, cv.W, Vmax + 1)
            lim[6 * ph + 4] = lim[6 * ph] * sh + alpha - cv.pad_top
            lim[6 * ph + 5] = lim[6 * ph + 2] * sw + beta - cv.pad_left
        for c in range(C):
            for t in range(taps):
                wq[c * taps + t] = w[c * taps + order[t]]
        buf = <floating*>calloc(nthr * per + 16, sizeof(floating))
        if buf == NULL:
            raise MemoryError()
        with nogil, parallel(num_threads=nthr):
            tid = threadid()
            csr = fc_ftz_enter()
            for i in prange(planes, schedule='static'):
                c = i % C
                _dwf_grad_input_plane(grad_y + i * cv.P * cv.Q, wq + c * taps,
                                      grad_x + i * cv.H * cv.W, cv, &g, tapoff, first,
                                      lim, buf + tid * per, buf + tid * per + g.size, vl)
            fc_ftz_leave(csr)
    finally:
        free(g.rowoff)
        free(tapoff)
        free(first)
        free(lim)
        free(order)
        free(wq)
        free(buf)
    return 0


cdef int _dwf_grad_weight(const floating* grad_y, const floating* x, floating* grad_w,
                          const _Conv* cv, int n_threads) except -1:
    # grad_w[c, r, s] = sum_n sum_{p, q} grad_y[n, c, p, q] * ph_n,c[flat p*Wph + q +
    # tapoff[r, s]]: grad_y is staged at the pitch Wph of x's phase planes, and its
    # extra columns stay zero.
    cdef:
        Py_ssize_t vl = _K.vbytes // sizeof(floating)
        Py_ssize_t taps = cv.R * cv.S, C = cv.C, p, n, c, t, tid, Wph, M, per, nthr, tb
        _Flat f
        unsigned csr
        ptrdiff_t* tapoff = <ptrdiff_t*>malloc((taps + 1) * sizeof(ptrdiff_t))
        floating* buf = NULL
        floating* ph
        floating* gyf
        floating* acc
    f.rowoff = NULL
    nthr = max(1, min(n_threads, C))
    try:
        if tapoff == NULL:
            raise MemoryError()
        f = _flat_source(cv, vl, tapoff)
        Wph = f.Wph
        M = _round_up(cv.P * Wph, vl)
        tb = _round_up(taps, 16)
        per = f.size + _round_up(M, 16) + 2 * tb  # planes, grad_y, sums, sums before
        buf = <floating*>calloc(nthr * per + 16, sizeof(floating))
        if buf == NULL:
            raise MemoryError()
        with nogil, parallel(num_threads=nthr):
            tid = threadid()
            csr = fc_ftz_enter()
            for c in prange(C, schedule='static'):
                ph = buf + tid * per
                gyf = ph + f.size
                acc = gyf + _round_up(M, 16)
                for t in range(taps):
                    acc[t] = 0
                for n in range(cv.N):
                    _flat_stage(x + (n * C + c) * cv.H * cv.W, cv.W, &f, ph)
                    for p in range(cv.P):
                        memcpy(gyf + p * Wph, grad_y + ((n * C + c) * cv.P + p) * cv.Q,
                               cv.Q * sizeof(floating))
                    memcpy(acc + tb, acc, taps * sizeof(floating))
                    if floating is float:
                        _K.wgrad_f32(gyf, M, 1, ph, tapoff, taps, M, acc)
                    else:
                        _K.wgrad_f64(gyf, M, 1, ph, tapoff, taps, M, acc)
                    # a lane past an output row read a non-finite x (_dw_wgrad_exact)
                    _dw_wgrad_redo(acc, acc + tb, taps, x + (n * C + c) * cv.H * cv.W,
                                   grad_y + (n * C + c) * cv.P * cv.Q, cv)
                for t in range(taps):
                    grad_w[c * taps + t] = acc[t]
            fc_ftz_leave(csr)
    finally:
        free(f.rowoff)
        free(tapoff)
        free(buf)
    return 0
