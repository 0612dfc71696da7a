"""The benchmark layer suite, defined once and used by ``fastconv bench`` and ``bench/``.

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
