# The NCHW pieces of the im2col engine (fastconv/engines/im2col.py) on this module's
# OpenMP team: the same schedule as its Numba kernels ``_forward_nchw``,
# ``_grad_input_nchw`` and ``_grad_weight_nchw``, share for share and call for call, so
# the results are the same bits. The data moves in the im2col engine's C loops, called
# by address, and no share takes the GIL: a piece right after a direct call runs on
# the team's threads, still spinning from that call, instead of beside them.
#
# The measurements are in fastconv/engines/im2col.py (Pieces on the team).
#
# Pointers come in as addresses, element offsets as int64, and ``isz`` is the element
# size: the Python layer sized every buffer and offset; nothing here checks.

ctypedef void (*unroll_nchw_fn)(const void *, int64_t, int64_t, int64_t, int64_t, int64_t,
                                int64_t, int64_t, int64_t, int64_t, void *, int64_t,
                                int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,
                                int64_t, int64_t, int64_t, int64_t) noexcept nogil
ctypedef void (*fold_nchw_fn)(const void *, int64_t, int64_t, int64_t, int64_t, void *,
                              int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,
                              int64_t, int64_t, int64_t, int64_t, int64_t,
                              int64_t) noexcept nogil
ctypedef void (*unfold_images_fn)(const void *, int64_t, void *, int64_t, int64_t, int64_t,
                                  int64_t, const void *, int64_t) noexcept nogil
ctypedef void (*stage_images_fn)(const void *, int64_t, int64_t, int64_t, int64_t, void *,
                                 int64_t) noexcept nogil
ctypedef void (*bias_rows_fn)(void *, int64_t, int64_t, int64_t, int64_t,
                              const void *) noexcept nogil
ctypedef void (*flip_swap_fn)(const void *, void *, int64_t, int64_t, int64_t, int64_t,
                              int64_t, int64_t) noexcept nogil

# The parts of a piece (fastconv/engines/im2col.py: UNROLL, PRODUCT) and BLAS's
# transposition codes (fastconv/engines/_cblas.py).
cdef enum:
    PART_UNROLL = 1
    PART_PRODUCT = 2
    BLAS_NOTRANS = 78  # 'N'
    BLAS_TRANS = 84  # 'T'

# The taps of a geometry, in the order of ``im2col._taps``: R, S, P, Q, sh, sw, dh, dw,
# pt, pl.
cdef enum:
    TAP_R, TAP_S, TAP_P, TAP_Q, TAP_SH, TAP_SW, TAP_DH, TAP_DW, TAP_PT, TAP_PL, TAPS


cdef inline int64_t _lo(int64_t a, int64_t b) noexcept nogil:
    return a if a < b else b


cdef inline int64_t _hi(int64_t a, int64_t b) noexcept nogil:
    return a if a > b else b


cdef inline char *_at(uintptr_t base, int64_t elements, int64_t isz) noexcept nogil:
    return <char *>base + elements * isz


def _check_taps(const int64_t[::1] taps, int64_t T):
    if taps.shape[0] != TAPS or T < 1:
        raise ValueError(f"taps must hold {int(TAPS)} integers and T >= 1, got "
                         f"{taps.shape[0]} and {T}")


def flip_swap_pieces(uintptr_t flip, uintptr_t w, uintptr_t out, int64_t G, int64_t Kg,
                     int64_t Cg, int64_t RS, int64_t T):
    """``im2col._flip_swap`` on the team: share t flips the blocks of 16 channels
    t*B//T .. (t+1)*B//T."""
    cdef flip_swap_fn fs = <flip_swap_fn>flip
    cdef int64_t B = G * ((Cg + 15) // 16)
    cdef Py_ssize_t t
    if T < 1:
        raise ValueError(f"T must be >= 1, got {T}")
    with nogil:
        for t in prange(T, num_threads=T, schedule="static", chunksize=1):
            fs(<void *>w, <void *>out, G, Kg, Cg, RS, t * B // T, (t + 1) * B // T)


def forward_pieces(uintptr_t unroll, uintptr_t gemm, uintptr_t unfold, uintptr_t add_bias,
                   int64_t isz, uintptr_t x, int64_t N, int64_t C, int64_t H, int64_t W,
                   uintptr_t w, uintptr_t bias, int64_t bias_size, uintptr_t y, int64_t K,
                   int64_t T, int64_t nb, int64_t pb, int64_t nbands, int64_t G,
                   uintptr_t ws, int64_t per, int64_t parts, const int64_t[::1] taps):
    """``im2col._forward_nchw``, share t of T on team thread t."""
    cdef Py_ssize_t t
    _check_taps(taps, T)
    with nogil:
        for t in prange(T, num_threads=T, schedule="static", chunksize=1):
            _forward_share(t, <unroll_nchw_fn>unroll, <gemm_fn>gemm,
                           <unfold_images_fn>unfold, <bias_rows_fn>add_bias, isz, x, N,
                           C, H, W, w, bias, bias_size, y, K, T, nb, pb, nbands, G, ws,
                           per, parts, &taps[0])


cdef void _forward_share(int64_t t, unroll_nchw_fn unroll, gemm_fn mm,
                         unfold_images_fn unfold, bias_rows_fn add_bias, int64_t isz,
                         uintptr_t x, int64_t N, int64_t C, int64_t H, int64_t W,
                         uintptr_t w, uintptr_t bias, int64_t bias_size, uintptr_t y,
                         int64_t K, int64_t T, int64_t nb, int64_t pb, int64_t nbands,
                         int64_t G, uintptr_t ws, int64_t per, int64_t parts,
                         const int64_t *tp) noexcept nogil:
    cdef int64_t R = tp[TAP_R], S = tp[TAP_S], P = tp[TAP_P], Q = tp[TAP_Q]
    cdef int64_t Kg = K // G, crsg = C // G * R * S, PQ = P * Q
    cdef int64_t U = (N + nb - 1) // nb * nbands
    cdef char *cols = _at(ws, t * per, isz)
    cdef char *out = _at(ws, t * per + C * R * S * nb * pb * Q, isz)  # (K, nb*P*Q)
    cdef int64_t u, n, p0, nu, pe, L, M, g, d0, ld
    cdef void *dst
    for u in range(t * U // T, (t + 1) * U // T):
        n, p0 = u // nbands * nb, u % nbands * pb
        nu, pe = _lo(nb, N - n), _lo(pb, P - p0)
        L = pe * Q
        M = nu * L
        if parts & PART_UNROLL:
            unroll(<void *>x, C, H, W, n, nu, p0, pe, 0, C * R * S, cols, M, L, R, S, Q,
                   tp[TAP_SH], tp[TAP_SW], tp[TAP_DH], tp[TAP_DW], tp[TAP_PT], tp[TAP_PL])
        if parts & PART_PRODUCT:
            for g in range(G):
                if nb == 1:
                    dst, d0, ld = <void *>y, (n * K + g * Kg) * PQ + p0 * Q, PQ
                else:
                    dst, d0, ld = out, g * Kg * M, M
                mm(BLAS_NOTRANS, BLAS_NOTRANS, M, Kg, crsg, cols, g * crsg * M, M,
                   <void *>w, g * Kg * crsg, crsg, 0.0, dst, d0, ld)
        if nb > 1:
            unfold(out, M, <void *>y, n, nu, K, PQ, <void *>bias, bias_size)
        elif bias_size:
            add_bias(<void *>y, n * K * PQ + p0 * Q, PQ, K, L, <void *>bias)


def grad_input_pieces(uintptr_t gemm, uintptr_t fold, uintptr_t stage, int64_t isz,
                      uintptr_t gy, int64_t N, int64_t K, uintptr_t w, uintptr_t gx,
                      int64_t C, int64_t H, int64_t W, int64_t T, int64_t nb, int64_t pb,
                      int64_t G, uintptr_t ws, int64_t per, int64_t parts,
                      const int64_t[::1] taps):
    """``im2col._grad_input_nchw``, share t of T on team thread t."""
    cdef Py_ssize_t t
    _check_taps(taps, T)
    with nogil:
        for t in prange(T, num_threads=T, schedule="static", chunksize=1):
            _grad_input_share(t, <gemm_fn>gemm, <fold_nchw_fn>fold,
                              <stage_images_fn>stage, isz, gy, N, K, w, gx, C, H, W, T,
                              nb, pb, G, ws, per, parts, &taps[0])


cdef void _grad_input_share(int64_t t, gemm_fn mm, fold_nchw_fn fold, stage_images_fn stage,
                            int64_t isz, uintptr_t gy, int64_t N, int64_t K, uintptr_t w,
                            uintptr_t gx, int64_t C, int64_t H, int64_t W, int64_t T,
                            int64_t nb, int64_t pb, int64_t G, uintptr_t ws, int64_t per,
                            int64_t parts, const int64_t *tp) noexcept nogil:
    cdef int64_t R = tp[TAP_R], S = tp[TAP_S], P = tp[TAP_P], Q = tp[TAP_Q]
    cdef int64_t Kg = K // G, crsg = C // G * R * S, PQ = P * Q
    cdef char *dcols = _at(ws, t * per, isz)
    cdef char *staged = _at(ws, t * per + C * R * S * nb * pb * Q, isz)  # (K, nb*P*Q)
    cdef int64_t i0 = t * N // T, i1 = (t + 1) * N // T
    cdef int64_t n0, nu, p0, pe, M, g, j, d0, ld
    cdef void *dy
    n0 = i0
    while n0 < i1:
        nu = _lo(nb, i1 - n0)
        memset(_at(gx, n0 * C * H * W, isz), 0, nu * C * H * W * isz)
        p0 = 0
        while p0 < P:
            pe = _lo(pb, P - p0)
            M = nu * pe * Q
            if nb == 1:  # dY of one image's band, read in place
                dy, d0, ld = <void *>gy, n0 * K * PQ + p0 * Q, PQ
            else:
                dy, d0, ld = staged, 0, M
                if parts & PART_PRODUCT:
                    stage(<void *>gy, n0, nu, K, PQ, staged, M)
            if parts & PART_PRODUCT:
                for g in range(G):
                    mm(BLAS_NOTRANS, BLAS_TRANS, M, crsg, Kg, dy, d0 + g * Kg * ld, ld,
                       <void *>w, g * Kg * crsg, crsg, 0.0, dcols, g * crsg * M, M)
            if parts & PART_UNROLL:
                for j in range(nu):  # image n0 + j: columns j*pe*Q ..
                    fold(dcols + j * pe * Q * isz, M, n0 + j, p0, pe, <void *>gx, C, H,
                         W, R, S, Q, tp[TAP_SH], tp[TAP_SW], tp[TAP_DH], tp[TAP_DW],
                         tp[TAP_PT], tp[TAP_PL])
            p0 = p0 + pb
        n0 = n0 + nb


def grad_weight_pieces(uintptr_t unroll, uintptr_t gemm, uintptr_t stage, int64_t isz,
                       uintptr_t gy, uintptr_t x, int64_t N, int64_t C, int64_t H,
                       int64_t W, int64_t K, uintptr_t gw, int64_t gw_size, int64_t T,
                       int64_t nb, int64_t pb, int64_t G, int64_t split_rows, uintptr_t ws,
                       int64_t per, int64_t parts, const int64_t[::1] taps):
    """``im2col._grad_weight_nchw``, share t of T on team thread t."""
    cdef Py_ssize_t t
    _check_taps(taps, T)
    with nogil:
        for t in prange(T, num_threads=T, schedule="static", chunksize=1):
            _grad_weight_share(t, <unroll_nchw_fn>unroll, <gemm_fn>gemm,
                               <stage_images_fn>stage, isz, gy, x, N, C, H, W, K, gw,
                               gw_size, T, nb, pb, G, split_rows, ws, per, parts, &taps[0])


cdef void _grad_weight_share(int64_t t, unroll_nchw_fn unroll, gemm_fn mm,
                             stage_images_fn stage, int64_t isz, uintptr_t gy, uintptr_t x,
                             int64_t N, int64_t C, int64_t H, int64_t W, int64_t K,
                             uintptr_t gw, int64_t gw_size, int64_t T, int64_t nb,
                             int64_t pb, int64_t G, int64_t split_rows, uintptr_t ws,
                             int64_t per, int64_t parts, const int64_t *tp) noexcept nogil:
    cdef int64_t R = tp[TAP_R], S = tp[TAP_S], P = tp[TAP_P], Q = tp[TAP_Q]
    cdef int64_t Kg = K // G, crs = C * R * S, PQ = P * Q
    cdef int64_t crsg = crs // G
    cdef int64_t nbands = (P + pb - 1) // pb
    cdef int64_t nchunks = (N + nb - 1) // nb * nbands
    cdef char *buf = _at(ws, t * per, isz)
    cdef void *out
    cdef int64_t r0, r1, c0, c1, ci, n0, n1, p0, pe, L, M, g, lo, hi, d0, ld
    cdef void *dy
    cdef char *staged
    cdef double beta
    if split_rows:
        r0, r1, c0, c1 = t * crs // T, (t + 1) * crs // T, 0, nchunks
        out = <void *>gw
    else:
        r0, r1, c0, c1 = 0, crs, t * nchunks // T, (t + 1) * nchunks // T
        out = buf + (per - gw_size) * isz
        if c0 == c1:
            memset(out, 0, gw_size * isz)
    staged = buf + (r1 - r0) * nb * pb * Q * isz
    for ci in range(c0, c1):
        n0, p0 = ci // nbands * nb, ci % nbands * pb
        n1, pe = _lo(N, n0 + nb), _lo(pb, P - p0)
        L = pe * Q
        M = (n1 - n0) * L
        if parts & PART_UNROLL:
            unroll(<void *>x, C, H, W, n0, n1 - n0, p0, pe, r0, r1, buf, M, L, R, S, Q,
                   tp[TAP_SH], tp[TAP_SW], tp[TAP_DH], tp[TAP_DW], tp[TAP_PT], tp[TAP_PL])
        if n1 - n0 == 1:  # dY of one image's band: read in place
            dy, d0, ld = <void *>gy, n0 * K * PQ + p0 * Q, PQ
        else:  # several images side by side: (K, M)
            dy, d0, ld = staged, 0, M
            if parts & PART_UNROLL:
                stage(<void *>gy, n0, n1 - n0, K, PQ, staged, M)
        beta = 0.0 if ci == c0 else 1.0
        if parts & PART_PRODUCT:
            for g in range(G):
                lo, hi = _hi(r0, g * crsg), _lo(r1, (g + 1) * crsg)
                if lo >= hi:
                    continue
                mm(BLAS_TRANS, BLAS_NOTRANS, hi - lo, Kg, M, buf, (lo - r0) * M, M, dy,
                   d0 + g * Kg * ld, ld, beta, out, g * Kg * crsg + lo - g * crsg, crsg)
