#!/usr/bin/env bash
# One-call GPU benchmark, from the repository root, nothing installed:
#   benchmarks/gpu.sh             # the decoder-layer suite on the GPU, float32 and bfloat16 (< 8 min on one H100)
#   benchmarks/gpu.sh --dry-run   # the same code on CPU, tiny layers, a few seconds
# Writes gpu_bench.md (and .json) to $OUT if set, else bench_out/. PYTHON overrides python3.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}" exec "${PYTHON:-python3}" benchmarks/gpu_bench.py "$@"
