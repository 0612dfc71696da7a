"""Training-step times through the framework bridges against the frameworks alone,
each pair in one process, medians of several steps after warm-up:

  (a) MobileNetV2 blocks (examples/torch_mobilenet_block.py), depthwise layers converted
      with fastconv.torch.convert(where=depthwise), vs plain PyTorch   (target >= 1.5x)
  (b) the small JAX CNN (examples/jax_cnn.py) on fastconv.jax vs lax   (target >= 2x)
  (c) ResNet-18 (built here from nn modules), every convolution converted, vs plain
      PyTorch

    python tools/bridge_speed.py [--steps 10] [--warmup 3] [--threads N] [--quick]
                                 [--only mobilenet,jax,resnet18]

Prints a markdown table. --quick runs tiny sizes to check that it works; the figures
mean something only at the default sizes, on quiet cores.
"""
from __future__ import annotations

import argparse
import importlib.util
import platform
import statistics
import time
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _example(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _torch_pair(model_fn, x, y, steps, warmup, where):
    """(plain seconds/step, converted seconds/step): two copies of one model with the
    same weights, timed alternately in blocks so drift hits both."""
    import torch

    import fastconv.torch as ft
    mobilenet = _example("torch_mobilenet_block")
    torch.manual_seed(0)
    plain = model_fn()
    ours = model_fn()
    ours.load_state_dict(plain.state_dict())
    ft.convert(ours, where=where)
    opts = {m: torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9) for m in (plain, ours)}
    times = {plain: [], ours: []}
    for m in (plain, ours):
        mobilenet.train(m, opts[m], x, y, 1, warmup)
    for _ in range(steps):
        for m in (plain, ours):
            times[m].append(mobilenet.train(m, opts[m], x, y, 1, 0)[1])
    return statistics.median(times[plain]), statistics.median(times[ours])


# --- ResNet-18, by hand (torchvision's layout: no torchvision dependency) -------------

def resnet18(classes: int = 1000):
    from torch import nn

    class Basic(nn.Module):
        def __init__(self, c_in, c_out, stride):
            super().__init__()
            self.body = nn.Sequential(
                nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
                nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False), nn.BatchNorm2d(c_out))
            self.skip = (nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False),
                                       nn.BatchNorm2d(c_out))
                         if stride != 1 or c_in != c_out else nn.Identity())
            self.relu = nn.ReLU(inplace=True)

        def forward(self, x):
            return self.relu(self.body(x) + self.skip(x))

    layers = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True),
              nn.MaxPool2d(3, 2, 1)]
    c = 64
    for c_out, stride in [(64, 1), (128, 2), (256, 2), (512, 2)]:
        layers += [Basic(c, c_out, stride), Basic(c_out, c_out, 1)]
        c = c_out
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, classes)]
    return nn.Sequential(*layers)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None,
                    help="torch.set_num_threads (fastconv follows it); default: torch's")
    ap.add_argument("--quick", action="store_true", help="tiny sizes, 2 steps: a check")
    ap.add_argument("--only", default="mobilenet,jax,resnet18")
    args = ap.parse_args(argv)
    if args.quick:
        args.steps, args.warmup = 2, 1
    which = set(args.only.split(","))
    rows = []
    if which & {"mobilenet", "resnet18"}:
        import torch

        import fastconv.torch as ft
        if args.threads:
            torch.set_num_threads(args.threads)
        threads = torch.get_num_threads()
    if "mobilenet" in which:
        mb = _example("torch_mobilenet_block")
        n, size = (4, 32) if args.quick else (32, 112)
        x, y = mb.data(n, size)
        t_plain, t_ours = _torch_pair(lambda: mb.build_model(quick=args.quick), x, y,
                                      args.steps, args.warmup, ft.depthwise)
        rows.append((f"MobileNetV2 blocks, {n}x3x{size}x{size}, depthwise converted",
                     "PyTorch", t_plain, t_ours, 1.5))
    if "resnet18" in which:
        import torch
        n, size = (2, 32) if args.quick else (16, 224)
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(n, 3, size, size, generator=gen)
        y = torch.randint(0, 1000, (n,), generator=gen)
        t_plain, t_ours = _torch_pair(resnet18, x, y, args.steps, args.warmup, None)
        rows.append((f"ResNet-18, {n}x3x{size}x{size}, every conv converted", "PyTorch",
                     t_plain, t_ours, None))
    if "jax" in which:
        cnn = _example("jax_cnn")
        n = 16 if args.quick else 64
        _, t_lax = cnn.train("lax", args.steps, n, warmup=args.warmup)
        _, t_ours = cnn.train("fastconv", args.steps, n, warmup=args.warmup)
        rows.append((f"JAX CNN, {n}x32x32x1", "lax", t_lax, t_ours, 2.0))

    print(f"{platform.processor() or platform.machine()}, medians of {args.steps} training "
          f"steps after {args.warmup} warm-up" + (f", torch threads {threads}"
                                                 if which & {"mobilenet", "resnet18"} else ""))
    print()
    print("| model | framework alone (ms/step) | with fastconv (ms/step) | speed-up | target |")
    print("|---|---:|---:|---:|---:|")
    for name, peer, t_peer, t_ours, target in rows:
        print(f"| {name} | {peer} {t_peer * 1e3:.1f} | {t_ours * 1e3:.1f} | "
              f"{t_peer / t_ours:.2f}x | {f'>= {target}x' if target else '-'} |")


if __name__ == "__main__":
    t0 = time.perf_counter()
    main()
    print(f"\n({time.perf_counter() - t0:.0f} s)")
