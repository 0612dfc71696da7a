"""Train MobileNetV2-style inverted-residual blocks in PyTorch, then again with their
depthwise convolutions on fastconv, and print the step time of each.

    python examples/torch_mobilenet_block.py [--steps 20] [--batch 32] [--quick]

The model (NCHW, float32): a 3x3 stem 3 -> 32 at stride 2, then inverted residual blocks
(1x1 expand x6 -> BatchNorm -> ReLU6 -> 3x3 depthwise -> BatchNorm -> ReLU6 -> 1x1
project -> BatchNorm, plus the input where the shapes agree), global average pooling
and a linear classifier, trained with SGD on random images and labels (the loss falls
as it learns them by heart). ``fastconv.torch.convert(model, where=depthwise)`` swaps
the depthwise layers only, in place, keeping the parameters, so the same model and
optimizer continue: PyTorch's own depthwise convolution is its slow case on the CPU,
while the 1x1 layers are large matrix products it runs well.

Needs PyTorch (``pip install ".[torch]"``).
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

import fastconv.torch as ft


class InvertedResidual(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, expand: int = 6):
        super().__init__()
        hidden = c_in * expand
        self.residual = stride == 1 and c_in == c_out
        self.layers = nn.Sequential(
            nn.Conv2d(c_in, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden), nn.ReLU6(),
            nn.Conv2d(hidden, c_out, 1, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x):
        y = self.layers(x)
        return x + y if self.residual else y


def build_model(classes: int = 10, quick: bool = False) -> nn.Module:
    """The stem, the blocks (MobileNetV2's first stages) and the classifier."""
    blocks = [(32, 16, 1, 1), (16, 24, 2, 6), (24, 24, 1, 6)]
    if not quick:
        blocks += [(24, 32, 2, 6), (32, 32, 1, 6)]
    layers = [nn.Conv2d(3, 32, 3, 2, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU6()]
    layers += [InvertedResidual(i, o, s, e) for i, o, s, e in blocks]
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(blocks[-1][1], classes)]
    return nn.Sequential(*layers)


def data(batch: int, size: int, classes: int = 10, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, 3, size, size, generator=gen),
            torch.randint(0, classes, (batch,), generator=gen))


def train(model: nn.Module, opt, x, y, steps: int, warmup: int = 2):
    """``steps`` SGD steps on (x, y) after ``warmup`` untimed ones: (losses, median
    step seconds)."""
    loss_fn = nn.CrossEntropyLoss()
    losses, times = [], []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
            losses.append(loss.item())
    return losses, statistics.median(times)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--size", type=int, default=112, help="image height and width")
    ap.add_argument("--quick", action="store_true", help="a tiny run (tests): 3 steps, 8 "
                    "images of 32x32, three blocks")
    args = ap.parse_args(argv)
    if args.quick:
        args.steps, args.batch, args.size = min(args.steps, 3), 8, 32
    torch.manual_seed(0)
    model = build_model(quick=args.quick)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    x, y = data(args.batch, args.size)
    loss_a, t_torch = train(model, opt, x, y, args.steps)
    print(f"PyTorch:                     loss {loss_a[0]:.3f} -> {loss_a[-1]:.3f}, "
          f"{t_torch * 1e3:.1f} ms/step")
    ft.convert(model, where=ft.depthwise)
    swapped = sum(type(m) is ft.Conv2d for m in model.modules())
    loss_b, t_fast = train(model, opt, x, y, args.steps)
    print(f"depthwise on fastconv ({swapped:2d}): loss {loss_b[0]:.3f} -> {loss_b[-1]:.3f}, "
          f"{t_fast * 1e3:.1f} ms/step ({t_torch / t_fast:.2f}x)")
    return dict(torch=t_torch, fastconv=t_fast, losses=loss_a + loss_b, swapped=swapped)


if __name__ == "__main__":
    main()
