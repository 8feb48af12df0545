"""``docs/benchmarks.md`` (or ``docs/benchmarks_gpu.md``) from one benchmark result: machine, summary, sections."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from liverlib.bench.summary import format_table, format_value
from liverlib.bench.timing import PAPER_SIZE
from liverlib.params import project_root


def _section_models(models: pd.DataFrame, matmul: dict[str, float], batch_size: int, device: torch.device,
                    peak: float | None = None, big_batch: int | None = None,
                    samples: dict[str, list[float]] | None = None) -> list[str]:  # fmt: skip
    what = ("`max_memory_allocated` minus the allocation before it" if device.type == "cuda" else
            "process RSS peak minus the RSS before it, sampled every 5 ms with psutil after returning freed heap memory "
            "to the OS (an approximation)")  # fmt: skip
    peak_text = (f"what the warm-up call adds ({what}): for training the gradients, the AdamW state and the activations, "
            "for inference the activations; the weights are not included")  # fmt: skip
    ceiling = dict(matmul) if peak is None else {k: peak for k in ("fp32", "bfloat16", "float16")}
    df = models.assign(**{"train % of matmul": [100 * r.train_gflops / ceiling.get(r.precision, np.nan)
                                                for r in models.itertuples()]})  # fmt: skip
    cols = {"model": "model", "size": "size", "path": "path", "precision": "precision", "batch": "batch",
            "train_slices_s": "train slices/s", "infer_slices_s": "inference slices/s", "train_step_s": "train s/step",
            "train_steps": "timed train steps", "infer_steps": "timed inference steps",
            "train_peak_mib": "train peak MiB", "infer_peak_mib": "inference peak MiB",
            "train_warm_s": "train warm-up s",
            "gflop_fwd_per_slice": "GFLOP/slice forward", "gflop_train_per_slice": "GFLOP/slice train",
            "train_gflops": "train GFLOP/s", "infer_gflops": "inference GFLOP/s", "train % of matmul": "train % of ceiling",
            "loss_first": "loss, 1st step", "loss_last": "loss, last step", "loss_steps": "steps"}  # fmt: skip
    lines = ["## 1. Model step", "",
             f"Batch {batch_size}, random inputs in [0, 1] and random labels. A training step is the training loop's: "
             "forward, `CombinedLoss` (CE + Dice + 0.5·Focal), backward, grad-norm clip 1.0, AdamW. "
             "**naive**: contiguous NCHW, fp32, explicit softmax(QKᵀ/√d)V attention (the math of "
             "`nn.TransformerEncoderLayer`), inference under `torch.no_grad`. **fast**: fused "
             "`F.scaled_dot_product_attention`, channels_last, inference under `torch.inference_mode`"
             + (", autocast as `amp_settings` chooses (fp16 with a grad scaler where bf16 is missing)."
                if device.type == "cuda" else "; bf16 autocast where the CPU has native bf16 (then **fast fp32** is the "
                "same path without it), fp32 otherwise.")
             + (" **fast, compiled**: the fast path under `torch.compile` (inductor), timed after its compilation "
                "(in the warm-up seconds)." if (models.path == "fast, compiled").any() else "")
             + " The smp baseline has no attention: its paths differ only in memory format"
             + (" and precision." if device.type == "cuda" else "."), "",
             format_table(df[list(cols)].rename(columns=cols)), "",
             "FLOPs: PyTorch's `FlopCounterMode` on the meta device, batch 1, naive attention (the fused kernel does the "
             "same arithmetic); training = forward + backward. Achieved GFLOP/s = FLOPs per slice × slices/s. "
             "This machine's matmul rate: " + ", ".join(
                 f"{k} {format_value(v)} GFLOP/s"
                 + (f" (the highest of {len(samples[k])}: " + ", ".join(format_value(x) for x in samples[k]) + ")"
                    if samples and len(samples.get(k, [])) > 1 else "")
                 for k, v in matmul.items())
             + f" ({'8192' if device.type == 'cuda' else '2048'}² matmul"
             + ("; measured twice at the start and once after the model group, since a shared machine's rate drifts"
                if samples else "")
             + ("; bf16 at 256² where the CPU has no native bf16" if device.type == "cpu" else "") + "). "
             + (f"Train % of ceiling: of the card's dense peak, {format_value(peak)} GFLOP/s (table)." if peak else
                "Train % of ceiling: of the matmul rate in the path's precision."), "",
             f"Peak memory: {peak_text}.", "",
             "Accuracy: every path starts from the same weights and trains on the same fixed batch; the loss after the "
             "same number of steps compares the precisions (dropout draws differ between paths).", ""]  # fmt: skip
    if big_batch:
        lines += [f"Batch {big_batch} (**fast, big batch**): with AdamW the usual linear scaling rule raises the learning "
                  f"rate with the batch, {big_batch}/{batch_size} × 1e-4 = {big_batch / batch_size * 1e-4:.1e} (set `lr`; "
                  "validate it, the paper trained at batch 8).", ""]  # fmt: skip
    for (name, size), g in models.groupby(["model", "size"], sort=False):
        if name == "hybrid" and size == models["size"].max():
            r = g.iloc[0]
            lines += [f"FLOP mix of the paper model's forward at {size}²: convolutions {100 * r.flop_share_conv:.0f} %, "
                      f"linear layers {100 * r.flop_share_linear:.0f} %, attention products (QKᵀ, AV) "
                      f"{100 * r.flop_share_attention:.0f} %.", ""]  # fmt: skip
    return lines


def _section_data(summary: pd.DataFrame, data: dict[str, Any]) -> list[str]:
    extra = pd.DataFrame([
        {"measure": "SliceDataset item without augmentation (float32 tensor + int64 mask)", "unit": "items/s",
         "fast / measured": data["dataset_items_s"]},
        {"measure": "DataLoader + augmentation, 0 workers", "unit": "slices/s", "fast / measured": data["loader_0w_s"]},
        {"measure": "of the big case's cache build: reading the NIfTI pair", "unit": "s", "fast / measured": data["cache_big_read_s"]},
        {"measure": "curation alone, smoke set", "unit": "s", "fast / measured": data["curation_smoke_s"]},
        {"measure": f"cache build alone, smoke set ({data['cache_smoke_slices']} slices)", "unit": "s",
         "fast / measured": data["cache_smoke_s"]},
    ])  # fmt: skip
    rows = pd.concat([summary[summary.group == "data"], extra], ignore_index=True)
    show = rows[["measure", "unit", "naive / reference", "fast / measured", "ratio", "target", "met"]]
    return ["## 3. Data path", "",
            f"Smoke set: {data['smoke_set']} (params/smoke.yaml). Big case: one phantom of "
            f"{data['big_shape'][1]}×{data['big_shape'][2]}×{data['big_shape'][0]} written as NIfTI, cached at "
            f"{data['image_size']}² with the paper's preprocessing (min-max, CLAHE 2.0/8×8, gamma 1.2). Cache reads copy "
            "a random slice (float16 image and uint8 mask) out of the memory-mapped `.npy` files (page cache warm). "
            "Augmentation is the paper's pipeline (`build_augmentation`) on the big case's cached slices; DataLoader "
            "rates are timed from the loader's creation, worker start-up included, and compared with what the fast "
            "path consumes in training (the reference column).", "",
            format_table(show.rename(columns={"naive / reference": "reference", "fast / measured": "measured"})), ""]  # fmt: skip


def _section_volume(summary: pd.DataFrame, vol: dict[str, Any]) -> list[str]:
    rows = summary[summary.group == "volume"][
        ["measure", "unit", "naive / reference", "fast / measured", "ratio", "target", "met"]
    ]
    amp = (f"under {vol['amp_precision']} autocast, side by side; labels agree on {100 * vol['agreement']:.3f} % of voxels "
           "(same random weights)." if vol.get("amp_s") else "fp32 only: no autocast applies on this device (the bf16 "
           "target is for a CPU with native bf16).")  # fmt: skip
    return ["## 4. Volume inference", "",
            f"The paper model at {vol['image_size']}² segments a {vol['shape']} int16 volume as `segment` does: "
            f"preprocessing, batched forward (batch {vol['batch_size']}, fused attention, channels_last), bilinear "
            f"upsampling of the probabilities to {vol['shape'].rsplit('×', 1)[0]}, argmax; in fp32 and {amp}", "",
            format_table(rows.rename(columns={"naive / reference": "fp32", "fast / measured": "measured"})), ""]  # fmt: skip


def _section_e2e(summary: pd.DataFrame, e2e: pd.DataFrame, data: dict[str, Any] | None) -> list[str]:
    show = e2e.rename(columns={"train_slices_s": "train slices/s", "load_s": "copy to device s"})
    rows = summary[summary.group == "e2e"][["measure", "unit", "naive / reference", "fast / measured", "ratio",
                                            "target", "met"]]  # fmt: skip
    feeder = (
        f" The feeder alone delivers {format_value(data['feeder_s'])} augmented slices/s."
        if data and data.get("feeder_s")
        else ""
    )
    return ["## 2. Training end to end", "",
            "Cache → augmentation → training step (`liverlib.training.step.train_step`) on the big phantom case's cached "
            "slices. **naive** = the paper path: a CPU `DataLoader` over `SliceDataset` with the albumentations "
            "pipeline, fp32, NCHW. **fast**: the split resident on the device (`liverlib.training.device_batches.GpuBatches`, float16 "
            "images, uint8 masks), the paper's transforms in torch on the batch (`liverlib.training.gpu_augment`), fused "
            f"attention, channels_last, autocast where it pays.{feeder} The projected paper run uses these training "
            "rates and the model step's inference rate of the same path for the 168 validation slices.", "",
            format_table(show.drop(columns=["size"], errors="ignore")), "", format_table(rows), ""]  # fmt: skip


def _section_targets(summary: pd.DataFrame) -> tuple[list[str], bool]:
    t = summary[summary.target != ""]
    rows = []
    for r in t.itertuples():
        got = r.ratio if "×" in r.target else r[5]
        need = float(re.search(r"[\d,.]+", r.target).group().replace(",", ""))
        short = (
            ""
            if r.met != "MISSED"
            else f"reaches {100 * got / need:.0f} % of the target ({format_value(got)} vs {format_value(need)})"
        )
        rows.append({"target": f"{r.group}: {r.measure}", "required": r.target, "measured": format_value(got) + ("×" if "×" in r.target else ""),
                     "met": r.met, "shortfall": short})  # fmt: skip
    missed = any(r["met"] == "MISSED" for r in rows)
    return [
        "## Targets (issue 13)",
        "",
        pd.DataFrame(rows).to_markdown(index=False, disable_numparse=True),
        "",
    ], missed


def _section_profile(prof: dict[str, Any], size: int, missed: bool) -> list[str]:
    clock = prof["clock"]
    pct = lambda ser: "; ".join(f"{k} {v:.0f} %" for k, v in ser.items())  # noqa: E731
    lines = ["## Where the time goes", "",
             ("At least one target is missed. " if missed else "")
             + f"`torch.profiler` on one warm fast-path training step of the paper model at {size}² "
             f"({format_value(prof['total_ms'])} ms of self {clock} time, profiler overhead included). Top ops by self {clock} "
             "time (phase: forward incl. loss, backward, or optimizer):", "",
             format_table(prof["ops"]), "", f"Self {clock} time by phase: {pct(prof['phases'])}.", "",
             f"By kind of op: {pct(prof['kinds'])}.", ""]  # fmt: skip
    if clock == "CPU" and "aten::_scaled_dot_product_attention_math" in prof["op_names"]:
        lines += ["In this training step `scaled_dot_product_attention` ran PyTorch's math fallback "
                  "(`aten::_scaled_dot_product_attention_math`: explicit softmax(QKᵀ)V with attention dropout), i.e. the "
                  "same arithmetic as the naive path: on this CPU the fused kernel is not used with dropout, so fused "
                  "attention cannot speed up training here.", ""]  # fmt: skip
    return lines


def _explain_misses(result: dict[str, Any]) -> list[str]:
    """One measured-facts line per missed target: what the time is spent on, from this run's own numbers."""
    s, models, prof, vol, data = (result[k] for k in ("summary", "models", "profile", "volume", "data"))
    kinds = prof["kinds"] if prof else pd.Series(dtype=float)
    out = []
    for r in s[s.met == "MISSED"].itertuples():
        if r.group == "model" and models is not None:
            hy = models[(models.model == "hybrid") & (models["size"] == PAPER_SIZE) & (models.path == "fast")].iloc[0]
            att = kinds.get("attention softmax/dropout", 0.0)
            ceiling = result["matmul"].get(hy.precision)
            rate = f" ({100 * hy.train_gflops / ceiling:.0f} % of the {hy.precision} matmul rate)" if ceiling else ""
            line = (f"**{r.measure}** ({r.target}): the fast step runs at {format_value(hy.train_gflops)} GFLOP/s{rate}. In its profile "
                    f"convolutions take {kinds.get('convolution', 0.0):.0f} % of the time and matmuls "
                    f"{kinds.get('matmul (linear, attention products)', 0.0):.0f} %; attention softmax/dropout "
                    f"{att:.0f} %, and the attention products are {100 * hy.flop_share_attention:.0f} % of the forward "
                    "FLOPs, so the attention path is a small lever: removing all softmax/dropout work would make the "
                    f"fast step at most {1 / (1 - att / 100):.2f}× faster.")  # fmt: skip
            if prof and prof["clock"] == "CPU" and "aten::_scaled_dot_product_attention_math" in prof["op_names"]:
                line += " Fused attention is not in play during CPU training (math fallback, above)."
            out.append(line)
        elif r.group == "volume" and vol:
            out.append(f"**Volume inference** ({r.target}): {vol['amp_precision']} {format_value(vol['amp_s'])} s vs fp32 "
                       f"{format_value(vol['fp32_s'])} s, labels agreeing on {100 * vol['agreement']:.3f} %.")  # fmt: skip
        elif r.group == "e2e" and result.get("e2e") is not None:
            out.append(f"**{r.measure}** ({r.target}): measured {format_value(r[5])} slices/s end to end.")
        elif r.group == "data" and data:
            out.append(f"**{r.measure}** ({r.target}): augmentation {format_value(data['augment_0w_s'])} samples/s in one process, "
                       f"{format_value(data['loader_2w_s'])} slices/s from 2 workers; items without augmentation "
                       f"{format_value(data['dataset_items_s'])}/s.")  # fmt: skip
    return (
        ["What the missed targets come down to (measured in this run):", ""] + [f"- {x}" for x in out] + [""]
        if out
        else []
    )


CPU_TARGETS = [
    "CPU targets, restated against this machine's ceiling (issue 13): the paper model's fp32 training step already "
    "runs at about two thirds of the fp32 matmul rate, so no fp32 change can reach the first benchmark's 1.8× (the "
    "ceiling is ≈ 1.55×), and a compute-bound model on 2 cores cannot show 3× from batching volume inference alone: "
    "both targets are dropped. What remains: the fast path's 256² training step ≥ 2× the paper path's slices/s, which "
    "needs bf16 autocast, i.e. a CPU with native bf16 (AVX512-BF16 or AMX; `liverlib.runtime.cpu_bf16_supported`); "
    "bf16 `segment` of the 512×512×100 volume ≥ 1.8× fp32 with ≥ 99.5 % of voxels agreeing (on such a CPU); the "
    "DataLoader ≥ 5× what the fast path consumes; cache reads ≥ 20,000/s. On a CPU without native bf16 the fast "
    "path stays fp32 and the 2× target is out of reach by construction (its share of the matmul rate shows how far).",
    "",
]
"""The restated CPU targets, written under the targets table of a CPU report."""

CPU_TRAINING = [
    "## Training on this CPU: what else was measured, and where",
    "",
    "- bf16 against fp32 for a whole training (the smoke run twice, same seed, split and steps, both scored in fp32; "
    "the per-epoch histories of both): `tools/cpu_bf16_training.py`, its last record below and in docs/training.md "
    "§4.",
    "- The attention path of a CPU training step (SDPA's math fallback with dropout, the explicit softmax(QKᵀ)V, and "
    "the explicit one with the faster dropout masks of `liverlib.model.dropout`, interleaved in one process; it sets "
    "`liverlib.model.hybrid.CPU_EXPLICIT_ATTENTION_MIN_TOKENS` and `CPU_FAST_DROPOUT_MIN_TOKENS`): "
    "`tools/cpu_attention_paths.py`, docs/training.md §4.1.",
    "- Two trainings at once on one thread each against one training on every core: "
    "`tools/cpu_parallel_training.py`, docs/training.md §5.",
    "",
]
"""Where a CPU report's reader finds the training measurements this benchmark does not repeat."""

CPU_BF16_RECORD = "docs/measurements/cpu_bf16_training.json"
"""Where ``tools/cpu_bf16_training.py`` records its last run (project-relative); a CPU report embeds it."""

_HISTORY_COLUMNS = {"epoch": "epoch", "train_loss": "train loss", "val_loss": "val loss",
                    "val_liver_dice": "val liver Dice", "val_tumor_dice_gtpos": "val tumor Dice (GT-positive)",
                    "train_slices_per_s": "training slices/s"}  # fmt: skip


def section_cpu_bf16_record(path: Path | None = None) -> list[str]:
    """The recorded bf16-vs-fp32 training (:data:`CPU_BF16_RECORD`) as a report section: the verdict against the
    ±0.02 rule and both per-epoch histories, labelled as a record of another run (machine, date, commit)."""
    path = path or project_root() / CPU_BF16_RECORD
    head = ["## bf16 against fp32 for a whole training (recorded by `tools/cpu_bf16_training.py`)", ""]
    if not path.is_file():
        return head + [f"No record at `{CPU_BF16_RECORD}`: run `tools/cpu_bf16_training.py` to make one.", ""]
    rec = json.loads(path.read_text(encoding="utf-8"))
    m = rec.get("machine", {})
    runs = {k: rec[k] for k in ("fp32", "bf16") if k in rec}
    lines = head + [
        f"Not measured by this benchmark run: recorded {m.get('date', '?')} on {m.get('CPU', '?')} "
        f"({m.get('python / torch', '?')}; commit {str(m.get('git commit', '?'))[:12]}). The {rec.get('profile', 'smoke')} "
        "profile trained twice, fp32 and bf16 autocast, same seed, split and steps, side by side (one process and "
        f"{next(iter(runs.values()))['threads']} thread(s) each); both runs' test volumes scored per volume **in fp32** "
        "(tumor: volumes with tumor; the LiTS empty-mask rule).",
        "",
        "| training precision | time (s) | best epoch | test liver Dice, per volume | test tumor Dice, per volume | n |",
        "|---|---:|---:|---:|---:|---:|",
    ]  # fmt: skip
    for name, r in runs.items():
        lines.append(f"| {name} ({r['autocast']}) | {r['seconds']:.1f} | {r['best_epoch']} | "
                     f"{r['test_per_volume_liver_dice']:.4f} | {r['test_per_volume_tumor_dice']:.4f} | "
                     f"{r['test_volumes']} |")  # fmt: skip
    if len(runs) == 2:
        a, b = runs["fp32"], runs["bf16"]
        gaps = [abs(a[k] - b[k]) for k in ("test_per_volume_liver_dice", "test_per_volume_tumor_dice")]
        verdict = "within" if max(gaps) <= 0.02 else "**outside**"
        lines += ["", f"bf16 is {verdict} ±0.02 of fp32 (liver {gaps[0]:.4f}, tumor {gaps[1]:.4f} apart) and took "
                  f"{a['seconds'] / b['seconds']:.2f}× less time."]  # fmt: skip
    for name, r in runs.items():
        hist = pd.DataFrame(r["history"]).rename(columns=_HISTORY_COLUMNS)
        lines += ["", f"{name}, per epoch (validation Dice: mean over the validation slices, the smoothed empty-mask rule; tumor "
                  "(GT-positive): over slices with tumor):", "",
                  format_table(hist)]  # fmt: skip
    return lines + [""]


def render_report(result: dict[str, Any]) -> str:
    """The whole ``docs/benchmarks.md``: header with the machine, the summary table, one section per group."""
    info, summary, device = result["machine"], result["summary"], result["device"]
    title = "# Benchmarks on a GPU" if device.type == "cuda" else "# Benchmarks"
    lines = [title, "",
             f"Written by `{result['command']}` ({'quick' if result['quick'] else 'full'} mode, "
             f"{result['elapsed_s'] / 60:.1f} min). Rerun the command to refresh this file; do not edit it by hand. "
             "Nothing here is a test: numbers depend on the machine and its load.", "",
             "## Machine", "", pd.DataFrame(list(info.items()), columns=["", "value"]).to_markdown(index=False), ""]  # fmt: skip
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    load = float(info.get("1-min load average, highest seen at a step", 0.0))
    if load > cores + 0.5:  # this process alone brings the load to about min(threads, cores)
        lines += [f"**The machine was busy during this run** (1-min load average up to {load:.1f} on {cores} cores; "
                  "this benchmark alone accounts for about its number of threads): the rates below are lower and "
                  "noisier than on an idle machine; rerun on an idle one before quoting them.", ""]  # fmt: skip
    lines += ["## Summary", "", format_table(summary), "",
              "`ratio` is a speed-up: fast ÷ naive for rates, reference ÷ measured for seconds, DataLoader ÷ model "
              "consumption for the data path. `met`: pass / MISSED against the target beside it.", ""]  # fmt: skip
    if result.get("models") is not None:
        lines += _section_models(
            result["models"],
            result["matmul"],
            result["batch_size"],
            device,
            result.get("peak_gflops"),
            result.get("big_batch"),
            result.get("matmul_samples"),
        )
    if result.get("e2e") is not None:
        lines += _section_e2e(summary, result["e2e"], result.get("data"))
    if result.get("data"):
        lines += _section_data(summary, result["data"])
    if result.get("volume"):
        lines += _section_volume(summary, result["volume"])
    target_lines, missed = _section_targets(summary)
    lines += target_lines + (CPU_TARGETS if device.type == "cpu" else [])
    if result.get("profile"):
        lines += _section_profile(result["profile"], result["profile_size"], missed)
    if missed:
        lines += ([] if result.get("profile") else ["## Where the time goes", ""]) + _explain_misses(result)
    lines += CPU_TRAINING + section_cpu_bf16_record() if device.type == "cpu" else []
    lines += ["## Caveats", ""] + [f"- {c}" for c in result["caveats"]] + [""]
    return "\n".join(lines)
