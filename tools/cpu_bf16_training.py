"""The smoke run trained twice, fp32 and ``cpu_bf16: true``, same seed and split: time and history side by side.

Issue 13 item 4 and issue 17 item 3 (bf16 is the CPU training default only if the smoke run still learns as well:
test per-volume Dice within 0.02 of fp32, both scored in fp32). Not a test: the
numbers depend on the CPU (bf16 is native only with AVX512-BF16 or AMX) and its load.

    .venv/bin/python tools/cpu_bf16_training.py [OUTPUT_ROOT]     # default outputs/cpu_bf16 of the project

Writes ``OUTPUT_ROOT/cpu_bf16_training.json`` and the record the CPU benchmark report embeds (both histories, the
machine, the date and commit): ``docs/measurements/cpu_bf16_training.json`` (:data:`liverlib.bench.report.CPU_BF16_RECORD`).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pandas as pd
import torch

from liverlib.bench.report import CPU_BF16_RECORD
from liverlib.bench.timing import machine_info
from liverlib.evaluation.evaluate import evaluate
from liverlib.files import write_text
from liverlib.params import Params, load_profiles, profile_path, project_root, resolve
from liverlib.pipeline import stages
from liverlib.runtime import cpu_bf16_supported, usable_cores
from liverlib.training.loop import train

COLUMNS = ["epoch", "train_loss", "val_loss", "val_liver_dice", "val_tumor_dice_gtpos", "train_slices_per_s"]


def params(root: Path, name: str, bf16: bool) -> Params:
    """The smoke profile as run ``name`` under ``root``, without the baseline."""
    profile = load_profiles(profile_path("base"), profile_path("smoke"))
    return resolve(**{**profile, "output_root": str(root), "run_name": name, "cpu_bf16": bf16, "train_baseline": False})


def one(root: Path, name: str, bf16: bool, threads: int) -> dict:
    """Train and score one precision (a child process of :func:`main`; the run is prepared)."""
    torch.set_num_threads(threads)
    p = params(root, name, bf16)
    t0 = time.perf_counter()
    res = train(p, progress=False)
    hist = res["history"][COLUMNS]
    best = hist.loc[hist.val_loss.idxmin()]
    seconds = round(time.perf_counter() - t0, 1)
    # the test volumes scored in fp32 for both (amp off), so only the training precision differs
    pv = evaluate(resolve(**{**dict(p), "amp": False}), progress=False, save_predictions=False)["per_volume"]
    return {"autocast": res["amp"], "seconds": seconds, "threads": threads,
            "test_per_volume_liver_dice": round(float(pv.liver_dice.mean()), 4),
            "test_per_volume_tumor_dice": round(float(pv.tumor_dice[pv.tumor_gt_voxels > 0].mean()), 4),
            "test_volumes": len(pv),
            "best_epoch": int(best.epoch), "best_val_liver_dice": round(float(best.val_liver_dice), 4),
            "history": hist.round(4).to_dict("records")}  # fmt: skip


def main(root: Path) -> dict:
    """fp32 and bf16 side by side: two processes at once, ``cores // 2`` threads each (as the smoke profile's
    ``cpu_parallel_trainings: 2`` trains), so both see the same machine at the same time."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    threads = max(1, usable_cores() // 2)
    info = machine_info(torch.device("cpu"))
    out: dict = {"cpu_native_bf16": cpu_bf16_supported(), "profile": "smoke",
                 "machine": {k: info[k] for k in ("date", "CPU", "device", "python / torch", "git commit")}}  # fmt: skip
    runs = (("fp32", False), ("bf16", True))
    for name, bf16 in runs:  # curation and the shared cache one after the other, before the trainings
        p = params(root, name, bf16)
        stages.run_curation(p, progress=False)
        stages.run_preprocessing(p, progress=False, figures_too=False)
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {name: pool.submit(one, root, name, bf16, threads) for name, bf16 in runs}
        for name, fut in futures.items():
            out[name] = fut.result()
            r = out[name]
            hist = pd.DataFrame(r["history"])
            print(f"{name} ({r['autocast']}, {threads} thread(s)): {r['seconds']} s, best epoch {r['best_epoch']}, val "
                  f"liver Dice {r['best_val_liver_dice']:.3f}, test per-volume liver {r['test_per_volume_liver_dice']} "
                  f"tumor {r['test_per_volume_tumor_dice']} (n={r['test_volumes']})\n{hist.to_string(index=False)}",
                  flush=True)  # fmt: skip
    text = json.dumps(out, indent=1)
    (root / "cpu_bf16_training.json").write_text(text, encoding="utf-8")
    (project_root() / CPU_BF16_RECORD).parent.mkdir(parents=True, exist_ok=True)
    write_text(project_root() / CPU_BF16_RECORD, text + "\n")
    return out


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else project_root() / "outputs" / "cpu_bf16")
