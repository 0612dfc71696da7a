# Included by _direct.pyx (it shares _Conv, _K and the helpers there).
#
# ---------------------------------------------------------------------------------------
# Pointwise layers (1x1, stride 1, unpadded) in NCHW are matrix products, one per image
# and group, with the image itself as the right-hand side: forward
# y_n,g (Kg x HW) = W_g (Kg x Cg) . x_n,g (Cg x HW), grad_input
# dx_n,g (Cg x HW) = W_g^T (Cg x Kg) . dy_n,g (Kg x HW). fc_pw_gemm
# (csrc/pointwise_kernels_tmpl.h) runs them: packed filters, the image read in column
# slivers, no tile and no im2col. Each thread takes whole (image, group, column chunk)
# units and every output element is one dot product in a fixed order, so results are
# bitwise the same for any thread count. _PW_MODE: 0 auto, 1 never (tests and
# measurements of the tiled path).
cdef int _PW_MODE = 0
# Outputs at least this large are streamed past the caches (non-temporal stores): they
# would not stay cached anyway, and their lines are then never read for ownership.
# Measured (Zen 3, 2 threads, resnet_c2_1x1 through conv2d, one run): forward 8.5 ms
# streamed, 9.5 not; grad_input (25.7 MB out) 7.6 / 10.2.
cdef Py_ssize_t _PW_STREAM_BYTES = 2 * 1024 * 1024
# The narrowest column chunk a unit takes, in slivers of fc_pw_gemm's width.
cdef Py_ssize_t _PW_MIN_SLIVERS = 4


def _set_pointwise(bint on, Py_ssize_t stream_bytes=2 * 1024 * 1024):
    """Testing and tuning hook: allow (True) or forbid the pointwise product path, and
    the output size from which it streams its stores."""
    global _PW_MODE, _PW_STREAM_BYTES
    _PW_MODE = 0 if on else 1
    _PW_STREAM_BYTES = stream_bytes


cdef bint _pw_fits(const _Conv* cv, int layout) noexcept:
    return (_PW_MODE == 0 and layout == LAYOUT_NCHW and cv.R == 1 and cv.S == 1
            and cv.stride_h == 1 and cv.stride_w == 1 and cv.pad_top == 0
            and cv.pad_left == 0 and cv.P == cv.H and cv.Q == cv.W)


cdef bint _pw_inplace_fits(const _Conv* cv, int layout) noexcept:
    # A 1x1, stride-1, unpadded NCHW layer: x's channels are its positions' rows, as
    # is (no tuning switch: the grad_weight that reads x in place relies on it).
    return (layout == LAYOUT_NCHW and cv.R == 1 and cv.S == 1 and cv.stride_h == 1
            and cv.stride_w == 1 and cv.pad_top == 0 and cv.pad_left == 0
            and cv.P == cv.H and cv.Q == cv.W and cv.xs_c == cv.H * cv.W)


cdef Py_ssize_t _pw_chunks(Py_ssize_t units, Py_ssize_t slivers, Py_ssize_t T) noexcept:
    """Column chunks per (image, group): as few as give every thread the same number
    of units (or at least 4 each), none narrower than _PW_MIN_SLIVERS slivers."""
    cdef Py_ssize_t c = 1
    while ((units * c) % T != 0 and units * c < 4 * T
           and slivers // (c + 1) >= _PW_MIN_SLIVERS):
        c += 1
    return c


cdef inline Py_ssize_t _pw_apk(Py_ssize_t m, Py_ssize_t k) noexcept nogil:
    """Elements of one group's packed filters: m rows rounded up to register blocks."""
    return (m + _K.pw_mr - 1) // _K.pw_mr * _K.pw_mr * k


cdef _Pack _pw_packed(const floating* a, Py_ssize_t rs, Py_ssize_t cs, Py_ssize_t gs,
                      Py_ssize_t m, Py_ssize_t k, Py_ssize_t G, object packs):
    # Every group's filters A_g[i, p] = a[g*gs + i*rs + p*cs] packed by fc_pw_pack
    # (G * _pw_apk(m, k) elements), found in or kept in packs (_packs.pxi).
    cdef Py_ssize_t g, apk = _pw_apk(m, k)
    cdef object key = None
    if packs is not None:
        key = ("pw", sizeof(floating), <size_t>a, rs, cs, gs, m, k, G, _K.pw_mr)
    cdef _Pack pk = _pack_lookup(packs, key)
    if pk is not None:
        return pk
    pk = _Pack(G * apk * sizeof(floating))
    cdef floating* ap = <floating*>pk.data
    for g in range(G):
        if floating is float:
            _K.pw_pack_f32(a + g * gs, rs, cs, m, k, ap + g * apk)
        else:
            _K.pw_pack_f64(a + g * gs, rs, cs, m, k, ap + g * apk)
    _pack_keep(packs, key, pk)
    return pk


cdef int _pw_run(const floating* a, Py_ssize_t rs, Py_ssize_t cs, Py_ssize_t gs,
                 const floating* b, const floating* bias, floating* c, Py_ssize_t m,
                 Py_ssize_t k, Py_ssize_t HW, Py_ssize_t N, Py_ssize_t G,
                 int n_threads, object packs) except -1:
    # c[n, g*m + i, :] = bias[g*m + i] + sum_{p<k} A_g[i, p] * b[n, g*k + p, :], with
    # A_g[i, p] = a[g*gs + i*rs + p*cs]: b has G*k rows of HW per image, c has G*m.
    cdef:
        Py_ssize_t isz = sizeof(floating)
        Py_ssize_t mr = _K.pw_mr, nr = _K.pw_nv * _K.vbytes // isz
        Py_ssize_t apk = _pw_apk(m, k)
        Py_ssize_t slivers = (HW + nr - 1) // nr
        Py_ssize_t units = N * G, chunks, per_chunk, u, n, g, j0, j1, tid, nthr
        Py_ssize_t bufsz = FC_PW_BUF(k, nr, mr, isz)
        int nt = N * G * m * HW * isz >= _PW_STREAM_BYTES
        unsigned csr
        _Pack pk
        floating* ap
        floating* buf
    nthr = max(1, n_threads)
    chunks = _pw_chunks(units, slivers, nthr)
    per_chunk = (slivers + chunks - 1) // chunks * nr
    units *= chunks
    nthr = min(nthr, units)
    pk = _pw_packed(a, rs, cs, gs, m, k, G, packs)
    ap = <floating*>pk.data
    buf = <floating*>malloc(nthr * bufsz * sizeof(floating))
    if buf == NULL:
        raise MemoryError()
    with nogil, parallel(num_threads=nthr):
        tid = threadid()
        csr = fc_ftz_enter()
        for u in prange(units, schedule='static'):
            n = u // (G * chunks)
            g = u // chunks % G
            j0 = u % chunks * per_chunk
            j1 = min(HW, j0 + per_chunk)
            if j0 < j1:
                _pw_gemm(m, j1 - j0, k, ap + g * apk, mr * k, b + (n * G + g) * k * HW + j0,
                         HW, NULL, c + (n * G + g) * m * HW + j0, HW,
                         bias + g * m if bias != NULL else NULL, False, nt, buf + tid * bufsz)
        fc_ftz_leave(csr)
    free(buf)
    return 0


# Strided pointwise layers (1x1, stride > 1, unpadded: ResNet's downsampling projections)
# are the same products on the stride grid: the forward gathers each unit's input
# positions (whole output rows of one image and group) into a per-thread buffer and
# multiplies it; grad_input multiplies into that buffer and scatters the result onto
# the grid, writing zeros everywhere else. They used to go to im2col, whose column
# matrix is the same gather.
cdef bint _pw_strided_fits(const _Conv* cv, int layout) noexcept:
    return (_PW_MODE == 0 and layout == LAYOUT_NCHW and cv.R == 1 and cv.S == 1
            and (cv.stride_h > 1 or cv.stride_w > 1) and cv.pad_top == 0
            and cv.pad_left == 0 and cv.P == (cv.H - 1) // cv.stride_h + 1
            and cv.Q == (cv.W - 1) // cv.stride_w + 1)


cdef int _pws_run(int which, const floating* a, Py_ssize_t rs, Py_ssize_t cs,
                  const floating* src, const floating* bias, floating* dst, Py_ssize_t m,
                  Py_ssize_t k, const _Conv* cv, int n_threads, object packs) except -1:
    # which 0, forward: src = x (N, G*k, H, W), dst = y (N, G*m, P, Q),
    #     y_n,g = A_g . x_n,g[:, ::sh, ::sw];
    # which 1, grad_input: src = grad_y (N, G*k, P, Q), dst = grad_x (N, G*m, H, W),
    #     grad_x_n,g[:, ::sh, ::sw] = A_g . grad_y_n,g, zero elsewhere.
    # A_g[i, p] = a[g*m*k + i*rs + p*cs]. A unit is a band of output rows of one image
    # and group; it owns the matching input rows, so every element is written once.
    cdef:
        Py_ssize_t isz = sizeof(floating)
        Py_ssize_t mr = _K.pw_mr, nr = _K.pw_nv * _K.vbytes // isz
        Py_ssize_t apk = _pw_apk(m, k)
        Py_ssize_t H = cv.H, W = cv.W, P = cv.P, Q = cv.Q, PQ = cv.P * cv.Q, HW = cv.H * cv.W
        Py_ssize_t sh = cv.stride_h, sw = cv.stride_w, G = cv.C // cv.Cg
        Py_ssize_t units = cv.N * G, chunks = 1, rows_per, u, n, g, p0, p1, ncols
        Py_ssize_t c, p, q, h, tid, nthr, gbufsz = _round_up(FC_PW_BUF(k, nr, mr, isz), 16)
        Py_ssize_t per
        int nt = which == 0 and units * m * PQ * isz >= _PW_STREAM_BYTES
        unsigned csr
        _Pack pk
        floating* ap
        floating* buf
        floating* st
        floating* o
        floating* row
        const floating* xc
        const floating* srow
    nthr = max(1, n_threads)
    while (units * chunks) % nthr != 0 and units * chunks < 4 * nthr and chunks < P:
        chunks += 1
    rows_per = (P + chunks - 1) // chunks
    per = gbufsz + _round_up((m if which else k) * rows_per * Q, 16)
    units *= chunks
    nthr = min(nthr, units)
    pk = _pw_packed(a, rs, cs, m * k, m, k, G, packs)
    ap = <floating*>pk.data
    buf = <floating*>malloc(nthr * per * sizeof(floating))
    if buf == NULL:
        raise MemoryError()
    with nogil, parallel(num_threads=nthr):
        tid = threadid()
        csr = fc_ftz_enter()
        for u in prange(units, schedule='static'):
            n = u // (G * chunks)
            g = u // chunks % G
            p0 = u % chunks * rows_per
            p1 = min(P, p0 + rows_per)
            if p0 >= p1:
                continue
            ncols = (p1 - p0) * Q
            st = buf + tid * per + gbufsz
            if which == 0:
                for c in range(k):
                    xc = src + ((n * G + g) * k + c) * HW
                    for p in range(p0, p1):
                        srow = xc + p * sh * W
                        o = st + c * ncols + (p - p0) * Q
                        for q in range(Q):
                            o[q] = srow[q * sw]
                _pw_gemm(m, ncols, k, ap + g * apk, mr * k, st, ncols, NULL,
                         dst + (n * G + g) * m * PQ + p0 * Q, PQ,
                         bias + g * m if bias != NULL else NULL, False, nt, buf + tid * per)
            else:
                _pw_gemm(m, ncols, k, ap + g * apk, mr * k, src + (n * G + g) * k * PQ + p0 * Q,
                         PQ, NULL, st, ncols, NULL, False, False, buf + tid * per)
                for c in range(m):
                    for h in range(p0 * sh, min(H, p1 * sh)):
                        row = dst + ((n * G + g) * m + c) * HW + h * W
                        if h % sh != 0 or sw > 1:
                            memset(row, 0, W * isz)
                        if h % sh == 0:
                            o = st + c * ncols + (h // sh - p0) * Q
                            for q in range(Q):
                                row[q * sw] = o[q]
        fc_ftz_leave(csr)
    free(buf)
    return 0


# NHWC pointwise layers (1x1, stride 1, unpadded) are products with the positions as
# rows: forward y (NHW x K) = x (NHW x C) . W (C x K), W being the HWIO filters as they
# are; grad_input dx (NHW x C) = dy (NHW x K) . W^T, W^T copied once per call (or kept
# in packs). fc_pw_gemm reads the rows of x (or dy) in place, six at a time, as the
# broadcast operand (packing them first took 20% of resnet_c2_1x1's forward: C harness,
# Zen 3, a 126 x 256 block: pack 12.5 us, product 48.7 us). A unit's block of positions
# is about _PWH_BLOCK_BYTES of a reduction chunk, in L2 while the filters' column
# slivers sweep it; every output is one dot product in a fixed order (the chunks do not
# depend on the threads): bitwise the same for any thread count. They used to go to
# im2col (OpenBLAS's gemm) or the tiled path, 1.3-2.2x slower than NCHW.
cdef Py_ssize_t _PWH_BLOCK_BYTES = 128 * 1024


cdef bint _pwh_fits(const _Conv* cv, int layout) noexcept:
    return (_PW_MODE == 0 and layout == LAYOUT_NHWC and cv.R == 1 and cv.S == 1
            and cv.stride_h == 1 and cv.stride_w == 1 and cv.pad_top == 0
            and cv.pad_left == 0 and cv.P == cv.H and cv.Q == cv.W)


cdef Py_ssize_t _column_chunk(Py_ssize_t n, Py_ssize_t nr, Py_ssize_t units,
                              Py_ssize_t nthr) noexcept:
    """Columns per unit of an n-column product whose other splits give `units` units: all
    of them, or halved (in whole slivers of nr) until there are 4 units a thread."""
    cdef Py_ssize_t slivers = (n + nr - 1) // nr, ncb = 1
    while units * ncb < 4 * nthr and ncb * 2 <= slivers:
        ncb *= 2
    return (slivers + ncb - 1) // ncb * nr


cdef int _pwh_run(const floating* a, Py_ssize_t lda, Py_ssize_t k,
                  const floating* b, Py_ssize_t ldb, Py_ssize_t b_g,
                  const floating* cbias, floating* c, Py_ssize_t ldc, Py_ssize_t n,
                  Py_ssize_t M, Py_ssize_t G, int n_threads) except -1:
    # For every group g < G, row i < M and column j < n:
    #   c[i*ldc + g*n + j] = cbias[g*n + j] (when not NULL)
    #                        + sum_{p<k} a[i*lda + g*k + p] * b[g*b_g + p*ldb + j].
    # A unit is (group, block of mc rows, chunk of nc columns); the reduction runs in
    # chunks of kc rows of b (a column sliver of kc rows stays in L1) that accumulate
    # into c in order. Each unit copies its columns' slivers once per chunk, so units
    # have many rows; where there are few rows (7 x 7 maps) the columns are split to
    # give the threads work instead.
    cdef:
        Py_ssize_t isz = sizeof(floating)
        Py_ssize_t mr = _K.pw_mr, nr = _K.pw_nv * _K.vbytes // isz
        Py_ssize_t kc = min(k, max(8, _GEMM_SLIVER_BYTES // (nr * isz)))
        Py_ssize_t mc, nc, nblk, ncb, units, u, g, i0, j0, ir, r0, tid, nthr
        Py_ssize_t gbufsz = _round_up(FC_PW_BUF(kc, nr, mr, isz), 16)
        int nt = k <= kc and M * G * n * isz >= _PW_STREAM_BYTES
        unsigned csr
        floating* buf
    nthr = max(1, n_threads)
    mc = max(mr, _PWH_BLOCK_BYTES // (kc * isz) // mr * mr)
    nblk = (M + mc - 1) // mc
    nc = _column_chunk(n, nr, nblk * G, nthr)  # split only when row blocks are too few
    ncb = (n + nc - 1) // nc
    units = nblk * ncb * G
    nthr = min(nthr, units)
    buf = <floating*>malloc(nthr * gbufsz * isz)
    if buf == NULL:
        raise MemoryError()
    with nogil, parallel(num_threads=nthr):
        tid = threadid()
        csr = fc_ftz_enter()
        for u in prange(units, schedule='static'):
            g = u // (nblk * ncb)
            i0 = u // ncb % nblk * mc
            j0 = u % ncb * nc
            for ir in range((k + kc - 1) // kc):
                r0 = ir * kc
                _pw_gemm(min(mc, M - i0), min(nc, n - j0), min(kc, k - r0),
                         a + i0 * lda + g * k + r0, 0, b + g * b_g + r0 * ldb + j0, ldb, NULL,
                         c + i0 * ldc + g * n + j0, ldc, NULL, r0 > 0, nt, buf + tid * gbufsz,
                         cbias + g * n + j0 if cbias != NULL and r0 == 0 else NULL, lda)
        fc_ftz_leave(csr)
    free(buf)
    return 0


cdef _Pack _pwh_transposed(const floating* w, Py_ssize_t Cg, Py_ssize_t Kg, Py_ssize_t K,
                           Py_ssize_t G, int n_threads, object packs):
    # wt[g][p][j] = w[j*K + g*Kg + p] (p < Kg, j < Cg): each group's HWIO filters
    # transposed, grad_input's right-hand side; found in or kept in packs. In 16 x 16
    # tiles, whose 16 destination rows stay in L1 (element by element, every store of a
    # 2048 x 512 transpose went to a new line: 8 of grad_input's 20 ms).
    cdef object key = None
    if packs is not None:
        key = ("pwh_t", sizeof(floating), <size_t>w, Cg, Kg, K, G)
    cdef _Pack pk = _pack_lookup(packs, key)
    if pk is not None:
        return pk
    pk = _Pack(G * Kg * Cg * sizeof(floating))
    cdef floating* wt = <floating*>pk.data
    cdef Py_ssize_t g, p, j, jb, pb, t, nj = (Cg + 15) // 16, npb = (Kg + 15) // 16
    with nogil, parallel(num_threads=max(1, min(n_threads, G * nj))):
        for t in prange(G * nj, schedule='static'):
            g = t // nj
            jb = t % nj * 16
            for pb in range(0, npb * 16, 16):
                for j in range(jb, min(jb + 16, Cg)):
                    for p in range(pb, min(pb + 16, Kg)):
                        wt[(g * Kg + p) * Cg + j] = w[j * K + g * Kg + p]
    _pack_keep(packs, key, pk)
    return pk


# NHWC pointwise grad_weight: for each group, gW (Cg x Kg) = x^T (Cg x NHW) . dy (NHW x Kg),
# fc_pw_gemm reading x by columns in place (six neighbouring channels of one position per
# broadcast step) and dy's rows as the slivers -- or, when dy has fewer channels per
# position, gW^T = dy^T . x the same way round (transposed back in the final sum). The
# broadcast operand's positions lie a row apart, and a row of 256 floats put a chunk's
# 128 positions in 4 of L1's 64 sets: 256->64 at 56x56 ran at 48 GFLOP/s with x as
# that operand, 1.8x faster with dy (64 floats a row). The positions are cut into _PWH_WG_UNITS
# or fewer fixed ranges (by the shape alone, never the threads), each summed in chunks of
# kc in order into a partial of its own (at most _PWH_WG_PARTIAL_BYTES in all); the
# partials are added in range order. The columns are split further among the threads,
# which changes no sum: results are bitwise the same for any thread count.
cdef Py_ssize_t _PWH_WG_UNITS = 16
cdef Py_ssize_t _PWH_WG_MIN_POSITIONS = 1024  # positions per range at least
cdef Py_ssize_t _PWH_WG_PARTIAL_BYTES = 4 * 1024 * 1024
cdef Py_ssize_t _PWH_WG_CHUNK_BYTES = 8 * 1024  # a dy sliver of the reduction chunk


def _set_pwh_wgrad_chunk(Py_ssize_t nbytes):
    """Tuning hook: bytes of one dy sliver of the NHWC pointwise grad_weight's chunks."""
    global _PWH_WG_CHUNK_BYTES
    _PWH_WG_CHUNK_BYTES = nbytes


cdef int _pwh_wgrad(const floating* x, const floating* dy, floating* gw, Py_ssize_t M,
                    Py_ssize_t C, Py_ssize_t K, Py_ssize_t Cg, Py_ssize_t Kg, Py_ssize_t G,
                    int n_threads) except -1:
    # gw[c*K + g*Kg + j] = sum_{p<M} x[p*C + g*Cg + c] * dy[p*K + g*Kg + j].
    cdef:
        Py_ssize_t isz = sizeof(floating)
        Py_ssize_t mr = _K.pw_mr, nr = _K.pw_nv * _K.vbytes // isz
        Py_ssize_t kc = max(8, _PWH_WG_CHUNK_BYTES // (nr * isz))
        bint swap = K < C  # dy is the broadcast (by-columns) operand
        const floating* a = dy if swap else x
        const floating* b = x if swap else dy
        Py_ssize_t lda = K if swap else C, ldb = C if swap else K
        Py_ssize_t ma = Kg if swap else Cg, nb = Cg if swap else Kg  # partial: ma x nb
        Py_ssize_t part = Cg * Kg, U, per_u, ncb, nc
        Py_ssize_t items, it, u, g, jb, j0, nj, p0, p1, ic, tid, nthr, t, c, j, r
        Py_ssize_t gbufsz = _round_up(FC_PW_BUF(kc, nr, mr, isz), 16)
        unsigned csr
        floating s
        floating* parts
        floating* buf
        floating* pu
    U = max(1, min(_PWH_WG_UNITS, M // _PWH_WG_MIN_POSITIONS,
                   _PWH_WG_PARTIAL_BYTES // (G * part * isz)))
    per_u = (M + U - 1) // U
    nthr = max(1, n_threads)
    nc = _column_chunk(nb, nr, U * G, nthr)
    ncb = (nb + nc - 1) // nc
    items = U * G * ncb
    nthr = min(nthr, items)
    parts = <floating*>malloc(U * G * part * isz)
    buf = <floating*>malloc(nthr * gbufsz * isz)
    if parts == NULL or buf == NULL:
        free(parts)
        free(buf)
        raise MemoryError()
    with nogil, parallel(num_threads=nthr):
        tid = threadid()
        csr = fc_ftz_enter()
        for it in prange(items, schedule='static'):
            u = it // (G * ncb)
            g = it // ncb % G
            jb = it % ncb
            j0 = jb * nc
            nj = min(nc, nb - j0)
            p0 = u * per_u
            p1 = min(M, p0 + per_u)
            pu = parts + (u * G + g) * part  # no range is empty: U <= max(1, M // 1024)
            for ic in range((p1 - p0 + kc - 1) // kc):
                _pw_gemm(ma, nj, min(kc, p1 - p0 - ic * kc),
                         a + (p0 + ic * kc) * lda + g * ma, 0,
                         b + (p0 + ic * kc) * ldb + g * nb + j0, ldb, NULL, pu + j0, nb, NULL,
                         ic > 0, False, buf + tid * gbufsz, NULL, -lda)
        fc_ftz_leave(csr)
    free(buf)
    with nogil, parallel(num_threads=max(1, min(n_threads, G * Cg))):
        for t in prange(G * Cg, schedule='static'):
            g = t // Cg
            c = t % Cg
            for j in range(Kg):
                r = j * Cg + c if swap else c * Kg + j
                s = parts[g * part + r]
                for u in range(1, U):
                    s = s + parts[(u * G + g) * part + r]
                gw[c * K + g * Kg + j] = s
    free(parts)
    return 0


# Whole-window NCHW layers (one group, unpadded, no dilation, the filters as large as the
# input: one output per image and filter, a fully connected layer) have grad_input
# dx (N x C*H*W) = dy (N x K) . W (K x C*R*S): one product, the filters as they are,
# through _pwh_run. The tiled correlation computed it over grad_y padded by R - 1 and
# S - 1 on each side, 25x the useful work for lenet_c5 (16 -> 120 channels, 5 x 5 on
# 5 x 5, N=64: 8.9 ms against im2col's 0.14; Zen 4, 2026-12-06).
cdef bint _window_fits(const _Conv* cv, int layout) noexcept:
    return (layout == LAYOUT_NCHW and cv.Cg == cv.C and cv.P == 1 and cv.Q == 1
            and cv.R == cv.H and cv.S == cv.W and cv.pad_top == 0 and cv.pad_left == 0
            and cv.dil_h == 1 and cv.dil_w == 1)
