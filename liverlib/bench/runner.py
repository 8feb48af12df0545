"""``python -m liverlib bench``: measure every group in one process and write the report."""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from liverlib.bench.data import measure_data_path, measure_volume_inference
from liverlib.bench.e2e import feeder_rate, measure_end_to_end
from liverlib.bench.models import measure_models
from liverlib.bench.report import render_report
from liverlib.bench.summary import format_table, summary_table
from liverlib.bench.timing import PAPER_SIZE, Reps, dense_peak_gflops, machine_info, matmul_rates
from liverlib.model.hybrid import MODEL_NAMES
from liverlib.params import ParamError
from liverlib.runtime import resolve_device


def run_benchmark(sizes: list[int], *, batch_size: int = 8, device: str | torch.device = "auto", quick: bool = False,
                  groups: tuple[str, ...] = ("model", "data", "volume"), reps: Reps | None = None,
                  volume_slices: int = 100, data_kwargs: dict[str, Any] | None = None, image_size: int = PAPER_SIZE,
                  big_batch: int | None = None, cpu_bf16: bool | None = None, e2e: bool = True, compiled: bool = False,
                  command: str = "python -m liverlib bench", log: Callable[[str], None] = print) -> dict[str, Any]:  # fmt: skip
    """Measure the selected groups and build the summary; see :func:`bench_cli` for the command.

    Args:
        sizes: model input sides (multiples of 32).
        batch_size: training/inference batch of the model group and DataLoader batch.
        device: "auto", "cpu", "cuda", …
        quick: fewer repetitions (:meth:`Reps.for_run`).
        groups: any of "model", "data", "volume" ("volume" needs "data" for its 512² phantom).
        reps: override the repetitions (tests).
        volume_slices: slices of the inference volume (taken from the big phantom case).
        data_kwargs: extra arguments of :func:`measure_data_path` (tests: a tinier smoke set and big case).
        image_size: data-path and volume-inference image side (the paper's 256).
        big_batch: also time the fast path at this batch (None: 32 on CUDA, none on a CPU: a 256² step at batch
            32 takes minutes there; 0: none).
        cpu_bf16: None: bf16 autocast on a CPU with native bf16; True: also where emulated (tests); False: never.
        e2e: with "model" and "data", also the end-to-end training rates on the data path's cache.
        compiled: also time the model step under ``torch.compile`` (path ``fast, compiled``; model group only).

    Returns:
        dict with ``machine``, ``matmul`` and ``matmul_samples`` (:func:`matmul_ceiling`: two samples at the start,
        one after the model group), ``models`` (DataFrame or None), ``data``, ``volume``, ``profile``, ``summary``
        (DataFrame with :data:`SUMMARY_COLUMNS`) and ``caveats``; :func:`render_report` turns it into Markdown.
    """
    if any(s <= 0 or s % 32 for s in sizes):
        raise ParamError(f"bench: --sizes must be positive multiples of 32 (the smp U-Net needs it), got {sizes}")
    device = resolve_device(str(device))
    reps = reps or Reps.for_run(quick, device)
    loads = [os.getloadavg()[0]]
    say = log

    def log(msg: str) -> None:  # noqa: F811 (also samples the machine's load at every step)
        loads.append(os.getloadavg()[0])
        say(msg)

    t0 = time.perf_counter()
    info = machine_info(device)
    log(f"bench: {info['CPU']}; {info['python / torch']}; device {info['device']}")
    cuda = device.type == "cuda"
    big_batch = (32 if cuda else None) if big_batch is None else big_batch or None
    matmul_samples = [matmul_rates(device, reps.matmul_seconds) for _ in range(2)]
    models = prof = data = volume = e2e_rows = None
    profile_size = PAPER_SIZE if PAPER_SIZE in sizes else max(sizes)
    if "model" in groups:
        models, prof = measure_models(MODEL_NAMES, sizes, batch_size=batch_size, device=device, reps=reps,
                                      profile_size=profile_size, cpu_bf16=cpu_bf16, big_batch=big_batch,
                                      compiled=compiled, log=log)  # fmt: skip
        matmul_samples.append(matmul_rates(device, reps.matmul_seconds))  # the machine after the model group
    matmul, matmul_by_precision = matmul_ceiling(matmul_samples)
    with tempfile.TemporaryDirectory(prefix="liverlib-bench-") as tmp:
        if "data" in groups or "volume" in groups:
            data = measure_data_path(Path(tmp), image_size=image_size, batch_size=batch_size, device=device, reps=reps,
                                     log=log, **(data_kwargs or {}))  # fmt: skip
        if data is not None:
            data["feeder_s"] = feeder_rate(data["big_cache"], data["big_index"], batch_size=batch_size, device=device,
                                           batches=max(3, reps.e2e_steps))  # fmt: skip
        if e2e and data is not None and "model" in groups:
            e2e_rows = _end_to_end(data, image_size=image_size, batch_size=batch_size, device=device, reps=reps,
                                   cpu_bf16=cpu_bf16, log=log)  # fmt: skip
        if "volume" in groups:
            volume = _volume_inference(data, volume_slices, image_size=image_size, device=device, reps=reps,
                                       cpu_bf16=cpu_bf16, log=log)  # fmt: skip
    if "data" not in groups:
        data = None
    info["load average at end"] = "{:.2f}, {:.2f}, {:.2f} (1, 5, 15 min)".format(*os.getloadavg())
    info["1-min load average, highest seen at a step"] = f"{max(loads):.2f}"
    peak = dense_peak_gflops(device)
    summary = summary_table(models if models is not None else pd.DataFrame(columns=["model", "size"]), data, volume,
                            matmul, device, e2e=e2e_rows, peak_gflops=peak)  # fmt: skip
    caveats = _caveats(device, compiled=compiled, quick=quick)
    if data is not None:
        data = {k: v for k, v in data.items() if k not in ("big_cache", "big_index")}
    return {"machine": info, "matmul": matmul, "matmul_samples": matmul_by_precision, "models": models, "data": data,
            "volume": volume, "profile": prof, "e2e": e2e_rows, "peak_gflops": peak, "big_batch": big_batch,
            "profile_size": profile_size, "summary": summary, "caveats": caveats, "device": device, "quick": quick,
            "batch_size": batch_size, "elapsed_s": time.perf_counter() - t0, "command": command}  # fmt: skip


def matmul_ceiling(samples: list[dict[str, float]]) -> tuple[dict[str, float], dict[str, list[float]]]:
    """Per precision the highest of the matmul-rate samples (a ceiling: a shared machine's load only lowers it), and
    the samples by precision for the report."""
    by_precision = {k: [s[k] for s in samples] for k in samples[0]}
    return {k: max(v) for k, v in by_precision.items()}, by_precision


def _volume_inference(data: dict[str, Any], volume_slices: int, *, image_size: int, device: torch.device, reps: Reps,
                      cpu_bf16: bool | None, log: Callable[[str], None]) -> dict[str, Any]:  # fmt: skip
    """``segment``'s batched inference of the first ``volume_slices`` slices of the data path's big case."""
    from liverlib.data.nifti import load_case

    image = load_case(data["big_volume"]).image[:volume_slices]
    log(f"bench: inference of a {image.shape[1]}×{image.shape[2]}×{len(image)} volume at {image_size}² ...")
    return measure_volume_inference(image, image_size=image_size, batch_size=16, device=device, reps=reps,
                                    cpu_bf16=cpu_bf16)  # fmt: skip


def _end_to_end(data: dict[str, Any], *, image_size: int, batch_size: int, device: torch.device, reps: Reps,
                cpu_bf16: bool | None, log: Callable[[str], None]) -> pd.DataFrame:  # fmt: skip
    """Training end to end of every model on the data path's big cache: the paper path, then the fast path."""
    rows = []
    for name in MODEL_NAMES:
        log(f"bench: {name} {image_size}² end to end, paper path then fast path, {reps.e2e_steps} steps each ...")
        rows += measure_end_to_end(name, data["big_cache"], data["big_index"], size=image_size,
                                   batch_size=batch_size, device=device, reps=reps, cpu_bf16=cpu_bf16,
                                   workers=min(4, os.cpu_count() or 1) if device.type == "cuda" else 0)  # fmt: skip
    return pd.DataFrame(rows)


def _caveats(device: torch.device, *, compiled: bool, quick: bool) -> list[str]:
    """What the report says about how these numbers were measured."""
    caveats = [
        "One process measures everything in sequence; each rate is measured alone, so the DataLoader ratio compares "
        "the loader and the model each with the whole machine (in training they share its cores).",
        "Each model's paths are warmed up, then timed in turn (naive, fast, naive, …) so that all see the "
        "same machine load; rates use the median call. CPU rates use all of torch's intra-op threads.",
        "End-to-end rates are timed after one untimed step, data waiting included; the paper path's DataLoader is "
        "created per epoch (worker start-up included); the fast path's one-off copy of the split to the device is "
        "reported apart (`load_s`). The benchmark cache is one phantom case, so its epochs are short.",
        "Inputs are random tensors and the models have random weights: speed does not depend on either.",
    ]
    if compiled:
        caveats.append("**fast, compiled** is timed after its compilation (the warm-up seconds include it; its peak "
                       "memory includes the compiler's); it is measured in the model step only, not end to end.")  # fmt: skip
    if quick:
        caveats.append("`--quick`: one or few timed steps per configuration (one at 256² on CPU), fewer cache reads and "
                       "loader batches and end-to-end steps; the full run repeats more.")  # fmt: skip
    if device.type == "cpu":
        caveats.append("CPU peak memory is an RSS increase, not an allocator statistic; treat it as ± tens of MiB.")
    return caveats


def bench_cli(args: Any) -> None:
    """``python -m liverlib bench``: measure, print the summary table, write the report to ``args.out``."""
    from liverlib.files import write_text

    argv = " ".join(sys.argv[1:]) if sys.argv and sys.argv[0].endswith(("liverlib", "__main__.py")) else "bench"
    groups = tuple(getattr(args, "groups", None) or ("model", "data", "volume"))
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    res = run_benchmark(list(args.sizes), batch_size=args.batch_size, device=args.device, quick=args.quick,
                        groups=groups, big_batch=getattr(args, "big_batch", None),
                        cpu_bf16=getattr(args, "cpu_bf16", None), compiled=getattr(args, "compile", False),
                        command=f"python -m liverlib {argv}", log=log)  # fmt: skip
    print(format_table(res["summary"]))
    out = write_text(args.out, render_report(res))
    print(f"\nwritten {out} ({res['elapsed_s'] / 60:.1f} min)")
