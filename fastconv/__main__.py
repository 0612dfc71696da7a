"""``fastconv`` / ``python -m fastconv``: the command line."""
from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="fastconv", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    from .bench import add_arguments

    bench_help = ("time the engines against PyTorch and ONNX Runtime (when installed), "
                  "layer by layer or a whole network (--network)")
    add_arguments(sub.add_parser("bench", help=bench_help, description=bench_help))
    sub.add_parser("config", help="print show_config()")
    comp = sub.add_parser("compile", help="fill Numba's cache with the im2col kernels "
                          "(for images and clusters: no first-call compile later)")
    comp.add_argument("--dtypes", default="float32,float64",
                      help="comma-separated, from float32, float64 (default both)")
    comp.add_argument("--layouts", default="NCHW,NHWC",
                      help="comma-separated, from NCHW, NHWC (default both)")
    args = parser.parse_args(argv)
    if args.command == "compile":
        from . import compile as compile_kernels

        try:
            seconds = compile_kernels(args.dtypes.split(","), args.layouts.split(","),
                                      verbose=True)
        except (TypeError, ValueError) as e:
            parser.error(str(e))
        print(f"fastconv compile: done in {seconds:.1f} s")
        return 0
    if args.command == "config":
        from . import show_config

        show_config()
        return 0
    from .bench import run

    return run(args)


if __name__ == "__main__":
    sys.exit(main())
