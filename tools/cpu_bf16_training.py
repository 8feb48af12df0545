"""The smoke run trained twice, fp32 and ``cpu_bf16: true``, same seed and split: time and history side by side.

Issue 13 item 4 and issue 17 item 3 (bf16 is the CPU training default only if the smoke run still learns as well:
test per-volume Dice within 0.02 of fp32, both scored in fp32). Not a test: the
numbers depend on the CPU (bf16 is native only with AVX512-BF16 or AMX) and its load.

    .venv/bin/python tools/cpu_bf16_training.py [OUTPUT_ROOT]     # default outputs/cpu_bf16 of the project
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from liverlib.evaluation.evaluate import evaluate
from liverlib.params import load_profiles, profile_path, project_root, resolve
from liverlib.pipeline import stages
from liverlib.runtime import cpu_bf16_supported
from liverlib.training.loop import train

COLUMNS = ["epoch", "train_loss", "val_loss", "val_liver_dice", "val_tumor_dice_gtpos", "train_slices_per_s"]


def main(root: Path) -> dict:
    profile = load_profiles(profile_path("base"), profile_path("smoke"))
    out: dict = {"cpu_native_bf16": cpu_bf16_supported()}
    for name, bf16 in (("fp32", False), ("bf16", True)):
        p = resolve(
            **{**profile, "output_root": str(root), "run_name": name, "cpu_bf16": bf16, "train_baseline": False}
        )
        stages.run_curation(p, progress=False)
        stages.run_preprocessing(p, progress=False, figures_too=False)
        t0 = time.perf_counter()
        res = train(p, progress=False)
        hist = res["history"][COLUMNS]
        best = hist.loc[hist.val_loss.idxmin()]
        seconds = round(time.perf_counter() - t0, 1)
        # the test volumes scored in fp32 for both (amp off), so only the training precision differs
        pv = evaluate(resolve(**{**dict(p), "amp": False}), progress=False, save_predictions=False)["per_volume"]
        out[name] = {"autocast": res["amp"], "seconds": seconds,
                     "test_per_volume_liver_dice": round(float(pv.liver_dice.mean()), 4),
                     "test_per_volume_tumor_dice": round(float(pv.tumor_dice[pv.tumor_gt_voxels > 0].mean()), 4),
                     "test_volumes": len(pv),
                     "best_epoch": int(best.epoch), "best_val_liver_dice": round(float(best.val_liver_dice), 4),
                     "history": hist.round(4).to_dict("records")}  # fmt: skip
        print(f"{name} ({res['amp']}): {out[name]['seconds']} s, best epoch {int(best.epoch)}, val liver Dice "
              f"{best.val_liver_dice:.3f}, test per-volume liver {out[name]['test_per_volume_liver_dice']} tumor "
              f"{out[name]['test_per_volume_tumor_dice']} (n={len(pv)})\n{hist.to_string(index=False)}", flush=True)  # fmt: skip
    (root / "cpu_bf16_training.json").write_text(json.dumps(out, indent=1), encoding="utf-8")
    return out


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else project_root() / "outputs" / "cpu_bf16")
