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
# Bytes of one chunk of the source, as zero-padded planes (the gather reads whole tile
# rows from them, with no bounds to check).
cdef Py_ssize_t _WINO_PAD_BYTES = 16 * 1024 * 1024
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
    # whole register blocks of fc_pw_gemm's columns (32 with AVX-512 float32: batches of
    # 16 tiles left half of its 12 x 2 block idle, the products ran at 40% of the peak)
    cdef Py_ssize_t unit = _wino_unit(itemsize)
    return max(unit, min(128, nt // unit * unit))


cdef Py_ssize_t _wino_unit(Py_ssize_t itemsize) noexcept nogil:
    # tiles a batch is a multiple of: whole transform calls, whole product blocks
    return max(FC_WINO_TB, _K.pw_nv * _K.vbytes // itemsize)


cdef Py_ssize_t _wino_kc(Py_ssize_t Ci, Py_ssize_t itemsize) noexcept:
    return max(8, min(Ci, _WINO_KC_BYTES // (16 * itemsize)))


cdef Py_ssize_t _wino_per_thread(Py_ssize_t Ci, Py_ssize_t Ko, Py_ssize_t a2, Py_ssize_t nt,
                                 Py_ssize_t kc, Py_ssize_t m, Py_ssize_t itemsize) noexcept:
    # V, M, one output batch, fc_pw_gemm's scratch (for at most 64 columns and 16 rows
    # a block, more than any ISA's register block)
    return _round_up(a2 * Ci * nt + a2 * Ko * nt + m * m * FC_WINO_TB
                     + FC_PW_BUF(kc, 64, 16, itemsize) + 64, 16)


cdef void _wino_filter_block(
    const floating* w,   # IN: filter (o, c, r, s) of group g at g*w_g + o*w_o + c*w_c + r*w_r + s*w_s
    Py_ssize_t w_g, Py_ssize_t w_o, Py_ssize_t w_c, Py_ssize_t w_r, Py_ssize_t w_s,
    Py_ssize_t Ko, Py_ssize_t Ci, const floating* gm, Py_ssize_t alpha,
    Py_ssize_t g, Py_ssize_t ob, Py_ssize_t c0,  # group, row block, first of TB channels
    floating* st,        # scratch: _wino_filter_scratch(alpha)
    floating* up,        # OUT: G * alpha^2 packed Ko x Ci matrices
) noexcept nogil:
    # U[xi] for the mr filters of row block ob and channels c0 .. c0 + TB - 1, every xi:
    # each filter's 3 x 3 taps staged channel-innermost and transformed on whole vectors,
    # then written as fc_pw_gemm packs them, one contiguous (channel, filter) run per xi
    # (a scalar store mr elements apart for each value was most of resnet_c5's transform)
    cdef:
        Py_ssize_t a2 = alpha * alpha, mr = _K.pw_mr, kpad = _round_up(Ko, mr)
        Py_ssize_t nc = min(FC_WINO_TB, Ci - c0), t, r, s, xi, i, o
        floating* outs = st + 9 * FC_WINO_TB   # outs[i][xi][t], i < mr
        floating* dst
        const floating* src
    for i in range(mr):
        o = ob * mr + i
        if o >= Ko:  # rows past Ko of the last block are read (and dropped): zeros
            memset(outs + i * a2 * FC_WINO_TB, 0, a2 * FC_WINO_TB * sizeof(floating))
            continue
        src = w + g * w_g + o * w_o + c0 * w_c
        for r in range(3):  # st[r][s][t] = g[r][s] of channel c0 + t
            for s in range(3):
                for t in range(nc):
                    st[(r * 3 + s) * FC_WINO_TB + t] = src[t * w_c + r * w_r + s * w_s]
                for t in range(nc, FC_WINO_TB):
                    st[(r * 3 + s) * FC_WINO_TB + t] = 0
        if floating is float:  # G g GT has the form AT M A, with AT = G (alpha x 3)
            _K.wino_out_f32(st, FC_WINO_TB, gm, <int>alpha, 3, outs + i * a2 * FC_WINO_TB)
        else:
            _K.wino_out_f64(st, FC_WINO_TB, gm, <int>alpha, 3, outs + i * a2 * FC_WINO_TB)
    # Row block ob of every xi together (fc_pw_gemm reads xi's blocks ablock =
    # alpha^2*Ci*mr apart): one block's writes stay within alpha^2*Ci*mr elements, not
    # alpha^2 matrices apart (resnet_c5's 36 MiB of transformed filters: TLB misses).
    for xi in range(a2):
        dst = up + (((g * (kpad // mr) + ob) * a2 + xi) * Ci + c0) * mr
        for t in range(nc):
            for i in range(mr):
                dst[t * mr + i] = outs[(i * a2 + xi) * FC_WINO_TB + t]


cdef inline Py_ssize_t _wino_filter_scratch(Py_ssize_t alpha) noexcept nogil:
    return (9 + _K.pw_mr * alpha * alpha) * FC_WINO_TB


cdef void _wino_pad_plane(
    const floating* src,  # IN: one source plane, rows xs_h and columns xs_w apart
    Py_ssize_t xs_h, Py_ssize_t xs_w, Py_ssize_t Hi, Py_ssize_t Wi,
    Py_ssize_t h0, Py_ssize_t pl,  # source row of padded row 0; padded column of source 0
    Py_ssize_t Hc, Py_ssize_t Wp,
    floating* dst,        # OUT: Hc x Wp, zero outside the source
) noexcept nogil:
    cdef Py_ssize_t r, s, h, s_lo = min(Wp, max(0, pl)), s_hi = max(s_lo, min(Wp, Wi + pl))
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


cdef void _wino_item(
    const floating* xp, const floating* up, const floating* bias, floating* y,
    Py_ssize_t item, Py_ssize_t nbat, Py_ssize_t nks, Py_ssize_t kch,  # item of G*nbat*nks
    Py_ssize_t nt, Py_ssize_t kc, Py_ssize_t tiles,
    Py_ssize_t Ci, Py_ssize_t plane, Py_ssize_t pimg, Py_ssize_t Wp,  # the chunk's planes
    Py_ssize_t n0, Py_ssize_t ty0, Py_ssize_t rows,  # its first image, tile row, rows/image
    Py_ssize_t Ko, Py_ssize_t P, Py_ssize_t Q,
    Py_ssize_t ys_n, Py_ssize_t ys_k, Py_ssize_t ys_p, Py_ssize_t ys_q,
    Py_ssize_t m, Py_ssize_t alpha,
    const floating* bt, const floating* at, floating* scratch,
    Py_ssize_t* tinfo,   # scratch: 4 * nt
) noexcept nogil:
    cdef:
        Py_ssize_t a2 = alpha * alpha, tq = (Q + m - 1) // m
        Py_ssize_t g = item // (nbat * nks), t0 = item // nks % nbat * nt
        Py_ssize_t k0 = item % nks * kch, k1 = min(Ko, k0 + kch)  # its filters
        Py_ssize_t kpad = _round_up(Ko, _K.pw_mr)
        Py_ssize_t c, k, jb, tb, t, tt, i, j, n, rl, ty, tx, r0, nr, xi
        Py_ssize_t* ib = tinfo
        Py_ssize_t* ob = tinfo + nt
        Py_ssize_t* vr = tinfo + 2 * nt
        Py_ssize_t* vc = tinfo + 3 * nt
        floating* dst
        floating* yk
        floating* V = scratch
        floating* M = V + a2 * Ci * nt
        floating* yt = M + a2 * Ko * nt
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
        rl = t // tq
        tx = t % tq
        ib[tt] = rl // rows * pimg + rl % rows * m * Wp + tx * m
        n = n0 + rl // rows
        ty = ty0 + rl % rows
        ob[tt] = n * ys_n + ty * m * ys_p + tx * m * ys_q
        vr[tt] = min(m, P - ty * m)
        vc[tt] = min(m, Q - tx * m)
    # a. V[xi][c][t] for the batch's tiles
    for c in range(Ci):
        for jb in range(nt // FC_WINO_TB):
            tb = jb * FC_WINO_TB
            if floating is float:
                _K.wino_in_f32(xg + c * plane, <const ptrdiff_t*>(ib + tb), Wp, bt, <int>alpha,
                               V + c * nt + tb, Ci * nt)
            else:
                _K.wino_in_f64(xg + c * plane, <const ptrdiff_t*>(ib + tb), Wp, bt, <int>alpha,
                               V + c * nt + tb, Ci * nt)
    # b. M[xi] = U[xi] . V[xi], the reduction in chunks of kc channels
    for xi in range(a2):
        r0 = 0
        while r0 < Ci:
            nr = min(kc, Ci - r0)
            # U[xi]'s row blocks sit alpha^2*Ci*mr apart (_wino_filter_block)
            _pw_gemm(k1 - k0, nt, nr,
                     up + ((g * kpad + k0) * a2 + xi * _K.pw_mr) * Ci + r0 * _K.pw_mr,
                     a2 * Ci * _K.pw_mr, V + (xi * Ci + r0) * nt, nt, NULL,
                     M + (xi * Ko + k0) * nt, nt, NULL, r0 > 0, False, gbuf)
            r0 += kc
    # c. the outputs: y[n, g*Ko + k, ty*m + i, tx*m + j] = (AT M A)[i][j] + bias
    for k in range(k0, k1):
        bk = bias[g * Ko + k] if bias != NULL else 0
        yk = y + (g * Ko + k) * ys_k
        for jb in range(nt // FC_WINO_TB):
            tb = jb * FC_WINO_TB
            if vr[tb] == 0:
                break
            if ys_q == 1:  # rows of outputs contiguous (NCHW): written as row segments
                if floating is float:
                    _K.wino_out_rows_f32(M + k * nt + tb, Ko * nt, at, <int>m, <int>alpha, bk,
                                         yk, <const ptrdiff_t*>(ob + tb), ys_p,
                                         <const ptrdiff_t*>(vr + tb),
                                         <const ptrdiff_t*>(vc + tb))
                else:
                    _K.wino_out_rows_f64(M + k * nt + tb, Ko * nt, at, <int>m, <int>alpha, bk,
                                         yk, <const ptrdiff_t*>(ob + tb), ys_p,
                                         <const ptrdiff_t*>(vr + tb),
                                         <const ptrdiff_t*>(vc + tb))
                continue
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


cdef void _wino_chunks(
    Py_ssize_t N, Py_ssize_t tp, Py_ssize_t Ctot, Py_ssize_t Wp, Py_ssize_t m,
    Py_ssize_t isz, Py_ssize_t* imgs, Py_ssize_t* rows,
) noexcept nogil:
    # Images per chunk (whole images while one fits _WINO_PAD_BYTES), else tile rows per
    # band of one image: the padded planes of a chunk stay within the budget (or hold
    # one tile row of every channel, whatever its size).
    cdef Py_ssize_t img = Ctot * (tp * m + 2) * Wp * isz
    if img <= _WINO_PAD_BYTES:
        imgs[0] = max(1, min(N, _WINO_PAD_BYTES // img))
        rows[0] = tp
    else:
        imgs[0] = 1
        rows[0] = max(1, min(tp, (_WINO_PAD_BYTES // (Ctot * Wp * isz) - 2) // m))


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
    int n_threads, object packs,
) except -1:
    cdef:
        Py_ssize_t alpha = m + 2, a2 = (m + 2) * (m + 2), isz = sizeof(floating)
        Py_ssize_t kpad = _round_up(Ko, _K.pw_mr), Ctot = G * Ci
        Py_ssize_t tp = (P + m - 1) // m, tq = (Q + m - 1) // m
        # padded plane width: the last tile's rows are read as 8 elements
        Py_ssize_t Wp = (tq - 1) * m + 8
        Py_ssize_t nt = _wino_nt(Ci, Ko, a2, isz), kc = _wino_kc(Ci, isz)
        Py_ssize_t imgs, rows, nimg, nrow, n0, ty0, Hc, plane, tiles, ntc, nbat, items
        Py_ssize_t per, it, tid, nthr, nfb, nks, kch, q, nwork
        unsigned csr
        floating* buf = NULL
        floating* xp = NULL
        floating* fbuf
        Py_ssize_t* tinfo = NULL
        floating* up
        _Pack pk = None
        _Pack work = None
        object key = None
    _wino_chunks(N, tp, Ctot, Wp, m, isz, &imgs, &rows)
    # Fewer tiles than a batch: one batch of just enough whole vectors of tiles.
    nt = min(nt, _round_up(imgs * rows * tq, _wino_unit(isz)))
    nthr = max(1, n_threads)
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
        nfb = (kpad // _K.pw_mr) * ((Ci + FC_WINO_TB - 1) // FC_WINO_TB)  # (block, channels)
        fbuf = <floating*>malloc(n_threads * _wino_filter_scratch(alpha) * isz)
        if fbuf == NULL:
            raise MemoryError()
        with nogil, parallel(num_threads=max(1, min(n_threads, G * nfb))):
            tid = threadid()
            for it in prange(G * nfb, schedule='static'):
                _wino_filter_block(w + w_off, w_g, w_o, w_c, w_r, w_s, Ko, Ci, gm, alpha,
                                   it // nfb, it % nfb % (kpad // _K.pw_mr),
                                   it % nfb // (kpad // _K.pw_mr) * FC_WINO_TB,
                                   fbuf + tid * _wino_filter_scratch(alpha), up)
        free(fbuf)
        _pack_keep(packs, key, pk)
    up = <floating*>pk.data
    global _WINO_WORK
    nwork = (nthr * per + 16 + imgs * Ctot * (rows * m + 2) * Wp + 16) * isz \
        + nthr * 4 * nt * sizeof(Py_ssize_t)
    if _WINO_WORK is not None and _WINO_WORK.nbytes >= nwork:
        work, _WINO_WORK = _WINO_WORK, None
    else:
        work = _Pack(nwork)
    # per-thread scratch at 64-byte boundaries, then the padded chunk, then tile info
    buf = <floating*>((<size_t>work.data + 63) & ~(<size_t>63))
    xp = buf + nthr * per
    tinfo = <Py_ssize_t*>(xp + imgs * Ctot * (rows * m + 2) * Wp + 16)
    try:
        with nogil:
            n0 = 0
            ty0 = 0
            while n0 < N:
                # this chunk: images n0 .. n0 + nimg - 1, tile rows ty0 .. ty0 + nrow - 1
                nimg = min(imgs, N - n0)
                nrow = min(rows, tp - ty0)
                Hc = nrow * m + 2
                plane = Hc * Wp
                tiles = nimg * nrow * tq
                ntc = min(nt, _round_up(tiles, _wino_unit(isz)))
                nbat = (tiles + ntc - 1) // ntc
                # Too few batches to share out evenly (resnet_c5: 32 tiles, one batch):
                # the filters are split too, each part recomputing the batch's V.
                nks = _wino_filter_parts(G * nbat, n_threads, kpad // _K.pw_mr)
                kch = _round_up((Ko + nks - 1) // nks, _K.pw_mr)
                nks = (Ko + kch - 1) // kch
                items = G * nbat * nks
                with parallel(num_threads=max(1, min(n_threads, nimg * Ctot))):
                    for it in prange(nimg * Ctot, schedule='static'):
                        q = it // Ctot
                        _wino_pad_plane(x + (n0 + q) * xs_n + it % Ctot * xs_c, xs_h, xs_w,
                                        Hi, Wi, ty0 * m - pt, pl, Hc, Wp, xp + it * plane)
                with parallel(num_threads=max(1, min(n_threads, items))):
                    tid = threadid()
                    csr = fc_ftz_enter()
                    for it in prange(items, schedule='static'):
                        _wino_item(xp, up, bias, y, it, nbat, nks, kch, ntc, kc, tiles, Ci,
                                   plane,
                                   Ctot * plane, Wp, n0, ty0, nrow, Ko, P, Q,
                                   ys_n, ys_k, ys_p, ys_q, m, alpha, bt, at,
                                   buf + tid * per,
                                   tinfo + tid * 4 * nt)
                    fc_ftz_leave(csr)
                ty0 += nrow
                if ty0 == tp:
                    ty0 = 0
                    n0 += nimg
    finally:
        if _WINO_WORK is None or _WINO_WORK.nbytes < work.nbytes:
            _WINO_WORK = work
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
