"""Benchmarks of the study's compute, the paper path and the fast path side by side in one run (issues 6, 13).

``python -m liverlib bench`` prints one table and writes ``docs/benchmarks.md`` (``tools/gpu_check.sh`` puts its
CUDA report in ``docs/benchmarks_gpu.md``):

1. **Model step** (:mod:`.models`) of the paper model ("hybrid") and the smp baseline ("unet_smp"): training
   and inference slices/s of the paper path (fp32, NCHW, explicit attention, ``no_grad``) and the fast path
   (fused SDPA, channels_last, ``inference_mode``, autocast on CUDA and on a CPU with native bf16), peak memory,
   FLOPs per slice, the share of the ceiling (the measured matmul rate; on CUDA the card's dense peak), the loss
   after the same steps (accuracy of the precisions), and on CUDA batch 32.
2. **Training end to end** (:mod:`.e2e`): the CPU DataLoader with albumentations vs the device-resident
   :class:`liverlib.training.device_batches.GpuBatches` with :mod:`liverlib.training.gpu_augment`, and the projected paper run.
3. **Data path** and 4. **volume inference** (:mod:`.data`): phantom → cache → DataLoader; ``segment``'s
   batched inference of a 512×512×100 volume in fp32 and under autocast.

Timing helpers are in :mod:`.timing`, the profile in :mod:`.profile`, the table in :mod:`.summary`, the
Markdown in :mod:`.report`, the command in :mod:`.runner`. A training step is
:func:`liverlib.training.step.train_step`. Nothing here is a test: numbers depend on the machine and its load.
"""

from liverlib.bench.report import render_report
from liverlib.bench.runner import bench_cli, run_benchmark
from liverlib.bench.summary import SUMMARY_COLUMNS, format_table, summary_table
from liverlib.bench.timing import PAPER_SIZE, Reps, count_flops, dense_peak_gflops, matmul_gflops

__all__ = ["PAPER_SIZE", "SUMMARY_COLUMNS", "Reps", "bench_cli", "count_flops", "dense_peak_gflops", "format_table",
           "matmul_gflops", "render_report", "run_benchmark", "summary_table"]  # fmt: skip
