"""Pooling variants run anywhere: cross-validation folds and ablation arms back into one run (docs/scaling.md).

A fold (``<run>/folds/<k>/``) and an arm (``<run>/ablation/<arm>/``) are run folders of their own, so they can be
made one per GPU, node or cluster job (``liverlib study … --fold K``, ``--arm NAME``) and copied together. Pooling
reads only their files:

- :func:`pool_folds` — every finished fold (stage 04 recorded) into ``cv_per_volume.csv`` and ``cv_summary.json``
  (per-volume metrics over all folds' test volumes, each volume once), and per arm into
  ``tables/table04_ablation_cv.{csv,md}`` (Table 4 pooled over the folds: per-volume Dice of every arm over the
  same test volumes). The sequential runner (``folds > 0``) calls the same function, so running the folds in one
  command or in five gives the same files.
- :func:`pool_arms` — the finished arms of a run without folds into ``tables/table04_ablation.{csv,md}`` (what
  notebook 05 writes; 05 also draws the figure and the report).

Both say which folds or arms are missing, and refuse to mix runs that do not belong together: a fold or arm made
with other parameters (anything but where and how it ran: folders, device, workers, precision of inference), on
another split (other selected volumes, a test volume in two folds).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from liverlib.errors import RunError
from liverlib.evaluation.per_volume import dice_over_volumes
from liverlib.files import read_json, write_json, write_table
from liverlib.params import RUN_KEYS, STAGE_KEYS, Params, resolve

WHERE_AND_HOW = frozenset({*RUN_KEYS, *(k for keys in STAGE_KEYS.values() for k in keys), "fold", "profiles",
                           "tracking"})  # fmt: skip
"""Parameters that may differ between the folds (or arms) pooled: which folder, and how a stage ran on its machine
(device, precision, workers; ``params.STAGE_KEYS``), not what it computed. ``fold`` differs by construction."""

FINISHED = "stages/04_evaluation.json"
"""A fold or arm is finished when stage 04 recorded itself (written after its outputs: the commit point)."""


@dataclass
class Variant:
    """One fold or arm folder and what pooling found there."""

    name: str
    root: Path
    params: dict[str, Any] | None = None
    status: str = "not started"
    splits: dict[str, list[int]] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return self.status == "finished"


def recorded_params(root: Path) -> dict[str, Any] | None:
    """The ``parameters`` of ``<root>/params.json``, or None when the folder has none (notebook 01 never ran)."""
    path = root / "params.json"
    if not path.is_file():
        return None
    try:
        return dict(read_json(path)["parameters"])
    except (ValueError, KeyError, TypeError) as exc:
        raise RunError(f"{path}: not a run's parameters ({type(exc).__name__}: {exc})") from None


def as_params(values: dict[str, Any], source: Path) -> Params:
    """Recorded parameter values of the run folder ``source`` as :class:`Params` (validated), with the run's folder
    where it is now: folds and arms made on other machines may have been copied here from another path."""
    here = {"run_name": source.name, "output_root": str(source.parent), "profiles": []}
    return resolve(**{**values, **here}, _source=str(source / "params.json"))


def differences(a: dict[str, Any], b: dict[str, Any], ignore: frozenset[str] = WHERE_AND_HOW) -> list[str]:
    """The parameters (outside ``ignore``) whose values differ between two recorded parameter sets."""
    keys = (set(a) | set(b)) - ignore
    return sorted(k for k in keys if json.dumps(a.get(k), sort_keys=True) != json.dumps(b.get(k), sort_keys=True))


def _variant(name: str, root: Path) -> Variant:
    v = Variant(name, root, recorded_params(root))
    if v.params is not None:
        v.status = "finished" if (root / FINISHED).is_file() and (root / "per_volume.csv").is_file() else "unfinished"
    if (root / "splits.json").is_file():
        splits = read_json(root / "splits.json").get("splits", {})
        v.splits = {k: sorted(int(i) for i in splits.get(k, [])) for k in ("train", "val", "test")}
    return v


def fold_variants(root: Path) -> tuple[int, list[Variant]]:
    """The number of folds the run's folds were made for and each fold's state, ``0 … folds − 1``.

    Raises:
        RunError: no fold has parameters yet, folds recorded with another fold count or another fold number than
            their folder's name.
    """
    folder = root / "folds"
    found = {int(d.name): _variant(d.name, d) for d in sorted(folder.glob("*")) if d.is_dir() and d.name.isdigit()}
    started = {k: v for k, v in found.items() if v.params is not None}
    if not started:
        raise RunError(
            f"{folder}: no fold has started (no folds/<k>/params.json); run `liverlib study … --fold K` first"
        )
    counts = {int(v.params["folds"]) for v in started.values()}  # type: ignore[index]
    if len(counts) > 1:
        raise RunError(
            f"{folder}: the folds were made for different fold counts ({sorted(counts)}); pool one run at a time"
        )
    n = counts.pop()
    for k, v in started.items():
        if int(v.params["fold"]) != k or k >= n:  # type: ignore[index]
            raise RunError(f"{v.root}: holds fold {v.params['fold']} of {n}, not fold {k}; it was moved or renamed")  # type: ignore[index]
    return n, [found.get(k) or Variant(str(k), folder / str(k)) for k in range(n)]


def check_consistent(variants: list[Variant], what: str) -> None:
    """Refuse variants made with other parameters or on another split than the first started one.

    Raises:
        RunError: naming the folder, the parameters that differ, or the volumes that make the splits disagree.
    """
    started = [v for v in variants if v.params is not None]
    if not started:
        return
    ref = started[0]
    ref_selected = {i for ids in ref.splits.values() for i in ids}
    for v in started[1:]:
        differ = differences(ref.params, v.params)  # type: ignore[arg-type]
        if differ:
            shown = ", ".join(f"{k}: {ref.params.get(k)!r} vs {v.params.get(k)!r}" for k in differ[:4])  # type: ignore[union-attr]
            raise RunError(f"{v.root}: made with other parameters than {what} {ref.name} ({shown}); pooling refuses to "
                           "mix them: rerun it with the run's parameters, or pool it under another run_name")  # fmt: skip
        selected = {i for ids in v.splits.values() for i in ids}
        if v.splits and ref.splits and selected != ref_selected:
            extra, lacking = sorted(selected - ref_selected), sorted(ref_selected - selected)
            raise RunError(f"{v.root}: on another split than {what} {ref.name} (volumes only here {extra}, only there "
                           f"{lacking}); it was curated on other data or another selection")  # fmt: skip


def _check_disjoint_tests(variants: list[Variant], root: Path) -> None:
    seen: dict[int, str] = {}
    for v in variants:
        for i in v.splits.get("test", []):
            if i in seen:
                raise RunError(f"{root}: volume {i} is in the test set of fold {seen[i]} and of fold {v.name}: the folds "
                               "overlap (another split or another seed)")  # fmt: skip
            seen[i] = v.name


def _per_volume(path: Path, **columns: Any) -> pd.DataFrame:
    return pd.read_csv(path).assign(**columns)


def _missing_text(variants: list[Variant]) -> str:
    missing = [v for v in variants if not v.finished]
    return ", ".join(f"{v.name} ({v.status})" for v in missing) or "none"


def pool_folds(root: str | Path, *, required: bool = True) -> dict[str, Any] | None:
    """Pool the finished folds of ``<root>/folds/`` into ``cv_per_volume.csv``, ``cv_summary.json`` and the pooled
    Table 4 (``tables/table04_ablation_cv``); print which folds are missing. Take :func:`liverlib.locks.run_lock`
    on ``root`` around it.

    Args:
        required: False returns None when no fold is finished yet (the runner after ``--only 01``); True raises.

    Returns:
        The summary written to ``cv_summary.json``, or None (nothing finished, ``required`` False).

    Raises:
        RunError: folds made with other parameters, on another split, overlapping test sets; with every fold
            finished, a selected volume tested in none; no finished fold (``required``).
    """
    root = Path(root)
    n, folds = fold_variants(root)
    check_consistent(folds, "fold")
    _check_disjoint_tests([v for v in folds if v.splits], root)
    done = [v for v in folds if v.finished]
    if not done:
        if required:
            raise RunError(
                f"{root / 'folds'}: no fold has finished (stage 04 recorded); missing: {_missing_text(folds)}"
            )
        return None
    cv = pd.concat([_per_volume(v.root / "per_volume.csv", fold=int(v.name)) for v in done], ignore_index=True)
    twice = sorted(cv.volume_id[cv.volume_id.duplicated()].unique().tolist())
    if twice:
        raise RunError(f"{root}: volume(s) {twice} were tested in more than one fold")
    selected = {i for ids in done[0].splits.values() for i in ids}
    untested = sorted(selected - set(cv.volume_id.astype(int)))
    if len(done) == n and untested:
        raise RunError(f"{root}: selected volume(s) {untested} were tested in no fold")
    write_table(cv, root / "cv_per_volume.csv", markdown=False)
    summary: dict[str, Any] = {
        "folds": n,
        "volumes": int(len(cv)),
        "rule": "per volume, LiTS classes; NaN (both empty) left out",
        "per_fold_volumes": {int(f): sorted(int(v) for v in g.volume_id) for f, g in cv.groupby("fold")},
        **dice_over_volumes(cv),
        "folds_pooled": [int(v.name) for v in done],
        "folds_missing": [int(v.name) for v in folds if not v.finished],
    }
    write_json(root / "cv_summary.json", summary)
    table = table04_cv(done)
    if table is not None:
        from liverlib.report.report import TABLES

        write_table(table, root / "tables" / f"{TABLES['table04']}_cv.csv")
    note = "" if len(done) == n else f"; missing: {_missing_text(folds)} (pool again when they finish)"
    print(f"cross-validation: {len(cv)} test volumes over {len(done)} of {n} folds -> {root / 'cv_summary.json'}{note}",
          flush=True)  # fmt: skip
    return summary


def _arm_result(fold: Variant, arm: str) -> tuple[Path | None, str]:
    """Where an arm's per-volume scores are in a fold (None if not finished) and the source named in the table."""
    from liverlib.pipeline.ablation import reuse_main

    p = as_params(fold.params or {}, fold.root)
    if reuse_main(p, arm):
        return fold.root / "per_volume.csv", "main run"
    arm_root = fold.root / "ablation" / arm
    arm_v = _variant(arm, arm_root)
    if arm_v.params is not None:
        from liverlib.pipeline.ablation import arm_params

        expected = arm_params(p, arm)
        differ = differences(expected, arm_v.params)
        if differ:
            raise RunError(f"{arm_root}: made with other parameters than fold {fold.name}'s arm {arm!r} ({', '.join(differ)}); "
                           "rerun it with the run's parameters")  # fmt: skip
        if arm_v.splits and arm_v.splits != fold.splits:
            raise RunError(f"{arm_root}: on another split than fold {fold.name}; rerun the arm (the runner copies the "
                           "fold's curation into it)")  # fmt: skip
    return (arm_root / "per_volume.csv" if arm_v.finished else None), f"ablation/{arm}"


def table04_cv(done: list[Variant]) -> pd.DataFrame | None:
    """Table 4 pooled over the finished folds: per arm, per-volume Dice over every fold's test volumes it has.

    Columns: arm, recipe, folds (those pooled), volumes, per-volume liver and tumor Dice (mean per case and global),
    the paper's per-slice values beside. None when the run has no ablation arm.
    """
    from liverlib import paper
    from liverlib.pipeline.ablation import ARM_LABELS

    if not done:
        return None
    arms = list(done[0].params.get("ablation_arms") or [])  # type: ignore[union-attr]
    rows = []
    for arm in arms:
        frames, folds = [], []
        for v in done:
            path, source = _arm_result(v, arm)
            if path is not None:
                frames.append(_per_volume(path, fold=int(v.name)))
                folds.append(v.name)
        if not frames:
            continue
        cv = pd.concat(frames, ignore_index=True)
        ref = paper.ABLATION.get(arm, (None, None))
        d = dice_over_volumes(cv)
        rows.append({"arm": arm, "recipe": ARM_LABELS.get(arm, arm), "folds": " ".join(folds), "volumes": len(cv),
                     "liver_dice_per_volume": d["liver_dice_per_case"], "tumor_dice_per_volume": d["tumor_dice_per_case"],
                     "liver_dice_global": d["liver_dice_global"], "tumor_dice_global": d["tumor_dice_global"],
                     "paper_liver_dice": ref[0], "paper_tumor_dice": ref[1],
                     "source": "main run" if source == "main run" else f"folds/<k>/{source}"})  # fmt: skip
    return pd.DataFrame(rows) if rows else None


def pool_arms(root: str | Path) -> pd.DataFrame:
    """Table 4 of a run without folds from its finished arms (``tables/table04_ablation``, as notebook 05 writes
    it); print which arms are missing.

    Raises:
        RunError: the run has no parameters or no arm; an arm made with other parameters or on another split; no
            arm finished.
    """
    from liverlib.pipeline.ablation import arm_params, reuse_main, table04
    from liverlib.report.report import TABLES

    root = Path(root)
    values = recorded_params(root)
    if values is None:
        raise RunError(f"{root / 'params.json'}: missing; not a run folder, or notebook 01 has not run there")
    p = as_params(values, root)
    if not p.ablation_arms:
        raise RunError(f"{root}: nothing to pool: it has no folds/ and no ablation arms (ablation_arms: [])")
    main = _variant(p.run_name, root)
    state: dict[str, str] = {}
    for arm in p.ablation_arms:
        if reuse_main(p, arm):
            state[arm] = (
                "finished" if main.finished and (root / "summary.json").is_file() else f"main run {main.status}"
            )
            continue
        v = _variant(arm, root / "ablation" / arm)
        if v.params is not None:
            differ = differences(arm_params(p, arm), v.params)
            if differ:
                raise RunError(f"{v.root}: made with other parameters than this run's arm {arm!r} ({', '.join(differ)}); "
                               "rerun it with `liverlib study … --arm` and the run's parameters")  # fmt: skip
            if v.splits and main.splits and v.splits != main.splits:
                raise RunError(f"{v.root}: on another split than {root}; rerun the arm (it copies the run's curation)")
        state[arm] = "finished" if v.finished and (v.root / "summary.json").is_file() else v.status
    done = [a for a in p.ablation_arms if state[a] == "finished"]
    missing = ", ".join(f"{a} ({s})" for a, s in state.items() if s != "finished")
    if not done:
        raise RunError(f"{root}: no ablation arm has finished (stage 04 recorded); missing: {missing}")
    t4 = table04(as_params({**values, "ablation_arms": done}, root))
    write_table(t4, root / "tables" / f"{TABLES['table04']}.csv")
    note = f"; missing: {missing} (pool again when they finish)" if missing else ""
    print(f"ablation: {len(done)} of {len(p.ablation_arms)} arms -> {root / 'tables' / TABLES['table04']}.csv{note}",
          flush=True)  # fmt: skip
    return t4


def pool_run(root: str | Path) -> Path:
    """``liverlib pool <run>``: pool the folds (with their arms) of a cross-validated run, else the run's arms.

    Raises:
        FileNotFoundError: ``root`` is not a folder. RunError: see :func:`pool_folds`, :func:`pool_arms`; another
            process writes the run folder (:func:`liverlib.locks.run_lock`).
    """
    from liverlib.locks import run_lock

    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: not a run folder (give outputs/<run_name>)")
    with run_lock(root):
        if (root / "folds").is_dir():
            pool_folds(root)
        else:
            pool_arms(root)
    return root
