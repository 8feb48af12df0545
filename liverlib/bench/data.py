"""The data path (docs/study.md §1–3) and volume inference (docs/study.md §7) of the benchmark."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, RandomSampler

from liverlib.bench.timing import PAPER_SIZE, Reps, sync_device
from liverlib.data.dataset import seed_worker
from liverlib.model.hybrid import build_model
from liverlib.runtime import amp_settings


def loader_rate(
    ds: torch.utils.data.Dataset, *, batch_size: int, workers: int, batches: int, pin: bool = False
) -> float:
    """Slices/s a shuffled DataLoader delivers, timed from its creation (worker start-up included)."""
    sampler = RandomSampler(
        ds, replacement=True, num_samples=batch_size * batches, generator=torch.Generator().manual_seed(0)
    )
    t0 = time.perf_counter()
    dl = DataLoader(ds, batch_size=batch_size, sampler=sampler, num_workers=workers, pin_memory=pin,
                    worker_init_fn=seed_worker if workers else None)  # fmt: skip
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
    """Times of the data path (docs/study.md §1–3), from phantom generation to the DataLoader.

    Args:
        workdir: scratch folder (phantoms and caches are written here).
        image_size: preprocessing output side for the big case (the paper's 256).
        batch_size: DataLoader batch.
        device: pinned memory when CUDA.
        reps: repetitions (cache reads, augmented samples, loader batches).
        smoke: overrides of the smoke profile (tests use a tinier set); None = params/smoke.yaml.
        big_size, big_slices: the single LiTS-sized phantom case (512 × 512 × 150).

    Returns:
        dict of seconds and rates (see the keys), ``big_volume`` (the big case's path), ``big_cache`` and
        ``big_index`` (its cached slices, for the end-to-end training rates).
    """
    from liverlib.data.cache import SliceCache, build_cache
    from liverlib.data.dataset import SliceDataset
    from liverlib.data.nifti import find_cases, load_case
    from liverlib.data.phantom import generate_phantom
    from liverlib.data.preprocess import PreprocessConfig, preprocess_slice, resize_mask
    from liverlib.training.augment import build_augmentation

    p = _smoke_params(workdir, workdir / "smoke", **(smoke or {}))
    out: dict[str, Any] = {"smoke_set": f"{p.phantom_cases} cases at {p.phantom_size}², {p.phantom_slices[0]}–"
                                        f"{p.phantom_slices[1]} slices, cache at {p.image_size}²"}  # fmt: skip
    log(f"bench: data path ({out['smoke_set']}; one {big_size}×{big_size}×{big_slices} case) ...")
    _smoke_data_path(p, workdir, out)

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
    out["big_cache"], out["big_index"] = cache, index
    return out


def _smoke_data_path(p: Any, workdir: Path, out: dict[str, Any]) -> None:
    """Phantom, curation and cache of the smoke set, timed into ``out``."""
    from liverlib.data.cache import build_cache
    from liverlib.data.curation import curate
    from liverlib.data.phantom import generate_phantom
    from liverlib.data.preprocess import PreprocessConfig

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


def measure_volume_inference(image: np.ndarray, *, image_size: int = PAPER_SIZE, batch_size: int = 16,
                             device: torch.device, reps: Reps, cpu_bf16: bool | None = None) -> dict[str, Any]:  # fmt: skip
    """Seconds to segment one HU volume with the paper model as ``segment`` does (docs/study.md §7): preprocessing,
    batched forward (:func:`liverlib.evaluation.inference.predict_labels`, fused attention, channels_last), bilinear
    upsampling of the probabilities to the original size, argmax; in fp32 and under autocast side by side.

    ``fp32_s``: fp32. ``amp_s``: autocast (CUDA; bf16 on a CPU with native support, or forced with
    ``cpu_bf16=True``), None where autocast does not apply; ``agreement``: the share of equal labels of the two
    (same random weights; None without ``amp_s``). Warm-up: one batch each. ``reps`` is unused (one pass each).

    Args:
        image: int16 HU volume (slices, H, W).
    """
    from liverlib.data.preprocess import PreprocessConfig, preprocess_volume
    from liverlib.evaluation.inference import predict_labels

    del reps
    cfg = PreprocessConfig(image_size=image_size)
    n, rows, cols = image.shape
    torch.manual_seed(0)
    model = build_model("hybrid", image_size=image_size, fused_attention=True)
    model = model.to(device).to(memory_format=torch.channels_last).eval()
    use, dtype, _ = amp_settings(device, True, cpu_bf16=cpu_bf16 is not False)
    if device.type == "cpu" and cpu_bf16:
        use, dtype = True, torch.bfloat16

    def run(vol: np.ndarray, amp: bool) -> np.ndarray:
        precision = "fp32" if not amp else "bf16" if device.type == "cpu" else "auto"  # auto + amp: CUDA autocast
        return predict_labels(model, preprocess_volume(vol, cfg), out_size=(rows, cols), batch_size=batch_size,
                              device=device, amp=amp, precision=precision, channels_last=True)  # fmt: skip

    res: dict[str, Any] = {"slices": n, "shape": f"{rows}×{cols}×{n}", "batch_size": batch_size,
                           "image_size": image_size, "amp_precision": str(dtype).replace("torch.", "") if use else None,
                           "amp_s": None, "agreement": None}  # fmt: skip
    labels = {}
    for key, amp in (("fp32_s", False), ("amp_s", True)) if use else (("fp32_s", False),):
        run(image[: min(n, batch_size)], amp)  # warm-up: kernels and allocator at these shapes
        sync_device(device)
        t = time.perf_counter()
        labels[key] = run(image, amp)
        sync_device(device)
        res[key] = time.perf_counter() - t
    if use:
        res["agreement"] = float((labels["fp32_s"] == labels["amp_s"]).mean())
    return res
