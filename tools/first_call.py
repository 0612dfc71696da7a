"""A process's first conv2d + conv2d_backward on one engine: its time, and what Numba
compiled for it. Prints one JSON object.

    python tools/first_call.py ENGINE [--dtype float32] [--layout NCHW] [--compile]

``import_s`` counts the imports of Numba, NumPy and fastconv, ``first_call_s`` the
call, ``total_s`` both. Run it with ``NUMBA_CACHE_DIR`` pointing at an empty directory for the cold figure, and
again for the warm one (the README's first-call table; tests/test_compile.py and
tools/wheel_smoke.sh count the kernels). ``--compile`` runs ``fastconv.compile()``
instead of the call. Compiled kernels are recorded through Numba's "numba:compile"
events: one per (function, argument types) compiled in this process; those that Numba
loaded from its cache send none.
"""
from __future__ import annotations

import time

START = time.perf_counter()  # before Numba's import: a new process's import counts too

import argparse  # noqa: E402
import json  # noqa: E402

from numba.core import event  # noqa: E402

compiled: list = []


class _Compiles(event.Listener):
    def on_start(self, ev):
        pass

    def on_end(self, ev):
        fn = ev.data["dispatcher"].py_func
        compiled.append([f"{fn.__module__}.{fn.__qualname__}", str(ev.data["args"])])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("engine")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--layout", default="NCHW")
    ap.add_argument("--compile", action="store_true")
    args = ap.parse_args(argv)
    event.register("numba:compile", _Compiles())
    import numpy as np

    import fastconv
    t1 = time.perf_counter()
    if args.compile:
        fastconv.compile(args.dtype, args.layout)
    else:
        rng = np.random.default_rng(0)
        nhwc = args.layout == "NHWC"
        x = rng.standard_normal((2, 12, 12, 8) if nhwc else (2, 8, 12, 12)).astype(args.dtype)
        w = rng.standard_normal((3, 3, 8, 16) if nhwc else (16, 8, 3, 3)).astype(args.dtype)
        y = fastconv.conv2d(x, w, 1, 1, layout=args.layout, backend=args.engine)
        fastconv.conv2d_backward(y, x, w, 1, 1, layout=args.layout, backend=args.engine)
    t2 = time.perf_counter()
    print(json.dumps({"engine": args.engine, "dtype": args.dtype, "layout": args.layout,
                      "import_s": round(t1 - START, 3), "first_call_s": round(t2 - t1, 3),
                      "total_s": round(t2 - START, 3),
                      "compiled": compiled}))


if __name__ == "__main__":
    main()
