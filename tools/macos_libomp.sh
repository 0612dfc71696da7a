#!/usr/bin/env bash
# cibuildwheel (macOS) before-all: put a libomp built for an old deployment target in
# $HOME/libomp, where pyproject's CPPFLAGS/LDFLAGS look for it. conda-forge's llvm-openmp
# targets old macOS releases, unlike Homebrew's bottles, which target the build
# machine's; delocate then vendors it into the wheel (scikit-learn's approach).
# Needs conda or micromamba on PATH (e.g. setup-miniconda on the CI runner).
set -euo pipefail
tool=$(command -v micromamba || command -v conda || true)
if [ -z "$tool" ]; then
  echo "macos_libomp.sh: needs conda or micromamba to fetch conda-forge's llvm-openmp" >&2
  exit 1
fi
"$tool" create -y -p "$HOME/libomp" -c conda-forge llvm-openmp
ls "$HOME/libomp/lib/libomp.dylib" "$HOME/libomp/include/omp.h"
