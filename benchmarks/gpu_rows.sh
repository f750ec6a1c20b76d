#!/usr/bin/env bash
# The one prepared command for a lent GPU machine: the PyTorch CUDA rows of the benchmark (eager FP32
# and FP16 timed with CUDA events, CUDA graphs) for pvt_v2_b2, all four fusion modes, the guide's sizes.
#
# It runs from the source tree (python3 -m msdeploy with PYTHONPATH), because such a machine may have
# no package index: it needs only what a CUDA PyTorch image holds (torch, timm, click, rich, numpy,
# matplotlib). Writes bench-pvt_v2_b2.md/.csv/.json/.png and gpu-rows.log into $OUT (default
# docs/results/gpu/); keep them in docs/results/ as bench-pvt_v2_b2-<gpu>.* beside the CPU report.
#
#   bash benchmarks/gpu_rows.sh            # a few minutes on one H200; the log says where time went
#   GPU_ROWS_ON_CPU=1 bash benchmarks/gpu_rows.sh --backbone pvt_v2_b0 --sizes 64   # dry run, no GPU
#
# Without a GPU visible to PyTorch it stops at once (lent device minutes are few), unless
# GPU_ROWS_ON_CPU=1 asks for the dry run that lists every CUDA row as not run.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-docs/results/gpu}"
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
py="${PYTHON:-python3}"
{
    date -u
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv || echo "nvidia-smi: not available"
    "$py" -c 'import torch, timm; print("torch", torch.__version__, "CUDA", torch.version.cuda, "timm", timm.__version__,
"GPU", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none visible")'
    [ "${GPU_ROWS_ON_CPU:-0}" = 1 ] || "$py" -c 'import sys, torch
sys.exit(0 if torch.cuda.is_available() else "no CUDA GPU visible to PyTorch: nothing to measure (GPU_ROWS_ON_CPU=1 for a dry run)")'
    "$py" -m msdeploy bench --backends torch-cuda,torch-cuda-graphs --precision fp32,fp16 \
        --fusion hierarchical,absi,concat,average --sizes 256,320,352,416 --backbone pvt_v2_b2 \
        --warmup 10 --iters 30 --min-time 0.5 --output "$out" "$@"
    date -u
} 2>&1 | tee "$out/gpu-rows.log"
