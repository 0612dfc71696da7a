# ---------------------------------------------------------------------------------------
# The Winograd engine: F(m x m, 3 x 3) at stride 1 and dilation 1 (included by _direct.pyx;
# fastconv/engines/winograd.py is its wrapper, fastconv/engines/winograd_twin.py its NumPy
# twin, fastconv/_winograd_mats.py builds the transform matrices).
#
# One call is a valid correlation of a padded source (N images, G groups of Ci channels)
# with Ko 3 x 3 filters per group, onto P x Q outputs. Output tiles of m x m start every m
# rows and columns. The call runs in filter chunks (row blocks of filters, as many as
# _WINO_FILTER_BYTES holds) and, inside each, source chunks (whole images while they fit
# _WINO_PAD_BYTES, else bands of tile rows, else runs of tiles); tile t of a chunk is
# (n, ty, tx) in order, so a batch of tiles spans images when the maps are small.
#   1. The filters of the chunk: U[xi] = (G g GT)[xi] for every (filter, channel), built
#      with fc_wino_out (G g GT has the form AT M A) on lanes that are fc_pw_gemm's packed
#      order, the alpha^2 matrices' row blocks interleaved (kept in `packs` by layers
#      when one chunk holds them all).
#   2. The source chunk, copied into zero-padded planes (any layout in, rows contiguous
#      out), so that every input tile is alpha rows of 8 readable elements.
#   3. Work items are batches of NT tiles of one group (and, when the batches are too few
#      to share out, a part of the filters). For each, a thread
#      a. transforms every channel's alpha x alpha input tiles (fc_wino_in: row loads and
#         an 8 x 8 transpose) into V[xi] (channels x NT), cich channels at a time;
#      b. multiplies, for each xi, M[xi] (Ko x NT) += U[xi] (Ko x those channels) . V[xi];
#      c. transforms each filter's M back (fc_wino_out_rows, or fc_wino_out and a scalar
#         scatter where output columns are not contiguous), adds the bias and writes the
#         outputs inside P x Q.
#   Each output is written by one item in one fixed order: bitwise the same results for
#   any thread count. Workspace (_wino_plan, wino_workspace): one filter chunk, one
#   padded source chunk, and per thread V and M within _WINO_THREAD_BYTES over all
#   threads, 64 MiB in all.

# Stride phases (wino_phases): a strided layer whose phases are 3 x 3 windows runs as
# one stride-1 call in which the source channels (forward: x's s_h * s_w sub-grids
# x[s_h*i + a, s_w*j + b]) or the filters (grad_input: grad_x's sub-grids) come in
# cph or kph phases, the phase innermost: channel c of a group is channel c // cph of
# phase c % cph, its plane xo[phase] further on and its taps wc[phase] further on;
# filter o is filter o // kph of phase o % kph, written yo[phase] further on, its taps
# wo[phase]. Phases innermost, consecutive planes are neighbouring sub-grids of one
# channel, which share cache lines: fcn_up16's 256 phases of 21 channels, channel
# outermost, read each line from memory once per phase. One phase (cph = kph = 1, zero
# offsets) is a plain call.
cdef enum:
    FC_MAX_PHASES = 256

cdef struct _Phases:
    Py_ssize_t cph
    Py_ssize_t kph
    Py_ssize_t xo[FC_MAX_PHASES]
    Py_ssize_t wc[FC_MAX_PHASES]
    Py_ssize_t yo[FC_MAX_PHASES]
    Py_ssize_t wo[FC_MAX_PHASES]


cdef inline Py_ssize_t _ph_filter(const _Phases* ph, Py_ssize_t o, Py_ssize_t c,
                                  Py_ssize_t w_o, Py_ssize_t w_c) noexcept nogil:
    # where filter o's taps for channel c start, within its group
    return ((o // ph.kph) * w_o + ph.wo[o % ph.kph]
            + (c // ph.cph) * w_c + ph.wc[c % ph.cph])


cdef _Phases _one_phase() noexcept:
    cdef _Phases ph
    ph.cph = ph.kph = 1
    ph.xo[0] = ph.wc[0] = ph.yo[0] = ph.wo[0] = 0
    return ph


# Bytes of one work item's transformed tiles and products (V + M), per thread.
cdef Py_ssize_t _WINO_ITEM_BYTES = 512 * 1024
# The workspace bound, 64 MiB a call: the transformed filters of one filter chunk, one
# chunk of the source as zero-padded planes (the gather reads whole tile rows from them,
# with no bounds to check), and every thread's V and M together.
cdef Py_ssize_t _WINO_FILTER_BYTES = 24 * 1024 * 1024
cdef Py_ssize_t _WINO_PAD_BYTES = 8 * 1024 * 1024
cdef Py_ssize_t _WINO_THREAD_BYTES = 32 * 1024 * 1024
# Reduction rows of one fc_pw_gemm call (a k x 16 sliver of V in L1, as _GEMM_SLIVER_BYTES).
cdef Py_ssize_t _WINO_KC_BYTES = 16 * 1024


# A bare call's transformed filters (resnet_c5: 36 MiB) in a fresh allocation cost more
# in page faults than the transform itself (resnet_c5 forward 64 -> 24 ms with the
# buffer reused and the row blocks interleaved, 2 threads, Zen 3): the last call's buffer
# is kept for the next, taken and given back with the GIL held (a concurrent call
# allocates its own). fastconv.release_memory() frees it.
cdef _Pack _WINO_SPARE = None
# The same for the per-call scratch (the threads' V and M, the padded source chunk):
# malloc gave each call fresh pages from the kernel, and faulting them in took resnet_c2
# forward from 8.9 to 14.8 ms (2 threads, Zen 4). Taken and given back like the above.
cdef _Pack _WINO_WORK = None


def _wino_release():
    """Free the kept filter and scratch buffers; returns their bytes."""
    global _WINO_SPARE, _WINO_WORK
    cdef Py_ssize_t n = 0 if _WINO_SPARE is None else _WINO_SPARE.nbytes
    n += 0 if _WINO_WORK is None else _WINO_WORK.nbytes
    _WINO_SPARE = None
    _WINO_WORK = None
    return n


def _set_wino_budget(Py_ssize_t item_bytes=512 * 1024,
                     Py_ssize_t filter_bytes=24 * 1024 * 1024,
                     Py_ssize_t pad_bytes=8 * 1024 * 1024,
                     Py_ssize_t thread_bytes=32 * 1024 * 1024):
    """Testing hook: the budgets above (small values force one batch of the fewest
    tiles and many items, filter chunks of one row block, source chunks of one tile,
    channel chunks of V)."""
    global _WINO_ITEM_BYTES, _WINO_FILTER_BYTES, _WINO_PAD_BYTES, _WINO_THREAD_BYTES
    _WINO_ITEM_BYTES = item_bytes
    _WINO_FILTER_BYTES = filter_bytes
    _WINO_PAD_BYTES = pad_bytes
    _WINO_THREAD_BYTES = thread_bytes


cdef struct _WinoPlan:
    Py_ssize_t nt       # tiles a batch
    Py_ssize_t kc       # reduction rows of one fc_pw_gemm call
    Py_ssize_t cich     # channels of V at a time
    Py_ssize_t kf       # filters of one filter chunk (a multiple of mr)
    Py_ssize_t imgs, rows, cols  # a source chunk: images, tile rows, tile columns
    Py_ssize_t per      # elements of one thread's scratch
    Py_ssize_t xp       # elements of the padded source chunk
    Py_ssize_t filt     # elements of one filter chunk's transformed filters


cdef _WinoPlan _wino_plan(Py_ssize_t N, Py_ssize_t G, Py_ssize_t Ci, Py_ssize_t Ko,
                          Py_ssize_t P, Py_ssize_t Q, Py_ssize_t m, Py_ssize_t isz,
                          int n_threads) noexcept:
    # How a call is cut to stay within the budgets; _wino_run allocates what it says.
    cdef _WinoPlan pl
    cdef Py_ssize_t alpha = m + 2, a2 = alpha * alpha, mr = _K.pw_mr
    cdef Py_ssize_t unit = _wino_unit(isz), nthr = max(1, n_threads), Ctot = G * Ci
    cdef Py_ssize_t tp = (P + m - 1) // m, tq = (Q + m - 1) // m, img, row, kmax
    # the source: whole images while one fits, else bands of tile rows, else runs of
    # tiles along one tile row (one tile of every channel at least)
    img = Ctot * (tp * m + 2) * ((tq - 1) * m + 8) * isz
    row = Ctot * (m + 2) * ((tq - 1) * m + 8) * isz
    if img <= _WINO_PAD_BYTES:
        pl.imgs, pl.rows, pl.cols = max(1, min(N, _WINO_PAD_BYTES // img)), tp, tq
    elif row <= _WINO_PAD_BYTES:
        pl.imgs, pl.rows, pl.cols = 1, max(1, min(tp, (_WINO_PAD_BYTES // (
            Ctot * ((tq - 1) * m + 8) * isz) - 2) // m)), tq
    else:
        pl.imgs, pl.rows = 1, 1
        pl.cols = max(1, min(tq, (_WINO_PAD_BYTES // (Ctot * (m + 2) * isz) - 8) // m + 1))
    pl.xp = pl.imgs * Ctot * (pl.rows * m + 2) * ((pl.cols - 1) * m + 8) + 16
    # a batch: nt tiles (fewer tiles than a batch: just enough whole blocks of them)
    pl.nt = min(_wino_nt(Ci, Ko, a2, isz), _round_up(pl.imgs * pl.rows * pl.cols, unit))
    pl.kc = _wino_kc(Ci, isz)
    # each thread's V (a quarter of its share) and M (the rest); V's channel chunks are
    # whole reduction chunks, so the products are the same calls whatever the thread
    # count (bitwise the same results)
    pl.cich = _WINO_THREAD_BYTES // nthr // 4 // (a2 * pl.nt * isz) // pl.kc * pl.kc
    pl.cich = min(Ci, max(pl.kc, pl.cich))
    kmax = max(mr, _WINO_THREAD_BYTES // nthr * 3 // 4 // (a2 * pl.nt * isz) // mr * mr)
    # the filters: as many row blocks as the budget holds, one at least
    pl.kf = max(mr, _WINO_FILTER_BYTES // (G * a2 * Ci * isz) // mr * mr)
    pl.kf = min(pl.kf, kmax, _round_up(Ko, mr))
    pl.filt = G * a2 * pl.kf * Ci + 1
    pl.per = _wino_per_thread(pl.cich, pl.kf, a2, pl.nt, pl.kc, m, isz)
    return pl


def wino_workspace(Py_ssize_t N, Py_ssize_t G, Py_ssize_t Ci, Py_ssize_t Ko, Py_ssize_t P,
                   Py_ssize_t Q, Py_ssize_t m, Py_ssize_t itemsize, int n_threads):
    """Bytes the engine allocates for one call (Ci and Ko a group, P x Q outputs of the
    correlation it runs): one filter chunk's transformed filters, the padded source chunk,
    every thread's scratch and tile information. At most 64 MiB while one row block of
    filters (alpha^2 * mr * C elements) fits 24 MiB and one tile of every channel 8 MiB."""
    cdef _WinoPlan pl = _wino_plan(N, G, Ci, Ko, P, Q, m, itemsize, n_threads)
    cdef Py_ssize_t nthr = max(1, n_threads)
    return ((pl.filt + nthr * pl.per + 16 + pl.xp) * itemsize
            + nthr * 4 * pl.nt * sizeof(Py_ssize_t))


cdef Py_ssize_t _wino_nt(Py_ssize_t Ci, Py_ssize_t Ko, Py_ssize_t a2,
                         Py_ssize_t itemsize) noexcept:
    cdef Py_ssize_t nt = _WINO_ITEM_BYTES // (a2 * (Ci + Ko) * itemsize)
    # whole register blocks of fc_pw_gemm's columns (32 with AVX-512 float32: batches of
    # 16 tiles left half of its 12 x 2 block idle, the products ran at 40% of the peak)
    cdef Py_ssize_t unit = _wino_unit(itemsize)
    return max(unit, min(128, nt // unit * unit))


cdef Py_ssize_t _wino_unit(Py_ssize_t itemsize) noexcept nogil:
    # tiles a batch is a multiple of: whole transform calls, whole product blocks
    return max(FC_WINO_TB, _K.pw_nv * _K.vbytes // itemsize)


cdef Py_ssize_t _wino_kc(Py_ssize_t Ci, Py_ssize_t itemsize) noexcept:
    return max(8, min(Ci, _WINO_KC_BYTES // (16 * itemsize)))


cdef Py_ssize_t _wino_per_thread(Py_ssize_t cich, Py_ssize_t kf, Py_ssize_t a2,
                                 Py_ssize_t nt, Py_ssize_t kc, Py_ssize_t m,
                                 Py_ssize_t itemsize) noexcept:
    # V (cich channels), M (kf filters), one output batch, fc_pw_gemm's scratch (for at
    # most 64 columns and 16 rows a block, more than any ISA's register block)
    return _round_up(a2 * cich * nt + a2 * kf * nt + m * m * FC_WINO_TB
                     + FC_PW_BUF(kc, 64, 16, itemsize) + 64, 16)


cdef Py_ssize_t _wino_filter_block(
    const floating* w,   # IN: filter (o, c, r, s) of group g at g*w_g + o*w_o + c*w_c + r*w_r + s*w_s
    Py_ssize_t w_g, Py_ssize_t w_o, Py_ssize_t w_c, Py_ssize_t w_r, Py_ssize_t w_s,
    Py_ssize_t Ko, Py_ssize_t Ci, const floating* gm, Py_ssize_t alpha,
    Py_ssize_t g, Py_ssize_t ob, Py_ssize_t c0,  # group, row block, first channel
    floating* st,        # scratch: _wino_filter_scratch(alpha)
    floating* up,        # OUT: G * alpha^2 packed Ko x Ci matrices
    bint check,          # count the non-finite filter values read (else 0)
    const _Phases* ph, Py_ssize_t kf0,  # the phases; the filter chunk's first filter
) noexcept nogil:
    # U[xi] for the mr filters of row block ob and channels c0 .. c0 + cpl - 1 (cpl =
    # FC_WINO_TB // mr of them), every xi: the transform runs on lanes (channel j, filter
    # i) = j*mr + i, which is fc_pw_gemm's packed order, so each xi's results go out as one
    # contiguous run (lanes past the last filter or channel are zero and stay zero). Built
    # channel-innermost, the results needed a scalar store mr elements apart for every
    # value: most of resnet_c5's per-call transform.
    cdef:
        Py_ssize_t a2 = alpha * alpha, mr = _K.pw_mr, kpad = _round_up(Ko, mr)
        Py_ssize_t cpl = max(1, FC_WINO_TB // mr), nc = min(cpl, Ci - c0)
        Py_ssize_t no = min(mr, Ko - ob * mr), t, r, s, xi, i, j
        floating* outs = st + 9 * FC_WINO_TB   # outs[xi][lane]
        floating* dst
        const floating* src
    # (plain loops, not memset and memcpy: for these few dozen bytes the library calls
    # were 8% of resnet_c4's samples, and the products' share rose from 47% to 55%
    # without them; perf, Zen 4)
    for t in range(9 * FC_WINO_TB):
        st[t] = 0
    for j in range(nc):
        for i in range(no):
            src = w + g * w_g + _ph_filter(ph, kf0 + ob * mr + i, c0 + j, w_o, w_c)
            for r in range(3):
                for s in range(3):
                    st[(r * 3 + s) * FC_WINO_TB + j * mr + i] = src[r * w_r + s * w_s]
    if floating is float:  # G g GT has the form AT M A, with AT = G (alpha x 3)
        _K.wino_out_f32(st, FC_WINO_TB, gm, <int>alpha, 3, outs)
    else:
        _K.wino_out_f64(st, FC_WINO_TB, gm, <int>alpha, 3, outs)
    # Row block ob of every xi together (fc_pw_gemm reads xi's blocks ablock =
    # alpha^2*Ci*mr apart): one block's writes stay within alpha^2*Ci*mr elements, not
    # alpha^2 matrices apart (resnet_c5's 36 MiB of transformed filters: TLB misses).
    for xi in range(a2):
        dst = up + (((g * (kpad // mr) + ob) * a2 + xi) * Ci + c0) * mr
        for t in range(nc * mr):
            dst[t] = outs[xi * FC_WINO_TB + t]
    return _nonfinite(st, 9 * FC_WINO_TB) if check else 0


cdef inline Py_ssize_t _wino_filter_scratch(Py_ssize_t alpha) noexcept nogil:
    return (9 + alpha * alpha) * FC_WINO_TB


cdef inline Py_ssize_t _nonfinite(const floating* p, Py_ssize_t n) noexcept nogil:
    # How many of p[:n] are NaN or Inf: all exponent bits set, counted on the integer
    # bits (a reduction the compiler vectorises; a float sum it must keep in order).
    cdef Py_ssize_t i, bad = 0
    cdef const uint32_t* u32
    cdef const uint64_t* u64
    if floating is float:
        u32 = <const uint32_t*>p
        for i in range(n):
            bad += (u32[i] & 0x7f800000u) == 0x7f800000u
    else:
        u64 = <const uint64_t*>p
        for i in range(n):
            bad += (u64[i] & 0x7ff0000000000000u) == 0x7ff0000000000000u
    return bad


cdef Py_ssize_t _wino_pad_plane(
    const floating* src,  # IN: one source plane, rows xs_h and columns xs_w apart
    Py_ssize_t xs_h, Py_ssize_t xs_w, Py_ssize_t Hi, Py_ssize_t Wi,
    Py_ssize_t h0, Py_ssize_t pl,  # source row of padded row 0; padded column of source 0
    Py_ssize_t Hc, Py_ssize_t Wp,
    floating* dst,        # OUT: Hc x Wp, zero outside the source
    bint check,           # count the non-finite source values copied (else 0)
) noexcept nogil:
    cdef Py_ssize_t r, s, h, s_lo = min(Wp, max(0, pl)), s_hi = max(s_lo, min(Wp, Wi + pl))
    cdef Py_ssize_t bad = 0
    cdef floating* row
    cdef const floating* srow
    for r in range(Hc):
        row = dst + r * Wp
        h = h0 + r
        if h < 0 or h >= Hi:
            memset(row, 0, Wp * sizeof(floating))
            continue
        srow = src + h * xs_h
        memset(row, 0, s_lo * sizeof(floating))
        if xs_w == 1:
            memcpy(row + s_lo, srow + (s_lo - pl), (s_hi - s_lo) * sizeof(floating))
        else:
            for s in range(s_lo, s_hi):
                row[s] = srow[(s - pl) * xs_w]
        memset(row + s_hi, 0, (Wp - s_hi) * sizeof(floating))
        if check:
            bad += _nonfinite(row + s_lo, s_hi - s_lo)
    return bad


cdef void _wino_item(
    const floating* xp, const floating* up, const floating* bias, floating* y,
    Py_ssize_t item, Py_ssize_t nbat, Py_ssize_t nks, Py_ssize_t kch,  # item of G*nbat*nks
    Py_ssize_t nt, Py_ssize_t kc, Py_ssize_t cich, Py_ssize_t tiles,
    Py_ssize_t Ci, Py_ssize_t plane, Py_ssize_t pimg, Py_ssize_t Wc,  # the chunk's planes
    Py_ssize_t n0, Py_ssize_t ty0, Py_ssize_t tx0, Py_ssize_t nrow, Py_ssize_t ncol,
    Py_ssize_t kf0, Py_ssize_t nkf, Py_ssize_t kfr,  # the filter chunk: first, count, rows
    Py_ssize_t Ko, Py_ssize_t P, Py_ssize_t Q,
    Py_ssize_t ys_n, Py_ssize_t ys_k, Py_ssize_t ys_p, Py_ssize_t ys_q,
    Py_ssize_t m, Py_ssize_t alpha,
    const floating* bt, const floating* at, floating* scratch,
    Py_ssize_t* tinfo,   # scratch: 4 * nt
    const _Phases* ph,
) noexcept nogil:
    cdef:
        Py_ssize_t a2 = alpha * alpha, mr = _K.pw_mr
        Py_ssize_t g = item // (nbat * nks), t0 = item // nks % nbat * nt
        Py_ssize_t k0 = item % nks * kch, k1 = min(nkf, k0 + kch)  # its filters, in chunk
        Py_ssize_t c, k, kg, o, jb, tb, t, tt, i, j, n, rl, ty, tx, r0, nr, xi, ci0, nci
        Py_ssize_t* ib = tinfo
        Py_ssize_t* ob = tinfo + nt
        Py_ssize_t* vr = tinfo + 2 * nt
        Py_ssize_t* vc = tinfo + 3 * nt
        floating* dst
        floating* yk
        floating* V = scratch
        floating* M = V + a2 * cich * nt
        floating* yt = M + a2 * kfr * nt
        floating* gbuf = yt + m * m * FC_WINO_TB
        const floating* xg = xp + g * Ci * plane
        floating bk
    # Each tile of the batch once: where its input tile starts in the chunk's planes (ib),
    # where its outputs start (ob) and how many of its rows and columns lie inside P x Q
    # (vr, vc); tiles past the last: vr = 0, and they read the chunk's first tile.
    for tt in range(nt):
        t = t0 + tt
        vr[tt] = 0
        vc[tt] = 0
        ib[tt] = 0
        if t >= tiles:
            continue
        rl = t // ncol
        tx = t % ncol
        ib[tt] = rl // nrow * pimg + rl % nrow * m * Wc + tx * m
        n = n0 + rl // nrow
        ty = ty0 + rl % nrow
        tx = tx0 + tx
        ob[tt] = n * ys_n + ty * m * ys_p + tx * m * ys_q
        vr[tt] = min(m, P - ty * m)
        vc[tt] = min(m, Q - tx * m)
    # a, b. V[xi][c][t] for cich channels at a time, and M[xi] += U[xi] . V[xi] for them,
    # the reduction in chunks of kc channels (the same sums in the same order whatever
    # cich is: each call resumes from M)
    ci0 = 0
    while ci0 < Ci:
        nci = min(cich, Ci - ci0)
        for c in range(nci):
            for jb in range(nt // FC_WINO_TB):
                tb = jb * FC_WINO_TB
                if floating is float:
                    _K.wino_in_f32(xg + (ci0 + c) * plane, <const ptrdiff_t*>(ib + tb), Wc,
                                   plane, bt, <int>alpha, V + c * nt + tb, nci * nt)
                else:
                    _K.wino_in_f64(xg + (ci0 + c) * plane, <const ptrdiff_t*>(ib + tb), Wc,
                                   plane, bt, <int>alpha, V + c * nt + tb, nci * nt)
        for xi in range(a2):
            r0 = 0
            while r0 < nci:
                nr = min(kc, nci - r0)
                # U[xi]'s row blocks sit alpha^2*Ci*mr apart (_wino_filter_block)
                _pw_gemm(k1 - k0, nt, nr,
                         up + ((g * kfr + k0) * a2 + xi * mr) * Ci + (ci0 + r0) * mr,
                         a2 * Ci * mr, V + (xi * nci + r0) * nt, nt, NULL,
                         M + (xi * kfr + k0) * nt, nt, NULL, ci0 + r0 > 0, False, gbuf)
                r0 += kc
        ci0 += nci
    # c. the outputs: y[n, g*Ko + k, ty*m + i, tx*m + j] = (AT M A)[i][j] + bias
    for k in range(k0, k1):
        o = kf0 + k
        kg = g * (Ko // ph.kph) + o // ph.kph  # the output channel
        bk = bias[kg] if bias != NULL else 0
        yk = y + kg * ys_k + ph.yo[o % ph.kph]
        for jb in range(nt // FC_WINO_TB):
            tb = jb * FC_WINO_TB
            if vr[tb] == 0:
                break
            if ys_q == 1:  # rows of outputs contiguous (NCHW): written as row segments
                if floating is float:
                    _K.wino_out_rows_f32(M + k * nt + tb, kfr * nt, at, <int>m, <int>alpha,
                                         bk, yk, <const ptrdiff_t*>(ob + tb), ys_p,
                                         <const ptrdiff_t*>(vr + tb),
                                         <const ptrdiff_t*>(vc + tb), nt, ys_k)
                else:
                    _K.wino_out_rows_f64(M + k * nt + tb, kfr * nt, at, <int>m, <int>alpha,
                                         bk, yk, <const ptrdiff_t*>(ob + tb), ys_p,
                                         <const ptrdiff_t*>(vr + tb),
                                         <const ptrdiff_t*>(vc + tb), nt, ys_k)
                continue
            if floating is float:
                _K.wino_out_f32(M + k * nt + tb, kfr * nt, at, <int>m, <int>alpha, yt)
            else:
                _K.wino_out_f64(M + k * nt + tb, kfr * nt, at, <int>m, <int>alpha, yt)
            for tt in range(FC_WINO_TB):
                t = tb + tt
                dst = yk + ob[t]
                for i in range(vr[t]):
                    for j in range(vc[t]):
                        dst[i * ys_p + j * ys_q] = yt[(i * m + j) * FC_WINO_TB + tt] + bk


cdef Py_ssize_t _wino_filter_parts(Py_ssize_t items, int n_threads,
                                   Py_ssize_t blocks) noexcept nogil:
    # Parts to split the filters into so that items * parts shares out evenly over the
    # threads (1 when there are plenty of items or threads divide them).
    cdef Py_ssize_t s = 1
    if items >= 4 * n_threads:
        return 1
    while (items * s) % n_threads != 0 and s < n_threads:
        s += 1
    return max(1, min(s, blocks))


cdef int _wino_run(
    const floating* x, const floating* w, const floating* bias, floating* y,
    Py_ssize_t N, Py_ssize_t G, Py_ssize_t Ci, Py_ssize_t Hi, Py_ssize_t Wi,
    Py_ssize_t xs_n, Py_ssize_t xs_c, Py_ssize_t xs_h, Py_ssize_t xs_w,
    Py_ssize_t Ko, Py_ssize_t P, Py_ssize_t Q,
    Py_ssize_t ys_n, Py_ssize_t ys_k, Py_ssize_t ys_p, Py_ssize_t ys_q,
    Py_ssize_t pt, Py_ssize_t pl,
    Py_ssize_t w_off, Py_ssize_t w_g, Py_ssize_t w_o, Py_ssize_t w_c, Py_ssize_t w_r,
    Py_ssize_t w_s,
    Py_ssize_t m, const floating* bt, const floating* at, const floating* gm,
    int n_threads, object packs, bint check, const _Phases* ph, object phase_key=None,
) except -1:
    # Returns 0, or 1 when `check` and a source or filter value is NaN or Inf: the call
    # then stops with its outputs incomplete, for an exact engine to compute instead.
    cdef:
        Py_ssize_t alpha = m + 2, a2 = (m + 2) * (m + 2), isz = sizeof(floating)
        Py_ssize_t mr = _K.pw_mr, Ctot = G * Ci, nbad = 0
        Py_ssize_t tp = (P + m - 1) // m, tq = (Q + m - 1) // m
        _WinoPlan plan = _wino_plan(N, G, Ci, Ko, P, Q, m, isz, n_threads)
        Py_ssize_t nthr = max(1, n_threads), nt = plan.nt
        Py_ssize_t nimg, nrow, ncol, n0, ty0, tx0, Hc, Wc, plane, tiles, ntc, nbat, items
        Py_ssize_t kf0, nkf, kfr, nfc, it, tid, nfb, nks, kch, q, c, nwork, ncg
        Py_ssize_t cpl = max(1, FC_WINO_TB // mr)
        unsigned csr
        floating* buf
        floating* xp
        floating* fbuf
        Py_ssize_t* tinfo
        floating* up
        _Pack pk = None
        _Pack work = None
        object key = None
        bint fresh
    global _WINO_SPARE, _WINO_WORK
    nfc = (Ko + plan.kf - 1) // plan.kf  # filter chunks
    if packs is not None and nfc == 1 and ph.cph == 1 and ph.kph == 1:
        key = ("wino", sizeof(floating), <size_t>w, w_off, w_g, w_o, w_c, w_r, w_s, G, Ko, Ci,
               m, mr)
    elif packs is not None and nfc == 1 and phase_key is not None:
        # w is a padded copy made for this call: the key names the caller's filters
        # (phase_key) and everything the phase tables derive from
        key = ("wino-phases", sizeof(floating), phase_key, w_off, w_g, w_o, w_c, w_r, w_s,
               G, Ko, Ci, ph.cph, ph.kph, m, mr)
    nwork = (nthr * plan.per + 16 + plan.xp) * isz + nthr * 4 * nt * sizeof(Py_ssize_t)
    if _WINO_WORK is not None and _WINO_WORK.nbytes >= nwork:
        work, _WINO_WORK = _WINO_WORK, None
    else:
        work = _Pack(nwork)
    # per-thread scratch at 64-byte boundaries, then the padded chunk, then tile info
    buf = <floating*>((<size_t>work.data + 63) & ~(<size_t>63))
    xp = buf + nthr * plan.per
    tinfo = <Py_ssize_t*>(xp + plan.xp)
    fbuf = <floating*>malloc(nthr * _wino_filter_scratch(alpha) * isz)
    if fbuf == NULL:
        raise MemoryError()
    try:
        kf0 = 0
        while kf0 < Ko:
            # filters kf0 .. kf0 + nkf - 1 of every group, kfr packed rows a group
            nkf = min(plan.kf, Ko - kf0)
            kfr = _round_up(nkf, mr)
            fresh = True
            if key is not None:  # kept by a layer (one chunk only)
                pk = _pack_lookup(packs, key)
                fresh = pk is None
            if fresh:
                if pk is None:
                    if (packs is None and _WINO_SPARE is not None
                            and _WINO_SPARE.nbytes >= plan.filt * isz):
                        pk, _WINO_SPARE = _WINO_SPARE, None
                    else:
                        pk = _Pack(plan.filt * isz)
                up = <floating*>pk.data
                # items (row block, channels), channels fastest: each thread's static range
                # then writes every xi's packed matrix in one forward run
                ncg = (Ci + cpl - 1) // cpl
                nfb = (kfr // mr) * ncg
                with nogil, parallel(num_threads=max(1, min(n_threads, G * nfb))):
                    tid = threadid()
                    for it in prange(G * nfb, schedule='static'):
                        nbad += _wino_filter_block(
                            w + w_off, w_g, w_o, w_c, w_r, w_s, nkf, Ci, gm,
                            alpha, it // nfb, it % nfb // ncg, it % nfb % ncg * cpl,
                            fbuf + tid * _wino_filter_scratch(alpha), up, check, ph, kf0)
                if nbad:
                    return 1  # not kept in packs (a bare call's finally keeps the spare)
                if key is not None:
                    _pack_keep(packs, key, pk)
            up = <floating*>pk.data
            with nogil:
                n0 = 0
                ty0 = 0
                tx0 = 0
                while n0 < N:
                    # this chunk: images n0 .. n0 + nimg - 1, tile rows ty0 ..
                    # ty0 + nrow - 1, tile columns tx0 .. tx0 + ncol - 1; copied again for
                    # each filter chunk (a copy is cheap beside the transforms), and
                    # checked for NaN and Inf by the first filter chunk only
                    nimg = min(plan.imgs, N - n0)
                    nrow = min(plan.rows, tp - ty0)
                    ncol = min(plan.cols, tq - tx0)
                    Hc = nrow * m + 2
                    Wc = (ncol - 1) * m + 8  # the last tile's rows are read as 8 elements
                    plane = Hc * Wc
                    tiles = nimg * nrow * ncol
                    ntc = min(nt, _round_up(tiles, _wino_unit(isz)))
                    nbat = (tiles + ntc - 1) // ntc
                    # Too few batches to share out evenly (resnet_c5: 32 tiles, one
                    # batch): the filters are split too, each part recomputing V.
                    nks = _wino_filter_parts(G * nbat, n_threads, kfr // mr)
                    kch = _round_up((nkf + nks - 1) // nks, mr)
                    nks = (nkf + kch - 1) // kch
                    items = G * nbat * nks
                    for it in prange(nimg * Ctot, schedule='static',
                                     num_threads=max(1, min(n_threads, nimg * Ctot))):
                        q = it // Ctot
                        c = it % Ctot % Ci  # channel c of group it % Ctot // Ci
                        nbad += _wino_pad_plane(
                            x + (n0 + q) * xs_n
                            + (it % Ctot // Ci * (Ci // ph.cph) + c // ph.cph) * xs_c
                            + ph.xo[c % ph.cph], xs_h, xs_w, Hi, Wi,
                            ty0 * m - pt, pl - tx0 * m, Hc, Wc, xp + it * plane,
                            check and kf0 == 0)
                    if nbad:
                        break
                    with parallel(num_threads=max(1, min(n_threads, items))):
                        tid = threadid()
                        csr = fc_ftz_enter()
                        for it in prange(items, schedule='static'):
                            _wino_item(xp, up, bias, y, it, nbat, nks, kch, ntc, plan.kc,
                                       plan.cich, tiles, Ci, plane, Ctot * plane, Wc,
                                       n0, ty0, tx0, nrow, ncol, kf0, nkf, kfr, Ko, P, Q,
                                       ys_n, ys_k, ys_p, ys_q, m, alpha, bt, at,
                                       buf + tid * plan.per, tinfo + tid * 4 * nt, ph)
                        fc_ftz_leave(csr)
                    tx0 += ncol
                    if tx0 == tq:
                        tx0 = 0
                        ty0 += nrow
                        if ty0 == tp:
                            ty0 = 0
                            n0 += nimg
            if nbad:
                return 1
            kf0 += nkf
    finally:
        free(fbuf)
        if _WINO_WORK is None or _WINO_WORK.nbytes < work.nbytes:
            _WINO_WORK = work
        if packs is None and pk is not None:
            _WINO_SPARE = pk
    return 0


def wino_forward(
    const floating[::1] x, const floating[::1] w, const floating[::1] bias,
    floating[::1] y,
    Py_ssize_t N, Py_ssize_t C, Py_ssize_t H, Py_ssize_t W,
    Py_ssize_t K, Py_ssize_t P, Py_ssize_t Q, Py_ssize_t groups,
    Py_ssize_t pad_top, Py_ssize_t pad_left, int layout, bint has_bias,
    Py_ssize_t m, const floating[::1] bt, const floating[::1] at, const floating[::1] gm,
    int n_threads, object packs=None, bint check_finite=False,
):
    """y = corr(x, w) + bias through F(m x m, 3 x 3): 3 x 3 filters, stride 1, dilation 1;
    bt, at, gm: the transforms (alpha x alpha, m x alpha, alpha x 3, row-major). Returns
    0, or 1 with y incomplete when check_finite and x or w holds a NaN or Inf."""
    cdef _Conv cv = _make_conv(N, C, H, W, K, 3, 3, P, Q, groups, 1, 1, 1, 1,
                               pad_top, pad_left, layout)
    cdef _Phases ph = _one_phase()
    _wino_check(m, bt.shape[0], at.shape[0], gm.shape[0])
    _check_size(x.shape[0], N * C * H * W, "x")
    _check_size(w.shape[0], K * cv.Cg * 9, "w")
    _check_size(y.shape[0], N * K * P * Q, "y")
    if P < 1 or Q < 1:
        raise ValueError(f"P and Q must be positive, got {P}, {Q}")
    if has_bias:
        _check_size(bias.shape[0], K, "bias")
    return _wino_run(&x[0], &w[0], &bias[0] if has_bias else NULL, &y[0], N, groups, cv.Cg,
                     H, W,
              cv.xs_n, cv.xs_c, cv.xs_h, cv.xs_w, cv.Kg, P, Q,
              cv.ys_n, cv.ys_k, cv.ys_p, cv.ys_q, pad_top, pad_left,
              0, cv.Kg * cv.ws_k, cv.ws_k, cv.ws_c, cv.ws_r, cv.ws_s,
              m, &bt[0], &at[0], &gm[0], n_threads, packs, check_finite, &ph)


def wino_grad_input(
    const floating[::1] grad_y, const floating[::1] w, floating[::1] grad_x,
    Py_ssize_t N, Py_ssize_t C, Py_ssize_t H, Py_ssize_t W,
    Py_ssize_t K, Py_ssize_t P, Py_ssize_t Q, Py_ssize_t groups,
    Py_ssize_t pad_top, Py_ssize_t pad_left, int layout,
    Py_ssize_t m, const floating[::1] bt, const floating[::1] at, const floating[::1] gm,
    int n_threads, object packs=None, bint check_finite=False,
):
    """grad_x = corr(grad_y padded by 2 - pad, flipped and transposed w) through
    F(m x m, 3 x 3), every element of grad_x written. Returns 0, or 1 with grad_x
    incomplete when check_finite and grad_y or w holds a NaN or Inf."""
    cdef _Conv cv = _make_conv(N, C, H, W, K, 3, 3, P, Q, groups, 1, 1, 1, 1,
                               pad_top, pad_left, layout)
    cdef _Phases ph = _one_phase()
    _wino_check(m, bt.shape[0], at.shape[0], gm.shape[0])
    _check_size(grad_y.shape[0], N * K * P * Q, "grad_y")
    _check_size(w.shape[0], K * cv.Cg * 9, "w")
    _check_size(grad_x.shape[0], N * C * H * W, "grad_x")
    # The source is grad_y (Kg channels a group, P x Q), the outputs grad_x's channels;
    # filter (c, k, r, s) of the correlation is w[k, c, 2 - r, 2 - s].
    return _wino_run(&grad_y[0], &w[0], NULL, &grad_x[0], N, groups, cv.Kg, P, Q,
              cv.ys_n, cv.ys_k, cv.ys_p, cv.ys_q, cv.Cg, H, W,
              cv.xs_n, cv.xs_c, cv.xs_h, cv.xs_w, 2 - pad_top, 2 - pad_left,
              2 * cv.ws_r + 2 * cv.ws_s, cv.Kg * cv.ws_k, cv.ws_c, cv.ws_k, -cv.ws_r,
              -cv.ws_s, m, &bt[0], &at[0], &gm[0], n_threads, packs, check_finite, &ph)


def wino_phases(
    const floating[::1] src, const floating[::1] w, const floating[::1] bias,
    floating[::1] dst, bint grad_input,
    Py_ssize_t N, Py_ssize_t C, Py_ssize_t H, Py_ssize_t W,
    Py_ssize_t K, Py_ssize_t P, Py_ssize_t Q, Py_ssize_t groups, int layout,
    Py_ssize_t Rp, Py_ssize_t Sp, Py_ssize_t sh, Py_ssize_t sw,
    Py_ssize_t th, Py_ssize_t tw, Py_ssize_t rb, Py_ssize_t sb, bint has_bias,
    Py_ssize_t m, const floating[::1] bt, const floating[::1] at, const floating[::1] gm,
    int n_threads, object packs=None, object w_key=None, bint check_finite=False,
):
    """A strided convolution (x: N x C x H x W, K filters, stride (sh, sw), P x Q out)
    through its stride phases, each a 3 x 3 window, by F(m x m, 3 x 3):
    forward (src x, dst y, bias) or grad_input (src grad_y, dst grad_x, every element of
    it written). w holds the filters with their taps zero-padded to Rp x Sp (the
    layout's filter order, K x C/groups x Rp x Sp for NCHW); phase (a, b)'s window reads
    padded taps rb + a + sh*u and sb + b + sw*v for u, v < 3, over the sub-grid
    x[sh*i + a, sw*j + b] padded by th rows and tw columns (fastconv/_phases.py plans
    them). packs and w_key: a layer's dict and the address of the filters w was padded
    from, under which the transformed filters are kept (the caller vouches that the
    filters at w_key are those of the call that filled packs). Returns 0, or 1 with dst
    incomplete when check_finite and src or w holds a NaN or Inf."""
    cdef _Conv cv = _make_conv(N, C, H, W, K, Rp, Sp, P, Q, groups, sh, sw, 1, 1, 0, 0,
                               layout)
    cdef _Phases ph
    cdef Py_ssize_t a, b, nph = sh * sw, Hs, Ws, woff
    cdef object key = None if w_key is None else (
        w_key, bool(grad_input), layout, Rp, Sp, sh, sw, th, tw, rb, sb)
    _wino_check(m, bt.shape[0], at.shape[0], gm.shape[0])
    if sh < 1 or sw < 1 or H % sh or W % sw or nph > FC_MAX_PHASES:
        raise ValueError(f"the phases of stride ({sh}, {sw}) must tile {H} x {W}, at most "
                         f"{FC_MAX_PHASES} of them")
    if P < 1 or Q < 1:
        raise ValueError(f"P and Q must be positive, got {P}, {Q}")
    # every tap the windows read lies inside the padded filters
    if rb < 0 or rb + sh - 1 + 2 * sh >= Rp or sb < 0 or sb + sw - 1 + 2 * sw >= Sp:
        raise ValueError(f"phase taps from ({rb}, {sb}) at stride ({sh}, {sw}) leave the "
                         f"{Rp} x {Sp} padded filters")
    _check_size(src.shape[0], (N * K * P * Q) if grad_input else (N * C * H * W), "src")
    _check_size(dst.shape[0], (N * C * H * W) if grad_input else (N * K * P * Q), "dst")
    _check_size(w.shape[0], K * cv.Cg * Rp * Sp, "w")
    if has_bias:
        _check_size(bias.shape[0], K, "bias")
    Hs, Ws = H // sh, W // sw
    ph = _one_phase()
    for a in range(sh):
        for b in range(sw):
            # x's (or grad_x's) sub-grid (a, b), and the taps its window reads: the
            # source's phases (forward) or the filters' (grad_input)
            if grad_input:
                ph.yo[a * sw + b] = a * cv.xs_h + b * cv.xs_w
                ph.wo[a * sw + b] = (rb + a) * cv.ws_r + (sb + b) * cv.ws_s
            else:
                ph.xo[a * sw + b] = a * cv.xs_h + b * cv.xs_w
                ph.wc[a * sw + b] = (rb + a) * cv.ws_r + (sb + b) * cv.ws_s
    if not grad_input:
        # the source channels come in phases: channel (c, phase), Hs x Ws each
        ph.cph = nph
        return _wino_run(&src[0], &w[0], &bias[0] if has_bias else NULL, &dst[0], N,
                         groups, nph * cv.Cg, Hs, Ws,
                         cv.xs_n, cv.xs_c, sh * cv.xs_h, sw * cv.xs_w, cv.Kg, P, Q,
                         cv.ys_n, cv.ys_k, cv.ys_p, cv.ys_q, th, tw,
                         0, cv.Kg * cv.ws_k, cv.ws_k, cv.ws_c, sh * cv.ws_r, sw * cv.ws_s,
                         m, &bt[0], &at[0], &gm[0], n_threads, packs, check_finite, &ph,
                         key)
    # grad_input: the adjoint, whose filters come in phases: filter (phase, c) writes
    # grad_x's sub-grid; its taps are the forward's, flipped and transposed
    ph.kph = nph
    woff = 2 * sh * cv.ws_r + 2 * sw * cv.ws_s
    return _wino_run(&src[0], &w[0], NULL, &dst[0], N, groups, cv.Kg, P, Q,
                     cv.ys_n, cv.ys_k, cv.ys_p, cv.ys_q, nph * cv.Cg, Hs, Ws,
                     cv.xs_n, cv.xs_c, sh * cv.xs_h, sw * cv.xs_w, 2 - th, 2 - tw,
                     woff, cv.Kg * cv.ws_k, cv.ws_c, cv.ws_k, -sh * cv.ws_r, -sw * cv.ws_s,
                     m, &bt[0], &at[0], &gm[0], n_threads, packs, check_finite, &ph, key)


cdef int _wino_check(Py_ssize_t m, Py_ssize_t nbt, Py_ssize_t nat, Py_ssize_t ngm) except -1:
    if m < 1 or m + 2 > FC_WINO_MAXA:
        raise ValueError(f"m must be 1 .. {FC_WINO_MAXA - 2}, got {m}")
    _check_size(nbt, (m + 2) * (m + 2), "bt")
    _check_size(nat, m * (m + 2), "at")
    _check_size(ngm, (m + 2) * 3, "gm")
    return 0
