#!/usr/bin/env bash
# GPU throughput check (see bench/gpu_check.py). Not run on the CPU-only dev machine.
#   bash bench/gpu_check.sh [extra gpu_check.py arguments]
# Writes the log to ${OUT:-.}/gpu_check.log and stops after 9 minutes whatever happens,
# so it fits one 10-minute device command.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
LOG=${OUT:-.}/gpu_check.log
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$LOG"
timeout 540 "$PY" bench/gpu_check.py "$@" 2>&1 | tee -a "$LOG"
