"""The sdist carries everything needed to build, and nothing that should not ship."""
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MUST_SHIP = ["pyproject.toml", "meson.build", "meson.options", "csrc/meson.build",
             "csrc/_direct.pyx", "fastconv/meson.build", "fastconv/__init__.py",
             "fastconv/_version.py.in", "fastconv/engines/direct.py",
             "fastconv/engines/im2col.py", "fastconv/engines/reference.py", "README.md",
             "tests/conftest.py"]
# Benchmark results, build trees, compiled objects and environments never ship.
MUST_NOT = (".benchmarks/", "build/", "dist/", "wheelhouse/", ".venv/", "__pycache__/",
            ".so", ".pyd", ".o", ".whl", ".benchmark.json", "bench-results/")


@pytest.mark.slow
def test_sdist_file_list(tmp_path):
    mesonpy = pytest.importorskip("mesonpy")
    if subprocess.run(["git", "-C", str(ROOT), "rev-parse"], capture_output=True).returncode:
        pytest.skip("not a git checkout (the sdist is made from git's file list)")
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        name = mesonpy.build_sdist(str(tmp_path))
    finally:
        os.chdir(cwd)
    with tarfile.open(tmp_path / name) as tar:
        top = name[:-len(".tar.gz")]
        files = {m.name[len(top) + 1:] for m in tar.getmembers() if m.isfile()}
    missing = [f for f in MUST_SHIP if f not in files]
    assert not missing, f"sdist lacks {missing}"
    bad = sorted(f for f in files if any(p in f"/{f}" if p.endswith("/") else f.endswith(p)
                                         for p in MUST_NOT))
    assert not bad, f"sdist ships {bad}"
