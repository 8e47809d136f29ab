#!/usr/bin/env bash
# The GPU figures in one call, from a fresh checkout: bash bench/gpu.sh [--quick]
#
# Makes .venv as the Makefile does if it is absent; on a machine where nvidia-smi
# answers, with the CUDA build of the same torch (from TORCH_INDEX) and nvidia-ml-py
# for NVML, also swapping a CPU build already there. On a CPU machine it installs
# nothing beyond the Makefile's set. Then bench/gpu_figures.py measures, within
# BUDGET_S seconds, and writes bench/results/gpu-<machine>[-quick].json.
set -euo pipefail
cd "$(dirname "$0")/.."

TORCH_INDEX=${GHIST_TORCH_INDEX:-https://download.pytorch.org/whl/cu128}
TORCH=torch==2.13.0 # the Makefile's pin
VENV=${VENV:-.venv}
RESULTS=${GHIST_BENCH_RESULTS:-bench/results}
BUDGET_S=480
PY=$VENV/bin/python
PIP=("$PY" -m pip --quiet --disable-pip-version-check)

gpu=false
if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then gpu=true; fi

if [[ ! -x $PY ]]; then
  python3 -m venv "$VENV"
  "${PIP[@]}" install --upgrade pip
  if $gpu; then "${PIP[@]}" install --index-url "$TORCH_INDEX" "$TORCH"; else "${PIP[@]}" install "$TORCH"; fi
  "${PIP[@]}" install -e '.[dev]'
  "$PY" -c "import torch, ray, openslide, ghist_ray" && touch "$VENV/.installed" # make's stamp
fi
if $gpu; then
  if ! "$PY" -c "import sys, torch; sys.exit(torch.version.cuda is None)"; then
    "${PIP[@]}" uninstall --yes torch # a CPU build: the CUDA one of the same version instead
    "${PIP[@]}" install --index-url "$TORCH_INDEX" "$TORCH"
  fi
  "$PY" -c "import pynvml" 2>/dev/null || "${PIP[@]}" install nvidia-ml-py
fi

slug=$(PYTHONPATH=bench "$PY" -c "from run_all import machine; print(machine()['slug'])")
if [[ " $* " == *" --quick "* ]]; then slug+=-quick; fi
mkdir -p "$RESULTS"
timeout "$BUDGET_S" "$PY" bench/gpu_figures.py --json "$RESULTS/gpu-$slug.json" "$@"
