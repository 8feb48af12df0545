#!/usr/bin/env bash
# GPU benchmark of issue 13: on a CUDA machine, the paper path (fp32, NCHW, CPU DataLoader with albumentations,
# batch 8) against the fast path (bf16 autocast, or fp16 + GradScaler where bf16 is missing (T4); channels_last;
# fused SDPA; the training split resident on the GPU with torch augmentation) for the paper model and the smp
# baseline at 256²: model step and end-to-end training slices/s, share of the card's dense peak, peak GPU memory,
# batch 32, the projected 100-epoch paper run, the data path and 512×512×100 volume inference.
# Needs no network; a 280 s hard limit keeps it under 5 minutes.
#
#   bench/gpu.sh                      # writes docs/benchmarks_gpu.md (OUT=<file> to write elsewhere)
#   PYTHON=/path/to/python bench/gpu.sh
#
# Design goal recorded in the table: >= 1,000 training slices/s end to end for the paper model at 256².
set -euo pipefail
cd "$(dirname "$0")/.."

OUT="${OUT:-docs/benchmarks_gpu.md}"
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
mkdir -p "$(dirname "$OUT")"

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "nvidia-smi not available"
"$PYTHON" - <<'PY'
import sys

import torch

if not torch.cuda.is_available():
    sys.exit(f"no CUDA device visible to torch {torch.__version__}: this script is for a GPU machine")
p = torch.cuda.get_device_properties(0)
print(f"card: {p.name}, {p.total_memory / 2**30:.0f} GiB, compute capability {p.major}.{p.minor}, "
      f"torch {torch.__version__}, CUDA {torch.version.cuda}, bf16 {torch.cuda.is_bf16_supported()}")
PY

# --quick on CUDA: >= 5 timed model steps and >= 2 s per path, 60 end-to-end steps per path, batch 32 as well.
# The report's Machine table records the card, driver, CUDA, cuDNN, torch and package versions.
timeout 280 "$PYTHON" -m liverlib bench --sizes 256 --batch-size 8 --device cuda --quick --out "$OUT"
echo "report: $OUT"
