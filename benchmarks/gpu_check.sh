#!/bin/bash
# The GPU checks of one device session (issue 12), in one go, on a bare CUDA machine (~6 min):
#   1. step and loader ms/iter at batch 16 and 64, ours vs torchvision's FCOS (benchmarks/step_speed.py)
#   2. `blendmask-edu demo` on the GPU with a 2-minute training budget (mask AP on the 200 val images)
# Usage: OUT=runs/gpu bash benchmarks/gpu_check.sh   (python3 must hold torch with CUDA)
set -u
OUT=${OUT:-runs/gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, torchvision, timm; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'timm', timm.__version__)" | tee -a "$OUT/gpu.txt"
# The shapes preset runs float32 on CUDA (AMP's casts cost more than they save at 128 px).
timeout 200 python3 benchmarks/step_speed.py --device cuda --batches 16,64 --iters 10 --warmup 3 \
    --no-amp --out "$OUT/step_speed.json" 2>&1 | grep -v Warning | tail -10 | tee "$OUT/step_speed.log"
timeout 200 python3 -m blendmask_edu.cli demo --device cuda --time-budget-min 2 \
    --output-dir "$OUT/demo" 2>&1 | grep -vi "warn" | grep -v "it/s" | tail -8 | tee "$OUT/demo.log"
cp "$OUT/demo/eval.json" "$OUT/demo_eval.json" 2>/dev/null
cp "$OUT/demo/metrics.jsonl" "$OUT/demo_metrics.jsonl" 2>/dev/null
