#!/usr/bin/env bash
# GPU check of issue 6 (item 5): on a CUDA machine, benchmark the paper model ("hybrid": naive fp32 vs fast
# path = fused attention + channels_last + autocast bf16, or fp16 with a grad scaler where bf16 is missing)
# and the smp baseline at 256², batch 8, plus the data path and 512×512×100 volume inference.
# Needs no network; finishes in well under 5 minutes on an H100-class card.
#
#   bench/gpu.sh                 # writes $OUT/benchmarks_gpu.md (OUT defaults to outputs/bench)
#   PYTHON=/path/to/python bench/gpu.sh
#
# The goal recorded in the table: >= 350 training slices/s for the paper model at 256² on an H100-class card.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT="${OUT:-outputs/bench}"
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
mkdir -p "$OUT"

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "nvidia-smi not available"
"$PYTHON" - <<'EOF'
import sys

import torch

if not torch.cuda.is_available():
    sys.exit(f"no CUDA device visible to torch {torch.__version__}: this script is for a GPU machine")
p = torch.cuda.get_device_properties(0)
print(f"card: {p.name}, {p.total_memory / 2**30:.0f} GiB, compute capability {p.major}.{p.minor}, "
      f"torch {torch.__version__}, CUDA {torch.version.cuda}, bf16 {torch.cuda.is_bf16_supported()}")
EOF

# --quick on CUDA still times >= 5 steps and >= 2 s per path; 280 s hard limit keeps the script under 5 minutes.
timeout 280 "$PYTHON" -m liverlib bench --sizes 256 --batch-size 8 --device cuda --quick --out "$OUT/benchmarks_gpu.md"
echo "report: $OUT/benchmarks_gpu.md"
