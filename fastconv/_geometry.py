"""The shape of one convolution, in the vocabulary used everywhere in fastconv.

Input is N, C, H, W; filters are K, R, S; output is P, Q. Every engine receives a
:class:`ConvGeometry` that the API has already validated, so engines never need to
check it again.
"""
from __future__ import annotations

from dataclasses import dataclass

# Layout codes handed to the compiled kernels (which never see strings).
LAYOUT_NCHW = 0
LAYOUT_NHWC = 1
LAYOUTS = {"NCHW": LAYOUT_NCHW, "NHWC": LAYOUT_NHWC}


def out_size(size: int, kernel: int, stride: int, pad_before: int, pad_after: int,
             dilation: int) -> int:
    """Output length of one spatial axis: (W - F + 2P) / S + 1, with dilation and per-side pad.

    Returns a value < 1 when the (dilated) kernel does not fit in the padded input.
    """
    span = dilation * (kernel - 1) + 1
    return (size + pad_before + pad_after - span) // stride + 1


def transposed_out_size(size: int, kernel: int, stride: int, pad_before: int, pad_after: int,
                        dilation: int, output_padding: int) -> int:
    """Output length of one spatial axis of a transposed convolution, PyTorch's
    (size - 1) * stride - pad_before - pad_after + dilation * (kernel - 1) + output_padding + 1:
    the input length of the convolution whose gradient it is (``out_size`` inverted,
    ``output_padding`` choosing among the lengths that give ``size`` outputs)."""
    return ((size - 1) * stride - pad_before - pad_after + dilation * (kernel - 1)
            + output_padding + 1)


@dataclass(frozen=True)
class ConvGeometry:
    """A validated convolution problem. All fields are plain ints.

    ``pad_bottom`` and ``pad_right`` are negative in one case: the convolution of a
    transposed one whose ``output_padding`` reaches its stride (allowed when it stays
    below the dilation), where the last rows or columns of the input are ones no window
    reaches. The kernels take ``pad_top``, ``pad_left`` and P, Q, never the other two
    pads (the reference pads by at least 0), and the pads always satisfy
    ``out_size(H, R, stride_h, pad_top, pad_bottom, dil_h) == P`` (and likewise for W).
    """

    N: int
    C: int
    H: int
    W: int
    K: int
    R: int
    S: int
    P: int
    Q: int
    groups: int
    stride_h: int
    stride_w: int
    dil_h: int
    dil_w: int
    pad_top: int
    pad_bottom: int
    pad_left: int
    pad_right: int
    layout: int  # LAYOUT_NCHW or LAYOUT_NHWC

    @property
    def Cg(self) -> int:
        """Input channels seen by one filter (the filter's depth)."""
        return self.C // self.groups

    @property
    def Kg(self) -> int:
        """Filters per group."""
        return self.K // self.groups

    @property
    def nhwc(self) -> bool:
        return self.layout == LAYOUT_NHWC

    @property
    def x_shape(self) -> tuple[int, int, int, int]:
        return (self.N, self.H, self.W, self.C) if self.nhwc else (self.N, self.C, self.H, self.W)

    @property
    def w_shape(self) -> tuple[int, int, int, int]:
        # NHWC pairs with HWIO filters (TensorFlow); NCHW with OIHW (PyTorch).
        return (self.R, self.S, self.Cg, self.K) if self.nhwc else (self.K, self.Cg, self.R, self.S)

    @property
    def y_shape(self) -> tuple[int, int, int, int]:
        return (self.N, self.P, self.Q, self.K) if self.nhwc else (self.N, self.K, self.P, self.Q)

    @property
    def flops(self) -> int:
        """Multiply-adds times two for one forward pass (the same count for each gradient)."""
        return 2 * self.N * self.K * self.P * self.Q * self.Cg * self.R * self.S

    @property
    def is_pointwise(self) -> bool:
        """A 1x1, stride-1, unpadded convolution: a matrix product with no im2col needed."""
        return (self.R == 1 and self.S == 1 and self.stride_h == 1 and self.stride_w == 1
                and self.pad_top == 0 and self.pad_bottom == 0
                and self.pad_left == 0 and self.pad_right == 0)

    @property
    def covers_input(self) -> bool:
        """The kernel spans the whole unpadded input: one output per image, a fully
        connected layer (LeNet's C5, VGG's fc6 as a convolution)."""
        return (self.R == self.H and self.S == self.W and self.pad_top == 0
                and self.pad_bottom == 0 and self.pad_left == 0 and self.pad_right == 0)

    @property
    def is_depthwise(self) -> bool:
        return self.groups > 1 and self.groups == self.C == self.K
