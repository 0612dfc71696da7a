"""Direct 2-D convolution kernels: the convolution sum as plain loops, no workspace.

    y[n, k, p, q] = sum_{c, r, s} x[n, g*Cg + c, p*sh + r*dh - pt, q*sw + s*dw - pl] * w[k, c, r, s]

with strides sh, sw, dilations dh, dw, top/left padding pt, pl, and g = k // Kg the
group of filter k (bottom/right padding only enter through P and Q).

Both layouts run through the same loops: the def wrappers turn the layout into element
strides (``_make_conv``), so the kernels never ask which layout they are in and never
copy the input.

Padding is never materialised. For each filter tap (r, s) the output rows and columns
whose input lies inside the image are computed up front (``_first_out``, ``_end_out``),
so the inner loops carry no bounds test.

Each parallel loop hands every output element to exactly one thread, which computes
it in a fixed order: the results are race-free and do not depend on the thread count.
"""
from cython cimport floating
from cython.parallel cimport parallel, prange, threadid
from libc.stddef cimport ptrdiff_t
# Scratch comes from PyMem_Raw*: thread-safe without the GIL, and tracemalloc sees it
# (tests/test_direct_simd.py measures the workspace that way).
from cpython.mem cimport PyMem_RawCalloc as calloc
from cpython.mem cimport PyMem_RawFree as free
from cpython.mem cimport PyMem_RawMalloc as malloc
from libc.stdint cimport uint32_t, uint64_t
from libc.string cimport memcpy, memset

cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    #define FASTCONV_OPENMP_VERSION _OPENMP
    static int fastconv_max_threads(void) { return omp_get_max_threads(); }
    #else
    #define FASTCONV_OPENMP_VERSION 0
    static int fastconv_max_threads(void) { return 1; }
    #endif

    #ifdef FASTCONV_DEBUG_CHECKS
    #define FASTCONV_DEBUG 1
    #else
    #define FASTCONV_DEBUG 0
    #endif
    """
    long FASTCONV_OPENMP_VERSION
    int FASTCONV_DEBUG
    int fastconv_max_threads() noexcept nogil


# Must match fastconv._geometry.LAYOUT_NCHW / LAYOUT_NHWC.
cdef enum:
    LAYOUT_NCHW = 0
    LAYOUT_NHWC = 1


ctypedef struct _Conv:
    Py_ssize_t N, C, H, W, K, R, S, P, Q
    Py_ssize_t Cg, Kg
    Py_ssize_t stride_h, stride_w, dil_h, dil_w, pad_top, pad_left
    # Element strides: of x and grad_x, of y and grad_y, and of w and grad_w.
    Py_ssize_t xs_n, xs_c, xs_h, xs_w
    Py_ssize_t ys_n, ys_k, ys_p, ys_q
    Py_ssize_t ws_k, ws_c, ws_r, ws_s


def openmp_info():
    """How this module was compiled: OpenMP support and version, threads, debug checks."""
    return {
        "openmp": FASTCONV_OPENMP_VERSION != 0,
        "openmp_version": int(FASTCONV_OPENMP_VERSION),
        "max_threads": int(fastconv_max_threads()),
        "debug_checks": bool(FASTCONV_DEBUG),
    }


cdef _Conv _make_conv(
    Py_ssize_t N, Py_ssize_t C, Py_ssize_t H, Py_ssize_t W,
    Py_ssize_t K, Py_ssize_t R, Py_ssize_t S, Py_ssize_t P, Py_ssize_t Q,
    Py_ssize_t groups, Py_ssize_t stride_h, Py_ssize_t stride_w,
    Py_ssize_t dil_h, Py_ssize_t dil_w, Py_ssize_t pad_top, Py_ssize_t pad_left,
    int layout,
) except *:
    cdef _Conv cv
    cv.N, cv.C, cv.H, cv.W = N, C, H, W
    cv.K, cv.R, cv.S, cv.P, cv.Q = K, R, S, P, Q
    cv.Cg, cv.Kg = C // groups, K // groups
    cv.stride_h, cv.stride_w, cv.dil_h, cv.dil_w = stride_h, stride_w, dil_h, dil_w
    cv.pad_top, cv.pad_left = pad_top, pad_left
    if layout == LAYOUT_NCHW:
        cv.xs_n, cv.xs_c, cv.xs_h, cv.xs_w = C * H * W, H * W, W, 1
        cv.ys_n, cv.ys_k, cv.ys_p, cv.ys_q = K * P * Q, P * Q, Q, 1
        cv.ws_k, cv.ws_c, cv.ws_r, cv.ws_s = cv.Cg * R * S, R * S, S, 1  # OIHW
    elif layout == LAYOUT_NHWC:
        cv.xs_n, cv.xs_h, cv.xs_w, cv.xs_c = H * W * C, W * C, C, 1
        cv.ys_n, cv.ys_p, cv.ys_q, cv.ys_k = P * Q * K, Q * K, K, 1
        cv.ws_r, cv.ws_s, cv.ws_c, cv.ws_k = S * cv.Cg * K, cv.Cg * K, K, 1  # HWIO
    else:
        raise ValueError(
            f"layout must be {LAYOUT_NCHW} (NCHW) or {LAYOUT_NHWC} (NHWC), got {layout}")
    return cv


cdef int _check_size(Py_ssize_t size, Py_ssize_t expected, str name) except -1:
    # The kernels trust the geometry; a buffer of the wrong size would corrupt memory.
    if size != expected:
        raise ValueError(f"{name} has {size} elements, the geometry needs {expected}")
    return 0


# Integer division rounding down / up, for b > 0 and any sign of a. Written so the
# result holds whether // truncates (cdivision) or floors (Python semantics).
cdef inline Py_ssize_t _floor_div(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    cdef Py_ssize_t q = a // b
    if q * b > a:
        q -= 1
    return q


cdef inline Py_ssize_t _ceil_div(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    return -_floor_div(-a, b)


# An output index o reads input index o*stride + offset, with offset = tap*dilation - pad.
# These give the range [first, end) of outputs whose input lies in [0, size); it is
# empty (end <= first) when the tap only ever meets padding.
cdef inline Py_ssize_t _first_out(Py_ssize_t offset, Py_ssize_t stride) noexcept nogil:
    return max(_ceil_div(-offset, stride), 0)


cdef inline Py_ssize_t _end_out(Py_ssize_t offset, Py_ssize_t stride, Py_ssize_t size,
                                Py_ssize_t n_out) noexcept nogil:
    return min(_floor_div(size - 1 - offset, stride) + 1, n_out)


# ---------------------------------------------------------------------------------------
# The fast path: tiles, packed weights and SIMD micro-kernels (csrc/direct_kernels*.c).
#
# Forward and grad_input are both a "tiled correlation" (_Corr): for one image n,
# group g and a block of PB output rows, the Ci source channels are copied into a
# zero-padded *tile*, split by stride phase:
#
#     tile[c*cs + (a*sw + b)*Ti*L + i*L + j] = src[n, g*Ci + c, (p0 + i)*sh + a - pt, j*sw + b - pl]
#
# (zero outside the image). Output (p, q) of the block, flattened to m = (p - p0)*L + q,
# then reads tap t at tile[c*cs + tapoff[t] + m]: contiguous in m for every stride,
# dilation and padding, so the micro-kernel only issues unaligned vector loads and
# never tests a bound. Columns q >= Qo of the flattened grid are computed and dropped.
# A tile is a bounded per-thread buffer (about _TILE_BUDGET bytes), never the whole
# input, and it is also how NHWC input is transposed to channel planes.
#
# grad_input is the same correlation of grad_y with the transposed filters, split into
# sh*sw output phases: each phase of grad_x only meets the taps whose offsets match it,
# so it is a stride-1 correlation over those taps and no inserted zero is ever read.
# grad_weight reduces tile x staged grad_y over m (fc_wgrad); one thread owns a block of
# filters and loops over every image and row block in a fixed order, so its result is
# bitwise the same for any thread count and any repeat.

cdef extern from "direct_kernels.h" nogil:
    int FC_NV
    int FC_NV1
    int FC_KW
    int FC_MR_MAX
    int FC_DW_RB
    int FC_DW_MAXK
    Py_ssize_t FC_PW_BUF(Py_ssize_t k, Py_ssize_t nr, Py_ssize_t mr, Py_ssize_t itemsize)
    Py_ssize_t FC_DW_RING(int R, int S, Py_ssize_t Q, Py_ssize_t VL)
    int FC_WINO_TB
    int FC_WINO_MAXA
    int FC_DWL_TB
    ctypedef struct fc_kernels:
        const char *name
        int vbytes
        int kb
        int mr
        int nvk
        int pw_mr
        int pw_nv
        void (*conv_f32)(const float *, ptrdiff_t, ptrdiff_t, const ptrdiff_t *, ptrdiff_t,
                         const float *, float *, ptrdiff_t, int) noexcept nogil
        void (*conv_f64)(const double *, ptrdiff_t, ptrdiff_t, const ptrdiff_t *, ptrdiff_t,
                         const double *, double *, ptrdiff_t, int) noexcept nogil
        void (*conv1_f32)(const float *, ptrdiff_t, ptrdiff_t, const ptrdiff_t *, ptrdiff_t,
                          const float *, float *, int) noexcept nogil
        void (*conv1_f64)(const double *, ptrdiff_t, ptrdiff_t, const ptrdiff_t *, ptrdiff_t,
                          const double *, double *, int) noexcept nogil
        void (*wgrad_f32)(const float *, ptrdiff_t, ptrdiff_t, const float *,
                          const ptrdiff_t *, ptrdiff_t, ptrdiff_t, float *) noexcept nogil
        void (*wgrad_f64)(const double *, ptrdiff_t, ptrdiff_t, const double *,
                          const ptrdiff_t *, ptrdiff_t, ptrdiff_t, double *) noexcept nogil
        void (*kvec_f32)(const float *, const ptrdiff_t *, int, const ptrdiff_t *, ptrdiff_t,
                         const float *, ptrdiff_t, float *, ptrdiff_t, int, int) noexcept nogil
        void (*kvec_f64)(const double *, const ptrdiff_t *, int, const ptrdiff_t *, ptrdiff_t,
                         const double *, ptrdiff_t, double *, ptrdiff_t, int, int) noexcept nogil
        void (*dw_f32)(const float *, ptrdiff_t, ptrdiff_t, ptrdiff_t, const float *, int, int,
                       ptrdiff_t, ptrdiff_t, float, float *, ptrdiff_t, ptrdiff_t, ptrdiff_t,
                       ptrdiff_t, float *) noexcept nogil
        void (*dw_f64)(const double *, ptrdiff_t, ptrdiff_t, ptrdiff_t, const double *, int,
                       int, ptrdiff_t, ptrdiff_t, double, double *, ptrdiff_t, ptrdiff_t,
                       ptrdiff_t, ptrdiff_t, double *) noexcept nogil
        void (*dww_f32)(const float *, ptrdiff_t, ptrdiff_t, ptrdiff_t, const float *,
                        ptrdiff_t, ptrdiff_t, ptrdiff_t, int, int, ptrdiff_t, ptrdiff_t,
                        float *, float *) noexcept nogil
        void (*dww_f64)(const double *, ptrdiff_t, ptrdiff_t, ptrdiff_t, const double *,
                        ptrdiff_t, ptrdiff_t, ptrdiff_t, int, int, ptrdiff_t, ptrdiff_t,
                        double *, double *) noexcept nogil
        void (*pw_pack_f32)(const float *, ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t,
                            float *) noexcept nogil
        void (*pw_pack_f64)(const double *, ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t,
                            double *) noexcept nogil
        void (*pw_gemm_f32)(ptrdiff_t, ptrdiff_t, ptrdiff_t, const float *, ptrdiff_t,
                            ptrdiff_t, const float *,
                            ptrdiff_t, const ptrdiff_t *, float *, ptrdiff_t, const float *,
                            const float *, int, int, float *) noexcept nogil
        void (*pw_gemm_f64)(ptrdiff_t, ptrdiff_t, ptrdiff_t, const double *, ptrdiff_t,
                            ptrdiff_t, const double *,
                            ptrdiff_t, const ptrdiff_t *, double *, ptrdiff_t, const double *,
                            const double *, int, int, double *) noexcept nogil
        void (*wino_in_f32)(const float *, const ptrdiff_t *, ptrdiff_t, ptrdiff_t,
                            const float *, int, float *, ptrdiff_t) noexcept nogil
        void (*wino_in_f64)(const double *, const ptrdiff_t *, ptrdiff_t, ptrdiff_t,
                            const double *, int, double *, ptrdiff_t) noexcept nogil
        void (*wino_out_f32)(const float *, ptrdiff_t, const float *, int, int,
                             float *) noexcept nogil
        void (*wino_out_f64)(const double *, ptrdiff_t, const double *, int, int,
                             double *) noexcept nogil
        void (*wino_out_rows_f32)(const float *, ptrdiff_t, const float *, int, int, float,
                                  float *, const ptrdiff_t *, ptrdiff_t, const ptrdiff_t *,
                                  const ptrdiff_t *, ptrdiff_t, ptrdiff_t) noexcept nogil
        void (*wino_out_rows_f64)(const double *, ptrdiff_t, const double *, int, int,
                                  double, double *, const ptrdiff_t *, ptrdiff_t,
                                  const ptrdiff_t *, const ptrdiff_t *, ptrdiff_t,
                                  ptrdiff_t) noexcept nogil
        void (*dwl_stage_f32)(const float *, ptrdiff_t, int, ptrdiff_t, ptrdiff_t, ptrdiff_t,
                              ptrdiff_t, float *) noexcept nogil
        void (*dwl_stage_f64)(const double *, ptrdiff_t, int, ptrdiff_t, ptrdiff_t,
                              ptrdiff_t, ptrdiff_t, double *) noexcept nogil
        void (*dwl_unstage_f32)(const float *, const ptrdiff_t *, ptrdiff_t, int,
                                const float *, float *, ptrdiff_t) noexcept nogil
        void (*dwl_unstage_f64)(const double *, const ptrdiff_t *, ptrdiff_t, int,
                                const double *, double *, ptrdiff_t) noexcept nogil
        void (*dwl_corr_f32)(const float *, const ptrdiff_t *, ptrdiff_t, const ptrdiff_t *,
                             ptrdiff_t, const float *, float *) noexcept nogil
        void (*dwl_corr_f64)(const double *, const ptrdiff_t *, ptrdiff_t,
                             const ptrdiff_t *, ptrdiff_t, const double *,
                             double *) noexcept nogil
        void (*dwl_wgrad_f32)(const float *, const ptrdiff_t *, ptrdiff_t,
                              const ptrdiff_t *, ptrdiff_t, const float *,
                              float *) noexcept nogil
        void (*dwl_wgrad_f64)(const double *, const ptrdiff_t *, ptrdiff_t,
                              const ptrdiff_t *, ptrdiff_t, const double *,
                              double *) noexcept nogil
    unsigned fc_ftz_enter()
    void fc_ftz_leave(unsigned old)
    const fc_kernels *fc_select(const char *request)
    const char *fc_supported()


cdef const fc_kernels *_K = NULL
_SIMD_REQUEST = ""


def _choose_simd():
    """Pick the micro-kernels once, at import: FASTCONV_SIMD, else the best this CPU runs."""
    global _K, _SIMD_REQUEST
    import os
    import warnings
    request = os.environ.get("FASTCONV_SIMD", "").strip().lower()
    _SIMD_REQUEST = request
    _K = fc_select(request.encode())
    if _K == NULL:
        supported = fc_supported().decode()
        warnings.warn(f"FASTCONV_SIMD={request!r} is not available; acceptable values on this "
                      f"machine are {supported.replace(',', ', ')} (using the best of them)",
                      RuntimeWarning, stacklevel=2)
        _K = fc_select(b"")


_choose_simd()


def simd_info():
    """The micro-kernel set in use, its vector width, and the sets this machine supports."""
    return {
        "simd": _K.name.decode(),
        "vector_bits": 8 * _K.vbytes,
        "supported": fc_supported().decode().split(","),
        "requested": _SIMD_REQUEST or None,
    }


# Bytes of one per-thread tile. Measured on the suite: 256-512 KiB keeps a tile in L2
# while every filter block streams over it; much smaller tiles re-pack the R-1 halo
# rows too often, larger ones fall out of L2.
cdef Py_ssize_t _TILE_BUDGET = 512 * 1024


# Bytes of packed weights one filter chunk may hold (L2 is 2 MiB per core here).
cdef Py_ssize_t _WEIGHT_BUDGET = 1024 * 1024


# The K-vectorised path (fc_kvec): outputs with at most _KVEC_MAX_OUT positions per
# image (and a whole image per tile) vectorise over output channels instead of output
# positions, so a 7x7 or 1x1 output leaves no lane empty. _KVEC_MODE: 0 auto, 1 never,
# 2 whenever the tile plan allows (tests use 1 and 2 to cover both paths).
cdef Py_ssize_t _KVEC_MAX_OUT = 256
cdef int _KVEC_MODE = 0
# Bytes of packed weights one reduction chunk of the K-vectorised forward holds (L1 is
# 48 KiB per core here; half of it leaves room for the broadcast tile rows).
cdef Py_ssize_t _KVEC_CHUNK_BYTES = 24 * 1024
cdef Py_ssize_t _KVEC_GROUP = 8 * FC_MR_MAX  # positions whose partial sums wait in st
# Held tiles: when every thread's share of the images (one group) fits in
# _KVEC_HOLD_BYTES of tiles, each thread takes its images whole and runs every filter
# block over them: one item per thread, the tiles packed once, and each block's packed
# weights (864 KiB for resnet_c5) read from L2 by all of the thread's positions. The
# filter-chunk split below instead packs every image once per chunk (resnet_c5: 10
# chunks, 13% of the time in _pack_channels). Measured (2 threads, float32, ms):
# resnet_c5 forward 8.3 -> 7.5, grad_input 8.6 -> 7.7; resnet_c4 (1 MiB of tiles per
# thread, images packed only twice before) gained nothing (grad_input 1.5% slower),
# hence the 768 KiB bound; lenet_c5 forward unchanged.
cdef bint _KVEC_HOLD = True
cdef Py_ssize_t _KVEC_HOLD_BYTES = 768 * 1024


def _set_kvec_hold(bint on, Py_ssize_t nbytes=768 * 1024):
    """Tuning hook: allow (True) or forbid held tiles, and their per-thread bound."""
    global _KVEC_HOLD, _KVEC_HOLD_BYTES
    _KVEC_HOLD, _KVEC_HOLD_BYTES = on, nbytes


def _set_kvec(mode="auto", Py_ssize_t max_out=256):
    """Testing and tuning hook: force the K-vectorised path on ("always"), off ("never"),
    or back to the cost rule ("auto") with its output-size threshold."""
    global _KVEC_MODE, _KVEC_MAX_OUT
    modes = {"auto": 0, "never": 1, "always": 2}
    if mode not in modes:
        raise ValueError(f"mode must be 'auto', 'never' or 'always', got {mode!r}")
    _KVEC_MODE, _KVEC_MAX_OUT = modes[mode], max_out


cdef bint _kvec_fits(const _Corr* cr, Py_ssize_t ko, Py_ssize_t vl) noexcept:
    if _KVEC_MODE == 1 or ko < 2 or cr.npb != 1 or cr.nqb != 1:
        return False
    # Measured: with fewer channels than half a kvec block (cs231n grad_input, 3;
    # lenet_c1, 6) the padded lanes cost more than the empty positions saved. With
    # fewer than 4 source channels (cs231n forward: 27 reduction steps) each block's
    # stores outweigh its short sum: 0.58 ms here, 0.40 ms position-vectorised.
    return _KVEC_MODE == 2 or (cr.Po * cr.Qo <= _KVEC_MAX_OUT and 2 * ko >= _K.nvk * vl
                               and cr.Ci >= 4)


cdef bint _wgradk_fits(const _Corr* cr, Py_ssize_t kg, Py_ssize_t N, Py_ssize_t vl) noexcept:
    # grad_weight through fc_kvec (_wgradk) takes row blocks of whole-width tiles.
    if _KVEC_MODE == 1 or kg < 2 or cr.nqb != 1:
        return False
    if _KVEC_MODE == 2:
        return True
    # Measured: with one small image (batch1_c4) the 196-position reduction is too
    # short to beat the position-vectorised kernel (84 vs 98 GFLOP/s).
    if cr.npb != 1 or cr.Po * cr.Qo > _KVEC_MAX_OUT:
        # Row blocks (measured, float32, 2 threads, ms, against fc_wgrad): resnet_c3_3x3s2
        # 25.2 -> 8.8, resnet_c2_3x3 10.6 -> 7.6, resnet_c2_1x1 9.7 -> 6.3, alexnet_conv1
        # 12.1 -> 10.5; but resnet_stem 14.9 -> 15.9 (3 channels, 64 filters: 2-vector
        # blocks over a long reduction), hence the last condition.
        if not _WGRADK_ROWS or (cr.Ci < 4 and kg % (_K.nvk * vl) != 0):
            return False
    return 2 * kg >= _K.nvk * vl and (N > 1 or cr.npb > 1)


cdef bint _WGRADK_ROWS = True
# Bytes of staged grad_y one position chunk of _wgradk holds (a quarter of L2 here).
cdef Py_ssize_t _WGRAD_CHUNK_BYTES = 256 * 1024


def _set_budgets(Py_ssize_t tile=512 * 1024, Py_ssize_t kvec_chunk=24 * 1024,
                 Py_ssize_t wgrad_chunk=256 * 1024):
    """Testing hook: the tile, kvec reduction-chunk and grad_weight position-chunk
    budgets in bytes (tiny values force row blocks and chunked reductions)."""
    global _TILE_BUDGET, _KVEC_CHUNK_BYTES, _WGRAD_CHUNK_BYTES
    _TILE_BUDGET, _KVEC_CHUNK_BYTES, _WGRAD_CHUNK_BYTES = tile, kvec_chunk, wgrad_chunk


def _set_wgradk_rows(bint on):
    """Tuning hook: allow (True) or forbid the K-vectorised grad_weight on row blocks."""
    global _WGRADK_ROWS
    _WGRADK_ROWS = on


ctypedef struct _Corr:
    # The source the tiles are cut from: N images, G groups of Ci channels, Hi x Wi,
    # element strides xs_*, read with stride sh, sw and top/left padding pt, pl.
    Py_ssize_t N, G, Ci, Hi, Wi
    Py_ssize_t xs_n, xs_c, xs_h, xs_w
    Py_ssize_t sh, sw, pt, pl
    Py_ssize_t ntaps
    # The output: Ko channels per group, Po x Qo, element (n, g*Ko + k, p, q) at
    # y_off + n*ys_n + (g*Ko + k)*ys_k + p*ys_p + q*ys_q.
    Py_ssize_t Ko, Po, Qo
    Py_ssize_t ys_n, ys_k, ys_p, ys_q, y_off
    # Tiles: PB output rows x QB output columns per block (npb x nqb blocks); one
    # plane per stride phase the taps use (rows pha[:na] x columns phb[:nb]), each Ti
    # rows (PB plus the filter's halo) of pitch L (QB plus halo); channel pitch cs,
    # elements per tile buffer.
    Py_ssize_t PB, npb, QB, nqb, Ti, L, cs, tile_len
    Py_ssize_t na, nb
    Py_ssize_t* pha
    Py_ssize_t* phb


cdef inline Py_ssize_t _round_up(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    return (a + b - 1) // b * b


cdef Py_ssize_t _index_of(const Py_ssize_t* a, Py_ssize_t n, Py_ssize_t v) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        if a[i] == v:
            return i
    return -1


cdef void _plan_tiles(_Corr* cr, const Py_ssize_t* dr, const Py_ssize_t* ds,
                      Py_ssize_t* pha, Py_ssize_t* phb, ptrdiff_t* tapoff,
                      Py_ssize_t itemsize) noexcept:
    # dr, ds: each tap's row and column offset in padded source coordinates; pha, phb:
    # room for ntaps + 1 phases each.
    cdef Py_ssize_t t, rext = 0, cext = 0, per_col
    cr.pha, cr.phb, cr.na, cr.nb = pha, phb, 0, 0
    for t in range(cr.ntaps):
        rext = max(rext, dr[t] // cr.sh)
        cext = max(cext, ds[t] // cr.sw)
        if _index_of(pha, cr.na, dr[t] % cr.sh) < 0:
            pha[cr.na] = dr[t] % cr.sh
            cr.na += 1
        if _index_of(phb, cr.nb, ds[t] % cr.sw) < 0:
            phb[cr.nb] = ds[t] % cr.sw
            cr.nb += 1
    if cr.ntaps == 0:  # no tap meets this output: a plane of zeros, never read
        pha[0], phb[0], cr.na, cr.nb = 0, 0, 1, 1
    # Column blocks only when one tile row of every channel would overflow the budget
    # (very wide images): the tile never grows with the image.
    per_col = cr.Ci * cr.na * cr.nb * (1 + rext) * itemsize
    cr.QB = cr.Qo
    if per_col * (cr.Qo + cext) > _TILE_BUDGET:
        cr.QB = max(1, min(cr.Qo, _TILE_BUDGET // per_col - cext))
    cr.nqb = (cr.Qo + cr.QB - 1) // cr.QB
    cr.QB = (cr.Qo + cr.nqb - 1) // cr.nqb
    cr.L = cr.QB + cext
    cr.PB = max(1, min(cr.Po, _TILE_BUDGET // (cr.Ci * cr.na * cr.nb * cr.L * itemsize) - rext))
    cr.npb = (cr.Po + cr.PB - 1) // cr.PB
    cr.PB = (cr.Po + cr.npb - 1) // cr.npb  # equal blocks
    cr.Ti = cr.PB + rext
    cr.cs = cr.na * cr.nb * cr.Ti * cr.L
    # Loads run past the last row (junk outputs) by at most a block of vectors.
    cr.tile_len = (cr.Ci + 1) * cr.cs + 256
    for t in range(cr.ntaps):
        tapoff[t] = ((_index_of(pha, cr.na, dr[t] % cr.sh) * cr.nb
                      + _index_of(phb, cr.nb, ds[t] % cr.sw)) * cr.Ti * cr.L
                     + (dr[t] // cr.sh) * cr.L + ds[t] // cr.sw)


cdef inline void _pack_tile(
    const floating* x,  # IN: the source
    const _Corr* cr,
    Py_ssize_t n, Py_ssize_t g, Py_ssize_t p0, Py_ssize_t q0, Py_ssize_t rows,
    floating* tile,     # OUT: rows rows of every phase plane of every channel
) noexcept nogil:
    _pack_channels(x, cr, n, g, p0, q0, rows, 0, cr.Ci, tile)


cdef void _pack_channels(
    const floating* x,  # IN: the source
    const _Corr* cr,
    Py_ssize_t n, Py_ssize_t g, Py_ssize_t p0, Py_ssize_t q0, Py_ssize_t rows,
    Py_ssize_t c_lo, Py_ssize_t c_hi,
    floating* tile,     # OUT: rows rows of every phase plane of channels [c_lo, c_hi)
) noexcept nogil:
    cdef:
        Py_ssize_t c, ia, ib, a, b, i, j, j0, j1, h
        Py_ssize_t L = cr.L, step = cr.sw * cr.xs_w
        const floating* xc
        const floating* src
        floating* plane
        floating* row
    for c in range(c_lo, c_hi):
        xc = x + n * cr.xs_n + (g * cr.Ci + c) * cr.xs_c
        for ia in range(cr.na):
            a = cr.pha[ia]
            for ib in range(cr.nb):
                b = cr.phb[ib]
                plane = tile + c * cr.cs + (ia * cr.nb + ib) * cr.Ti * L
                # Tile columns [j0, j1) hold image columns (q0 + j)*sw + b - pl in [0, Wi).
                j0 = min(max(_ceil_div(cr.pl - b, cr.sw) - q0, 0), L)
                j1 = max(min(_floor_div(cr.Wi - 1 + cr.pl - b, cr.sw) + 1 - q0, L), j0)
                for i in range(rows):
                    row = plane + i * L
                    h = (p0 + i) * cr.sh + a - cr.pt
                    if h < 0 or h >= cr.Hi:
                        memset(row, 0, L * sizeof(floating))
                        continue
                    memset(row, 0, j0 * sizeof(floating))
                    memset(row + j1, 0, (L - j1) * sizeof(floating))
                    src = xc + h * cr.xs_h + ((q0 + j0) * cr.sw + b - cr.pl) * cr.xs_w
                    if step == 1:
                        memcpy(row + j0, src, (j1 - j0) * sizeof(floating))
                    else:
                        for j in range(j1 - j0):
                            row[j0 + j] = src[j * step]


cdef void _unstage(
    const floating* st,    # IN: nk rows of ldst results for flattened m0 .. m0+mlen
    Py_ssize_t ldst, Py_ssize_t nk, Py_ssize_t m0, Py_ssize_t mlen,
    Py_ssize_t Qv,         # valid columns of the tile's rows
    const _Corr* cr,
    const floating* bias,  # IN: nk values, or NULL
    floating* y,           # OUT: at output (n, first channel, first row of the block, 0)
) noexcept nogil:
    # Row by row, then channel by channel: one division per block, not one per run
    # (per-run divisions and the short runs of a 16-column output made this loop a
    # third of cs231n's forward).
    cdef:
        Py_ssize_t k, p, j, lo, hi, end = m0 + mlen
        floating bk
        floating* dst
        const floating* src
    for p in range(m0 // cr.L, (end - 1) // cr.L + 1):
        lo = max(m0, p * cr.L)
        hi = min(end, p * cr.L + Qv)
        if hi <= lo:
            continue
        for k in range(nk):
            bk = bias[k] if bias != NULL else 0
            dst = y + k * cr.ys_k + p * cr.ys_p + (lo - p * cr.L) * cr.ys_q
            src = st + k * ldst + (lo - m0)
            if cr.ys_q == 1:  # NCHW: a contiguous run the compiler vectorises
                for j in range(hi - lo):
                    dst[j] = src[j] + bk
            else:
                for j in range(hi - lo):
                    dst[j * cr.ys_q] = src[j] + bk


ctypedef struct _Item:
    # One work item of the tiled correlation: filter chunk kc, image n, group g, the
    # output rows p0 .. p0 + PBe and columns q0 .. q0 + Qv.
    Py_ssize_t kc, n, g, p0, PBe, q0, Qv


cdef inline _Item _item_of(const _Corr* cr, Py_ssize_t item) noexcept nogil:
    # Items run filter chunk (outermost) x image x group x row block x column block.
    cdef _Item it
    cdef Py_ssize_t base = cr.N * cr.G * cr.npb * cr.nqb, rest = item % base
    it.kc = item // base
    it.q0 = rest % cr.nqb * cr.QB
    it.Qv = min(cr.QB, cr.Qo - it.q0)
    rest = rest // cr.nqb
    it.p0 = rest % cr.npb * cr.PB
    it.PBe = min(cr.PB, cr.Po - it.p0)
    rest = rest // cr.npb
    it.g = rest % cr.G
    it.n = rest // cr.G
    return it


cdef void _corr_item(
    const floating* x,     # IN: source
    const floating* wp,    # IN: packed weights
    const floating* bias,  # IN: G*Ko values or NULL
    floating* y,           # OUT
    const _Corr* cr, const ptrdiff_t* tapoff,
    Py_ssize_t item, Py_ssize_t nkc, Py_ssize_t kb, Py_ssize_t vl,
    floating* tile, floating* st,  # per-thread scratch
) noexcept nogil:
    cdef:
        _Item it = _item_of(cr, item)
        Py_ssize_t g = it.g, Qv = it.Qv, nvt, nch, ich
        Py_ssize_t M, m0, nv, nk, kbi, kb_lo, kb_hi, step
        Py_ssize_t nkb = (cr.Ko + kb - 1) // kb
        Py_ssize_t wblock = cr.Ci * cr.ntaps * kb
        floating* yb
        const floating* bb = NULL
    _pack_tile(x, cr, it.n, g, it.p0, it.q0, it.PBe + cr.Ti - cr.PB, tile)
    M = it.PBe * cr.L
    yb = y + cr.y_off + it.n * cr.ys_n + it.p0 * cr.ys_p + it.q0 * cr.ys_q
    kb_lo = it.kc * nkb // nkc
    kb_hi = (it.kc + 1) * nkb // nkc
    step = vl * (FC_NV1 if kb == 1 else FC_NV)
    for kbi in range(kb_lo, kb_hi):
        nk = min(kb, cr.Ko - kbi * kb)
        if bias != NULL:
            bb = bias + g * cr.Ko + kbi * kb
        # Split the tile's nvt vectors into nch near-equal chunks: 4 vectors run as
        # 2 + 2, not 3 + 1 (a 1-vector block is FMA-latency bound).
        nvt = (M + vl - 1) // vl
        nch = (nvt * vl + step - 1) // step
        m0 = 0
        for ich in range(nch):
            nv = (ich + 1) * nvt // nch - ich * nvt // nch
            if kb == 1:
                if floating is float:
                    _K.conv1_f32(tile + m0, cr.cs, cr.Ci, tapoff, cr.ntaps,
                                 wp + (g * nkb + kbi) * wblock, st, <int>nv)
                else:
                    _K.conv1_f64(tile + m0, cr.cs, cr.Ci, tapoff, cr.ntaps,
                                 wp + (g * nkb + kbi) * wblock, st, <int>nv)
            else:
                if floating is float:
                    _K.conv_f32(tile + m0, cr.cs, cr.Ci, tapoff, cr.ntaps,
                                wp + (g * nkb + kbi) * wblock, st, step, <int>nv)
                else:
                    _K.conv_f64(tile + m0, cr.cs, cr.Ci, tapoff, cr.ntaps,
                                wp + (g * nkb + kbi) * wblock, st, step, <int>nv)
            _unstage(st, step, nk, m0, min(nv * vl, M - m0), Qv, cr, bb,
                     yb + (g * cr.Ko + kbi * kb) * cr.ys_k)
            m0 += nv * vl


# The tiled correlation through fc_pw_gemm (_GEMM_TILES, the default where a group has
# at least a register block's rows of filters, pw_mr): the tile's (channel, tap) rows are
# the rows of B, the item's filters (packed by _pack_weights in blocks of pw_mr, the
# layout fc_pw_pack writes) are A, and the flattened output positions are the columns.
# The reduction is cut into chunks of kcr rows so that a column sliver (kcr x NR) stays
# in L1; the columns into staging chunks of ncol, unstaged into y. Measured on a tile in L2 (C
# harness, Zen 3, AVX2, one core): 63-77 GFLOP/s against fc_conv's 36-60 (resnet_c2_3x3:
# 63.8 / 55.6, 256 channels on 14 x 14: 68.2 / 36.1, VGG's 64 on 224 x 224: 77.5 / 60.2).
# With AVX-512 fc_conv's 8 x 3 block (24 of 32 zmm) wins instead: on a 2-core Sapphire
# Rapids (2026-12-07, N = 8 unless stated, 2 threads, ms gemm tiles / fc_conv, forward
# and grad_input) resnet_c2_3x3 8.75/6.31, 8.94/6.57; resnet_stem 11.6/7.4; ResNet-18's
# conv1 12.2/7.5; resnet_c3_3x3s2 9.78/7.81, 9.47/8.54; alexnet_conv1 7.91/6.71; equal
# (within 3%) on 14 x 14 and 7 x 7 maps; on an Emerald Rapids (2026-12-07, forward)
# resnet_c2_3x3 13.1/8.2, vgg_conv1_2 51.9/41.7, resnet_c3_3x3s2 15.6/13.3. The AVX2
# kernels on the Sapphire Rapids gained less (resnet_stem 14.4/11.5, resnet_c2_3x3
# 12.9/12.4, batch1_c4 1.56/1.76), and the gemm tiles' own measurement above is AVX2 on
# Zen 3: AVX2 keeps them. _GEMM_TILES: -1 by the ISA (the
# default), 1 always, 0 never (tests and measurements).
cdef int _GEMM_TILES = -1
# Bytes of one column sliver of B (fc_pw_gemm copies it into L1: 32 KiB here); a chunk of
# 192-256 reduction rows measured 7% faster than the whole 576 of a 64-channel 3x3.
cdef Py_ssize_t _GEMM_SLIVER_BYTES = 16 * 1024
# Bytes of one staging chunk of results (filters x columns).
cdef Py_ssize_t _GEMM_STAGE_BYTES = 64 * 1024


def _set_gemm_tiles(on=None):
    """Testing and tuning hook: the tiled correlation through fc_pw_gemm (True) or
    through fc_conv (False), or as the instruction set decides (None: fc_conv with
    AVX-512, fc_pw_gemm otherwise)."""
    global _GEMM_TILES
    _GEMM_TILES = -1 if on is None else (1 if on else 0)


cdef inline bint _gemm_tiles() noexcept:
    return _GEMM_TILES == 1 or (_GEMM_TILES == -1 and _K.vbytes < 64)


cdef inline void _pw_gemm(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, const floating* ap,
                          Py_ssize_t ablock, const floating* b, Py_ssize_t ldb,
                          const ptrdiff_t* rowoff, floating* c, Py_ssize_t ldc,
                          const floating* bias, bint accumulate, bint nt,
                          floating* buf, const floating* cbias=NULL,
                          Py_ssize_t lda=0) noexcept nogil:
    # fc_pw_gemm of the element type (csrc/pointwise_kernels_tmpl.h says what it computes):
    # bias is per row of c, cbias per column; lda > 0 reads A in place by rows lda apart,
    # lda < 0 by columns -lda apart.
    if floating is float:
        _K.pw_gemm_f32(m, n, k, ap, ablock, lda, b, ldb, rowoff, c, ldc, bias, cbias,
                       accumulate, nt, buf)
    else:
        _K.pw_gemm_f64(m, n, k, ap, ablock, lda, b, ldb, rowoff, c, ldc, bias, cbias,
                       accumulate, nt, buf)


cdef void _corr_item_gemm(
    const floating* x,     # IN: source
    const floating* wp,    # IN: packed weights, blocks of kb = pw_mr filters
    const floating* bias,  # IN: G*Ko values or NULL
    floating* y,           # OUT
    const _Corr* cr, const ptrdiff_t* xoff,  # xoff[c*ntaps + t] = c*cs + tapoff[t]
    Py_ssize_t item, Py_ssize_t nkc, Py_ssize_t kb, Py_ssize_t kcr, Py_ssize_t ncol,
    floating* tile, floating* st, floating* gbuf,  # per-thread scratch
) noexcept nogil:
    cdef:
        _Item it = _item_of(cr, item)
        Py_ssize_t g = it.g, M, nkb = (cr.Ko + kb - 1) // kb
        Py_ssize_t nct = cr.Ci * cr.ntaps, kb_lo, kb_hi, o0, m, j0, nj, r0, nr
        floating* yb
        const floating* bb = NULL
        const floating* ap
    kb_lo = it.kc * nkb // nkc
    kb_hi = (it.kc + 1) * nkb // nkc
    o0 = kb_lo * kb
    m = min(cr.Ko, kb_hi * kb) - o0
    if m <= 0:
        return
    _pack_tile(x, cr, it.n, g, it.p0, it.q0, it.PBe + cr.Ti - cr.PB, tile)
    M = it.PBe * cr.L
    yb = (y + cr.y_off + it.n * cr.ys_n + it.p0 * cr.ys_p + it.q0 * cr.ys_q
          + (g * cr.Ko + o0) * cr.ys_k)
    ap = wp + (g * nkb + kb_lo) * nct * kb
    if bias != NULL:
        bb = bias + g * cr.Ko + o0
    j0 = 0
    while j0 < M:
        nj = min(ncol, M - j0)
        r0 = 0
        while r0 < nct:
            nr = min(kcr, nct - r0)
            _pw_gemm(m, nj, nr, ap + r0 * kb, nct * kb, tile + j0, 0, xoff + r0, st, ncol,
                     bb if r0 == 0 else NULL, r0 > 0, False, gbuf)
            r0 += kcr
        _unstage(st, ncol, m, j0, nj, it.Qv, cr, NULL, yb)
        j0 += ncol


cdef void _corrk_item(
    const floating* x,     # IN: source
    const floating* wp,    # IN: packed weights, blocks of kb channels
    const floating* bias,  # IN: G*Ko values or NULL
    floating* y,           # OUT
    const _Corr* cr, const ptrdiff_t* xoff,
    const Py_ssize_t* bo, const Py_ssize_t* cb,  # filter blocks and chunks (_run_corr)
    Py_ssize_t item, Py_ssize_t ib_n, Py_ssize_t nib, Py_ssize_t nkc, Py_ssize_t kb,
    Py_ssize_t vl,
    floating* tile, ptrdiff_t* moff, ptrdiff_t* yoff, floating* st,  # per-thread scratch
    Py_ssize_t* held,  # per thread: the images and group whose tiles are in tile, or -1
) noexcept nogil:
    # The K-vectorised item: ib_n whole-image tiles side by side (image pitch Ci*cs),
    # every valid output position of them listed in moff / yoff (no junk columns), and
    # fc_kvec broadcasting the tile along the reduction while it loads kb-wide rows of
    # packed weights. The reduction is cut into chunks of kc_len (channel, tap) steps
    # whose weights (kc_len*kb elements, about 24 KiB) stay in L1 while every position
    # block sweeps them; the partial sums wait in st (npos x kb) and each chunk adds to
    # them in step order, so the sum is the same as in one pass. Measured (2 threads,
    # float32): unchunked, each 8-position block streamed the whole 0.4-0.9 MiB weight
    # block from L2 (resnet_c5 forward 148 GFLOP/s).
    # Filter block kbi is filters bo[kbi] .. bo[kbi+1] of the group (a whole number of
    # vectors, packed with that width as its pitch); the item's chunk kc owns blocks
    # cb[kc] .. cb[kc+1]; bo[cb[nkc]] is the group's padded filter count. st keeps the
    # pitch kb of the widest block.
    cdef:
        Py_ssize_t kc = item // (cr.G * nib), rest = item % (cr.G * nib)
        Py_ssize_t g = rest % cr.G, n0 = (rest // cr.G) * ib_n
        Py_ssize_t nimg = min(ib_n, cr.N - n0), ipitch = cr.Ci * cr.cs
        Py_ssize_t nct = cr.Ci * cr.ntaps, Kp = bo[cb[nkc]]
        Py_ssize_t nl, p, q, npos = 0, kbi, nk, nv, i0, nr, i, k, ko, mr = _K.mr
        Py_ssize_t kc_len, kw
        Py_ssize_t ct0, nst, g0, ng
        floating* dst
        floating* srow
        const floating* wblk
    # A thread's next item often reads the same tiles (one image: batch1_c4 runs 6
    # filter chunks of one tile), which are then kept: measured 2-thread forward
    # 1.07 -> 1.00 ms (1.92x -> 2.00x from 1 thread).
    if held[0] != rest:
        for nl in range(nimg):
            _pack_tile(x, cr, n0 + nl, g, 0, 0, cr.Ti, tile + nl * ipitch)
            for p in range(cr.Po):
                for q in range(cr.Qo):
                    moff[npos] = nl * ipitch + p * cr.L + q
                    yoff[npos] = cr.y_off + (n0 + nl) * cr.ys_n + p * cr.ys_p + q * cr.ys_q
                    npos += 1
        held[0] = rest
    npos = nimg * cr.Po * cr.Qo
    for kbi in range(cb[kc], cb[kc + 1]):
        ko = g * cr.Ko + bo[kbi]
        kw = bo[kbi + 1] - bo[kbi]
        nk = min(kw, cr.Ko - bo[kbi])
        nv = kw // vl
        wblk = wp + (g * Kp + bo[kbi]) * nct
        kc_len = max(16, _KVEC_CHUNK_BYTES // (kw * <Py_ssize_t>sizeof(floating)))
        # Positions in groups of _KVEC_GROUP (8 register blocks): each weight chunk is
        # read from L2 once per group, and the group's partial sums stay in L1.
        g0 = 0
        while g0 < npos:
            ng = min(_KVEC_GROUP, npos - g0)
            ct0 = 0
            while ct0 < nct:
                nst = min(kc_len, nct - ct0)
                i0 = 0
                while i0 < ng:
                    nr = min(mr, ng - i0)
                    if floating is float:
                        _K.kvec_f32(tile, moff + g0 + i0, <int>nr, xoff + ct0, nst,
                                    wblk + ct0 * kw, kw, st + i0 * kb, kb, <int>nv, ct0 > 0)
                    else:
                        _K.kvec_f64(tile, moff + g0 + i0, <int>nr, xoff + ct0, nst,
                                    wblk + ct0 * kw, kw, st + i0 * kb, kb, <int>nv, ct0 > 0)
                    i0 += mr
                ct0 += nst
            for i in range(ng):
                dst = y + yoff[g0 + i] + ko * cr.ys_k
                srow = st + i * kb
                if bias != NULL:
                    for k in range(nk):
                        dst[k * cr.ys_k] = srow[k] + bias[ko + k]
                else:
                    for k in range(nk):
                        dst[k * cr.ys_k] = srow[k]
            g0 += ng


include "_packs.pxi"
include "_scratch.pxi"


cdef void _pack_weights(
    const floating* w,  # IN: one group's filters
    const _Corr* cr, const ptrdiff_t* toff,  # toff[t]: tap t's offset in a filter
    Py_ssize_t o0, Py_ssize_t kb, Py_ssize_t w_o, Py_ssize_t w_c,
    floating* wq,       # OUT: the block's Ci*ntaps*kb packed weights
) noexcept nogil:
    # wq[(c*ntaps + t)*kb + i] = w[(o0 + i)*w_o + c*w_c + toff[t]], zero for o0 + i >= Ko,
    # written in order. Reads: a channel's taps of the block's filters, a few cache lines
    # per filter that stay in L1 over the taps, whichever of w_o and w_c is larger.
    # Measured (2 threads): the same loop with tr[t]*w_r + ts[t]*w_s and the Ko test per
    # element, and (forward NCHW) in read order with stores kb apart, took 14% of
    # batch1_c4's forward; pointer walks 10%; in write order 1.115 -> 1.074 ms.
    # resnet_c5 (9 MiB of weights) spends ~0.7 ms of its 7.6 ms forward here, twice a
    # memcpy of the same bytes. Measured, no gain there: a software prefetch 4 channels
    # ahead; read order over blocks of 9 channels (16 KiB of stores; 5-8% slower on
    # c5, c4 and batch1_c4); splitting blocks by channel range to balance 11 blocks on 2
    # threads.
    cdef Py_ssize_t i, c, t, ct, nt = cr.ntaps, nk = max(0, min(kb, cr.Ko - o0))
    cdef const floating* src
    cdef floating* dst
    for c in range(cr.Ci):
        for t in range(nt):
            src = w + o0 * w_o + c * w_c + toff[t]
            dst = wq + (c * nt + t) * kb
            for i in range(nk):
                dst[i] = src[i * w_o]
    if nk < kb:
        for ct in range(cr.Ci * nt):
            for i in range(nk, kb):
                wq[ct * kb + i] = 0


cdef int _run_corr(
    const floating* x,     # IN
    const floating* w,     # IN: filters, element (out o, reduction c, tap) at
                           #     g*w_g + o*w_o + c*w_c + tr[t]*w_r + ts[t]*w_s
    const floating* bias,  # IN: G*Ko values, or NULL
    floating* y,           # OUT
    _Corr* cr,
    const Py_ssize_t* dr, const Py_ssize_t* ds, const Py_ssize_t* tr, const Py_ssize_t* ts,
    Py_ssize_t* pha, Py_ssize_t* phb,
    Py_ssize_t w_g, Py_ssize_t w_o, Py_ssize_t w_c, Py_ssize_t w_r, Py_ssize_t w_s,
    int n_threads,
    object packs,          # a dict of packed filters kept across calls, or None (_packs.pxi)
) except -1:
    cdef:
        Py_ssize_t vl = _K.vbytes // sizeof(floating)
        Py_ssize_t kb, nkb, g, kbi, c, t, i, o, base, nkc, items, per, it, tid, nthr
        Py_ssize_t ib_n = 1, nib = 1, npos_max = 0, nct = cr.Ci * cr.ntaps
        Py_ssize_t nvt, nbt, v0, v1, nb, j, kc
        unsigned csr
        bint kpath, gpath, hold = False
        Py_ssize_t nr = 1, kcr = 1, m_max = 1, ncol = 1, gbuf_len = 0
        ptrdiff_t* tapoff = <ptrdiff_t*>malloc(
            (2 * cr.ntaps + 2 + cr.Ci * cr.ntaps + 1) * sizeof(ptrdiff_t))
        ptrdiff_t* woff = tapoff + cr.ntaps + 1  # each tap's offset in a filter of w
        ptrdiff_t* xoff = woff + cr.ntaps + 1
        ptrdiff_t* pbuf = NULL
        # Filter blocks bo[b] .. bo[b+1] (bo[nbt]: the padded filter count) and the
        # chunks of blocks cb[kc] .. cb[kc+1]; at most 2*nkb blocks and nkb chunks.
        Py_ssize_t* bo = NULL
        Py_ssize_t* cb
        Py_ssize_t* held = NULL
        floating* wp = NULL
        floating* buf = NULL
        floating* wq
        _Pack pk = None
        object key = None
    try:
        if tapoff == NULL:
            raise MemoryError()
        _plan_tiles(cr, dr, ds, pha, phb, tapoff, sizeof(floating))
        kpath = _kvec_fits(cr, cr.Ko, vl)
        # Fewer filters than a register block's rows (the RGB stems' grad_input: 3) leave
        # fc_pw_gemm's blocks half empty: resnet_stem grad_input 41 -> 74 ms through it.
        gpath = not kpath and cr.Ko >= _K.pw_mr and _gemm_tiles()
        kb = _K.nvk * vl if kpath else (1 if cr.Ko == 1 else (_K.pw_mr if gpath else _K.kb))
        nkb = (cr.Ko + kb - 1) // kb
        nvt = (cr.Ko + vl - 1) // vl
        for c in range(cr.Ci):
            for t in range(cr.ntaps):
                xoff[c * cr.ntaps + t] = c * cr.cs + tapoff[t]
        for t in range(cr.ntaps):
            woff[t] = tr[t] * w_r + ts[t] * w_s
        bo = <Py_ssize_t*>malloc((3 * nkb + 4) * sizeof(Py_ssize_t))
        if bo == NULL:
            raise MemoryError()
        cb = bo + 2 * nkb + 2
        # Work items: filter chunk (outermost) x image (block) x group x row block.
        # Filters are split into chunks whose packed weights stay in L2 while the chunk
        # sweeps every image (resnet_c5: 9 MiB of weights would otherwise stream from
        # L3 once per image), and further when there are too few items for the
        # threads. Each chunk re-packs the tiles it reads, which costs far less.
        if kpath:
            # Images per tile: as many as fit the tile budget, but at least two items
            # per thread before the filters are split.
            ib_n = max(1, min(_TILE_BUDGET // (cr.Ci * cr.cs * <Py_ssize_t>sizeof(floating)),
                              cr.N * cr.G // (2 * n_threads)))
            ib_n = min(ib_n, cr.N)
            # Held tiles (see _KVEC_HOLD): ib_n images per thread, one filter chunk.
            if (_KVEC_HOLD and n_threads > 1 and cr.G == 1 and cr.N % n_threads == 0
                    and cr.N // n_threads * cr.Ci * cr.cs * <Py_ssize_t>sizeof(floating)
                    <= _KVEC_HOLD_BYTES):
                ib_n = cr.N // n_threads
                hold = True
            nib = (cr.N + ib_n - 1) // ib_n
            base = cr.G * nib
            npos_max = ib_n * cr.Po * cr.Qo
        else:
            base = cr.N * cr.G * cr.npb * cr.nqb
        nkc = min(nkb, max(1, nct * cr.Ko * <Py_ssize_t>sizeof(floating) // _WEIGHT_BUDGET))
        if hold:
            nkc = 1
        elif base * nkc < 4 * n_threads:
            nkc = min(nkb, (4 * n_threads + base - 1) // base)
        if kpath:
            # Chunks of near-equal filter vectors, each cut into near-equal blocks of at
            # most nvk vectors, and (with at least one chunk per thread) a whole number
            # of chunks per thread: the static split then gives every thread the same
            # filter vectors. Fixed 48-filter blocks left resnet_c4 (256 filters: chunks
            # of 144 + 112) and batch1_c4 (items of 48 x 5 + 16) with one thread doing
            # 144 of 256 filters, and a 1-vector block. Measured, 2 threads (speedup
            # from 1 thread): resnet_c4 forward 7.70 -> 6.44 ms (1.79x -> 1.94x),
            # batch1_c4 forward 1.35 -> 1.18 ms (1.80x -> 1.91x).
            if n_threads > 1 and nkc >= n_threads and nkc % n_threads != 0:
                nkc = _round_up(nkc, n_threads)
                if nkc > nkb:
                    nkc -= n_threads
            nbt = 0
            for kc in range(nkc):
                v0 = kc * nvt // nkc
                v1 = (kc + 1) * nvt // nkc
                nb = (v1 - v0 + _K.nvk - 1) // _K.nvk
                cb[kc] = nbt
                for j in range(nb):
                    bo[nbt] = (v0 + j * (v1 - v0) // nb) * vl
                    nbt += 1
            cb[nkc] = nbt
            bo[nbt] = nvt * vl
        else:
            nbt = nkb
            for kbi in range(nkb + 1):
                bo[kbi] = kbi * kb
        items = base * nkc
        nthr = min(n_threads, items)
        # Pack the filters once: wp[g][block][c][t][i] = w[g, bo[block] + i, c, tap t],
        # zero past the last filter, the order fc_conv and fc_kvec read them in. In
        # threads, one block each (serial, it took 14% of resnet_c5's forward). Measured,
        # no gain (resnet_c5 forward, 2 threads, 8.39 ms either way): each thread packing
        # the chunks it reads inside the compute region, into its own L2. The pack is
        # kept in `packs` under what it depends on (_packs.pxi).
        if packs is not None:
            key = ("corr", sizeof(floating), <size_t>w, w_g, w_o, w_c, cr.Ci, cr.Ko, cr.G,
                   tuple([woff[t] for t in range(cr.ntaps)]),
                   tuple([bo[kbi] for kbi in range(nbt + 1)]))
        pk = _pack_lookup(packs, key)
        if pk is None:
            pk = _Pack((cr.G * bo[nbt] * nct + 1) * sizeof(floating))
            wp = <floating*>pk.data
            with nogil, parallel(num_threads=min(n_threads, cr.G * nbt)):
                for it in prange(cr.G * nbt, schedule='static'):
                    g = it // nbt
                    kbi = it % nbt
                    _pack_weights(w + g * w_g, cr, woff, bo[kbi], bo[kbi + 1] - bo[kbi],
                                  w_o, w_c, wp + (g * bo[nbt] + bo[kbi]) * nct)
            _pack_keep(packs, key, pk)
        wp = <floating*>pk.data
        if kpath:
            per = _round_up(ib_n * cr.Ci * cr.cs + cr.cs + 256 + _KVEC_GROUP * kb, 16)
            pbuf = <ptrdiff_t*>malloc((2 * nthr * npos_max + nthr) * sizeof(ptrdiff_t))
            if pbuf == NULL:
                raise MemoryError()
            held = <Py_ssize_t*>(pbuf + 2 * nthr * npos_max)
            for tid in range(nthr):
                held[tid] = -1
        elif gpath:
            nr = _K.pw_nv * vl
            kcr = max(8, _GEMM_SLIVER_BYTES // (nr * <Py_ssize_t>sizeof(floating)))
            m_max = (nkb // nkc + 1) * kb
            ncol = _round_up(cr.PB * cr.L, nr)
            ncol = max(nr, min(ncol, _GEMM_STAGE_BYTES // (m_max * <Py_ssize_t>sizeof(floating))
                               // nr * nr))
            gbuf_len = _round_up(FC_PW_BUF(kcr, nr, kb, sizeof(floating)), 16)
            per = _round_up(cr.tile_len, 16) + m_max * ncol + gbuf_len
        else:
            per = _round_up(cr.tile_len + kb * vl * max(FC_NV, FC_NV1), 16)
        buf = <floating*>calloc(nthr * per, sizeof(floating))
        if buf == NULL:
            raise MemoryError()
        with nogil, parallel(num_threads=nthr):
            tid = threadid()
            csr = fc_ftz_enter()  # FTZ/DAZ for this thread, restored below
            for it in prange(items, schedule='static'):
                if kpath:
                    _corrk_item(x, wp, bias, y, cr, xoff, bo, cb, it, ib_n, nib, nkc, kb, vl,
                                buf + tid * per, pbuf + 2 * tid * npos_max,
                                pbuf + (2 * tid + 1) * npos_max,
                                buf + (tid + 1) * per - _KVEC_GROUP * kb, held + tid)
                elif gpath:
                    _corr_item_gemm(x, wp, bias, y, cr, xoff, it, nkc, kb, kcr, ncol,
                                    buf + tid * per,
                                    buf + tid * per + _round_up(cr.tile_len, 16),
                                    buf + (tid + 1) * per - gbuf_len)
                else:
                    _corr_item(x, wp, bias, y, cr, tapoff, it, nkc, kb, vl,
                               buf + tid * per, buf + tid * per + cr.tile_len)
            fc_ftz_leave(csr)
    finally:
        free(tapoff)
        free(bo)
        free(buf)
        free(pbuf)
    return 0


cdef void _wgrad_item(
    const floating* grad_y,  # IN
    const floating* x,       # IN
    floating* grad_w,        # OUT: the item's filters only
    const _Corr* cr, const _Conv* cv, const ptrdiff_t* xoff,
    const Py_ssize_t* tr, const Py_ssize_t* ts,
    Py_ssize_t item, Py_ssize_t nkc, Py_ssize_t kcw, Py_ssize_t vl,
    floating* tile, floating* st, floating* acc,  # per-thread scratch
) noexcept nogil:
    cdef:
        Py_ssize_t g = item // nkc, k0 = (item % nkc) * kcw
        Py_ssize_t nk = min(kcw, cv.Kg - k0), nk4 = 1 if nk == 1 else _round_up(nk, FC_KW)
        Py_ssize_t nct = cr.Ci * cr.ntaps
        Py_ssize_t n, pb, qb, p0, q0, Qv, PBe, M, Mr, k, pp, q, ct, c, t
        floating* row
        const floating* src
    memset(acc, 0, nct * nk4 * sizeof(floating))
    for n in range(cr.N):
        for pb in range(cr.npb * cr.nqb):
            qb = pb % cr.nqb
            q0 = qb * cr.QB
            Qv = min(cr.QB, cr.Qo - q0)
            p0 = (pb // cr.nqb) * cr.PB
            PBe = min(cr.PB, cr.Po - p0)
            _pack_tile(x, cr, n, g, p0, q0, PBe + cr.Ti - cr.PB, tile)
            M = PBe * cr.L
            Mr = _round_up(M, vl)
            # grad_y on the tile's flattened grid, zero in the dropped columns and rows.
            for k in range(nk4):
                row = st + k * Mr
                if k >= nk:
                    memset(row, 0, Mr * sizeof(floating))
                    continue
                src = (grad_y + n * cv.ys_n + (g * cv.Kg + k0 + k) * cv.ys_k + p0 * cv.ys_p
                       + q0 * cv.ys_q)
                for pp in range(PBe):
                    if cv.ys_q == 1:
                        memcpy(row + pp * cr.L, src + pp * cv.ys_p, Qv * sizeof(floating))
                    else:
                        for q in range(Qv):
                            row[pp * cr.L + q] = src[pp * cv.ys_p + q * cv.ys_q]
                    for q in range(Qv, cr.L):
                        row[pp * cr.L + q] = 0
                for q in range(M, Mr):
                    row[q] = 0
            if floating is float:
                _K.wgrad_f32(st, Mr, nk4, tile, xoff, nct, Mr, acc)
            else:
                _K.wgrad_f64(st, Mr, nk4, tile, xoff, nct, Mr, acc)
    for ct in range(nct):
        c = ct // cr.ntaps
        t = ct % cr.ntaps
        for k in range(nk):
            grad_w[(g * cv.Kg + k0 + k) * cv.ws_k + c * cv.ws_c + tr[t] * cv.ws_r
                   + ts[t] * cv.ws_s] = acc[ct * nk4 + k]

cdef floating _grad_bias_entry(
    const floating[::1] grad_y,  # IN
    const _Conv* cv,
    Py_ssize_t k,
) noexcept nogil:
    cdef:
        Py_ssize_t n, p, q, y_row
        double acc = 0  # N*P*Q terms, as in _grad_weight_entry

    for n in range(cv.N):
        for p in range(cv.P):
            y_row = n * cv.ys_n + k * cv.ys_k + p * cv.ys_p
            for q in range(cv.Q):
                acc += grad_y[y_row + q * cv.ys_q]
    return <floating>acc


cdef _Corr _source_corr(const _Conv* cv, Py_ssize_t groups):
    """The forward correlation: tiles of x, outputs y, one tap per filter element."""
    cdef _Corr cr
    cr.N, cr.G, cr.Ci, cr.Hi, cr.Wi = cv.N, groups, cv.Cg, cv.H, cv.W
    cr.xs_n, cr.xs_c, cr.xs_h, cr.xs_w = cv.xs_n, cv.xs_c, cv.xs_h, cv.xs_w
    cr.sh, cr.sw, cr.pt, cr.pl = cv.stride_h, cv.stride_w, cv.pad_top, cv.pad_left
    cr.ntaps = cv.R * cv.S
    cr.Ko, cr.Po, cr.Qo = cv.Kg, cv.P, cv.Q
    cr.ys_n, cr.ys_k, cr.ys_p, cr.ys_q, cr.y_off = cv.ys_n, cv.ys_k, cv.ys_p, cv.ys_q, 0
    return cr


cdef class _Taps:
    """Parallel arrays, one entry per tap: filter row/column and tile offsets."""
    cdef Py_ssize_t* tr
    cdef Py_ssize_t* ts
    cdef Py_ssize_t* dr
    cdef Py_ssize_t* ds
    cdef Py_ssize_t* pa  # scratch for the tile plan: the stride phases in use
    cdef Py_ssize_t* pb
    cdef Py_ssize_t n

    def __cinit__(self, Py_ssize_t n):
        self.n = n
        self.tr = <Py_ssize_t*>malloc(6 * (n + 1) * sizeof(Py_ssize_t))
        if self.tr == NULL:
            raise MemoryError()
        self.ts, self.dr, self.ds = self.tr + n + 1, self.tr + 2 * (n + 1), self.tr + 3 * (n + 1)
        self.pa, self.pb = self.tr + 4 * (n + 1), self.tr + 5 * (n + 1)

    def __dealloc__(self):
        free(self.tr)


cdef _Taps _forward_taps(const _Conv* cv):
    cdef _Taps tp = _Taps(cv.R * cv.S)
    cdef Py_ssize_t r, s, t
    for r in range(cv.R):
        for s in range(cv.S):
            t = r * cv.S + s
            tp.tr[t], tp.ts[t], tp.dr[t], tp.ds[t] = r, s, r * cv.dil_h, s * cv.dil_w
    return tp


# ---------------------------------------------------------------------------------------
# Depthwise convolution (one input and one output channel per group), stride 1, dilation
# 1, NCHW: its own loop nest (fc_dw / fc_dww in csrc/direct_kernels_tmpl.h), one
# channel plane at a time, reading each input row once into a small per-thread ring and
# writing each output row once, straight into y. No tile, no packed weights beyond a
# flipped copy for grad_input. Other depthwise shapes (NHWC, strides, dilation) take the
# tiled path above. _DW_MODE: 0 auto, 1 never (tests and measurements of the tiled path).
cdef int _DW_MODE = 0


def _set_depthwise(bint on):
    """Testing and tuning hook: allow (True) or forbid the depthwise loop nest."""
    global _DW_MODE
    _DW_MODE = 0 if on else 1


cdef bint _dw_fits(const _Conv* cv, int layout) noexcept:
    return (_DW_MODE == 0 and layout == LAYOUT_NCHW and cv.Cg == 1 and cv.Kg == 1
            and cv.stride_h == 1 and cv.stride_w == 1 and cv.dil_h == 1 and cv.dil_w == 1
            and cv.R <= FC_DW_MAXK and cv.S <= FC_DW_MAXK)


cdef int _dw_corr(
    const floating* src,   # IN: N x C planes of Hi x Wi (pitch Hi*Wi)
    const floating* w,     # IN: C filters of R*S taps, read flipped when flip
    const floating* bias,  # IN: C values, or NULL
    floating* out,         # OUT: N x C planes of Po x Qo
    Py_ssize_t N, Py_ssize_t C, Py_ssize_t Hi, Py_ssize_t Wi, Py_ssize_t Po, Py_ssize_t Qo,
    int R, int S, Py_ssize_t pt, Py_ssize_t pl, bint flip, int n_threads,
) except -1:
    # out[n, c, p, q] = bias[c] + sum_{r, s} w'[c, r, s] * src[n, c, p + r - pt, q + s - pl].
    # Work items: a plane, or a slice of its rows when there are fewer planes than
    # 4 items per thread (rows in multiples of the kernel's row block).
    cdef:
        Py_ssize_t vl = _K.vbytes // sizeof(floating), taps = R * S
        Py_ssize_t planes = N * C, nch, rows, items, nthr, per, it, tid, pln, c, p_lo, t
        unsigned csr
        floating* wq = <floating*>malloc((C * taps + 1) * sizeof(floating))
        floating* ring = NULL
    try:
        if wq == NULL:
            raise MemoryError()
        for c in range(C):
            for t in range(taps):
                wq[c * taps + t] = w[c * taps + (taps - 1 - t if flip else t)]
        nch = min(max(1, (4 * n_threads + planes - 1) // planes),
                  (Po + FC_DW_RB - 1) // FC_DW_RB)
        rows = _round_up((Po + nch - 1) // nch, FC_DW_RB)
        nch = (Po + rows - 1) // rows
        items = planes * nch
        nthr = max(1, min(n_threads, items))
        per = _round_up(FC_DW_RING(R, S, Qo, vl), 16)
        ring = <floating*>malloc((nthr * per + 16) * sizeof(floating))
        if ring == NULL:
            raise MemoryError()
        with nogil, parallel(num_threads=nthr):
            tid = threadid()
            csr = fc_ftz_enter()
            for it in prange(items, schedule='static'):
                pln = it // nch
                c = pln % C
                p_lo = (it % nch) * rows
                if floating is float:
                    _K.dw_f32(src + pln * Hi * Wi, Wi, Hi, Wi, wq + c * taps, R, S, pt, pl,
                              bias[c] if bias != NULL else 0, out + pln * Po * Qo, Qo,
                              p_lo, min(Po, p_lo + rows), Qo, ring + tid * per)
                else:
                    _K.dw_f64(src + pln * Hi * Wi, Wi, Hi, Wi, wq + c * taps, R, S, pt, pl,
                              bias[c] if bias != NULL else 0, out + pln * Po * Qo, Qo,
                              p_lo, min(Po, p_lo + rows), Qo, ring + tid * per)
            fc_ftz_leave(csr)
    finally:
        free(wq)
        free(ring)
    return 0


# The ring (fc_dww) and flat (fc_wgrad on phase planes) grad_weight kernels also sum
# lanes that are no output position, with grad_y zero there: 0 * x. With x finite that
# adds nothing, but an inf or NaN in x read by such a lane turns a tap's sum to NaN
# where the reference is finite or infinite (an inf in x's last column, read by the
# left tap of the column past the last output). A lane's NaN is sticky, so the callers
# keep each channel's sums before every image and, when a sum that was not NaN becomes
# NaN, restore them and add that image's plane again through _dw_wgrad_exact, which
# reads only the terms of the definition. Finite inputs never take it, and the cost on
# them is a copy and a test of R*S sums per plane (interleaved, N=8, 144 channels on
# 56x56 and 32 on 112x112: within 1% of the kernel without them, Emerald Rapids).
cdef void _dw_wgrad_exact(const floating* xp, const floating* gp, const _Conv* cv,
                          floating* acc) noexcept nogil:
    # acc[r*S + s] += sum over every output (p, q) of gp[p*Q + q] * the zero-padded
    # plane at h = p*sh + r*dh - pt, w = q*sw + s*dw - pl: as the reference engine sums,
    # a tap on the padding adds gp * 0 (NaN for an infinite gp).
    cdef Py_ssize_t r, s, p, q, h, w
    cdef floating a, v
    for r in range(cv.R):
        for s in range(cv.S):
            a = acc[r * cv.S + s]
            for p in range(cv.P):
                h = p * cv.stride_h + r * cv.dil_h - cv.pad_top
                for q in range(cv.Q):
                    w = q * cv.stride_w + s * cv.dil_w - cv.pad_left
                    v = xp[h * cv.W + w] if 0 <= h < cv.H and 0 <= w < cv.W else 0
                    a = a + gp[p * cv.Q + q] * v
            acc[r * cv.S + s] = a


cdef inline void _dw_wgrad_redo(floating* acc, const floating* before, Py_ssize_t taps,
                                const floating* xp, const floating* gp,
                                const _Conv* cv) noexcept nogil:
    # After a kernel added one image's plane to acc (its sums before were copied to
    # before): if a sum that was not NaN became NaN, add the plane again exactly.
    cdef Py_ssize_t t
    for t in range(taps):
        if acc[t] != acc[t] and before[t] == before[t]:
            memcpy(acc, before, taps * sizeof(floating))
            _dw_wgrad_exact(xp, gp, cv, acc)
            return


cdef int _dw_grad_weight(
    const floating* grad_y,  # IN: N x C planes of P x Q
    const floating* x,       # IN: N x C planes of H x W
    floating* grad_w,        # OUT: C filters of R*S taps
    const _Conv* cv, int n_threads,
) except -1:
    # One thread owns a channel and sums its images in order n = 0, 1, ...: bitwise the
    # same result for any thread count and any repeat.
    cdef:
        Py_ssize_t vl = _K.vbytes // sizeof(floating), taps = cv.R * cv.S
        Py_ssize_t C = cv.C, HW = cv.H * cv.W, PQ = cv.P * cv.Q, nthr, per, c, n, t, tid, tb
        unsigned csr
        floating* buf = NULL
        floating* acc
    nthr = max(1, min(n_threads, C))
    # per thread: the sums, their copy before each image, the ring (64-byte multiples)
    tb = _round_up(taps, 16)
    per = _round_up(FC_DW_RING(<int>cv.R, <int>cv.S, cv.Q, vl), 16) + 2 * tb
    buf = <floating*>malloc((nthr * per + 16) * sizeof(floating))
    if buf == NULL:
        raise MemoryError()
    try:
        with nogil, parallel(num_threads=nthr):
            tid = threadid()
            csr = fc_ftz_enter()
            for c in prange(C, schedule='static'):
                acc = buf + tid * per
                for t in range(taps):
                    acc[t] = 0
                for n in range(cv.N):
                    memcpy(acc + tb, acc, taps * sizeof(floating))
                    if floating is float:
                        _K.dww_f32(x + (n * C + c) * HW, cv.W, cv.H, cv.W,
                                   grad_y + (n * C + c) * PQ, cv.Q, cv.P, cv.Q,
                                   <int>cv.R, <int>cv.S, cv.pad_top, cv.pad_left, acc,
                                   acc + 2 * tb)
                    else:
                        _K.dww_f64(x + (n * C + c) * HW, cv.W, cv.H, cv.W,
                                   grad_y + (n * C + c) * PQ, cv.Q, cv.P, cv.Q,
                                   <int>cv.R, <int>cv.S, cv.pad_top, cv.pad_left, acc,
                                   acc + 2 * tb)
                    _dw_wgrad_redo(acc, acc + tb, taps, x + (n * C + c) * HW,
                                   grad_y + (n * C + c) * PQ, cv)
                for t in range(taps):
                    grad_w[c * taps + t] = acc[t]
            fc_ftz_leave(csr)
    finally:
        free(buf)
    return 0


# ---------------------------------------------------------------------------------------
# Strided (or dilated) depthwise layers, NCHW: MobileNet's stride-2 3x3 layers. The tiled
# correlation treats each channel as a group of one filter, so its register block of
# FC_KB_ISA filters holds one, and grad_input's phase split multiplies that by sh*sw
# sparse correlations: MobileNetV2's features.2.conv.1.0 (96 channels, 112 -> 56, N=8)
# ran grad_input at 0.7 GFLOP/s (42-62 ms) and forward at 4 GFLOP/s, on the Zen 3 EPYC
# (AVX2, 2 threads). A plane at a time, in plain loops over the valid output columns
# of each tap, they run as fast as the plane's loads and stores allow.

# The forward takes the plane loops onto output rows at least this wide; on narrower
# ones the tiles' SIMD kernels win (576 channels, 14 -> 7: 2.2 ms tiled, 4.9 in planes;
# 192 channels, 28 -> 14: 3.9 tiled, 3.4 in planes).
cdef Py_ssize_t _DWS_FORWARD_MIN_Q = 14


cdef bint _dw_strided_fits(const _Conv* cv, int layout) noexcept:
    return (_DW_MODE == 0 and layout == LAYOUT_NCHW and cv.Cg == 1 and cv.Kg == 1
            and not _dw_fits(cv, layout))


cdef void _dws_forward_plane(const floating* x, const floating* w, floating b, floating* y,
                             const _Conv* cv) noexcept nogil:
    # y[p, q] = b + sum_{r, s} w[r, s] * x[p*sh + r*dh - pt, q*sw + s*dw - pl]
    cdef Py_ssize_t p, q, r, s, h, q0, q1, off, sw = cv.stride_w
    cdef floating wv
    cdef floating* yr
    cdef const floating* xr
    for p in range(cv.P):
        yr = y + p * cv.Q
        for q in range(cv.Q):
            yr[q] = b
        for r in range(cv.R):
            h = p * cv.stride_h + r * cv.dil_h - cv.pad_top
            if h < 0 or h >= cv.H:
                continue
            xr = x + h * cv.W
            for s in range(cv.S):
                off = s * cv.dil_w - cv.pad_left
                q0, q1 = _first_out(off, sw), _end_out(off, sw, cv.W, cv.Q)
                wv = w[r * cv.S + s]
                if sw == 2:  # a constant stride, which the compiler vectorises
                    for q in range(q0, q1):
                        yr[q] += wv * xr[q * 2 + off]
                else:
                    for q in range(q0, q1):
                        yr[q] += wv * xr[q * sw + off]


cdef void _dws_grad_input_plane(const floating* gy, const floating* w, floating* gx,
                                const _Conv* cv) noexcept nogil:
    # gx[p*sh + r*dh - pt, q*sw + s*dw - pl] += w[r, s] * gy[p, q], in a fixed order.
    cdef Py_ssize_t p, q, r, s, h, q0, q1, off, sw = cv.stride_w
    cdef floating wv
    cdef floating* gxr
    cdef const floating* gyr
    memset(gx, 0, cv.H * cv.W * sizeof(floating))
    for p in range(cv.P):
        gyr = gy + p * cv.Q
        for r in range(cv.R):
            h = p * cv.stride_h + r * cv.dil_h - cv.pad_top
            if h < 0 or h >= cv.H:
                continue
            gxr = gx + h * cv.W
            for s in range(cv.S):
                off = s * cv.dil_w - cv.pad_left
                q0, q1 = _first_out(off, sw), _end_out(off, sw, cv.W, cv.Q)
                wv = w[r * cv.S + s]
                for q in range(q0, q1):
                    gxr[q * sw + off] += wv * gyr[q]


cdef void _dws_grad_weight_plane(const floating* gy, const floating* x, floating* acc,
                                 const _Conv* cv) noexcept nogil:
    # acc[r, s] += sum_{p, q} gy[p, q] * x[p*sh + r*dh - pt, q*sw + s*dw - pl]
    # Four running sums (columns q mod 4), added in a fixed order: one sum would wait on
    # the FMA latency at every column.
    cdef Py_ssize_t p, q, r, s, h, q0, q1, off, sw = cv.stride_w
    cdef floating t0, t1, t2, t3
    cdef const floating* xr
    cdef const floating* gyr
    for p in range(cv.P):
        gyr = gy + p * cv.Q
        for r in range(cv.R):
            h = p * cv.stride_h + r * cv.dil_h - cv.pad_top
            if h < 0 or h >= cv.H:
                continue
            xr = x + h * cv.W
            for s in range(cv.S):
                off = s * cv.dil_w - cv.pad_left
                q0, q1 = _first_out(off, sw), _end_out(off, sw, cv.W, cv.Q)
                t0 = t1 = t2 = t3 = 0
                q = q0
                while q + 4 <= q1:
                    t0 = t0 + gyr[q] * xr[q * sw + off]
                    t1 = t1 + gyr[q + 1] * xr[(q + 1) * sw + off]
                    t2 = t2 + gyr[q + 2] * xr[(q + 2) * sw + off]
                    t3 = t3 + gyr[q + 3] * xr[(q + 3) * sw + off]
                    q += 4
                while q < q1:
                    t0 = t0 + gyr[q] * xr[q * sw + off]
                    q += 1
                acc[r * cv.S + s] += (t0 + t1) + (t2 + t3)


cdef int _dws_run(int which, const floating* a, const floating* b, const floating* bias,
                  floating* out, const _Conv* cv, int n_threads) except -1:
    # which 0: forward (a = x, b = w); 1: grad_input (a = grad_y, b = w); 2: grad_weight
    # (a = grad_y, b = x), where one thread owns a channel and sums its images in order
    # n = 0, 1, ...: bitwise the same for any thread count.
    cdef:
        Py_ssize_t C = cv.C, HW = cv.H * cv.W, PQ = cv.P * cv.Q, RS = cv.R * cv.S
        Py_ssize_t planes = cv.N * C, i, c, n, t, nthr, tid, per = RS
        unsigned csr
        floating* buf = NULL
    nthr = max(1, min(n_threads, C if which == 2 else planes))
    if which == 2:
        buf = <floating*>malloc((nthr * per + 1) * sizeof(floating))
        if buf == NULL:
            raise MemoryError()
    with nogil, parallel(num_threads=nthr):
        tid = threadid()
        csr = fc_ftz_enter()
        if which == 2:
            for c in prange(C, schedule='static'):
                for t in range(RS):
                    buf[tid * per + t] = 0
                for n in range(cv.N):
                    _dws_grad_weight_plane(a + (n * C + c) * PQ, b + (n * C + c) * HW,
                                           buf + tid * per, cv)
                for t in range(RS):
                    out[c * RS + t] = buf[tid * per + t]
        else:
            for i in prange(planes, schedule='static'):
                c = i % C
                if which == 0:
                    _dws_forward_plane(a + i * HW, b + c * RS,
                                       bias[c] if bias != NULL else 0, out + i * PQ, cv)
                else:
                    _dws_grad_input_plane(a + i * PQ, b + c * RS, out + i * HW, cv)
        fc_ftz_leave(csr)
    free(buf)
    return 0


include "_depthwise_flat.pxi"
include "_depthwise_lanes.pxi"
include "_pointwise.pxi"
include "_winograd.pxi"
include "_products.pxi"
include "_pieces.pxi"


def forward(
    const floating[::1] x,     # IN: (N, C, H, W) or (N, H, W, C)
    const floating[::1] w,     # IN: (K, Cg, R, S) or (R, S, Cg, K)
    const floating[::1] bias,  # IN: (K,); read only when has_bias
    floating[::1] y,           # OUT: (N, K, P, Q) or (N, P, Q, K)
    Py_ssize_t N, Py_ssize_t C, Py_ssize_t H, Py_ssize_t W,
    Py_ssize_t K, Py_ssize_t R, Py_ssize_t S, Py_ssize_t P, Py_ssize_t Q,
    Py_ssize_t groups, Py_ssize_t stride_h, Py_ssize_t stride_w,
    Py_ssize_t dil_h, Py_ssize_t dil_w, Py_ssize_t pad_top, Py_ssize_t pad_left,
    int layout,
    bint has_bias,
    int n_threads,
    object packs=None,         # a dict that keeps packed filters across calls (_packs.pxi)
):
    """y = conv(x, w) + bias, every element of y written."""
    cdef _Conv cv = _make_conv(N, C, H, W, K, R, S, P, Q, groups, stride_h, stride_w,
                               dil_h, dil_w, pad_top, pad_left, layout)
    _check_size(x.shape[0], N * C * H * W, "x")
    _check_size(w.shape[0], K * cv.Cg * R * S, "w")
    _check_size(y.shape[0], N * K * P * Q, "y")
    if has_bias:
        _check_size(bias.shape[0], K, "bias")
    if _dwl_fits(&cv, layout):
        _dwl_forward(&x[0], &w[0], &bias[0] if has_bias else NULL, &y[0], &cv, n_threads)
        return
    if _dwf_fits(&cv, layout):
        _dwf_forward(&x[0], &w[0], &bias[0] if has_bias else NULL, &y[0], &cv, n_threads)
        return
    if _dw_fits(&cv, layout):
        _dw_corr(&x[0], &w[0], &bias[0] if has_bias else NULL, &y[0], N, C, H, W, P, Q,
                 <int>R, <int>S, pad_top, pad_left, False, n_threads)
        return
    if _pw_fits(&cv, layout):  # y_n,g = W_g . x_n,g
        _pw_run(&w[0], cv.Cg, 1, cv.Kg * cv.Cg, &x[0], &bias[0] if has_bias else NULL,
                &y[0], cv.Kg, cv.Cg, H * W, N, groups, n_threads, packs)
        return
    if _pwh_fits(&cv, layout):  # y (NHW x K) = x (NHW x C) . W (C x K), per group
        _pwh_run(&x[0], C, cv.Cg, &w[0], K, cv.Kg, &bias[0] if has_bias else NULL, &y[0],
                 K, cv.Kg, N * H * W, groups, n_threads)
        return
    if _pw_strided_fits(&cv, layout):  # y_n,g = W_g . x_n,g[:, ::sh, ::sw]
        _pws_run(0, &w[0], cv.Cg, 1, &x[0], &bias[0] if has_bias else NULL, &y[0],
                 cv.Kg, cv.Cg, &cv, n_threads, packs)
        return
    if _dw_strided_fits(&cv, layout) and Q >= _DWS_FORWARD_MIN_Q:
        _dws_run(0, &x[0], &w[0], &bias[0] if has_bias else NULL, &y[0], &cv, n_threads)
        return
    cdef _Corr cr = _source_corr(&cv, groups)
    cdef _Taps tp = _forward_taps(&cv)
    _run_corr(&x[0], &w[0], &bias[0] if has_bias else NULL, &y[0], &cr,
              tp.dr, tp.ds, tp.tr, tp.ts, tp.pa, tp.pb,
              cv.Kg * cv.ws_k, cv.ws_k, cv.ws_c, cv.ws_r, cv.ws_s, n_threads, packs)


def grad_input(
    const floating[::1] grad_y,  # IN: (N, K, P, Q) or (N, P, Q, K)
    const floating[::1] w,       # IN: (K, Cg, R, S) or (R, S, Cg, K)
    floating[::1] grad_x,        # OUT: (N, C, H, W) or (N, H, W, C)
    Py_ssize_t N, Py_ssize_t C, Py_ssize_t H, Py_ssize_t W,
    Py_ssize_t K, Py_ssize_t R, Py_ssize_t S, Py_ssize_t P, Py_ssize_t Q,
    Py_ssize_t groups, Py_ssize_t stride_h, Py_ssize_t stride_w,
    Py_ssize_t dil_h, Py_ssize_t dil_w, Py_ssize_t pad_top, Py_ssize_t pad_left,
    int layout,
    int n_threads,
    object packs=None,           # as for forward
):
    """grad_x = d(loss)/dx given grad_y = d(loss)/dy, every element of grad_x written."""
    cdef _Conv cv = _make_conv(N, C, H, W, K, R, S, P, Q, groups, stride_h, stride_w,
                               dil_h, dil_w, pad_top, pad_left, layout)
    _check_size(grad_y.shape[0], N * K * P * Q, "grad_y")
    _check_size(w.shape[0], K * cv.Cg * R * S, "w")
    _check_size(grad_x.shape[0], N * C * H * W, "grad_x")
    cdef:
        Py_ssize_t a, b, r, s, t, nr, ns, e_min, f_min
        Py_ssize_t sh = stride_h, sw = stride_w
        _Corr cr
        _Taps tp
        _Pack pk
        list rows, cols

    if _dwl_fits(&cv, layout):
        _dwl_grad_input(&grad_y[0], &w[0], &grad_x[0], &cv, n_threads)
        return
    if _dwf_fits(&cv, layout):
        _dwf_grad_input(&grad_y[0], &w[0], &grad_x[0], &cv, n_threads)
        return
    if _dw_fits(&cv, layout):
        # Stride 1: grad_x is grad_y correlated with the flipped filters, padded by
        # R - 1 - pad_top rows and S - 1 - pad_left columns.
        _dw_corr(&grad_y[0], &w[0], <floating*>NULL, &grad_x[0], N, C, P, Q, H, W,
                 <int>R, <int>S, R - 1 - pad_top, S - 1 - pad_left, True, n_threads)
        return
    if _dw_strided_fits(&cv, layout):
        _dws_run(1, &grad_y[0], &w[0], <floating*>NULL, &grad_x[0], &cv, n_threads)
        return
    if _pw_fits(&cv, layout):  # dx_n,g = W_g^T . dy_n,g
        _pw_run(&w[0], 1, cv.Cg, cv.Kg * cv.Cg, &grad_y[0], <floating*>NULL, &grad_x[0],
                cv.Cg, cv.Kg, H * W, N, groups, n_threads, packs)
        return
    if _pwh_fits(&cv, layout):  # dx (NHW x C) = dy (NHW x K) . W^T (K x C), per group
        pk = _pwh_transposed(&w[0], cv.Cg, cv.Kg, K, groups, n_threads, packs)
        _pwh_run(&grad_y[0], K, cv.Kg, <floating*>pk.data, cv.Cg, cv.Kg * cv.Cg,
                 <floating*>NULL, &grad_x[0], C, cv.Cg, N * H * W, groups, n_threads)
        return
    if _pw_strided_fits(&cv, layout):  # dx_n,g on the stride grid = W_g^T . dy_n,g
        _pws_run(1, &w[0], 1, cv.Cg, &grad_y[0], <floating*>NULL, &grad_x[0], cv.Cg, cv.Kg,
                 &cv, n_threads, packs)
        return
    if _window_fits(&cv, layout):  # dx (N x C*R*S) = dy (N x K) . W (K x C*R*S)
        _pwh_run(&grad_y[0], K, K, &w[0], C * R * S, 0, <floating*>NULL, &grad_x[0],
                 C * R * S, C * R * S, N, 1, n_threads)
        return
    # Phase (a, b) is grad_x[a::sh, b::sw]. Input row h = a + i*sh meets tap r from
    # output row p = i + e_r, e_r = (a + pt - r*dh) / sh, when that division is exact.
    for a in range(min(sh, H)):
        rows = []
        for r in range(R):
            if _floor_div(a + pad_top - r * dil_h, sh) * sh == a + pad_top - r * dil_h:
                rows.append((r, _floor_div(a + pad_top - r * dil_h, sh)))
        for b in range(min(sw, W)):
            cols = []
            for s in range(S):
                if _floor_div(b + pad_left - s * dil_w, sw) * sw == b + pad_left - s * dil_w:
                    cols.append((s, _floor_div(b + pad_left - s * dil_w, sw)))
            nr, ns = len(rows), len(cols)
            tp = _Taps(nr * ns)
            # A stride-1 correlation of grad_y padded so that every offset is >= 0.
            e_min = min([e for _, e in rows], default=0)
            f_min = min([f for _, f in cols], default=0)
            for t in range(nr * ns):
                tp.tr[t], tp.ts[t] = rows[t // ns][0], cols[t % ns][0]
                tp.dr[t], tp.ds[t] = rows[t // ns][1] - e_min, cols[t % ns][1] - f_min
            cr.N, cr.G, cr.Ci, cr.Hi, cr.Wi = N, groups, cv.Kg, P, Q
            cr.xs_n, cr.xs_c, cr.xs_h, cr.xs_w = cv.ys_n, cv.ys_k, cv.ys_p, cv.ys_q
            cr.sh, cr.sw, cr.pt, cr.pl = 1, 1, -e_min, -f_min
            cr.ntaps = nr * ns
            cr.Ko, cr.Po, cr.Qo = cv.Cg, (H - a + sh - 1) // sh, (W - b + sw - 1) // sw
            cr.ys_n, cr.ys_k, cr.ys_p, cr.ys_q = cv.xs_n, cv.xs_c, cv.xs_h * sh, cv.xs_w * sw
            cr.y_off = a * cv.xs_h + b * cv.xs_w
            # The filters transposed: output channel c, reduction over k.
            _run_corr(&grad_y[0], &w[0], <floating*>NULL, &grad_x[0], &cr,
                      tp.dr, tp.ds, tp.tr, tp.ts, tp.pa, tp.pb,
                      cv.Kg * cv.ws_k, cv.ws_c, cv.ws_k, cv.ws_r, cv.ws_s, n_threads, packs)


def grad_weight(
    const floating[::1] grad_y,  # IN: (N, K, P, Q) or (N, P, Q, K)
    const floating[::1] x,       # IN: (N, C, H, W) or (N, H, W, C)
    floating[::1] grad_w,        # OUT: (K, Cg, R, S) or (R, S, Cg, K)
    Py_ssize_t N, Py_ssize_t C, Py_ssize_t H, Py_ssize_t W,
    Py_ssize_t K, Py_ssize_t R, Py_ssize_t S, Py_ssize_t P, Py_ssize_t Q,
    Py_ssize_t groups, Py_ssize_t stride_h, Py_ssize_t stride_w,
    Py_ssize_t dil_h, Py_ssize_t dil_w, Py_ssize_t pad_top, Py_ssize_t pad_left,
    int layout,
    int n_threads,
):
    """grad_w = d(loss)/dw, summed over every image and output position."""
    cdef _Conv cv = _make_conv(N, C, H, W, K, R, S, P, Q, groups, stride_h, stride_w,
                               dil_h, dil_w, pad_top, pad_left, layout)
    _check_size(grad_y.shape[0], N * K * P * Q, "grad_y")
    _check_size(x.shape[0], N * C * H * W, "x")
    _check_size(grad_w.shape[0], K * cv.Cg * R * S, "grad_w")
    if _dwl_fits(&cv, layout):
        _dwl_grad_weight(&grad_y[0], &x[0], &grad_w[0], &cv, n_threads)
        return
    if _dwf_fits(&cv, layout):
        _dwf_grad_weight(&grad_y[0], &x[0], &grad_w[0], &cv, n_threads)
        return
    if _dw_fits(&cv, layout):
        _dw_grad_weight(&grad_y[0], &x[0], &grad_w[0], &cv, n_threads)
        return
    if _dw_strided_fits(&cv, layout):
        _dws_run(2, &grad_y[0], &x[0], <floating*>NULL, &grad_w[0], &cv, n_threads)
        return
    if _pwh_fits(&cv, layout):  # gW_g (Cg x Kg) = x_g^T . dy_g, over all N*H*W positions
        _pwh_wgrad(&x[0], &grad_y[0], &grad_w[0], N * H * W, C, K, cv.Cg, cv.Kg, groups,
                   n_threads)
        return
    if (_PW_WGRAD_SWAP and groups == 1 and K > C and _pw_inplace_fits(&cv, layout)
            and _wgradk_widening(&grad_y[0], &x[0], &grad_w[0], N, C, H, W, K, layout,
                                 n_threads)):
        return
    cdef:
        _Corr cr = _source_corr(&cv, groups)
        _Taps tp = _forward_taps(&cv)
        Py_ssize_t vl = _K.vbytes // sizeof(floating)
        Py_ssize_t nct = cv.Cg * R * S, kcw, nkc, items, nthr, per, ct, it, tid, Mr
        unsigned csr
        ptrdiff_t* xoff = <ptrdiff_t*>malloc((nct + 1) * sizeof(ptrdiff_t))
        floating* buf = NULL
    try:
        if xoff == NULL:
            raise MemoryError()
        _plan_tiles(&cr, tp.dr, tp.ds, tp.pa, tp.pb, xoff, sizeof(floating))
        for ct in range(nct - 1, -1, -1):  # in place: xoff[t] holds tapoff[t] until read
            xoff[ct] = (ct // cr.ntaps) * cr.cs + xoff[ct % cr.ntaps]
        if _wgradk_fits(&cr, cv.Kg, N, vl):
            if _pw_inplace_fits(&cv, layout):
                _inplace_tiles(&cr, xoff, nct, H * W)
            _wgradk(&grad_y[0], &x[0], &grad_w[0], &cr, &cv, xoff, tp.tr, tp.ts, n_threads,
                    _pw_inplace_fits(&cv, layout), False)
            return
        # Filters per item: up to 16 (each item re-packs the input tiles it reads),
        # fewer when that leaves threads idle.
        kcw = _round_up(min(cv.Kg, 16), FC_KW)
        while kcw > FC_KW and groups * ((cv.Kg + kcw - 1) // kcw) < 2 * n_threads:
            kcw -= FC_KW
        nkc = (cv.Kg + kcw - 1) // kcw
        items = groups * nkc
        nthr = min(n_threads, items)
        Mr = _round_up(cr.PB * cr.L, vl)
        per = _round_up(cr.tile_len + kcw * Mr + nct * kcw, 16)
        buf = <floating*>calloc(nthr * per, sizeof(floating))
        if buf == NULL:
            raise MemoryError()
        # A thread owns whole filters and sums over images and rows in one fixed
        # order: the result is bitwise reproducible for any thread count.
        with nogil, parallel(num_threads=nthr):
            tid = threadid()
            csr = fc_ftz_enter()
            for it in prange(items, schedule='static'):
                _wgrad_item(&grad_y[0], &x[0], &grad_w[0], &cr, &cv, xoff, tp.tr, tp.ts,
                            it, nkc, kcw, vl, buf + tid * per,
                            buf + tid * per + cr.tile_len,
                            buf + tid * per + cr.tile_len + kcw * Mr)
            fc_ftz_leave(csr)
    finally:
        free(xoff)
        free(buf)

# A widening 1x1 layer (K > C) runs _wgradk with the roles of x and grad_y swapped:
# dW^T (C x K) = sum over positions of x . dy^T is the grad_weight of a layer from K
# channels to C filters whose input is grad_y and whose grad_y is x, so the operand that
# is staged position-major (transposed, in 16-position blocks) is x, the smaller one,
# and the one read in place is grad_y. Measured on a 2-core Emerald Rapids (2026-12-07,
# AVX-512, N = 8, ms as before / swapped / im2col): MobileNetV2's 24->144 at 56x56 3.45 /
# 1.94 / 2.13, 32->192 at 28x28 1.41 / 0.74 / 0.84, 96->576 at 14x14 1.88 / 1.15 / 1.32,
# 160->960 at 7x7 1.11 / 0.90 / 0.91; ResNet-50's 64->256 at 56x56 9.79 / 6.28 / 6.41,
# 256->1024 at 14x14 8.12 / 5.03 / 4.67. Narrowing layers lose swapped (96->24 at 56x56
# 1.42 / 2.17, 256->64 6.13 / 10.12): they keep the direct order.
cdef bint _PW_WGRAD_SWAP = True


def _set_pw_wgrad_swap(bint on):
    """Testing and tuning hook: widening 1x1 grad_weight with x and grad_y swapped."""
    global _PW_WGRAD_SWAP
    _PW_WGRAD_SWAP = on


cdef inline void _inplace_tiles(_Corr* cr, ptrdiff_t* xoff, Py_ssize_t nct,
                                Py_ssize_t pitch) noexcept:
    # A 1x1, stride-1, unpadded NCHW layer's tile of a whole image is its input itself
    # (channel pitch H*W): _wgradk reads it in place, unpacked.
    cdef Py_ssize_t ct
    cr.PB, cr.npb, cr.Ti, cr.L, cr.cs = cr.Po, 1, cr.Po, cr.Qo, pitch
    for ct in range(nct):
        xoff[ct] = ct * pitch


cdef bint _wgradk_widening(const floating* grad_y, const floating* x, floating* grad_w,
                           Py_ssize_t N, Py_ssize_t C, Py_ssize_t H, Py_ssize_t W,
                           Py_ssize_t K, int layout, int n_threads) except -1:
    # The caller checked _pw_inplace_fits (P = H, Q = W, NCHW) and one group. Returns
    # False, having done nothing, when the swapped layer does not fit _wgradk.
    cdef:
        _Conv cv = _make_conv(N, K, H, W, C, 1, 1, H, W, 1, 1, 1, 1, 1, 0, 0, layout)
        _Corr cr = _source_corr(&cv, 1)
        _Taps tp = _forward_taps(&cv)
        Py_ssize_t vl = _K.vbytes // sizeof(floating)
        ptrdiff_t* xoff = <ptrdiff_t*>malloc((K + 1) * sizeof(ptrdiff_t))
    if xoff == NULL:
        raise MemoryError()
    try:
        _plan_tiles(&cr, tp.dr, tp.ds, tp.pa, tp.pb, xoff, sizeof(floating))
        if not _wgradk_fits(&cr, C, N, vl):
            return False
        _inplace_tiles(&cr, xoff, K, H * W)
        _wgradk(x, grad_y, grad_w, &cr, &cv, xoff, tp.tr, tp.ts, n_threads, True, True)
        return True
    finally:
        free(xoff)


cdef void _wgradk_store(const floating* a, Py_ssize_t lda, floating* gw,
                        const ptrdiff_t* woff, Py_ssize_t nr, Py_ssize_t nk,
                        Py_ssize_t ws_k) noexcept nogil:
    # gw[k*ws_k + woff[i]] = a[i*lda + k] for i < nr, k < nk: a tile of the transpose of
    # dW (nr <= 64 rows of a, 256 bytes each, in L1) into grad_w, filter by filter
    # (each a run of nr values along woff, contiguous in OIHW).
    cdef Py_ssize_t i, k
    cdef floating* d
    for k in range(nk):
        d = gw + k * ws_k
        for i in range(nr):
            d[woff[i]] = a[i * lda + k]


cdef void _stage_transposed(const floating* src, Py_ssize_t lds, Py_ssize_t j0,
                            Py_ssize_t j1, Py_ssize_t nk, Py_ssize_t ldd,
                            floating* dst) noexcept nogil:
    # dst[j*ldd + k] = src[k*lds + j] for j0 <= j < j1 and k < nk, in blocks of 16
    # positions: each source row is read in 64-byte runs while the block's 16 rows
    # of dst stay in L1. Measured (resnet_c2_1x1 grad_weight, 8 x 3136 positions x
    # 64 filters): the position-by-position gather it replaces took 23% of the pass.
    cdef Py_ssize_t jb, je, j, k
    cdef const floating* s
    cdef floating* d
    jb = j0
    while jb < j1:
        je = min(jb + 16, j1)
        for k in range(nk):
            s = src + k * lds
            d = dst + k
            for j in range(jb, je):
                d[j * ldd] = s[j]
        jb = je


cdef int _wgradk(
    const floating* grad_y,  # IN
    const floating* x,       # IN
    floating* grad_w,        # OUT
    _Corr* cr, const _Conv* cv, const ptrdiff_t* xoff,
    const Py_ssize_t* tr, const Py_ssize_t* ts, int n_threads, bint in_place,
    bint transposed,
) except -1:
    # With in_place the tiles are x itself (the caller set cr for whole images of a
    # 1x1, stride-1, unpadded NCHW layer) and nothing is packed. With transposed (one
    # group of a 1x1 layer, from _wgradk_widening) grad_w is (nct, Kg): dW^T in the
    # [ct][k] order it is summed in, copied row by row.
    # grad_weight vectorised over filters: dW[ct][k] = sum_m X[ct][m] * dY[m][k], with
    # fc_kvec broadcasting mr (channel, tap) rows of the tiles and loading k-vectors of
    # grad_y staged position-major. The work is cut into *units*, one tile each: an
    # image (n) and a block of PB output rows (pb), in the order n, pb. A batch of ib_n
    # units is packed side by side and its valid positions (no junk columns) are
    # listed in moff; the register block of dW is loaded, sums a chunk of positions
    # (no horizontal sums) and is stored back. Batches and chunks run in order and
    # each block of dW belongs to one thread per chunk, so every dW element sums its
    # terms in one order fixed by the shape: bitwise the same for any thread count and
    # any repeat. Shared scratch: the batch's tiles and staged grad_y (about
    # _TILE_BUDGET * 2), and dW in [g][ct][k] order (weight-sized).
    cdef:
        Py_ssize_t vl = _K.vbytes // sizeof(floating), mr = _K.mr
        Py_ssize_t G = cr.G, Kg = cv.Kg, Kp = _round_up(cv.Kg, vl)
        Py_ssize_t nct = cr.Ci * cr.ntaps, upos = cr.PB * cr.Qo, ipitch = cr.Ci * cr.cs
        # Filter vectors split into near-equal blocks: 64 filters run as 2 + 2 vectors,
        # not 3 + 1 (a 1-vector block issues 8 FMAs per 10 loads).
        Py_ssize_t nctb = (nct + mr - 1) // mr, nvt = Kp // vl, nkbk = (nvt + _K.nvk - 1) // _K.nvk
        Py_ssize_t per_unit = (((0 if in_place else G * ipitch) + upos * G * Kp)
                               * <Py_ssize_t>sizeof(floating))
        Py_ssize_t nunits = cv.N * cr.npb
        # A batch holds up to 8 tile budgets (4 MiB) of tiles and staged grad_y, so
        # that resnet_c4/c5 run as one batch: one packing and one compute region.
        Py_ssize_t ib_n = max(1, min(nunits, 8 * _TILE_BUDGET // per_unit))
        Py_ssize_t ncap = ib_n * upos
        Py_ssize_t nblk = G * nctb * nkbk, u0, nu, it, j, ul, g, p, q, k, b, ctb, kbk
        Py_ssize_t ct, nr, nv, nthr, n, p0, PBe, npos, pos0, k0, sp, b0, b1, nsc, nsk
        Py_ssize_t nsp = max(1, min(cr.Ci, 4 * n_threads // max(1, min(nunits, ib_n) * G)))
        # grad_y is staged per group and filter block, position-major within a block
        # (dys[g][k0*ncap + pos*nv*vl + k - k0]), so a block streams contiguous rows.
        Py_ssize_t pc, nch, pch = max(64, _WGRAD_CHUNK_BYTES
                                      // (_K.nvk * vl * <Py_ssize_t>sizeof(floating)))
        unsigned csr
        ptrdiff_t* moff = <ptrdiff_t*>malloc((ncap + 1) * sizeof(ptrdiff_t))
        ptrdiff_t* ustart = <ptrdiff_t*>malloc((ib_n + 1) * sizeof(ptrdiff_t))
        ptrdiff_t* woff = <ptrdiff_t*>malloc((nct + 1) * sizeof(ptrdiff_t))
        # The tiles, the staged grad_y and dW in [g][ct][k] order, side by side in this
        # thread's kept scratch (_scratch.pxi), each a whole number of 64-byte lines.
        Py_ssize_t n_tiles = _round_up((0 if in_place else ib_n * G * ipitch) + cr.cs + 256,
                                       16)
        Py_ssize_t n_dys = _round_up(ncap * G * Kp + 1, 16)
        _Scratch scratch = None
        floating* tiles
        floating* dys
        floating* acc
        floating* dst
        floating* srow
        const floating* src
    try:
        nthr = max(1, min(n_threads, nblk))
        if moff == NULL or ustart == NULL or woff == NULL:
            raise MemoryError()
        scratch = _scratch((n_tiles + n_dys + G * nct * Kp + 1) * <Py_ssize_t>sizeof(floating))
        tiles = <floating*>scratch.data
        dys = tiles + n_tiles
        acc = dys + n_dys
        if Kp != Kg:
            # Padded filter lanes of dys must read zero; otherwise neither buffer needs
            # clearing (the first chunk stores dW without reading it: clearing resnet_c5's
            # 9 MiB dW was a serial memset).
            memset(dys, 0, ncap * G * Kp * sizeof(floating))
        for u0 in range(0, nunits, ib_n):
            nu = min(ib_n, nunits - u0)
            # The batch's valid positions, unit by unit: ustart[ul] is the first.
            npos = 0
            for ul in range(nu):
                ustart[ul] = npos
                p0 = ((u0 + ul) % cr.npb) * cr.PB
                PBe = min(cr.PB, cr.Po - p0)
                for p in range(PBe):
                    for q in range(cr.Qo):
                        moff[npos] = ul * G * ipitch + p * cr.L + q
                        npos += 1
            ustart[nu] = npos
            if in_place:  # units are whole images: the batch's tiles start at image u0
                tiles = <floating*>(x + u0 * cv.xs_n)
            # Packing and staging in nsp slices per unit and group (channels of the
            # tile, positions of grad_y), so that one unit still keeps every thread
            # busy (resnet_c2_1x1: a 0.5 MiB tile per unit).
            with nogil, parallel(num_threads=min(n_threads, nu * G * nsp)):
                for it in prange(nu * G * nsp, schedule='static'):
                    sp = it % nsp
                    ul = it // (G * nsp)
                    g = (it // nsp) % G
                    n = (u0 + ul) // cr.npb
                    p0 = ((u0 + ul) % cr.npb) * cr.PB
                    PBe = min(cr.PB, cr.Po - p0)
                    if not in_place:
                        _pack_channels(x, cr, n, g, p0, 0, PBe + cr.Ti - cr.PB,
                                       sp * cr.Ci // nsp, (sp + 1) * cr.Ci // nsp,
                                       tiles + (ul * G + g) * ipitch)
                    pos0 = ustart[ul]
                    if in_place:  # the unit's positions are contiguous rows of grad_y
                        src = grad_y + n * cv.ys_n + g * Kg * cv.ys_k
                        for kbk in range(nkbk):
                            k0 = kbk * nvt // nkbk * vl
                            nv = (kbk + 1) * nvt // nkbk * vl - k0
                            _stage_transposed(src + k0 * cv.ys_k, cv.ys_k,
                                              sp * upos // nsp, (sp + 1) * upos // nsp,
                                              min(nv, Kg - k0), nv,
                                              dys + g * ncap * Kp + k0 * ncap + pos0 * nv)
                        continue
                    for j in range(sp * PBe * cr.Qo // nsp, (sp + 1) * PBe * cr.Qo // nsp):
                        p = j // cr.Qo
                        q = j % cr.Qo
                        src = (grad_y + n * cv.ys_n + g * Kg * cv.ys_k + (p0 + p) * cv.ys_p
                               + q * cv.ys_q)
                        for kbk in range(nkbk):
                            k0 = kbk * nvt // nkbk * vl
                            nv = (kbk + 1) * nvt // nkbk * vl - k0
                            srow = dys + g * ncap * Kp + k0 * ncap + (pos0 + j) * nv
                            for k in range(min(nv, Kg - k0)):
                                srow[k] = src[(k0 + k) * cv.ys_k]
            # Positions in nch near-equal chunks of at most pch whose staged grad_y
            # stays in L2 while the blocks sweep it; each block adds straight into its
            # rows of dW, chunk after chunk, so the order of the sum is fixed by the
            # shape alone. One parallel region: a thread owns the same blocks (a fixed
            # static split) in every chunk, so the chunks need no barrier. Measured:
            # unchunked, resnet_stem streamed a 1.6 MiB unit of grad_y from L3 once per
            # block; resnet_c3_3x3s2 went 10.9 -> 8.8 ms.
            nch = (npos + pch - 1) // pch
            with nogil, parallel(num_threads=nthr):
                csr = fc_ftz_enter()
                for it in prange(nthr, schedule='static'):
                  b0 = it * nblk // nthr
                  b1 = (it + 1) * nblk // nthr
                  for pc in range(nch):
                    p0 = pc * npos // nch
                    PBe = (pc + 1) * npos // nch - p0
                    for b in range(b0, b1):
                        g = b // (nctb * nkbk)
                        ctb = (b // nkbk) % nctb
                        kbk = b % nkbk
                        nr = min(mr, nct - ctb * mr)
                        k0 = kbk * nvt // nkbk * vl
                        nv = (kbk + 1) * nvt // nkbk - kbk * nvt // nkbk
                        dst = acc + (g * nct + ctb * mr) * Kp + k0
                        srow = dys + g * ncap * Kp + k0 * ncap + p0 * nv * vl
                        if floating is float:
                            _K.kvec_f32(tiles + g * ipitch, xoff + ctb * mr, <int>nr,
                                        moff + p0, PBe, srow, nv * vl, dst, Kp,
                                        <int>nv, u0 > 0 or pc > 0)
                        else:
                            _K.kvec_f64(tiles + g * ipitch, xoff + ctb * mr, <int>nr,
                                        moff + p0, PBe, srow, nv * vl, dst, Kp,
                                        <int>nv, u0 > 0 or pc > 0)
                fc_ftz_leave(csr)
        # dW out of [g][ct][k] order into grad_w, in parallel 64 x 64 tiles, in the
        # order (group, rows, filters), so that a thread mostly reads the rows of dW it
        # summed. Measured (resnet_c5 grad_weight, ms, 1 / 2 threads, two alternating
        # runs): blocks of 16 filters over every (channel, tap) row, one line read per
        # 2 KiB row of dW (9 MiB, mostly from L3 and the other core), took a quarter of
        # the time, 16.1 / 8.4 and 17.0 / 8.8; in tiles 14.0 / 7.0 and 15.7 / 7.9.
        # Storing each register block right after its last sum was slower (2 threads:
        # 10.2, 32-byte runs into 512 rows of grad_w), and storing 8 rows at a time from
        # the compute region no faster (7.8 against 7.4). Within a tile, row by row
        # (contiguous reads of dW, 4-byte writes 18 KiB apart) was slower, 9.9 against
        # 8.0; prefetching the next tile's rows gained nothing.
        if transposed:
            with nogil, parallel(num_threads=max(1, min(n_threads, nct))):
                for ct in prange(nct, schedule='static'):
                    memcpy(grad_w + ct * Kg, acc + ct * Kp, Kg * sizeof(floating))
            return 0
        for ct in range(nct):
            woff[ct] = ((ct // cr.ntaps) * cv.ws_c + tr[ct % cr.ntaps] * cv.ws_r
                        + ts[ct % cr.ntaps] * cv.ws_s)
        nsc = (nct + 63) // 64
        nsk = (Kg + 63) // 64
        with nogil, parallel(num_threads=max(1, min(n_threads, G * nsc * nsk))):
            for it in prange(G * nsc * nsk, schedule='static'):
                g = it // (nsc * nsk)
                ct = (it // nsk) % nsc * 64
                k0 = it % nsk * 64
                _wgradk_store(acc + (g * nct + ct) * Kp + k0, Kp,
                              grad_w + (g * Kg + k0) * cv.ws_k, woff + ct,
                              min(nct - ct, 64), min(Kg - k0, 64), cv.ws_k)
    finally:
        free(moff)
        free(ustart)
        free(woff)
    return 0


def grad_bias(
    const floating[::1] grad_y,  # IN: (N, K, P, Q) or (N, P, Q, K)
    floating[::1] grad_b,        # OUT: (K,)
    Py_ssize_t N, Py_ssize_t K, Py_ssize_t P, Py_ssize_t Q,
    int layout,
    int n_threads,
):
    """grad_b[k] = sum of grad_y over n, p, q."""
    # Only the output side of the geometry matters; the input side is a dummy 1x1.
    cdef _Conv cv = _make_conv(N, 1, 1, 1, K, 1, 1, P, Q, 1, 1, 1, 1, 1, 0, 0, layout)
    cdef Py_ssize_t k
    _check_size(grad_y.shape[0], N * K * P * Q, "grad_y")
    _check_size(grad_b.shape[0], K, "grad_b")

    with nogil, parallel(num_threads=n_threads):
        for k in prange(K, schedule='static'):
            grad_b[k] = _grad_bias_entry(grad_y, &cv, k)
