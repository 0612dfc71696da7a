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
    args = parser.parse_args(argv)
    if args.command == "config":
        from . import show_config

        show_config()
        return 0
    from .bench import run

    return run(args)


if __name__ == "__main__":
    sys.exit(main())
