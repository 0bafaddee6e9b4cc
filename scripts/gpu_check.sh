#!/usr/bin/env bash
# GPU self-check (a couple of minutes): a few training steps on a tiny
# generated set on 1 GPU and, if present, 2 GPUs, dropout off, compared with
# the CPU values recorded in scripts/gpu_check_reference.json; then export and
# Paddle Inference on GPU. One PASS/FAIL line per check; exit 1 if any fails.
# Without a GPU it runs the CPU part, says so and exits 0.
# Usage: bash scripts/gpu_check.sh [--gpus N]
set -euo pipefail
cd "$(dirname "$0")/.."
python -m scripts.gpu_check "$@"
