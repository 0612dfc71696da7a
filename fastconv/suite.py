"""The benchmark layer suites, defined once and used by ``fastconv bench`` and ``bench/``:
the convolution layers (SUITE) and the transposed convolutions of decoders (DECODER).

Shapes are NCHW; every layer is run in float32 unless asked otherwise.
"""
from __future__ import annotations

from typing import NamedTuple


class Layer(NamedTuple):
    name: str
    N: int
    C: int
    K: int
    H: int
    W: int
    R: int
    S: int
    stride: int
    pad: int
    groups: int = 1

    @property
    def x_shape(self):
        return (self.N, self.C, self.H, self.W)

    @property
    def w_shape(self):
        return (self.K, self.C // self.groups, self.R, self.S)


SUITE = (
    Layer("cs231n", 100, 3, 25, 31, 31, 3, 3, 2, 1),
    Layer("alexnet_conv1", 8, 3, 96, 227, 227, 11, 11, 4, 0),
    Layer("resnet_stem", 8, 3, 64, 224, 224, 7, 7, 2, 3),
    Layer("vgg_conv1_2", 2, 64, 64, 224, 224, 3, 3, 1, 1),
    Layer("resnet_c2_3x3", 8, 64, 64, 56, 56, 3, 3, 1, 1),
    Layer("resnet_c2_1x1", 8, 256, 64, 56, 56, 1, 1, 1, 0),
    Layer("resnet_c3_3x3s2", 8, 128, 128, 56, 56, 3, 3, 2, 1),
    Layer("resnet_c4_3x3", 8, 256, 256, 14, 14, 3, 3, 1, 1),
    Layer("resnet_c5_3x3", 8, 512, 512, 7, 7, 3, 3, 1, 1),
    Layer("mobilenet_dw", 8, 32, 32, 112, 112, 3, 3, 1, 1, 32),
    Layer("lenet_c1", 64, 1, 6, 32, 32, 5, 5, 1, 0),
    Layer("lenet_c5", 64, 16, 120, 5, 5, 5, 5, 1, 0),
    Layer("batch1_c4", 1, 256, 256, 14, 14, 3, 3, 1, 1),
)
LAYERS = {layer.name: layer for layer in SUITE}
# The large 3x3 layers whose forward the im2col issue measures against the SGEMM ceiling.
LARGE_3X3 = ("vgg_conv1_2", "resnet_c2_3x3", "resnet_c4_3x3", "resnet_c5_3x3", "batch1_c4")

# What `fastconv bench` runs by default: small enough to finish in about a minute on
# 2 cores, and covering a stem, a 3x3 body layer, a pointwise and a depthwise layer.
DEFAULT = ("alexnet_conv1", "cs231n", "resnet_c4_3x3", "resnet_c2_1x1", "mobilenet_dw",
           "lenet_c5")
QUICK = ("cs231n", "lenet_c5", "batch1_c4")


class TransposedLayer(NamedTuple):
    """A transposed convolution of the decoder suite: C channels of H x W in, K out, at
    ``stride`` times the size; the filters are PyTorch's ``(C, K/groups, R, S)``."""
    name: str
    N: int
    C: int
    K: int
    H: int
    W: int
    R: int
    S: int
    stride: int
    pad: int
    output_padding: int = 0
    groups: int = 1

    @property
    def x_shape(self):
        return (self.N, self.C, self.H, self.W)

    @property
    def w_shape(self):
        return (self.C, self.K // self.groups, self.R, self.S)


# `fastconv bench --suite decoder`: the up-sampling paths of three decoders.
DECODER = (
    # DCGAN's generator (Radford et al. 2016) at batch 64: a 100-d code projected to
    # 512 x 4 x 4 (1x1 -> 4x4, stride 1, pad 0), then 4x4 kernels, stride 2, pad 1, up to
    # a 3 x 64 x 64 image.
    TransposedLayer("dcgan_project", 64, 100, 512, 1, 1, 4, 4, 1, 0),
    TransposedLayer("dcgan_up8", 64, 512, 256, 4, 4, 4, 4, 2, 1),
    TransposedLayer("dcgan_up16", 64, 256, 128, 8, 8, 4, 4, 2, 1),
    TransposedLayer("dcgan_up32", 64, 128, 64, 16, 16, 4, 4, 2, 1),
    TransposedLayer("dcgan_up64", 64, 64, 3, 32, 32, 4, 4, 2, 1),
    # U-Net's up-convolution (Ronneberger et al. 2015): 2x2, stride 2, halving the
    # channels, 64x64 -> 128x128, batch 4.
    TransposedLayer("unet_up", 4, 256, 128, 64, 64, 2, 2, 2, 0),
    # FCN-16s's final 16x upsampling of the 21 class scores (Long et al. 2015): 32x32
    # kernel, stride 16, pad 8, 32x32 -> 512x512, batch 1.
    TransposedLayer("fcn_up16", 1, 21, 21, 32, 32, 32, 32, 16, 8),
)
DECODER_LAYERS = {layer.name: layer for layer in DECODER}
