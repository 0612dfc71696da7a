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
from cython.parallel cimport parallel, prange

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


cdef void _forward_plane(
    const floating[::1] x,  # IN
    const floating[::1] w,  # IN
    floating b,             # IN: bias of filter k, or 0
    floating[::1] y,        # OUT: plane (n, k) only
    const _Conv* cv,
    Py_ssize_t n,
    Py_ssize_t k,
) noexcept nogil:
    cdef:
        Py_ssize_t c, r, s, p, q, p0, p1, q0, q1, row_off, col_off
        Py_ssize_t x_plane, x_row, y_row
        Py_ssize_t y_plane = n * cv.ys_n + k * cv.ys_k
        Py_ssize_t c0 = (k // cv.Kg) * cv.Cg
        Py_ssize_t x_step = cv.stride_w * cv.xs_w  # x distance between adjacent q
        floating wv

    for p in range(cv.P):
        y_row = y_plane + p * cv.ys_p
        for q in range(cv.Q):
            y[y_row + q * cv.ys_q] = b

    # One tap at a time, so the innermost loop is a long axpy along an output row.
    for c in range(cv.Cg):
        x_plane = n * cv.xs_n + (c0 + c) * cv.xs_c
        for r in range(cv.R):
            row_off = r * cv.dil_h - cv.pad_top
            p0 = _first_out(row_off, cv.stride_h)
            p1 = _end_out(row_off, cv.stride_h, cv.H, cv.P)
            for s in range(cv.S):
                col_off = s * cv.dil_w - cv.pad_left
                q0 = _first_out(col_off, cv.stride_w)
                q1 = _end_out(col_off, cv.stride_w, cv.W, cv.Q)
                wv = w[k * cv.ws_k + c * cv.ws_c + r * cv.ws_r + s * cv.ws_s]
                for p in range(p0, p1):
                    y_row = y_plane + p * cv.ys_p
                    x_row = x_plane + (p * cv.stride_h + row_off) * cv.xs_h + col_off * cv.xs_w
                    for q in range(q0, q1):
                        y[y_row + q * cv.ys_q] += wv * x[x_row + q * x_step]


cdef void _grad_input_plane(
    const floating[::1] grad_y,  # IN
    const floating[::1] w,       # IN
    floating[::1] grad_x,        # OUT: plane (n, c) only
    const _Conv* cv,
    Py_ssize_t n,
    Py_ssize_t c,
) noexcept nogil:
    cdef:
        Py_ssize_t k, r, s, p, q, h, col, p0, p1, q0, q1, row_off, col_off
        Py_ssize_t x_row, y_plane, y_row
        Py_ssize_t x_plane = n * cv.xs_n + c * cv.xs_c
        Py_ssize_t k0 = (c // cv.Cg) * cv.Kg
        Py_ssize_t cg = c % cv.Cg  # the channel's index within its filters' depth
        Py_ssize_t x_step = cv.stride_w * cv.xs_w
        floating wv

    for h in range(cv.H):
        for col in range(cv.W):
            grad_x[x_plane + h * cv.xs_h + col * cv.xs_w] = 0

    # The forward pass run backwards: scatter each grad_y row into the input row it
    # read. Looping over outputs, not inputs, skips the zeros a stride would insert.
    for k in range(k0, k0 + cv.Kg):
        y_plane = n * cv.ys_n + k * cv.ys_k
        for r in range(cv.R):
            row_off = r * cv.dil_h - cv.pad_top
            p0 = _first_out(row_off, cv.stride_h)
            p1 = _end_out(row_off, cv.stride_h, cv.H, cv.P)
            for s in range(cv.S):
                col_off = s * cv.dil_w - cv.pad_left
                q0 = _first_out(col_off, cv.stride_w)
                q1 = _end_out(col_off, cv.stride_w, cv.W, cv.Q)
                wv = w[k * cv.ws_k + cg * cv.ws_c + r * cv.ws_r + s * cv.ws_s]
                for p in range(p0, p1):
                    y_row = y_plane + p * cv.ys_p
                    x_row = x_plane + (p * cv.stride_h + row_off) * cv.xs_h + col_off * cv.xs_w
                    for q in range(q0, q1):
                        grad_x[x_row + q * x_step] += wv * grad_y[y_row + q * cv.ys_q]


cdef floating _grad_weight_entry(
    const floating[::1] grad_y,  # IN
    const floating[::1] x,       # IN
    const _Conv* cv,
    Py_ssize_t k,
    Py_ssize_t c,
    Py_ssize_t r,
    Py_ssize_t s,
) noexcept nogil:
    cdef:
        Py_ssize_t n, p, q, x_plane, x_row, y_plane, y_row
        Py_ssize_t row_off = r * cv.dil_h - cv.pad_top
        Py_ssize_t col_off = s * cv.dil_w - cv.pad_left
        Py_ssize_t p0 = _first_out(row_off, cv.stride_h)
        Py_ssize_t p1 = _end_out(row_off, cv.stride_h, cv.H, cv.P)
        Py_ssize_t q0 = _first_out(col_off, cv.stride_w)
        Py_ssize_t q1 = _end_out(col_off, cv.stride_w, cv.W, cv.Q)
        Py_ssize_t c_in = (k // cv.Kg) * cv.Cg + c
        Py_ssize_t x_step = cv.stride_w * cv.xs_w
        # The sum runs over N*P*Q terms, far more than a float32 accumulator holds
        # without visible rounding error.
        double acc = 0

    for n in range(cv.N):
        y_plane = n * cv.ys_n + k * cv.ys_k
        x_plane = n * cv.xs_n + c_in * cv.xs_c + row_off * cv.xs_h + col_off * cv.xs_w
        for p in range(p0, p1):
            y_row = y_plane + p * cv.ys_p
            x_row = x_plane + p * cv.stride_h * cv.xs_h
            for q in range(q0, q1):
                acc += grad_y[y_row + q * cv.ys_q] * x[x_row + q * x_step]
    return <floating>acc


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
):
    """y = conv(x, w) + bias, every element of y written."""
    cdef _Conv cv = _make_conv(N, C, H, W, K, R, S, P, Q, groups, stride_h, stride_w,
                               dil_h, dil_w, pad_top, pad_left, layout)
    cdef Py_ssize_t nk
    _check_size(x.shape[0], N * C * H * W, "x")
    _check_size(w.shape[0], K * cv.Cg * R * S, "w")
    _check_size(y.shape[0], N * K * P * Q, "y")
    if has_bias:
        _check_size(bias.shape[0], K, "bias")

    # A thread owns whole (n, k) output planes, so no two threads write one element.
    with nogil, parallel(num_threads=n_threads):
        for nk in prange(N * K, schedule='static'):
            _forward_plane(x, w, bias[nk % K] if has_bias else 0, y, &cv, nk // K, nk % K)


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
):
    """grad_x = d(loss)/dx given grad_y = d(loss)/dy, every element of grad_x written."""
    cdef _Conv cv = _make_conv(N, C, H, W, K, R, S, P, Q, groups, stride_h, stride_w,
                               dil_h, dil_w, pad_top, pad_left, layout)
    cdef Py_ssize_t nc
    _check_size(grad_y.shape[0], N * K * P * Q, "grad_y")
    _check_size(w.shape[0], K * cv.Cg * R * S, "w")
    _check_size(grad_x.shape[0], N * C * H * W, "grad_x")

    # A thread owns whole (n, c) input planes: the scatter stays race-free.
    with nogil, parallel(num_threads=n_threads):
        for nc in prange(N * C, schedule='static'):
            _grad_input_plane(grad_y, w, grad_x, &cv, nc // C, nc % C)


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
    cdef Py_ssize_t i, k, c, r, s
    cdef Py_ssize_t Cg = cv.Cg
    _check_size(grad_y.shape[0], N * K * P * Q, "grad_y")
    _check_size(x.shape[0], N * C * H * W, "x")
    _check_size(grad_w.shape[0], K * Cg * R * S, "grad_w")

    # One weight per iteration, not one filter: depthwise or single-filter layers
    # still give every thread work. Consecutive iterations share (k, c) planes.
    with nogil, parallel(num_threads=n_threads):
        for i in prange(K * Cg * R * S, schedule='static'):
            k = i // (Cg * R * S)
            c = i // (R * S) % Cg
            r = i // S % R
            s = i % S
            grad_w[k * cv.ws_k + c * cv.ws_c + r * cv.ws_r + s * cv.ws_s] = \
                _grad_weight_entry(grad_y, x, &cv, k, c, r, s)


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
