"""Benchmarks of the study's compute, measured side by side in one run (issue 6; issues 2–4 "Measure and record").

``python -m liverlib bench`` prints one table and writes ``docs/benchmarks.md``:

1. **Model step** of the paper model ("hybrid") and the smp baseline ("unet_smp") per image size:
   training and inference slices/s for the *naive* path (contiguous NCHW, fp32, explicit
   softmax(QKᵀ/√d)V attention, ``torch.no_grad`` for inference) and the *fast* path (fused
   ``scaled_dot_product_attention``, channels_last, ``torch.inference_mode``, and on CUDA autocast as
   :func:`liverlib.runtime.amp_settings` chooses), peak memory, FLOPs per slice
   (``torch.utils.flop_counter``, on the meta device), achieved GFLOP/s beside the machine's matmul rate.
2. **Data path**: phantom generation, curation + cache build, preprocessing, cache reads, augmentation
   with 0 and 2 DataLoader workers, and the DataLoader's output against the model's consumption.
3. **Volume inference** of a 512×512×100-slice volume at 256²: batched vs one slice at a time.

A timed step is the training loop's step (AdamW, CombinedLoss, grad-norm clip). Nothing here is a
test: the numbers depend on the machine and its load, and a missed target is reported as missed, with
a profile of one fast training step that shows where the time goes.
"""

from __future__ import annotations

import ctypes
import os
import platform
import re
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, RandomSampler
from torch.utils.flop_counter import FlopCounterMode

from liverlib.labels import NUM_CLASSES
from liverlib.losses import CombinedLoss
from liverlib.model import MODEL_NAMES, build_model
from liverlib.runtime import amp_settings, resolve_device

SUMMARY_COLUMNS = ["group", "measure", "unit", "naive / reference", "fast / measured", "ratio", "target", "met"]
"""Columns of the printed table; ``ratio`` is a speed-up (fast ÷ naive rate, or reference ÷ measured seconds)."""
PAPER_SIZE = 256
"""Image side of the paper (STUDY §2), at which the targets are defined."""


@dataclass(frozen=True)
class Reps:
    """How long each measurement runs: ``warmup`` untimed calls, then at least ``min_steps`` timed calls and
    until ``min_seconds`` have passed (at most ``max_steps``). ``loop_slices`` slices are timed for the
    slice-at-a-time loops (None: the whole volume; otherwise the per-slice time is scaled to the volume)."""

    warmup: int = 1
    min_steps: int = 3
    min_seconds: float = 10.0
    max_steps: int = 200
    matmul_seconds: float = 2.0
    cache_reads: int = 20_000
    aug_samples: int = 400
    loader_batches: int = 100
    loop_slices: int | None = None

    @classmethod
    def for_run(cls, quick: bool, device: torch.device) -> Reps:
        """Defaults: CPU full (≈ 3 timed 256² steps), CPU quick (one), CUDA (≥ 5 steps and 2–5 s each)."""
        if device.type == "cuda":
            return cls(warmup=3, min_steps=5, min_seconds=2.0 if quick else 5.0, max_steps=500, matmul_seconds=1.0)
        if quick:
            return cls(min_steps=1, min_seconds=5.0, matmul_seconds=1.0, cache_reads=5_000, aug_samples=120,
                       loader_batches=40, loop_slices=24)  # fmt: skip
        return cls()


def _sync(device: torch.device) -> None:
    """Wait for queued CUDA work (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(fn: Callable[[], Any], device: torch.device, reps: Reps) -> tuple[float, int]:
    """Seconds per call of ``fn`` (after ``reps.warmup`` untimed calls) and the number of timed calls."""
    for _ in range(reps.warmup):
        fn()
    _sync(device)
    n, t0 = 0, time.perf_counter()
    while True:
        fn()
        _sync(device)
        n += 1
        elapsed = time.perf_counter() - t0
        if n >= reps.max_steps or (n >= reps.min_steps and elapsed >= reps.min_seconds):
            return elapsed / n, n


def _trim_heap() -> None:
    """Return freed heap memory to the OS (glibc), so an RSS increase measures this step, not earlier ones."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class PeakMemory:
    """Peak memory a block adds, in MiB: on CUDA ``max_memory_allocated`` minus the allocation at entry; on CPU
    the process RSS peak (sampled every 5 ms with psutil; ``None`` without it) minus the RSS at entry."""

    def __init__(self, device: torch.device):
        self.device, self.mib = device, None

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            _sync(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
            return self
        try:
            import psutil
        except ImportError:
            return self
        _trim_heap()
        self._proc, self._stop = psutil.Process(), threading.Event()
        self._base = self._peak = self._proc.memory_info().rss
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self._peak = max(self._peak, self._proc.memory_info().rss)

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            _sync(self.device)
            self.mib = (torch.cuda.max_memory_allocated(self.device) - self._base) / 2**20
        elif hasattr(self, "_thread"):
            self._stop.set()
            self._thread.join()
            self._peak = max(self._peak, self._proc.memory_info().rss)
            self.mib = (self._peak - self._base) / 2**20


def matmul_gflops(
    device: torch.device, dtype: torch.dtype = torch.float32, n: int = 2048, seconds: float = 1.0
) -> float:
    """Measured GFLOP/s of an n×n matmul (2n³ FLOPs) in ``dtype``: this machine's arithmetic ceiling."""
    g = torch.Generator().manual_seed(0)
    a, b = (torch.randn(n, n, generator=g).to(device, dtype) for _ in range(2))
    per_call, _ = time_calls(lambda: a @ b, device, Reps(warmup=2, min_steps=3, min_seconds=seconds))
    return 2 * n**3 / per_call / 1e9


def count_flops(name: str, size: int) -> dict[str, float]:
    """FLOPs per slice of ``build_model(name)`` at ``size``² on the meta device (no compute).

    Counted on the naive attention path, whose QKᵀ and AV products the counter sees as ``bmm``; the fused
    kernel does the same arithmetic. Returns ``forward`` and ``train`` (forward + backward of a scalar),
    and for the forward the shares of ``convolution``, ``linear`` (mm/addmm) and ``attention`` (bmm).
    """
    model = build_model(name, image_size=size, fused_attention=False).to("meta").eval()  # eval: BN at batch 1
    x = torch.empty(1, 1, size, size, device="meta")
    with FlopCounterMode(display=False) as fwd:
        model(x)
    with FlopCounterMode(display=False) as train:
        model(x).sum().backward()
    ops = {str(k).split(".")[-1]: v for k, v in fwd.get_flop_counts()["Global"].items()}
    total = fwd.get_total_flops()
    share = lambda *keys: sum(ops.get(k, 0) for k in keys) / total  # noqa: E731
    return {"forward": total, "train": train.get_total_flops(), "convolution": share("convolution"),
            "linear": share("mm", "addmm"), "attention": share("bmm", "baddbmm")}  # fmt: skip


def _op_category(name: str) -> str:
    """Coarse class of an aten op for the profile breakdown."""
    n = name.lower()
    rules = (("convolution", ("conv",)), ("normalisation", ("norm",)),
             ("attention softmax/dropout", ("softmax", "dropout", "bernoulli", "scaled_dot_product")),
             ("matmul (linear, attention products)", ("::mm", "bmm", "addmm", "matmul", "linear")),
             ("pooling/upsampling", ("pool", "upsample", "interpolate")))  # fmt: skip
    return next((cat for cat, keys in rules if any(k in n for k in keys)), "other (elementwise, copies, loss)")


def _phase(event: Any) -> str:
    """forward, backward or optimizer (AdamW step, zero_grad, grad clip) from an event's ancestors."""
    names = []
    while event is not None:
        names.append(event.name)
        event = event.cpu_parent
    if any(n.startswith("Optimizer.") or n.startswith("aten::_foreach") for n in names):
        return "optimizer"
    return "backward" if any(n.startswith("autograd::engine") for n in names) else "forward"


def profile_step(step: Callable[[], Any], device: torch.device, top: int = 8) -> dict[str, Any]:
    """Profile one call of ``step`` (already warm): the top (op, phase) pairs by self time, and self time
    per phase and per kind of op (optimizer ops count as the optimizer, whatever their kind)."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=acts) as prof:
        step()
        _sync(device)
    cuda = device.type == "cuda"
    rows = []
    for e in prof.events():
        if e.device_type != torch.autograd.DeviceType.CPU or e.name.startswith(
            ("autograd::", "Optimizer.", "ProfilerStep")
        ):
            continue
        t = e.self_device_time_total if cuda else e.self_cpu_time_total
        rows.append(
            {
                "op": e.name,
                "phase": _phase(e),
                "self_us": t,
                "total_us": e.device_time_total if cuda else e.cpu_time_total,
            }
        )
    ev = pd.DataFrame(rows)
    total = float(ev.self_us.sum()) or 1.0
    clock = "device" if cuda else "CPU"
    g = ev.groupby(["op", "phase"], as_index=False).agg(calls=("self_us", "size"), self_us=("self_us", "sum"),
                                                        total_us=("total_us", "sum"))  # fmt: skip
    g = g.sort_values("self_us", ascending=False, ignore_index=True).head(top)
    ops = pd.DataFrame({"op": g.op, "phase": g.phase, "calls": g.calls, f"self {clock} ms": g.self_us / 1e3,
                        f"self {clock} %": 100 * g.self_us / total, f"{clock} total ms (incl. children)": g.total_us / 1e3})  # fmt: skip
    ev["kind"] = [("optimizer (AdamW, zero_grad, grad clip)" if ph == "optimizer" else _op_category(op))
                  for op, ph in zip(ev.op, ev.phase)]  # fmt: skip
    share = lambda col: (100 * ev.groupby(col).self_us.sum() / total).sort_values(ascending=False)  # noqa: E731
    return {"ops": ops, "kinds": share("kind"), "phases": share("phase"), "total_ms": total / 1e3,
            "op_names": set(ev.op), "clock": clock}  # fmt: skip


@dataclass
class _Path:
    """One model on one path, ready to step: closures over its model, optimizer and a fixed random batch."""

    model: torch.nn.Module
    opt: torch.optim.Optimizer
    train_step: Callable[[], None]
    infer_step: Callable[[], None]
    precision: str


def _build_path(name: str, size: int, batch_size: int, device: torch.device, fast: bool) -> _Path:
    """The naive path (NCHW, fp32, explicit attention, no_grad) or the fast one (fused attention, channels_last,
    inference_mode, autocast on CUDA), with the training loop's step: CombinedLoss, grad clip 1.0, AdamW."""
    torch.manual_seed(0)
    fmt = torch.channels_last if fast else torch.contiguous_format
    model = build_model(name, image_size=size, fused_attention=fast).to(device).to(memory_format=fmt)
    use_amp, amp_dtype, use_scaler = amp_settings(device, fast)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-5)
    scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)
    loss_fn = CombinedLoss()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch_size, 1, size, size, generator=g).to(device).contiguous(memory_format=fmt)
    y = torch.randint(0, NUM_CLASSES, (batch_size, size, size), generator=g).to(device)
    autocast = (lambda: torch.autocast(device.type, dtype=amp_dtype)) if use_amp else nullcontext

    def train_step() -> None:
        opt.zero_grad(set_to_none=True)
        with autocast():
            logits = model(x)
        scaler.scale(loss_fn(logits.float(), y)).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        scaler.step(opt)
        scaler.update()

    def infer_step() -> None:
        with torch.inference_mode() if fast else torch.no_grad(), autocast():
            model(x)

    return _Path(model, opt, train_step, infer_step, str(amp_dtype).replace("torch.", "") if use_amp else "fp32")


def time_interleaved(
    fns: dict[str, Callable[[], Any]], device: torch.device, reps: Reps
) -> dict[str, tuple[float, int]]:
    """Median seconds per call and number of timed calls of each function, called in turn (a, b, a, b, …) so that
    all see the same machine load; at least ``reps.min_steps`` rounds and ``reps.min_seconds`` each."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    while True:
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            _sync(device)
            times[k].append(time.perf_counter() - t)
        n, spent = len(times[k]), min(sum(v) for v in times.values())
        if n >= reps.max_steps or (n >= reps.min_steps and spent >= reps.min_seconds):
            return {k: (float(np.median(v)), len(v)) for k, v in times.items()}


def measure_model(name: str, size: int, *, batch_size: int, device: torch.device, reps: Reps,
                  profile: bool = False) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:  # fmt: skip
    """Training and inference slices/s and peak memory of one model, naive and fast path side by side.

    Both paths are built with the same weights; each is warmed up (``max(1, reps.warmup)`` calls, its peak
    memory measured there), then their timed calls alternate and the median call time counts.

    Args:
        name: "hybrid" or "unet_smp".
        size: square input side; inputs are random float32 (B, 1, size, size) in [0, 1], labels random in {0, 1, 2}.
        batch_size: slices per step (8 in the paper).
        device: where it runs.
        reps: repetitions.
        profile: also profile one (warm) training step of the fast path.

    Returns:
        (a row per path with ``train_slices_s``, ``infer_slices_s``, median step seconds, timed step counts and
        peak memory in MiB; the profile of :func:`profile_step`, or None).
    """
    paths = {"naive": _build_path(name, size, batch_size, device, False)}
    paths["fast"] = _build_path(name, size, batch_size, device, True)
    peak: dict[tuple[str, str], float | None] = {}

    def warm(phase: str) -> None:
        for key, p in paths.items():
            with PeakMemory(device) as mem:
                for _ in range(max(1, reps.warmup)):
                    getattr(p, f"{phase}_step")()
            peak[key, phase] = mem.mib

    for p in paths.values():
        p.model.train()
    warm("train")
    train = time_interleaved({k: p.train_step for k, p in paths.items()}, device, reps)
    prof = profile_step(paths["fast"].train_step, device) if profile else None
    for p in paths.values():
        p.opt.zero_grad(set_to_none=True)
        p.opt.state.clear()  # inference memory: weights and activations only
        p.model.eval()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    warm("infer")
    infer = time_interleaved({k: p.infer_step for k, p in paths.items()}, device, reps)
    rows = [{"model": name, "size": size, "path": k, "precision": p.precision,
             "train_slices_s": batch_size / train[k][0], "infer_slices_s": batch_size / infer[k][0],
             "train_step_s": train[k][0], "infer_step_s": infer[k][0], "train_steps": train[k][1],
             "infer_steps": infer[k][1], "train_peak_mib": peak[k, "train"], "infer_peak_mib": peak[k, "infer"]}
            for k, p in paths.items()]  # fmt: skip
    return rows, prof


def measure_models(names: tuple[str, ...] | list[str], sizes: list[int], *, batch_size: int, device: torch.device,
                   reps: Reps, profile_size: int | None = None, log: Callable[[str], None] = print) -> tuple[pd.DataFrame, dict | None]:  # fmt: skip
    """:func:`measure_model` for every model × size, with FLOPs and achieved GFLOP/s per row.

    Returns:
        (one row per model, size and path; the profile of the paper model's fast training step at
        ``profile_size``, or None).
    """
    rows, prof = [], None
    for size in sizes:
        for name in names:
            flops = count_flops(name, size)
            log(f"bench: {name} {size}², naive and fast path in turn, batch {batch_size} ...")
            got, p = measure_model(name, size, batch_size=batch_size, device=device, reps=reps,
                                   profile=name == "hybrid" and size == profile_size)  # fmt: skip
            prof = p or prof
            for r in got:
                r |= {"gflop_fwd_per_slice": flops["forward"] / 1e9, "gflop_train_per_slice": flops["train"] / 1e9,
                      "train_gflops": r["train_slices_s"] * flops["train"] / 1e9,
                      "infer_gflops": r["infer_slices_s"] * flops["forward"] / 1e9,
                      "flop_share_conv": flops["convolution"], "flop_share_linear": flops["linear"],
                      "flop_share_attention": flops["attention"]}  # fmt: skip
                log(
                    f"bench:   {r['path']}: train {r['train_slices_s']:.3g} slices/s, inference {r['infer_slices_s']:.3g} slices/s"
                )
                rows.append(r)
    return pd.DataFrame(rows), prof


def _seed_worker(worker_id: int) -> None:
    """Give each DataLoader worker its own augmentation stream (as training does)."""
    info = torch.utils.data.get_worker_info()
    tf = getattr(info.dataset, "transform", None)
    if tf is not None and hasattr(tf, "set_random_seed"):
        tf.set_random_seed(torch.initial_seed() % 2**31)


def loader_rate(
    ds: torch.utils.data.Dataset, *, batch_size: int, workers: int, batches: int, pin: bool = False
) -> float:
    """Slices/s a shuffled DataLoader delivers, timed from its creation (worker start-up included)."""
    sampler = RandomSampler(
        ds, replacement=True, num_samples=batch_size * batches, generator=torch.Generator().manual_seed(0)
    )
    t0 = time.perf_counter()
    dl = DataLoader(ds, batch_size=batch_size, sampler=sampler, num_workers=workers, pin_memory=pin,
                    worker_init_fn=_seed_worker if workers else None)  # fmt: skip
    n = sum(len(x) for x, _ in dl)
    return n / (time.perf_counter() - t0)


def _smoke_params(workdir: Path, data_dir: Path, **overrides: Any) -> Any:
    """The smoke profile (params/base.yaml + params/smoke.yaml) pointed at ``data_dir`` inside ``workdir``."""
    from liverlib.params import load_profiles, project_root, resolve

    root = project_root(Path(__file__).parent)
    values = load_profiles(root / "params" / "base.yaml", root / "params" / "smoke.yaml")
    values |= {"data_dir": str(data_dir), "output_root": str(workdir), "cache_dir": str(workdir / "cache")}
    return resolve(None, **(values | overrides))


def measure_data_path(workdir: Path, *, image_size: int = PAPER_SIZE, batch_size: int = 8, device: torch.device,
                      reps: Reps, smoke: dict[str, Any] | None = None, big_size: int = 512, big_slices: int = 150,
                      log: Callable[[str], None] = print) -> dict[str, Any]:  # fmt: skip
    """Times of the data path (STUDY §1–3), from phantom generation to the DataLoader.

    Args:
        workdir: scratch folder (phantoms and caches are written here).
        image_size: preprocessing output side for the big case (the paper's 256).
        batch_size: DataLoader batch.
        device: pinned memory when CUDA.
        reps: repetitions (cache reads, augmented samples, loader batches).
        smoke: overrides of the smoke profile (tests use a tinier set); None = params/smoke.yaml.
        big_size, big_slices: the single LiTS-sized phantom case (512 × 512 × 150).

    Returns:
        dict of seconds and rates (see the keys), and ``big_volume``: the big case's path.
    """
    from liverlib.augment import build_augmentation
    from liverlib.curation import curate
    from liverlib.dataset import SliceDataset
    from liverlib.io import find_cases, load_case
    from liverlib.phantom import generate_phantom
    from liverlib.preprocess import PreprocessConfig, SliceCache, build_cache, preprocess_slice, resize_mask

    p = _smoke_params(workdir, workdir / "smoke", **(smoke or {}))
    out: dict[str, Any] = {"smoke_set": f"{p.phantom_cases} cases at {p.phantom_size}², {p.phantom_slices[0]}–"
                                        f"{p.phantom_slices[1]} slices, cache at {p.image_size}²"}  # fmt: skip
    log(f"bench: data path ({out['smoke_set']}; one {big_size}×{big_size}×{big_slices} case) ...")
    t = time.perf_counter()
    generate_phantom(workdir / "smoke", n_cases=p.phantom_cases, size=p.phantom_size, n_slices=tuple(p.phantom_slices),
                     seed=p.seed, progress=False)  # fmt: skip
    out["phantom_smoke_s"] = time.perf_counter() - t
    t = time.perf_counter()
    res = curate(p, progress=False)
    out["curation_smoke_s"] = time.perf_counter() - t
    chosen = res["volumes"][res["volumes"].split != ""]
    stats = build_cache(chosen, PreprocessConfig.from_params(p), Path(p.cache_dir), progress=False)
    out["cache_smoke_s"], out["cache_smoke_slices"] = stats["seconds"], stats["slices"]

    t = time.perf_counter()
    generate_phantom(
        workdir / "big", n_cases=1, size=big_size, n_slices=(big_slices, big_slices), seed=p.seed, progress=False
    )
    out["phantom_big_s"] = time.perf_counter() - t
    case_paths = find_cases(workdir / "big")[0]
    out["big_volume"] = case_paths.volume
    cfg = PreprocessConfig(image_size=image_size)
    vols = pd.DataFrame([{"volume_id": case_paths.case_id, "volume_path": str(case_paths.volume),
                          "mask_path": str(case_paths.mask)}])  # fmt: skip
    big = build_cache(vols, cfg, workdir / "cache", progress=False)
    out["cache_big_s"], out["cache_big_read_s"] = big["seconds"], big["read_seconds"]

    case = load_case(case_paths.volume, case_paths.mask)
    t = time.perf_counter()
    for img, msk in zip(case.image, case.mask):
        preprocess_slice(img, cfg)
        resize_mask(msk, image_size)
    out["preprocess_slices_s"] = len(case.image) / (time.perf_counter() - t)

    cache, vid = SliceCache(Path(big["cache_dir"])), case_paths.case_id
    picks = np.random.default_rng(0).integers(0, len(case.image), reps.cache_reads)
    cache.image(vid), cache.mask(vid)  # open the memory maps
    t = time.perf_counter()
    for s in picks:
        np.array(cache.image(vid)[s]), np.array(cache.mask(vid)[s])
    out["cache_reads_s"] = len(picks) / (time.perf_counter() - t)

    index = pd.DataFrame({"volume_id": vid, "slice_idx": np.arange(len(case.image))})
    plain = SliceDataset(index, cache, None)
    t = time.perf_counter()
    for s in picks[: reps.cache_reads // 4]:
        plain[int(s)]
    out["dataset_items_s"] = (reps.cache_reads // 4) / (time.perf_counter() - t)
    aug = SliceDataset(index, cache, build_augmentation(seed=p.seed))
    t = time.perf_counter()
    for s in picks[: reps.aug_samples]:
        aug[int(s)]
    out["augment_0w_s"] = reps.aug_samples / (time.perf_counter() - t)
    pin = device.type == "cuda"
    out["loader_0w_s"] = loader_rate(
        aug, batch_size=batch_size, workers=0, batches=max(1, reps.loader_batches // 4), pin=pin
    )
    out["loader_2w_s"] = loader_rate(aug, batch_size=batch_size, workers=2, batches=reps.loader_batches, pin=pin)
    out["image_size"], out["big_shape"] = image_size, tuple(case.image.shape)
    return out


def measure_volume_inference(image: np.ndarray, *, image_size: int = PAPER_SIZE, batch_size: int = 16,
                             device: torch.device, reps: Reps) -> dict[str, Any]:  # fmt: skip
    """Seconds to segment one HU volume with the paper model (STUDY §7; issue 4): preprocessing, forward,
    bilinear upsampling of probabilities to the original size and argmax, for three ways of doing it.

    * ``batched_s``: :func:`liverlib.inference.predict_labels` on the fast path, ``batch_size`` slices per pass.
    * ``loop_naive_s``: one slice at a time through the naive model (NCHW, explicit attention, no_grad).
    * ``loop_fast_s``: one slice at a time through the same fast path (the effect of batching alone).

    Loops time ``reps.loop_slices`` slices (all if None) and scale to the volume. Both models share weights
    (random: speed does not depend on them); ``agreement`` is the fraction of equal labels, batched vs naive loop.

    Args:
        image: int16 HU volume (slices, H, W).
    """
    from liverlib.inference import predict_labels
    from liverlib.preprocess import PreprocessConfig, preprocess_slice, preprocess_volume

    cfg = PreprocessConfig(image_size=image_size)
    n, rows, cols = image.shape
    torch.manual_seed(0)
    fast = build_model("hybrid", image_size=image_size, fused_attention=True)
    naive = build_model("hybrid", image_size=image_size, fused_attention=False)
    naive.load_state_dict(fast.state_dict())
    fast = fast.to(device).to(memory_format=torch.channels_last).eval()
    naive = naive.to(device).eval()
    amp = amp_settings(device, True)[0]
    k = n if reps.loop_slices is None else min(n, reps.loop_slices)

    def batched(vol: np.ndarray) -> np.ndarray:
        return predict_labels(fast, preprocess_volume(vol, cfg), out_size=(rows, cols), batch_size=batch_size,
                              device=device, amp=amp, channels_last=True)  # fmt: skip

    def loop_fast(vol: np.ndarray) -> np.ndarray:
        return np.concatenate([predict_labels(fast, preprocess_slice(s, cfg)[None], out_size=(rows, cols), batch_size=1,
                                              device=device, amp=amp, channels_last=True) for s in vol])  # fmt: skip

    @torch.no_grad()
    def loop_naive(vol: np.ndarray) -> np.ndarray:
        out = np.empty((len(vol), rows, cols), np.uint8)
        for i, s in enumerate(vol):
            prob = naive(torch.from_numpy(preprocess_slice(s, cfg))[None, None].to(device)).softmax(1)
            prob = F.interpolate(prob, size=(rows, cols), mode="bilinear", align_corners=False)
            out[i] = prob.argmax(1)[0].to(torch.uint8).cpu().numpy()
        return out

    res: dict[str, Any] = {
        "slices": n,
        "shape": f"{rows}×{cols}×{n}",
        "loop_slices": k,
        "batch_size": batch_size,
        "image_size": image_size,
    }
    for key, fn, vol in (("batched_s", batched, image), ("loop_naive_s", loop_naive, image[:k]),
                         ("loop_fast_s", loop_fast, image[:k])):  # fmt: skip
        fn(image[: min(n, batch_size if key == "batched_s" else 2)])  # warm-up: kernels and allocator at these shapes
        _sync(device)
        t = time.perf_counter()
        res[key.replace("_s", "_labels")] = fn(vol)
        _sync(device)
        res[key] = (time.perf_counter() - t) * n / len(vol)
    res["agreement"] = float((res.pop("loop_naive_labels") == res["batched_labels"][:k]).mean())
    res.pop("batched_labels"), res.pop("loop_fast_labels")
    return res


def _fmt(v: Any) -> str:
    """Numbers for tables: 3 significant figures, thousands separators; text unchanged; None/NaN → "n/a"."""
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "n/a"
    if isinstance(v, str):
        return v
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        return f"{v:,}"
    a = abs(float(v))
    return f"{v:,.0f}" if a >= 100 else f"{v:.1f}" if a >= 10 else f"{v:.2f}" if a >= 0.1 else f"{v:.3g}"


def _row(group: str, measure: str, unit: str, ref: Any = None, val: Any = None, ratio: Any = None,
         target: float | None = None, target_text: str = "", check: str = "ratio") -> dict[str, Any]:  # fmt: skip
    """One summary row; with a ``target``, ``met`` compares ``ratio`` (or ``val`` when check="value") to it."""
    got = ratio if check == "ratio" else val
    met = "" if target is None else "n/a" if got is None else "pass" if got >= target else "MISSED"
    return dict(zip(SUMMARY_COLUMNS, (group, measure, unit, ref, val, ratio, target_text, met)))


def summary_table(models: pd.DataFrame, data: dict[str, Any] | None, volume: dict[str, Any] | None,
                  matmul: dict[str, float], device: torch.device) -> pd.DataFrame:  # fmt: skip
    """The one table: model, data-path and volume rows with the targets of issue 6 (item 3) as pass/MISSED.

    CPU targets: paper model 256² training fast ÷ naive ≥ 1.8×; DataLoader (2 workers) ≥ 5× what the fast
    path consumes at 256²; batched volume inference ≥ 3× the slice-at-a-time loop; cache reads ≥ 20,000/s
    (issue 2). On CUDA: ≥ 350 training slices/s for the paper model at 256² (an H100-class goal) and a
    DataLoader that keeps up (≥ 1×).
    """
    cuda = device.type == "cuda"
    rows = [
        _row("machine", f"matmul 2048² {k}" if not cuda else f"matmul 8192² {k}", "GFLOP/s", val=v)
        for k, v in matmul.items()
    ]
    for (name, size), g in models.groupby(["model", "size"], sort=False):
        nv, fs = g[g.path == "naive"].iloc[0], g[g.path == "fast"].iloc[0]
        key = f"{name} {size}²"
        paper = name == "hybrid" and size == PAPER_SIZE
        ratio = fs.train_slices_s / nv.train_slices_s
        rows.append(_row("model", f"{key} training (naive fp32 → fast {fs.precision})", "slices/s", nv.train_slices_s,
                         fs.train_slices_s, ratio, *((1.8, "≥ 1.8×") if paper and not cuda else (None, ""))))  # fmt: skip
        if paper and cuda:
            rows.append(_row("model", f"{key} training, fast path (H100-class goal)", "slices/s", None,
                             fs.train_slices_s, None, 350.0, "≥ 350/s", check="value"))  # fmt: skip
        rows.append(_row("model", f"{key} inference", "slices/s", nv.infer_slices_s, fs.infer_slices_s,
                         fs.infer_slices_s / nv.infer_slices_s))  # fmt: skip
        rows.append(_row("model", f"{key} training peak memory", "MiB", nv.train_peak_mib, fs.train_peak_mib))
        rows.append(_row("model", f"{key} training, {_fmt(fs.gflop_train_per_slice)} GFLOP/slice", "GFLOP/s",
                         nv.train_gflops, fs.train_gflops))  # fmt: skip
    if data:
        size = data["image_size"]
        rows += [
            _row("data", f"phantom smoke set ({data['smoke_set'].split(', cache')[0]})", "s", val=data["phantom_smoke_s"]),
            _row("data", "phantom {}×{}×{} case".format(*data["big_shape"][1:], data["big_shape"][0]), "s",
                 val=data["phantom_big_s"]),
            _row("data", "curation + cache build, smoke set", "s", val=data["curation_smoke_s"] + data["cache_smoke_s"]),
            _row("data", f"cache build, the {data['big_shape'][1]}² case at {size}²", "s", val=data["cache_big_s"]),
            _row("data", f"preprocessing {data['big_shape'][1]}² → {size}² (paper config)", "slices/s",
                 val=data["preprocess_slices_s"]),
            _row("data", "cache reads (random slice, memmap float16 + uint8 mask)", "slices/s", None,
                 data["cache_reads_s"], None, 20_000, "≥ 20,000/s", check="value"),
            _row("data", "augmentation (paper pipeline), 0 workers", "samples/s", val=data["augment_0w_s"]),
            _row("data", "DataLoader + augmentation, 2 workers", "slices/s", val=data["loader_2w_s"]),
        ]  # fmt: skip
        hit = models[(models.model == "hybrid") & (models["size"] == size) & (models.path == "fast")]
        consume = float(hit.train_slices_s.iloc[0]) if len(hit) else None
        ratio = data["loader_2w_s"] / consume if consume else None
        tgt = (1.0, "≥ 1× (keeps up)") if cuda else (5.0, "≥ 5×")
        rows.append(_row("data", f"DataLoader (2 workers) vs hybrid {size}² fast training", "slices/s", consume,
                         data["loader_2w_s"], ratio, *tgt))  # fmt: skip
    if volume:
        b = volume["batched_s"]
        rows += [
            _row("volume", f"{volume['shape']} volume, batched ({volume['batch_size']}), fast path", "s", val=b),
            _row("volume", "vs one slice at a time, naive model", "s", volume["loop_naive_s"], b,
                 volume["loop_naive_s"] / b, 3.0, "≥ 3×"),
            _row("volume", "vs one slice at a time, same fast path (batching alone)", "s", volume["loop_fast_s"], b,
                 volume["loop_fast_s"] / b),
        ]  # fmt: skip
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def format_table(df: pd.DataFrame) -> str:
    """A DataFrame as a Markdown table with :func:`_fmt` numbers (ratios with a ×)."""
    show = df.copy()
    for c in show.columns:
        show[c] = [(_fmt(v) + "×" if c == "ratio" and isinstance(v, (int, float)) and v == v else _fmt(v))
                   if v is not None and v == v else "" for v in show[c]]  # fmt: skip
    return show.to_markdown(index=False, disable_numparse=True)


def machine_info(device: torch.device) -> dict[str, str]:
    """What the numbers were measured on: date, CPU, cores, torch and threads, device, versions, load."""
    from liverlib.run import provenance

    prov, cpu = provenance(), platform.processor() or platform.machine()
    try:
        cpu = next(ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    info = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "platform": prov["platform"],
            "CPU": f"{cpu}; {os.cpu_count()} logical cores, {usable} usable by this process"}  # fmt: skip
    try:
        import psutil

        info["memory"] = f"{psutil.virtual_memory().total / 2**30:.1f} GiB"
    except ImportError:
        pass
    info["python / torch"] = f"{prov['python']} / {torch.__version__}, {torch.get_num_threads()} intra-op threads"
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        amp = amp_settings(device, True)[1]
        info["device"] = (f"{props.name} (compute capability {props.major}.{props.minor}, {props.total_memory / 2**30:.0f} GiB), "
                          f"CUDA {torch.version.cuda}; fast path autocast {str(amp).replace('torch.', '')}")  # fmt: skip
    else:
        info["device"] = "CPU (no autocast on the fast path)"
    v = prov["versions"]
    info["packages"] = ", ".join(f"{k} {v[k]}" for k in ("segmentation-models-pytorch", "albumentations",
                                                          "opencv-python-headless", "numpy") if v.get(k))  # fmt: skip
    info["git commit"] = prov["git_commit"] or "unknown"
    info["load average at start"] = "{:.2f}, {:.2f}, {:.2f} (1, 5, 15 min)".format(*os.getloadavg())
    return info


def _section_models(models: pd.DataFrame, matmul: dict[str, float], batch_size: int, device: torch.device) -> list[str]:
    what = ("`max_memory_allocated` minus the allocation before it" if device.type == "cuda" else
            "process RSS peak minus the RSS before it, sampled every 5 ms with psutil after returning freed heap memory "
            "to the OS (an approximation)")  # fmt: skip
    peak = (f"what the warm-up call adds ({what}): for training the gradients, the AdamW state and the activations, "
            "for inference the activations; the weights are not included")  # fmt: skip
    ceiling = dict(matmul)
    df = models.assign(**{"train % of matmul": [100 * r.train_gflops / ceiling.get(r.precision, np.nan)
                                                for r in models.itertuples()]})  # fmt: skip
    cols = {"model": "model", "size": "size", "path": "path", "precision": "precision",
            "train_slices_s": "train slices/s", "infer_slices_s": "inference slices/s", "train_step_s": "train s/step",
            "train_steps": "timed train steps", "infer_steps": "timed inference steps",
            "train_peak_mib": "train peak MiB", "infer_peak_mib": "inference peak MiB",
            "gflop_fwd_per_slice": "GFLOP/slice forward", "gflop_train_per_slice": "GFLOP/slice train",
            "train_gflops": "train GFLOP/s", "infer_gflops": "inference GFLOP/s", "train % of matmul": "train % of matmul"}  # fmt: skip
    lines = ["## 1. Model step", "",
             f"Batch {batch_size}, random inputs in [0, 1] and random labels. A training step is the training loop's: "
             "forward, `CombinedLoss` (CE + Dice + 0.5·Focal), backward, grad-norm clip 1.0, AdamW. "
             "**naive**: contiguous NCHW, fp32, explicit softmax(QKᵀ/√d)V attention (the math of "
             "`nn.TransformerEncoderLayer`), inference under `torch.no_grad`. **fast**: fused "
             "`F.scaled_dot_product_attention`, channels_last, inference under `torch.inference_mode`"
             + (", autocast as `amp_settings` chooses (fp16 with a grad scaler where bf16 is missing)."
                if device.type == "cuda" else "; no autocast on CPU.")
             + " The smp baseline has no attention: its paths differ only in memory format"
             + (" and precision." if device.type == "cuda" else "."), "",
             format_table(df[list(cols)].rename(columns=cols)), "",
             "FLOPs: PyTorch's `FlopCounterMode` on the meta device, batch 1, naive attention (the fused kernel does the "
             "same arithmetic); training = forward + backward. Achieved GFLOP/s = FLOPs per slice × slices/s. "
             "This machine's matmul rate: " + ", ".join(f"{k} {_fmt(v)} GFLOP/s" for k, v in matmul.items())
             + f" ({'8192' if device.type == 'cuda' else '2048'}² matmul).", "",
             f"Peak memory: {peak}.", ""]  # fmt: skip
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
    return ["## 2. Data path", "",
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
    scaled = (
        ""
        if vol["loop_slices"] >= vol["slices"]
        else (
            f" The slice-at-a-time loops were timed on the first {vol['loop_slices']} slices and scaled to "
            f"{vol['slices']}; the batched run covers the whole volume."
        )
    )
    return ["## 3. Volume inference", "",
            f"The paper model at {vol['image_size']}² segments a {vol['shape']} int16 volume: per-slice preprocessing, "
            f"forward, softmax, bilinear upsampling of the probabilities to {vol['shape'].rsplit('×', 1)[0]}, argmax (as `segment` does). Batched = "
            f"`predict_labels` with batch {vol['batch_size']} on the fast path; the reference loops take one slice at "
            f"a time.{scaled} Labels of the batched run and the naive loop agree on {100 * vol['agreement']:.3f} % of "
            "voxels (same random weights).", "",
            format_table(rows.rename(columns={"naive / reference": "one slice at a time", "fast / measured": "batched"})), ""]  # fmt: skip


def _section_targets(summary: pd.DataFrame) -> tuple[list[str], bool]:
    t = summary[summary.target != ""]
    rows = []
    for r in t.itertuples():
        got = r.ratio if "×" in r.target else r[5]
        need = float(re.search(r"[\d,.]+", r.target).group().replace(",", ""))
        short = (
            "" if r.met != "MISSED" else f"reaches {100 * got / need:.0f} % of the target ({_fmt(got)} vs {_fmt(need)})"
        )
        rows.append({"target": f"{r.group}: {r.measure}", "required": r.target, "measured": _fmt(got) + ("×" if "×" in r.target else ""),
                     "met": r.met, "shortfall": short})  # fmt: skip
    missed = any(r["met"] == "MISSED" for r in rows)
    return [
        "## Targets (issue 6, item 3)",
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
             f"({_fmt(prof['total_ms'])} ms of self {clock} time, profiler overhead included). Top ops by self {clock} "
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
            line = (f"**{r.measure}** ({r.target}): the fast step runs at {_fmt(hy.train_gflops)} GFLOP/s{rate}. In its profile "
                    f"convolutions take {kinds.get('convolution', 0.0):.0f} % of the time and matmuls "
                    f"{kinds.get('matmul (linear, attention products)', 0.0):.0f} %; attention softmax/dropout "
                    f"{att:.0f} %, and the attention products are {100 * hy.flop_share_attention:.0f} % of the forward "
                    "FLOPs, so the attention path is a small lever: removing all softmax/dropout work would make the "
                    f"fast step at most {1 / (1 - att / 100):.2f}× faster.")  # fmt: skip
            if prof and prof["clock"] == "CPU" and "aten::_scaled_dot_product_attention_math" in prof["op_names"]:
                line += " Fused attention is not in play during CPU training (math fallback, above)."
            out.append(line)
        elif r.group == "volume" and vol:
            out.append(f"**Volume inference** ({r.target}): batching alone gives {vol['loop_fast_s'] / vol['batched_s']:.2f}× "
                       f"(the same fast path one slice at a time: {_fmt(vol['loop_fast_s'])} s vs {_fmt(vol['batched_s'])} s "
                       f"batched) and the fast path over the naive model, slice by slice, "
                       f"{vol['loop_naive_s'] / vol['loop_fast_s']:.2f}×."
                       + (f" A batch of {vol['batch_size']} is {'no' if vol['loop_fast_s'] < vol['batched_s'] else 'barely'} "
                          "cheaper per slice than a batch of 1 here: the loop's cost is the model's arithmetic, not "
                          "per-call overhead." if vol["loop_fast_s"] < 1.3 * vol["batched_s"] else ""))  # fmt: skip
        elif r.group == "data" and data:
            out.append(f"**{r.measure}** ({r.target}): augmentation {_fmt(data['augment_0w_s'])} samples/s in one process, "
                       f"{_fmt(data['loader_2w_s'])} slices/s from 2 workers; items without augmentation "
                       f"{_fmt(data['dataset_items_s'])}/s.")  # fmt: skip
    return (
        ["What the missed targets come down to (measured in this run):", ""] + [f"- {x}" for x in out] + [""]
        if out
        else []
    )


def render_report(result: dict[str, Any]) -> str:
    """The whole ``docs/benchmarks.md``: header with the machine, the summary table, one section per group."""
    info, summary, device = result["machine"], result["summary"], result["device"]
    lines = ["# Benchmarks", "",
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
        lines += _section_models(result["models"], result["matmul"], result["batch_size"], device)
    if result.get("data"):
        lines += _section_data(summary, result["data"])
    if result.get("volume"):
        lines += _section_volume(summary, result["volume"])
    target_lines, missed = _section_targets(summary)
    lines += target_lines
    if result.get("profile"):
        lines += _section_profile(result["profile"], result["profile_size"], missed)
    if missed:
        lines += ([] if result.get("profile") else ["## Where the time goes", ""]) + _explain_misses(result)
    lines += ["## Caveats", ""] + [f"- {c}" for c in result["caveats"]] + [""]
    return "\n".join(lines)


def run_benchmark(sizes: list[int], *, batch_size: int = 8, device: str | torch.device = "auto", quick: bool = False,
                  groups: tuple[str, ...] = ("model", "data", "volume"), reps: Reps | None = None,
                  volume_slices: int = 100, data_kwargs: dict[str, Any] | None = None, image_size: int = PAPER_SIZE,
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

    Returns:
        dict with ``machine``, ``matmul``, ``models`` (DataFrame or None), ``data``, ``volume``, ``profile``,
        ``summary`` (DataFrame with :data:`SUMMARY_COLUMNS`) and ``caveats``; :func:`render_report` turns it into Markdown.
    """
    from liverlib.params import ParamError

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
    matmul = {
        "fp32": matmul_gflops(device, torch.float32, 8192 if device.type == "cuda" else 2048, reps.matmul_seconds)
    }
    if device.type == "cuda":
        amp = amp_settings(device, True)[1]
        matmul[str(amp).replace("torch.", "")] = matmul_gflops(device, amp, 8192, reps.matmul_seconds)
    models = prof = data = volume = None
    profile_size = PAPER_SIZE if PAPER_SIZE in sizes else max(sizes)
    if "model" in groups:
        models, prof = measure_models(MODEL_NAMES, sizes, batch_size=batch_size, device=device, reps=reps,
                                      profile_size=profile_size, log=log)  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="liverlib-bench-") as tmp:
        if "data" in groups or "volume" in groups:
            data = measure_data_path(Path(tmp), image_size=image_size, batch_size=batch_size, device=device, reps=reps,
                                     log=log, **(data_kwargs or {}))  # fmt: skip
        if "volume" in groups:
            from liverlib.io import load_case

            image = load_case(data["big_volume"]).image[:volume_slices]
            log(f"bench: inference of a {image.shape[1]}×{image.shape[2]}×{len(image)} volume at {image_size}² ...")
            volume = measure_volume_inference(image, image_size=image_size, batch_size=16, device=device, reps=reps)
    if "data" not in groups:
        data = None
    info["load average at end"] = "{:.2f}, {:.2f}, {:.2f} (1, 5, 15 min)".format(*os.getloadavg())
    info["1-min load average, highest seen at a step"] = f"{max(loads):.2f}"
    summary = summary_table(models if models is not None else pd.DataFrame(columns=["model", "size"]), data, volume,
                            matmul, device)  # fmt: skip
    caveats = [
        "One process measures everything in sequence; each rate is measured alone, so the DataLoader ratio compares "
        "the loader and the model each with the whole machine (in training they share its cores).",
        "Each model's naive and fast paths are warmed up, then timed in turn (naive, fast, naive, …) so that both see the "
        "same machine load; rates use the median call. CPU rates use all of torch's intra-op threads.",
        "Inputs are random tensors and the models have random weights: speed does not depend on either.",
    ]
    if quick:
        caveats.append("`--quick`: one or few timed steps per configuration (one at 256² on CPU), fewer cache reads and "
                       "loader batches, and scaled slice-at-a-time loops; the full run repeats more.")  # fmt: skip
    if device.type == "cpu":
        caveats.append("CPU peak memory is an RSS increase, not an allocator statistic; treat it as ± tens of MiB.")
    return {"machine": info, "matmul": matmul, "models": models, "data": data, "volume": volume, "profile": prof,
            "profile_size": profile_size, "summary": summary, "caveats": caveats, "device": device, "quick": quick,
            "batch_size": batch_size, "elapsed_s": time.perf_counter() - t0, "command": command}  # fmt: skip


def bench_cli(args: Any) -> None:
    """``python -m liverlib bench``: measure, print the summary table, write the report to ``args.out``."""
    from liverlib.run import write_text

    argv = " ".join(sys.argv[1:]) if sys.argv and sys.argv[0].endswith(("liverlib", "__main__.py")) else "bench"
    groups = tuple(getattr(args, "groups", None) or ("model", "data", "volume"))
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    res = run_benchmark(list(args.sizes), batch_size=args.batch_size, device=args.device, quick=args.quick,
                        groups=groups, command=f"python -m liverlib {argv}", log=log)  # fmt: skip
    print(format_table(res["summary"]))
    out = write_text(args.out, render_report(res))
    print(f"\nwritten {out} ({res['elapsed_s'] / 60:.1f} min)")
