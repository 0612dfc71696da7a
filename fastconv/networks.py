"""Every convolution of four classic networks, in network order, with their real shapes.

The definitions are torchvision's (``resnet18``, ``resnet50``, ``vgg16``,
``mobilenet_v2``), and each layer is named by its torchvision module path, so a
figure from ``fastconv bench --network`` can be looked up in the PyTorch model. Each
builder takes the batch size N and the image size (square, 224 by default) and returns
``suite.Layer`` tuples; the pooling layers between the convolutions only change the
spatial size they hand on. "Network order" is the order of the module definitions,
which is also the order of the forward pass (a downsample projection comes after the
block's main path, as torchvision's forward computes it; it reads the block's input).
"""
from __future__ import annotations

from .suite import Layer


def _out(size: int, R: int, stride: int, pad: int) -> int:
    """The output size of a window of R taps sliding over ``size`` (convolution or pool)."""
    return (size + 2 * pad - R) // stride + 1


def _resnet(N: int, image: int, bottleneck: bool, blocks) -> tuple:
    """torchvision's ResNet v1.5: the stride of a bottleneck block is on its 3x3."""
    layers = [Layer("conv1", N, 3, 64, image, image, 7, 7, 2, 3)]
    size = _out(_out(image, 7, 2, 3), 3, 2, 1)  # the 3x3/2 max pool after the stem
    C, expansion = 64, (4 if bottleneck else 1)
    for stage, count in enumerate(blocks, 1):
        width = 64 * 2 ** (stage - 1)
        for b in range(count):
            stride = 2 if stage > 1 and b == 0 else 1
            name = f"layer{stage}.{b}"
            out = _out(size, 3, stride, 1)
            if bottleneck:
                layers += [Layer(f"{name}.conv1", N, C, width, size, size, 1, 1, 1, 0),
                           Layer(f"{name}.conv2", N, width, width, size, size, 3, 3, stride, 1),
                           Layer(f"{name}.conv3", N, width, width * 4, out, out, 1, 1, 1, 0)]
            else:
                layers += [Layer(f"{name}.conv1", N, C, width, size, size, 3, 3, stride, 1),
                           Layer(f"{name}.conv2", N, width, width, out, out, 3, 3, 1, 1)]
            if stride != 1 or C != width * expansion:
                layers.append(Layer(f"{name}.downsample.0", N, C, width * expansion, size, size,
                                    1, 1, stride, 0))
            C, size = width * expansion, out
    return tuple(layers)


def resnet18(N: int = 8, image: int = 224) -> tuple:
    return _resnet(N, image, bottleneck=False, blocks=(2, 2, 2, 2))


def resnet50(N: int = 8, image: int = 224) -> tuple:
    return _resnet(N, image, bottleneck=True, blocks=(3, 4, 6, 3))


# torchvision's configuration "D": filters per 3x3 convolution, "M" a 2x2/2 max pool.
_VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
          512, 512, 512, "M")


def vgg16(N: int = 8, image: int = 224) -> tuple:
    """The 13 convolutions of ``features``; each is followed by a ReLU, which takes an
    index in torchvision's Sequential, so the convolutions are features.0, 2, 5, ..."""
    layers, C, size, index = [], 3, image, 0
    for v in _VGG16:
        if v == "M":
            size, index = _out(size, 2, 2, 0), index + 1
            continue
        layers.append(Layer(f"features.{index}", N, C, v, size, size, 3, 3, 1, 1))
        C, index = v, index + 2
    return tuple(layers)


# torchvision's inverted residual settings: expansion t, output channels c, blocks n,
# stride s of the first block.
_MOBILENET_V2 = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                 (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


def mobilenet_v2(N: int = 8, image: int = 224) -> tuple:
    """The 3x3/2 stem, 17 inverted residual blocks (1x1 expansion unless t == 1, 3x3
    depthwise, 1x1 projection) and the final 1x1 to 1280 channels."""
    layers = [Layer("features.0.0", N, 3, 32, image, image, 3, 3, 2, 1)]
    C, size, index = 32, _out(image, 3, 2, 1), 1
    for t, c, n, s in _MOBILENET_V2:
        for b in range(n):
            stride = s if b == 0 else 1
            name, hidden, out = f"features.{index}.conv", C * t, _out(size, 3, stride, 1)
            if t != 1:
                layers.append(Layer(f"{name}.0.0", N, C, hidden, size, size, 1, 1, 1, 0))
            dw = f"{name}.{1 if t != 1 else 0}.0"
            layers += [Layer(dw, N, hidden, hidden, size, size, 3, 3, stride, 1, hidden),
                       Layer(f"{name}.{2 if t != 1 else 1}", N, hidden, c, out, out, 1, 1, 1, 0)]
            C, size, index = c, out, index + 1
    layers.append(Layer(f"features.{index}.0", N, C, 1280, size, size, 1, 1, 1, 0))
    return tuple(layers)


NETWORKS = {"resnet18": resnet18, "resnet50": resnet50, "vgg16": vgg16,
            "mobilenet_v2": mobilenet_v2}
