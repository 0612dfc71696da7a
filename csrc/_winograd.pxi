# ---------------------------------------------------------------------------------------
# The Winograd engine: F(m x m, 3 x 3) at stride 1 and dilation 1 (included by _direct.pyx;
# fastconv/engines/winograd.py is its wrapper, fastconv/engines/winograd_twin.py its NumPy
# twin, fastconv/_winograd_mats.py builds the transform matrices).
#
# One call is a valid correlation of a padded source (N images, G groups of Ci channels)
# with Ko 3 x 3 filters per group, onto P x Q outputs. Output tiles of m x m start every m
# rows and columns; tile t of a group is (n, ty, tx) = t // (tp*tq), ... over all images,
# so a batch of tiles spans images when the maps are small (7 x 7: 4 tiles an image).
#   1. The filters: U[xi] = (G g GT)[xi] for every (filter, channel), built with
#      fc_wino_out (G g GT has the form AT M A), written straight into fc_pw_gemm's packed
#      layout, the alpha^2 matrices' row blocks interleaved (kept in `packs` by layers).
#   2. Work items are batches of NT tiles of one group. For each, a thread
#      a. gathers every channel's alpha x alpha input tiles (zero outside the source) and
#         transforms them (fc_wino_in) into V[xi] (Ci x NT);
#      b. multiplies, for each xi, M[xi] (Ko x NT) = U[xi] (Ko x Ci) . V[xi];
#      c. transforms each filter's M back (fc_wino_out) into m x m outputs, adds the bias
#         and writes the ones inside P x Q.
#   Each output is written by one item in one fixed order: bitwise the same results for
#   any thread count. Workspace: the packed filters, and per thread V and M
#   (alpha^2 * (Ci + Ko) * NT elements, NT chosen to keep them near _WINO_ITEM_BYTES).

# Bytes of one work item's transformed tiles and products (V + M), per thread.
cdef Py_ssize_t _WINO_ITEM_BYTES = 512 * 1024
# Reduction rows of one fc_pw_gemm call (a k x 16 sliver of V in L1, as _GEMM_SLIVER_BYTES).
cdef Py_ssize_t _WINO_KC_BYTES = 16 * 1024


# A bare call's transformed filters (resnet_c5: 36 MiB) in a fresh allocation cost more
# in page faults than the transform itself (resnet_c5 forward 64 -> 24 ms with the
# buffer reused and the row blocks interleaved, 2 threads, Zen 3): the last call's buffer
# is kept for the next, taken and given back with the GIL held (a concurrent call
# allocates its own). fastconv.release_memory() frees it.
cdef _Pack _WINO_SPARE = None


def _wino_release():
    """Free the kept filter buffer; returns its bytes."""
    global _WINO_SPARE
    cdef Py_ssize_t n = 0 if _WINO_SPARE is None else _WINO_SPARE.nbytes
    _WINO_SPARE = None
    return n


def _set_wino_budget(Py_ssize_t item_bytes=512 * 1024):
    """Testing hook: bytes of one work item's V and M (small values force one tile batch
    of FC_WINO_TB tiles, and many items)."""
    global _WINO_ITEM_BYTES
    _WINO_ITEM_BYTES = item_bytes


def wino_workspace(Py_ssize_t G, Py_ssize_t Ci, Py_ssize_t Ko, Py_ssize_t m,
                   Py_ssize_t itemsize, int n_threads):
    """Bytes the engine allocates for one call: the transformed filters and every
    thread's scratch (not yet bounded: the filters grow as 36*K*C)."""
    cdef Py_ssize_t alpha = m + 2, a2 = alpha * alpha, mr = _K.pw_mr
    cdef Py_ssize_t nt = _wino_nt(Ci, Ko, a2, itemsize)
    cdef Py_ssize_t kc = _wino_kc(Ci, itemsize)
    cdef Py_ssize_t per = _wino_per_thread(Ci, Ko, a2, nt, kc, m, itemsize)
    return ((G * a2 * _round_up(Ko, mr) * Ci + 1) + n_threads * per) * itemsize


cdef Py_ssize_t _wino_nt(Py_ssize_t Ci, Py_ssize_t Ko, Py_ssize_t a2,
                         Py_ssize_t itemsize) noexcept:
    cdef Py_ssize_t nt = _WINO_ITEM_BYTES // (a2 * (Ci + Ko) * itemsize)
    return max(FC_WINO_TB, min(128, nt // FC_WINO_TB * FC_WINO_TB))


cdef Py_ssize_t _wino_kc(Py_ssize_t Ci, Py_ssize_t itemsize) noexcept:
    return max(8, min(Ci, _WINO_KC_BYTES // (16 * itemsize)))


cdef Py_ssize_t _wino_per_thread(Py_ssize_t Ci, Py_ssize_t Ko, Py_ssize_t a2, Py_ssize_t nt,
                                 Py_ssize_t kc, Py_ssize_t m, Py_ssize_t itemsize) noexcept:
    # V, M, one staged input batch, one output batch, fc_pw_gemm's scratch (for at most
    # 64 columns and 16 rows a block, more than any ISA's register block)
    return _round_up(a2 * Ci * nt + a2 * Ko * nt + a2 * FC_WINO_TB + m * m * FC_WINO_TB
                     + FC_PW_BUF(kc, 64, 16, itemsize) + 64, 16)


cdef void _wino_filter_block(
    const floating* w,   # IN: filter (o, c, r, s) of group g at g*w_g + o*w_o + c*w_c + r*w_r + s*w_s
    Py_ssize_t w_g, Py_ssize_t w_o, Py_ssize_t w_c, Py_ssize_t w_r, Py_ssize_t w_s,
    Py_ssize_t Ko, Py_ssize_t Ci, const floating* gm, Py_ssize_t alpha,
    Py_ssize_t g, Py_ssize_t o, Py_ssize_t c0,  # group, filter, first of FC_WINO_TB channels
    floating* st,        # scratch: (9 + alpha^2) * FC_WINO_TB
    floating* up,        # OUT: G * alpha^2 packed Ko x Ci matrices
) noexcept nogil:
    cdef:
        Py_ssize_t a2 = alpha * alpha, mr = _K.pw_mr, kpad = _round_up(Ko, mr)
        Py_ssize_t nc = min(FC_WINO_TB, Ci - c0), t, r, s, xi
        floating* out = st + 9 * FC_WINO_TB
        floating* dst
        const floating* src = w + g * w_g + o * w_o + c0 * w_c
    # stage g[r][s][t] for channels c0 + t
    for r in range(3):
        for s in range(3):
            for t in range(nc):
                st[(r * 3 + s) * FC_WINO_TB + t] = src[t * w_c + r * w_r + s * w_s]
            for t in range(nc, FC_WINO_TB):
                st[(r * 3 + s) * FC_WINO_TB + t] = 0
    if floating is float:  # G g GT has the form AT M A, with AT = G (alpha x 3)
        _K.wino_out_f32(st, FC_WINO_TB, gm, <int>alpha, 3, out)
    else:
        _K.wino_out_f64(st, FC_WINO_TB, gm, <int>alpha, 3, out)
    # Row block o // mr of every xi together (fc_pw_gemm reads xi's blocks ablock =
    # alpha^2*Ci*mr apart): one block's writes stay within alpha^2*Ci*mr elements, not
    # alpha^2 matrices apart (resnet_c5's 36 MiB of transformed filters: TLB misses).
    for xi in range(a2):
        dst = up + (((g * (kpad // mr) + o // mr) * a2 + xi) * Ci + c0) * mr + o % mr
        for t in range(nc):
            dst[t * mr] = out[xi * FC_WINO_TB + t]


cdef inline void _wino_gather(
    const floating* xc, floating* d, Py_ssize_t tb, Py_ssize_t t0, Py_ssize_t per_img,
    Py_ssize_t tq, Py_ssize_t m, Py_ssize_t alpha, Py_ssize_t pt, Py_ssize_t pl,
    Py_ssize_t Hi, Py_ssize_t Wi, Py_ssize_t xs_n, Py_ssize_t xs_h, Py_ssize_t xs_w,
    const Py_ssize_t* ib, const Py_ssize_t* inside, const Py_ssize_t* vr,
) noexcept nogil:
    # d[(i*alpha + j)*TB + tt] for the tiles tb + tt of the batch, tile by tile: zeros
    # past the last tile and outside the source
    cdef Py_ssize_t tt, t, i, j, n, ty, tx, h, wcol
    cdef const floating* src
    for tt in range(FC_WINO_TB):
        t = tb + tt
        if vr[t] == 0:
            for i in range(alpha * alpha):
                d[i * FC_WINO_TB + tt] = 0
        elif inside[t]:
            src = xc + ib[t]
            for i in range(alpha):
                for j in range(alpha):
                    d[(i * alpha + j) * FC_WINO_TB + tt] = src[i * xs_h + j * xs_w]
        else:
            n = (t0 + t) // per_img
            ty = (t0 + t) % per_img // tq
            tx = (t0 + t) % tq
            for i in range(alpha):
                h = ty * m + i - pt
                for j in range(alpha):
                    wcol = tx * m + j - pl
                    d[(i * alpha + j) * FC_WINO_TB + tt] = (
                        xc[n * xs_n + h * xs_h + wcol * xs_w]
                        if 0 <= h < Hi and 0 <= wcol < Wi else 0)


cdef void _wino_item(
    const floating* x, const floating* up, const floating* bias, floating* y,
    Py_ssize_t item, Py_ssize_t nbat, Py_ssize_t nt, Py_ssize_t kc,
    Py_ssize_t N, Py_ssize_t Ci, Py_ssize_t Hi, Py_ssize_t Wi,
    Py_ssize_t xs_n, Py_ssize_t xs_c, Py_ssize_t xs_h, Py_ssize_t xs_w,
    Py_ssize_t Ko, Py_ssize_t P, Py_ssize_t Q,
    Py_ssize_t ys_n, Py_ssize_t ys_k, Py_ssize_t ys_p, Py_ssize_t ys_q,
    Py_ssize_t pt, Py_ssize_t pl, Py_ssize_t m, Py_ssize_t alpha,
    const floating* bt, const floating* at, floating* scratch,
    Py_ssize_t* tinfo,   # scratch: 5 * nt
) noexcept nogil:
    cdef:
        Py_ssize_t a2 = alpha * alpha, tp = (P + m - 1) // m, tq = (Q + m - 1) // m
        Py_ssize_t per_img = tp * tq, total = N * per_img
        Py_ssize_t g = item // nbat, t0 = item % nbat * nt, kpad = _round_up(Ko, _K.pw_mr)
        Py_ssize_t c, k, jb, tb, t, tt, i, j, n, ty, tx, h, wcol, r0, nr, xi
        Py_ssize_t* ib = tinfo
        Py_ssize_t* inside = tinfo + nt
        Py_ssize_t* ob = tinfo + 2 * nt
        Py_ssize_t* vr = tinfo + 3 * nt
        Py_ssize_t* vc = tinfo + 4 * nt
        floating* dst
        floating* yk
        floating* V = scratch
        floating* M = V + a2 * Ci * nt
        floating* d = M + a2 * Ko * nt
        floating* yt = d + a2 * FC_WINO_TB
        floating* gbuf = yt + m * m * FC_WINO_TB
        const floating* xg = x + g * Ci * xs_c
        const floating* xc
        floating bk
    # Each tile of the batch once: where its input tile starts (ib), whether all of it
    # lies inside the source (inside), where its outputs start (ob) and how many of its
    # rows and columns lie inside P x Q (vr, vc); tiles past the last: vr = 0.
    for tt in range(nt):
        t = t0 + tt
        vr[tt] = 0
        if t >= total:
            continue
        n = t // per_img
        ty = t % per_img // tq
        tx = t % tq
        h = ty * m - pt
        wcol = tx * m - pl
        ib[tt] = n * xs_n + h * xs_h + wcol * xs_w
        inside[tt] = h >= 0 and wcol >= 0 and h + alpha <= Hi and wcol + alpha <= Wi
        ob[tt] = n * ys_n + ty * m * ys_p + tx * m * ys_q
        vr[tt] = min(m, P - ty * m)
        vc[tt] = min(m, Q - tx * m)
    # a. V[xi][c][t] for the batch's tiles (zero for tiles past the last)
    for c in range(Ci):
        xc = xg + c * xs_c
        for jb in range(nt // FC_WINO_TB):
            tb = jb * FC_WINO_TB
            _wino_gather(xc, d, tb, t0, per_img, tq, m, alpha, pt, pl, Hi, Wi,
                         xs_n, xs_h, xs_w, ib, inside, vr)
            if floating is float:
                _K.wino_in_f32(d, bt, <int>alpha, V + c * nt + tb, Ci * nt)
            else:
                _K.wino_in_f64(d, bt, <int>alpha, V + c * nt + tb, Ci * nt)
    # b. M[xi] = U[xi] . V[xi], the reduction in chunks of kc channels
    for xi in range(a2):
        r0 = 0
        while r0 < Ci:
            nr = min(kc, Ci - r0)
            # U[xi]'s row blocks sit alpha^2*Ci*mr apart (_wino_filter_block)
            _pw_gemm(Ko, nt, nr, up + (g * kpad * a2 + xi * _K.pw_mr) * Ci + r0 * _K.pw_mr,
                     a2 * Ci * _K.pw_mr, V + (xi * Ci + r0) * nt, nt, NULL, M + xi * Ko * nt,
                     nt, NULL, r0 > 0, False, gbuf)
            r0 += kc
    # c. the outputs: y[n, g*Ko + k, ty*m + i, tx*m + j] = (AT M A)[i][j] + bias
    for k in range(Ko):
        bk = bias[g * Ko + k] if bias != NULL else 0
        yk = y + (g * Ko + k) * ys_k
        for jb in range(nt // FC_WINO_TB):
            tb = jb * FC_WINO_TB
            if vr[tb] == 0:
                break
            if floating is float:
                _K.wino_out_f32(M + k * nt + tb, Ko * nt, at, <int>m, <int>alpha, yt)
            else:
                _K.wino_out_f64(M + k * nt + tb, Ko * nt, at, <int>m, <int>alpha, yt)
            for tt in range(FC_WINO_TB):
                t = tb + tt
                dst = yk + ob[t]
                for i in range(vr[t]):
                    for j in range(vc[t]):
                        dst[i * ys_p + j * ys_q] = yt[(i * m + j) * FC_WINO_TB + tt] + bk


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
    int n_threads, object packs,
) except -1:
    cdef:
        Py_ssize_t alpha = m + 2, a2 = (m + 2) * (m + 2), isz = sizeof(floating)
        Py_ssize_t kpad = _round_up(Ko, _K.pw_mr)
        Py_ssize_t tiles = N * ((P + m - 1) // m) * ((Q + m - 1) // m)
        Py_ssize_t nt = _wino_nt(Ci, Ko, a2, isz), kc = _wino_kc(Ci, isz)
        Py_ssize_t nbat, items, per, it, tid, nthr, nfb, g, col, row
        unsigned csr
        floating* buf = NULL
        floating* fbuf
        Py_ssize_t* tinfo = NULL
        floating* up
        floating* last
        _Pack pk = None
        object key = None
    # Fewer tiles than a batch: one batch of just enough whole vectors of tiles.
    nt = min(nt, _round_up(tiles, FC_WINO_TB))
    nbat = (tiles + nt - 1) // nt
    items = G * nbat
    nthr = max(1, min(n_threads, items))
    per = _wino_per_thread(Ci, Ko, a2, nt, kc, m, isz)
    if packs is not None:
        key = ("wino", sizeof(floating), <size_t>w, w_off, w_g, w_o, w_c, w_r, w_s, G, Ko, Ci,
               m, _K.pw_mr)
    global _WINO_SPARE
    pk = _pack_lookup(packs, key)
    if pk is None:
        if (packs is None and _WINO_SPARE is not None
                and _WINO_SPARE.nbytes >= (G * a2 * kpad * Ci + 1) * isz):
            pk, _WINO_SPARE = _WINO_SPARE, None
        else:
            pk = _Pack((G * a2 * kpad * Ci + 1) * isz)
        up = <floating*>pk.data
        # Rows past Ko of the last row block are read (and dropped): zeros, not NaNs.
        for g in range(G):
            last = up + (g + 1) * kpad * a2 * Ci - _K.pw_mr * a2 * Ci  # group g's last block
            for col in range(a2 * Ci):
                for row in range(Ko - (kpad - _K.pw_mr), _K.pw_mr):
                    last[col * _K.pw_mr + row] = 0
        nfb = Ko * ((Ci + FC_WINO_TB - 1) // FC_WINO_TB)  # (filter, channel block)
        fbuf = <floating*>malloc(n_threads * (9 + a2) * FC_WINO_TB * isz)
        if fbuf == NULL:
            raise MemoryError()
        with nogil, parallel(num_threads=max(1, min(n_threads, G * nfb))):
            tid = threadid()
            for it in prange(G * nfb, schedule='static'):
                _wino_filter_block(w + w_off, w_g, w_o, w_c, w_r, w_s, Ko, Ci, gm, alpha,
                                   it // nfb, it % nfb % Ko, it % nfb // Ko * FC_WINO_TB,
                                   fbuf + tid * (9 + a2) * FC_WINO_TB, up)
        free(fbuf)
        _pack_keep(packs, key, pk)
    up = <floating*>pk.data
    buf = <floating*>malloc(nthr * per * isz + 64)
    tinfo = <Py_ssize_t*>malloc(nthr * 5 * nt * sizeof(Py_ssize_t))
    if buf == NULL or tinfo == NULL:
        free(buf)
        free(tinfo)
        raise MemoryError()
    try:
        with nogil, parallel(num_threads=nthr):
            tid = threadid()
            csr = fc_ftz_enter()
            for it in prange(items, schedule='static'):
                _wino_item(x, up, bias, y, it, nbat, nt, kc, N, Ci, Hi, Wi,
                           xs_n, xs_c, xs_h, xs_w, Ko, P, Q, ys_n, ys_k, ys_p, ys_q,
                           pt, pl, m, alpha, bt, at,
                           <floating*>(((<size_t>(buf + tid * per)) + 63) & ~(<size_t>63)),
                           tinfo + tid * 5 * nt)
            fc_ftz_leave(csr)
    finally:
        free(buf)
        free(tinfo)
        if packs is None:
            _WINO_SPARE = pk
    return 0


def wino_forward(
    const floating[::1] x, const floating[::1] w, const floating[::1] bias,
    floating[::1] y,
    Py_ssize_t N, Py_ssize_t C, Py_ssize_t H, Py_ssize_t W,
    Py_ssize_t K, Py_ssize_t P, Py_ssize_t Q, Py_ssize_t groups,
    Py_ssize_t pad_top, Py_ssize_t pad_left, int layout, bint has_bias,
    Py_ssize_t m, const floating[::1] bt, const floating[::1] at, const floating[::1] gm,
    int n_threads, object packs=None,
):
    """y = corr(x, w) + bias through F(m x m, 3 x 3): 3 x 3 filters, stride 1, dilation 1;
    bt, at, gm: the transforms (alpha x alpha, m x alpha, alpha x 3, row-major)."""
    cdef _Conv cv = _make_conv(N, C, H, W, K, 3, 3, P, Q, groups, 1, 1, 1, 1,
                               pad_top, pad_left, layout)
    _wino_check(m, bt.shape[0], at.shape[0], gm.shape[0])
    _check_size(x.shape[0], N * C * H * W, "x")
    _check_size(w.shape[0], K * cv.Cg * 9, "w")
    _check_size(y.shape[0], N * K * P * Q, "y")
    if P < 1 or Q < 1:
        raise ValueError(f"P and Q must be positive, got {P}, {Q}")
    if has_bias:
        _check_size(bias.shape[0], K, "bias")
    _wino_run(&x[0], &w[0], &bias[0] if has_bias else NULL, &y[0], N, groups, cv.Cg, H, W,
              cv.xs_n, cv.xs_c, cv.xs_h, cv.xs_w, cv.Kg, P, Q,
              cv.ys_n, cv.ys_k, cv.ys_p, cv.ys_q, pad_top, pad_left,
              0, cv.Kg * cv.ws_k, cv.ws_k, cv.ws_c, cv.ws_r, cv.ws_s,
              m, &bt[0], &at[0], &gm[0], n_threads, packs)


def wino_grad_input(
    const floating[::1] grad_y, const floating[::1] w, floating[::1] grad_x,
    Py_ssize_t N, Py_ssize_t C, Py_ssize_t H, Py_ssize_t W,
    Py_ssize_t K, Py_ssize_t P, Py_ssize_t Q, Py_ssize_t groups,
    Py_ssize_t pad_top, Py_ssize_t pad_left, int layout,
    Py_ssize_t m, const floating[::1] bt, const floating[::1] at, const floating[::1] gm,
    int n_threads, object packs=None,
):
    """grad_x = corr(grad_y padded by 2 - pad, flipped and transposed w) through
    F(m x m, 3 x 3), every element of grad_x written."""
    cdef _Conv cv = _make_conv(N, C, H, W, K, 3, 3, P, Q, groups, 1, 1, 1, 1,
                               pad_top, pad_left, layout)
    _wino_check(m, bt.shape[0], at.shape[0], gm.shape[0])
    _check_size(grad_y.shape[0], N * K * P * Q, "grad_y")
    _check_size(w.shape[0], K * cv.Cg * 9, "w")
    _check_size(grad_x.shape[0], N * C * H * W, "grad_x")
    # The source is grad_y (Kg channels a group, P x Q), the outputs grad_x's channels;
    # filter (c, k, r, s) of the correlation is w[k, c, 2 - r, 2 - s].
    _wino_run(&grad_y[0], &w[0], NULL, &grad_x[0], N, groups, cv.Kg, P, Q,
              cv.ys_n, cv.ys_k, cv.ys_p, cv.ys_q, cv.Cg, H, W,
              cv.xs_n, cv.xs_c, cv.xs_h, cv.xs_w, 2 - pad_top, 2 - pad_left,
              2 * cv.ws_r + 2 * cv.ws_s, cv.Kg * cv.ws_k, cv.ws_c, cv.ws_k, -cv.ws_r,
              -cv.ws_s, m, &bt[0], &at[0], &gm[0], n_threads, packs)


cdef int _wino_check(Py_ssize_t m, Py_ssize_t nbt, Py_ssize_t nat, Py_ssize_t ngm) except -1:
    if m < 1 or m + 2 > FC_WINO_MAXA:
        raise ValueError(f"m must be 1 .. {FC_WINO_MAXA - 2}, got {m}")
    _check_size(nbt, (m + 2) * (m + 2), "bt")
    _check_size(nat, m * (m + 2), "at")
    _check_size(ngm, (m + 2) * 3, "gm")
    return 0
