"""The preprocessing ablation (docs/study.md §8, paper Table 4): each arm is a run folder of its own.

The study runner (:func:`liverlib.pipeline.study.run_study`) makes every arm, before notebook 05, as it makes any
run: :func:`prepare_arm` copies the main run's curation files (same volumes, same split) into
``outputs/<run>/ablation/<arm>/`` and records the arm's parameters there (``params.json``), then the runner
executes notebooks 02 → 03 → 04 on that folder (resumable and guarded like any run). Notebook 05 only
reads the arms' ``summary.json`` files back into Table 4 (:func:`table04`).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pandas as pd

from liverlib import paper
from liverlib.errors import RunError
from liverlib.files import read_json
from liverlib.params import ParamError, Params
from liverlib.run import RunDir, cache_root

_MINMAX = {"normalization": "minmax"}
ARMS: dict[str, dict[str, Any]] = {
    "paper": {"use_clahe": True, "use_gamma": True, "hu_window": [], **_MINMAX},
    "no_enhancement": {"use_clahe": False, "use_gamma": False, "hu_window": [], **_MINMAX},  # the paper's baseline
    "clahe_only": {"use_clahe": True, "use_gamma": False, "hu_window": [], **_MINMAX},
    "gamma_only": {"use_clahe": False, "use_gamma": True, "hu_window": [], **_MINMAX},
    "hu_window": {"use_clahe": True, "use_gamma": True, "hu_window": [-200, 250], **_MINMAX},
    # beyond the paper: nnU-Net's CT normalisation, statistics from the training split (liverlib.data.preprocess)
    "ct_norm": {"use_clahe": False, "use_gamma": False, "hu_window": [], "normalization": "ct_norm"},
}
"""Preprocessing of each arm; everything else is the main run's."""

ARM_LABELS: dict[str, str] = {
    "paper": "min-max per slice + CLAHE + gamma (paper)",
    "no_enhancement": "min-max per slice (paper's baseline)",
    "clahe_only": "min-max per slice + CLAHE",
    "gamma_only": "min-max per slice + gamma",
    "hu_window": "HU window [-200, 250] + CLAHE + gamma",
    "ct_norm": "nnU-Net CT: clip to training foreground 0.5-99.5 %, z-score",
}
"""What each arm does, in Table 4's ``recipe`` column."""

CURATION_FILES = ("manifest.csv", "volumes.csv", "splits.json", "stages/01_curation.json")


def arm_params(p: Params, arm: str) -> dict[str, Any]:
    """The parameters an arm runs with: the main run's, its preprocessing, its own folder, the shared cache."""
    if arm not in ARMS:
        raise ParamError(f"ablation_arms: unknown arm {arm!r}; choose from {', '.join(ARMS)}")
    root = RunDir.from_params(p).root
    values = dict(p)
    values.update(ARMS[arm])
    values.update(run_name=arm, output_root=str(root / "ablation"), cache_dir=str(cache_root(p)),
                  epochs=p.ablation_epochs or p.epochs, train_baseline=False)  # fmt: skip
    return values


def prepare_arm(p: Params, arm: str) -> tuple[dict[str, Any], Path]:
    """Make the arm's run folder: the main run's curation files and the arm's ``params.json``.

    Returns:
        (the arm's parameter values for notebooks 02–04, the arm's run folder).

    Raises:
        ParamError: unknown arm. RunError: the main run has no curation yet.
    """
    from liverlib.files import write_json

    values = arm_params(p, arm)
    main = RunDir.from_params(p)
    main.require(*CURATION_FILES[:3])
    out = Path(values["output_root"]) / arm
    for name in CURATION_FILES:
        dst = out / name
        if not dst.is_file():
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(main.root / name, dst)
    write_json(out / "params.json", {"parameters": values, "arm": arm, "main_run": str(main.root)})
    return values, out


def arms_to_run(p: Params) -> list[str]:
    """The arms of ``ablation_arms`` that need a run folder of their own (not the main run repeated)."""
    for arm in p.ablation_arms:
        if arm not in ARMS:
            raise ParamError(f"ablation_arms: unknown arm {arm!r}; choose from {', '.join(ARMS)}")
    return [arm for arm in p.ablation_arms if not reuse_main(p, arm)]


def reuse_main(p: Params, arm: str) -> bool:
    """True when an arm would repeat the main run exactly (same preprocessing and epochs)."""
    same_pre = all(p[k] == v for k, v in ARMS[arm].items())
    return same_pre and (p.ablation_epochs in (0, p.epochs)) and p.model == "hybrid"


def table04(p: Params) -> pd.DataFrame:
    """Table 4 from each arm's ``summary.json`` (per slice and per volume Dice), the paper's values beside.

    Per-slice Dice is ε-smoothed over all test slices (the paper-comparable value) with the tumor Dice over
    GT-positive slices and its n beside; every arm quantises to 8 bits alike (``quantize_8bit`` column), so
    the arms differ only by the steps they switch. ``recipe`` says what an arm does (:data:`ARM_LABELS`);
    ``normalization`` is ``minmax`` or, for ``ct_norm``, the clip and z-score statistics the arm's training split
    gave (its ``preprocess.json``). When the paper and no-enhancement arms are both present,
    an ``improvement`` row gives (paper − no_enhancement) / no_enhancement in %, as the paper's +3.3% / +8.6%.
    """
    main = RunDir.from_params(p)
    rows = []
    for arm in p.ablation_arms:
        path = main.root / "summary.json" if reuse_main(p, arm) else main.root / "ablation" / arm / "summary.json"
        if not path.is_file():
            raise RunError(f"{path}: missing; the study runner makes ablation arm {arm!r} before notebook 05 "
                           "(python -m liverlib study ... --only 05)")  # fmt: skip
        s = read_json(path)
        ps, pv = s["per_slice"], s.get("per_volume", {})
        used = s["provenance"]["params"]
        ref = paper.ABLATION.get(arm, (None, None))
        rows.append({
            "arm": arm, "kind": "arm", "recipe": ARM_LABELS[arm], **{k: ARMS[arm][k] for k in ("use_clahe", "use_gamma")},
            "hu_window": str(ARMS[arm]["hu_window"] or "none"), "normalization": _normalization(path.parent, used),
            "quantize_8bit": used.get("quantize_8bit", True),
            "epochs": used["epochs"], "best_epoch": s["checkpoint_epoch"],
            "liver_dice": ps["liver_dice_smoothed"]["mean"], "tumor_dice": ps["tumor_dice_smoothed"]["mean"],
            "tumor_dice_gt_positive": ps["tumor_dice_gt_positive"]["mean"],
            "tumor_gt_positive_n": ps["tumor_dice_gt_positive"]["n"],
            "liver_dice_per_volume": pv.get("liver_dice_per_case", {}).get("mean"),
            "tumor_dice_per_volume": pv.get("tumor_dice_per_case", {}).get("mean"),
            "paper_liver_dice": ref[0], "paper_tumor_dice": ref[1],
            "source": "main run" if reuse_main(p, arm) else f"ablation/{arm}",
        })  # fmt: skip
    by_arm = {r["arm"]: r for r in rows}
    if {"paper", "no_enhancement"} <= set(by_arm):
        on, off = by_arm["paper"], by_arm["no_enhancement"]

        def rel(k: str) -> float | None:
            a, b = on.get(k), off.get(k)
            # a change relative to (almost) nothing is undefined, not a huge percentage
            return None if a is None or b is None or abs(b) < 1e-3 else 100.0 * (a - b) / b

        rows.append({"arm": "improvement, % (paper − no_enhancement) / no_enhancement", "kind": "improvement",
                     **{k: rel(k) for k in ("liver_dice", "tumor_dice", "tumor_dice_gt_positive", "liver_dice_per_volume",
                                            "tumor_dice_per_volume")},
                     "paper_liver_dice": paper.ABLATION_IMPROVEMENT[0], "paper_tumor_dice": paper.ABLATION_IMPROVEMENT[1],
                     "source": "relative change, as the paper's Improvement row"})  # fmt: skip
    return pd.DataFrame(rows)


def _normalization(run_root: Path, used: dict[str, Any]) -> str:
    """Table 4's ``normalization`` cell: ``minmax``, or ``ct_norm`` with the clip and z-score statistics of the run."""
    if used.get("normalization", "minmax") != "ct_norm":
        return "minmax"
    info = read_json(run_root / "preprocess.json") if (run_root / "preprocess.json").is_file() else {}
    s = info.get("normalization")
    if not s:
        return "ct_norm"
    lo, hi = s["clip_hu"]
    return f"ct_norm: clip [{lo:g}, {hi:g}] HU, mean {s['mean']:.2f}, sd {s['sd']:.2f}"
