"""Write docs/benchmarks_gpu.md from the work folder of tools/gpu_check.sh (issue 21).

The report holds the machine (card, driver, CUDA, cuDNN, torch and package versions: ``liverlib.runtime.provenance``),
each step's time and exit code (``steps.tsv``), the CUDA tests' last line, the smoke study's per-volume Dice on
CUDA beside the CPU run's, and the benchmark's own report (``bench.md``, written by ``liverlib bench``).

    python tools/gpu_check_report.py --work outputs/gpu_check --out docs/benchmarks_gpu.md [--cpu-run outputs/smoke]
    python tools/gpu_check_report.py --check     # imports and the reference values only (the CPU dry run)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]

CPU_SMOKE_MEANS = {"liver": 0.9588, "tumor": 0.7532}
"""Per-volume Dice per case (4 test volumes) of the committed CPU smoke run (docs/smoke_report.md, "Per volume"),
the reference when no CPU run's ``per_volume.csv`` is at hand."""


def _steps(work: Path) -> str:
    path = work / "steps.tsv"
    if not path.is_file():
        return "(no steps.tsv)\n"
    steps = pd.read_csv(path, sep="\t")
    steps["minutes"] = (steps.seconds / 60).round(2)
    steps["result"] = steps["exit"].map(
        lambda c: "ok" if c == 0 else ("time limit" if c in (124, 137) else f"exit {c}")
    )
    total = f"\nTotal: {steps.seconds.sum()} s ({steps.seconds.sum() / 60:.1f} min).\n"
    return steps[["step", "seconds", "minutes", "result"]].to_markdown(index=False) + "\n" + total


def _last_line(path: Path) -> str:
    if not path.is_file():
        return "(not run)"
    lines = [ln for ln in path.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
    return lines[-1].strip() if lines else "(no output)"


def smoke_comparison(work: Path, cpu_run: Path | None) -> str:
    """Per-volume Dice of the CUDA smoke run beside the CPU run's (per volume when a CPU ``per_volume.csv`` is
    given, else the committed means)."""
    cuda_pv = work / "smoke_cuda" / "per_volume.csv"
    if not cuda_pv.is_file():
        return f"The smoke study on CUDA did not finish (no {cuda_pv}); its log: `{work / 'smoke.log'}`.\n"
    cuda = pd.read_csv(cuda_pv)[["volume_id", "liver_dice", "tumor_dice"]]
    cpu_pv = cpu_run / "per_volume.csv" if cpu_run else None
    if cpu_pv is not None and cpu_pv.is_file():
        cpu = pd.read_csv(cpu_pv)[["volume_id", "liver_dice", "tumor_dice"]]
        both = cuda.merge(cpu, on="volume_id", how="outer", suffixes=("_cuda", "_cpu"))
        source = f"the CPU run `{cpu_run}`"
    else:
        both = cuda.rename(columns={"liver_dice": "liver_dice_cuda", "tumor_dice": "tumor_dice_cuda"})
        source = "no CPU run's per_volume.csv here: the committed CPU smoke run's means (docs/smoke_report.md)"
    mean = {"volume_id": "mean per case"} | {c: both[c].mean() for c in both.columns if c != "volume_id"}
    if "liver_dice_cpu" not in both:
        mean |= {"liver_dice_cpu": CPU_SMOKE_MEANS["liver"], "tumor_dice_cpu": CPU_SMOKE_MEANS["tumor"]}
    table = pd.concat([both.astype(object), pd.DataFrame([mean]).astype(object)], ignore_index=True)
    table = table.map(lambda x: "–" if pd.isna(x) else f"{x:.4f}" if isinstance(x, float) else x)
    return (f"Per-volume Dice of the smoke profile's hybrid (notebooks 01-04, `device: cuda`, `feeder: gpu`, `amp: true`, "
            f"no smp baseline) beside {source}. The two differ by precision and by the order of floating-point "
            "reductions, so equal scores are not expected; a CUDA run far below the CPU run's would be a bug.\n\n"
            + table.to_markdown(index=False, disable_numparse=True) + "\n")  # fmt: skip


def render(work: Path, cpu_run: Path | None) -> str:
    """The whole report."""
    from liverlib.runtime import provenance

    prov = provenance()
    versions = ", ".join(f"{k} {v}" for k, v in prov["versions"].items() if v)
    machine = (f"- card: {prov['device']} ({prov['gpu_memory_gib']} GiB, compute capability {prov['gpu_capability']}, "
               f"{prov['gpu_count']} visible)\n- driver {prov['cuda_driver']}, CUDA runtime {prov['cuda_runtime']}, "
               f"cuDNN {prov['cudnn']}\n- CPU: {prov['cpu_model']}; Python {prov['python']}; {prov['platform']}\n"
               f"- packages: {versions}\n- git commit: `{prov['git_commit']}`\n")  # fmt: skip
    bench = work / "bench.md"
    bench_text = bench.read_text(encoding="utf-8") if bench.is_file() else f"(no {bench}: see `{work / 'bench.log'}`)\n"
    bench_text = bench_text.replace("\n# ", "\n### ").replace("\n## ", "\n### ")
    if bench_text.startswith("# "):
        bench_text = "###" + bench_text[1:]
    return (
        "# Benchmarks on a GPU\n\n"
        f"Written by `tools/gpu_check.sh` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; do not edit by hand, "
        "rerun it.\n\n## Machine\n\n" + machine
        + "\n## Where the time went\n\n" + _steps(work)
        + f"\n## 1. CUDA tests (`pytest -m gpu`)\n\n`{_last_line(work / 'tests.log')}`\n"
        + "\n## 2. The smoke study on CUDA\n\n" + smoke_comparison(work, cpu_run)
        + "\n## 3. Benchmark at 256² (`liverlib bench`, paper path vs fast path, batch 8 and 32, compile off and on)\n\n"
        + bench_text
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=ROOT / "outputs" / "gpu_check")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks_gpu.md")
    ap.add_argument("--cpu-run", type=Path, default=None, help="a CPU smoke run folder holding per_volume.csv")
    ap.add_argument("--check", action="store_true", help="only check that the report can be written (no GPU needed)")
    a = ap.parse_args(argv)
    if a.check:
        import tabulate  # noqa: F401  (to_markdown needs it)

        from liverlib.runtime import provenance

        provenance()
        return 0
    from liverlib.files import write_text

    write_text(a.out, render(a.work, a.cpu_run))
    print(f"written {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
