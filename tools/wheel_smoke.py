"""Smoke test of an installed fastconv wheel (run by tools/wheel_smoke.sh).

Checks that the environment really has no build tools, then: import, show_config(),
each engine against the reference on a few shapes, and `fastconv bench --quick`.
"""
import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

for tool in ("cc", "gcc", "clang", "meson", "ninja", "cython"):
    assert shutil.which(tool) is None, f"{tool} is on PATH: not a clean environment"
for module in ("Cython", "mesonpy"):
    assert importlib.util.find_spec(module) is None, f"{module} is importable"

import fastconv  # noqa: E402

assert "site-packages" in fastconv.__file__, fastconv.__file__
print("fastconv", fastconv.__version__, "from", fastconv.__file__)
fastconv.show_config()
# fastconv.dask ships in every wheel; its dependencies are the dask extra's, not installed
# here, so its files are looked for rather than imported.
package = Path(fastconv.__file__).parent / "dask"
missing = [m for m in ("__init__", "_conv", "_conv1d", "_graph", "_passes", "_spec", "_tasks",
                       "_tiling", "_transpose") if not (package / f"{m}.py").is_file()]
assert not missing, f"the wheel lacks fastconv/dask/ {missing}"

rng = np.random.default_rng(0)
cases = [
    dict(x=(2, 3, 11, 9), w=(4, 3, 3, 2), stride=1, pad=1),
    dict(x=(1, 8, 12, 12), w=(8, 1, 3, 3), stride=2, pad="same", groups=8),
    dict(x=(3, 9, 7, 4), w=(2, 3, 4, 5), stride=(2, 1), pad=((1, 0), (2, 1)), layout="NHWC",
         dilation=(1, 2)),
]
for case in cases:
    opts = {k: v for k, v in case.items() if k not in ("x", "w")}
    for dtype, tol in ((np.float32, 2e-4), (np.float64, 1e-10)):
        x = rng.standard_normal(case["x"]).astype(dtype)
        w = rng.standard_normal(case["w"]).astype(dtype)
        y_ref = fastconv.conv2d(x, w, backend="reference", **opts)
        gy = rng.standard_normal(y_ref.shape).astype(dtype)
        g_ref = fastconv.conv2d_backward(gy, x, w, backend="reference", **opts)
        for engine in ("direct", "im2col", "auto"):
            y = fastconv.conv2d(x, w, backend=engine, **opts)
            g = fastconv.conv2d_backward(gy, x, w, backend=engine, **opts)
            for name, a, b in (("y", y, y_ref), ("gx", g.x, g_ref.x), ("gw", g.w, g_ref.w),
                               ("gb", g.b, g_ref.b)):
                err = np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1.0)
                assert err <= tol, (engine, name, case, dtype, err)
print(f"engines agree with the reference on {len(cases)} shapes x 2 dtypes")

sys.stdout.flush()  # keep our lines ahead of the subprocess output
proc = subprocess.run([shutil.which("fastconv"), "bench", "--quick"], text=True)
sys.exit(proc.returncode)
