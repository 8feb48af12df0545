"""Curation (docs/study.md §1, paper §II.A): eligibility, seeded selection, volume-level split, manifest.

Writes ``volumes.csv`` (every scanned volume with its status), ``manifest.csv`` (one row per kept
slice: volume_id, split, slice_idx, liver_px, tumor_px, source paths, spacing), ``splits.json`` and
Table 3. Every later stage reads the manifest, never the folder of NIfTI files directly.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from liverlib import paper
from liverlib.data.nifti import CasePaths, check_image, check_pair, find_cases, load_case
from liverlib.errors import CaseError
from liverlib.files import write_table
from liverlib.labels import LABELS
from liverlib.params import Params, digest, resolve_path
from liverlib.progress import bar

SPLITS = ("train", "val", "test")


class CurationError(ValueError):
    """No usable selection: too few eligible volumes, bad explicit ids, overlapping splits."""


class SelectionError(CurationError):
    """A selection that failed after every volume was judged; carries the judged table.

    Attributes:
        volumes: the volumes table with ``status`` (what ``volumes.csv`` holds).
        path: where :func:`curate` wrote that table, or None.
    """

    def __init__(self, message: str, volumes: pd.DataFrame, path: Path | None = None) -> None:
        super().__init__(message)
        self.volumes, self.path = volumes, path


def resolve_data_dir(data_dir: str | None) -> str | None:
    """What ``data_dir`` names on this machine: ``"phantom"``, an absolute folder, or None (the Kaggle mount).

    ``auto`` is the Kaggle LiTS mount when one is attached (``/kaggle/input`` holding ``volume-N`` files), else the
    embedded phantom; a relative folder is taken from the project root. Two runs read the same data exactly when
    their resolved values are equal (the curation guard compares these, not the raw strings).
    """
    if data_dir == "auto":
        from liverlib.data.nifti import find_kaggle_root

        return None if find_kaggle_root() is not None else "phantom"
    if data_dir is None or data_dir == "phantom":
        return data_dir
    return str(resolve_path(data_dir))


def prepare_data(p: Params) -> Path | None:
    """The data folder of a run (:func:`resolve_data_dir`): generates the embedded phantom for ``phantom``.

    Returns:
        The folder to search, or None for the Kaggle mount (``data_dir: null``, or ``auto`` on Kaggle).
    """
    source = resolve_data_dir(p.data_dir)
    if source is None:
        return None
    if source != "phantom":
        return Path(source)
    from liverlib.data.phantom import generate_phantom
    from liverlib.locks import build_lock

    key = digest({"n": p.phantom_cases, "size": p.phantom_size, "slices": p.phantom_slices, "seed": p.seed})
    out = resolve_path(p.output_root) / "data" / f"phantom-{key}"
    with build_lock(out):  # folds started in parallel share it: one writes, the others wait and reuse
        generate_phantom(
            out, n_cases=p.phantom_cases, size=p.phantom_size, n_slices=tuple(p.phantom_slices), seed=p.seed
        )
    return out


_COUNTS = ("n_slices", "rows", "cols", "liver_voxels", "tumor_voxels", "liver_slices", "tumor_slices")
NOT_READ = "not read (exclude_ids)"
"""``problem`` of a volume skipped before reading because ``exclude_ids`` lists it."""


def _scan_one(c: CasePaths) -> tuple[dict[str, Any], pd.DataFrame | None]:
    """(counts or ``problem``, per-slice counts or None) of one case; CaseError for a bad file."""
    if c.mask is None:
        raise CaseError(f"{c.volume}: no segmentation-{c.case_id} file beside it; every volume needs its mask")
    problem = check_pair(c.volume, c.mask)
    if problem is not None:
        return {"problem": problem}, None
    case = load_case(c.volume, c.mask, read_image=False)
    check_image(c.volume)  # voxels readable to the end and finite (else 02 would fail on it)
    m = case.mask
    liver = (m == LABELS["liver"]).sum(axis=(1, 2))
    tumor = (m == LABELS["tumor"]).sum(axis=(1, 2))
    voxel_ml = float(np.prod(case.spacing)) / 1000.0
    row = dict(
        problem="", n_slices=m.shape[0], rows=m.shape[1], cols=m.shape[2],
        spacing_slice=case.spacing[0], spacing_row=case.spacing[1], spacing_col=case.spacing[2],
        liver_voxels=int(liver.sum()), tumor_voxels=int(tumor.sum()), tumor_ml=float(tumor.sum()) * voxel_ml,
        liver_slices=int(((liver + tumor) > 0).sum()), tumor_slices=int((tumor > 0).sum()),
    )  # fmt: skip
    return row, pd.DataFrame({"volume_id": c.case_id, "slice_idx": np.arange(m.shape[0]),
                              "liver_px": liver, "tumor_px": tumor})  # fmt: skip


def _reason(exc: CaseError, c: CasePaths) -> str:
    """The error's message with the case's paths shortened to file names (volumes.csv holds the paths)."""
    msg = str(exc).split("; every volume needs its mask")[0]
    for path in (c.volume, c.mask):
        if path is not None:
            msg = msg.replace(str(path), path.name)
    return msg


def scan_volumes(cases: list[CasePaths], *, progress: bool = True, exclude_ids: list[int] | None = None,
                 strict: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:  # fmt: skip
    """Judge every volume: read its mask once, count liver/tumor pixels per slice, read its image to the end.

    A volume whose files are missing, unreadable, truncated or invalid (labels outside {0, 1, 2}, non-integer
    labels, NaN/inf voxels), or whose image and mask do not align, gets the reason in ``problem`` (file
    names, not paths) and the scan goes on (docs/study.md §1: curation rejects, it does not stop). Volumes in
    ``exclude_ids`` are not read at all (``problem`` = :data:`NOT_READ`).

    Args:
        cases: from :func:`liverlib.data.nifti.find_cases`.
        progress: show a progress bar.
        exclude_ids: volume ids to skip before reading.
        strict: raise on the first bad file instead of rejecting the volume (``strict: true``).

    Returns:
        ``(volumes, slices)``: one row per volume (paths, ``problem``, shape, spacing, voxel counts; counts
        blank for a volume with a problem) and one row per slice of each volume without a problem
        (volume_id, slice_idx, liver_px, tumor_px).

    Raises:
        CaseError: only with ``strict``: the first bad file (the message names it).
    """
    exclude = {int(v) for v in exclude_ids or []}
    vols, slices = [], []
    for c in bar(cases, desc="scan volumes", unit="vol", disable=not progress):
        row: dict[str, Any] = {"volume_id": c.case_id, "volume_path": str(c.volume),
                               "mask_path": str(c.mask) if c.mask else ""}  # fmt: skip
        if c.case_id in exclude:
            vols.append(row | {"problem": NOT_READ})
            continue
        try:
            counts, per_slice = _scan_one(c)
        except CaseError as exc:
            if strict:
                raise
            counts, per_slice = {"problem": _reason(exc, c)}, None
        vols.append(row | counts)
        if per_slice is not None:
            slices.append(per_slice)
    slices_df = pd.concat(slices, ignore_index=True) if slices else pd.DataFrame(
        columns=["volume_id", "slice_idx", "liver_px", "tumor_px"])  # fmt: skip
    vols_df = pd.DataFrame(vols)
    counts = [c for c in _COUNTS if c in vols_df.columns]  # stay integers (nullable) beside rejected pairs' blanks
    return vols_df.astype(dict.fromkeys(counts, "Int64")), slices_df


def assess(volumes: pd.DataFrame, *, min_tumor_voxels: int = 1, min_tumor_slices: int = 5,
           exclude_ids: list[int] | None = None) -> pd.DataFrame:  # fmt: skip
    """Add a ``status`` column: ``eligible`` or why not (paper §II.A rules 1–3, plus the exclude list)."""
    exclude = set(exclude_ids or [])
    status = []
    for r in volumes.itertuples():
        if r.volume_id in exclude:
            status.append("excluded (exclude_ids)")
        elif r.problem:
            status.append(f"rejected: {r.problem}")
        elif r.tumor_voxels < min_tumor_voxels:
            status.append("rejected: no tumor")
        elif r.tumor_slices < min_tumor_slices:
            status.append(f"rejected: tumor on {int(r.tumor_slices)} slices (< {min_tumor_slices})")
        else:
            status.append("eligible")
    return volumes.assign(status=status)


def _size_strata(ids: list[int], sizes: dict[int, float], n: int) -> list[list[int]]:
    """Split ids, sorted by tumor size, into ``n`` contiguous strata of near-equal size."""
    ordered = sorted(ids, key=lambda i: (sizes[i], i))
    return [list(s) for s in np.array_split(np.array(ordered, dtype=int), n) if len(s)]


def select_volumes(
    volumes: pd.DataFrame, n_volumes: int, *, seed: int = 42, volume_ids: list[int] | None = None
) -> list[int]:
    """Choose the study's volumes among the eligible ones (docs/study.md §1).

    Explicit ``volume_ids`` win (each must be eligible). Otherwise a seeded draw of ``n_volumes``
    stratified by tumor size: eligible volumes sorted by tumor volume are cut into ``n_volumes``
    strata and one volume is drawn from each. ``n_volumes: 0`` takes all eligible volumes.
    """
    eligible = volumes[volumes.status == "eligible"]
    if volume_ids:
        twice = sorted({int(v) for v in volume_ids if list(volume_ids).count(v) > 1})
        if twice:
            raise CurationError(f"volume_ids: volume {twice[0]} is listed twice; each volume can be selected once")
        status = dict(zip(volumes.volume_id, volumes.status))
        for v in volume_ids:
            if v not in status:
                raise CurationError(f"volume_ids: volume {v} is not in the data folder")
            if status[v] != "eligible":
                raise CurationError(f"volume_ids: volume {v} is not usable ({status[v]})")
        return sorted(int(v) for v in volume_ids)
    if eligible.empty:
        raise CurationError("no eligible volume after curation (see volumes.csv for why each was rejected)")
    ids = [int(v) for v in eligible.volume_id]
    if n_volumes <= 0 or n_volumes == len(ids):
        return sorted(ids)
    if n_volumes > len(ids):
        raise CurationError(f"n_volumes={n_volumes} but only {len(ids)} volumes are eligible")
    rng = np.random.default_rng(seed)
    sizes = dict(zip(eligible.volume_id.astype(int), eligible.tumor_ml))
    return sorted(int(rng.choice(s)) for s in _size_strata(ids, sizes, n_volumes))


def split_counts(n: int, val_fraction: float, test_fraction: float) -> tuple[int, int, int]:
    """Volumes per split: val ⌊f·n⌋ and test ⌈f·n⌉, each at least 1 (11 volumes → 8/1/2, as the paper)."""
    # round first: 0.1 * 30 is 3.0000000000000004 and 0.29 * 100 is 28.999999999999996 in floating point
    n_val = max(1, math.floor(round(val_fraction * n, 9)))
    n_test = max(1, math.ceil(round(test_fraction * n, 9)))
    if n - n_val - n_test < 1:
        raise CurationError(f"{n} volumes are too few for a train/val/test split (need at least 3)")
    return n - n_val - n_test, n_val, n_test


def split_volumes(ids: list[int], tumor_ml: dict[int, float], *, val_fraction: float = 0.1, test_fraction: float = 0.1,
                  seed: int = 42, folds: int = 0, fold: int = 0) -> dict[str, list[int]]:  # fmt: skip
    """Split volumes (never slices) into train/val/test, stratified by tumor size, seeded.

    Volumes are shuffled within tumor-size tertiles and dealt round-robin from the tertiles, so the
    first volumes of the order cover small, medium and large tumors; test takes the first, val the
    next, train the rest. With ``folds = k`` the dealt order is cut into k folds; fold ``fold`` is the
    test set and val is drawn from the others.
    """
    if len(set(ids)) != len(ids):
        raise CurationError(f"split_volumes: volume ids repeat ({sorted(ids)}); a volume belongs to one split")
    rng = np.random.default_rng(seed)
    strata = _size_strata(ids, tumor_ml, min(3, len(ids)))
    for s in strata:
        rng.shuffle(s)
    strata = [strata[i] for i in rng.permutation(len(strata))]  # which size group deals first is seeded too
    order = [s[i] for i in range(max(map(len, strata))) for s in strata if i < len(s)]
    if folds:
        if len(ids) < folds + 2:
            raise CurationError(f"{len(ids)} volumes are too few for {folds}-fold cross-validation")
        test = [v for i, v in enumerate(order) if i % folds == fold]
        rest = [v for i, v in enumerate(order) if i % folds != fold]
        n_val = max(1, math.floor(round(val_fraction * len(ids), 9)))
        return {"train": sorted(rest[n_val:]), "val": sorted(rest[:n_val]), "test": sorted(test)}
    _, n_val, n_test = split_counts(len(ids), val_fraction, test_fraction)
    return {"test": sorted(order[:n_test]), "val": sorted(order[n_test:n_test + n_val]),
            "train": sorted(order[n_test + n_val:])}  # fmt: skip


def explicit_split(p: Params, volumes: pd.DataFrame) -> dict[str, list[int]] | None:
    """The split given by ``train_ids``/``val_ids``/``test_ids``, checked; None when not given."""
    given = {s: [int(v) for v in p[f"{s}_ids"]] for s in SPLITS}
    if not any(given.values()):
        return None
    if not all(given.values()):
        raise CurationError("train_ids, val_ids and test_ids must be given together (or none of them)")
    seen: dict[int, str] = {}
    for s, ids in given.items():
        for v in ids:
            if seen.get(v) == s:
                raise CurationError(f"volume {v} is listed twice in {s}_ids")
            if v in seen:
                raise CurationError(f"volume {v} is in both {seen[v]}_ids and {s}_ids; a volume belongs to one split")
            seen[v] = s
    select_volumes(volumes, 0, volume_ids=list(seen))  # each must be eligible
    return {s: sorted(v) for s, v in given.items()}


def build_manifest(slices: pd.DataFrame, volumes: pd.DataFrame, splits: dict[str, list[int]], *,
                   keep_empty_slices: bool = False, train_empty_fraction: float = 0.0,
                   seed: int = 0) -> pd.DataFrame:  # fmt: skip
    """One row per study slice: the split's volumes, slices with liver or tumor unless keep_empty_slices.

    ``train_empty_fraction`` (docs/study.md §1) keeps that share of each *training* volume's slices without liver
    or tumor (drawn with ``seed`` and the volume id, so the same every run), so the model also learns where there
    is no liver; validation and test keep the paper's rule.
    """
    split_of = {v: s for s, ids in splits.items() for v in ids}
    df = slices[slices.volume_id.isin(split_of)].copy()
    if not keep_empty_slices:
        empty = (df.liver_px + df.tumor_px) == 0
        keep = ~empty
        if train_empty_fraction > 0:
            for vid, rows in df[empty & (df.volume_id.map(split_of) == "train")].groupby("volume_id"):
                n = int(round(train_empty_fraction * len(rows)))
                picked = np.random.default_rng([seed, int(vid)]).choice(rows.index.to_numpy(), n, replace=False)
                keep.loc[picked] = True
        df = df[keep]
    df.insert(1, "split", df.volume_id.map(split_of))
    info = volumes.set_index("volume_id")[["volume_path", "mask_path", "spacing_slice", "spacing_row", "spacing_col",
                                           "n_slices", "rows", "cols"]]  # fmt: skip
    df = df.join(info, on="volume_id")
    order = {s: i for i, s in enumerate(SPLITS)}
    df = df.sort_values(["split", "volume_id", "slice_idx"], key=lambda c: c.map(order) if c.name == "split" else c)
    if df.empty:
        raise CurationError("the manifest is empty: no slice with liver or tumor in the selected volumes")
    return df.reset_index(drop=True)


def table3(manifest: pd.DataFrame) -> pd.DataFrame:
    """Table 3 (split summary) from the manifest, with the paper's counts beside."""
    rows = []
    for s in SPLITS:
        m = manifest[manifest.split == s]
        ids = sorted(m.volume_id.unique().tolist())
        rows.append({"split": s, "volumes": len(ids), "volume_ids": ", ".join(map(str, ids)), "slices": len(m),
                     "slices_with_tumor": int((m.tumor_px > 0).sum()),
                     "paper_volumes": paper.SPLITS[s][0], "paper_slices": paper.SPLITS[s][1]})  # fmt: skip
    total = {"split": "total", "volumes": sum(r["volumes"] for r in rows), "volume_ids": "",
             "slices": len(manifest), "slices_with_tumor": int((manifest.tumor_px > 0).sum()),
             "paper_volumes": sum(v for v, _ in paper.SPLITS.values()),
             "paper_slices": sum(n for _, n in paper.SPLITS.values())}  # fmt: skip
    return pd.DataFrame([*rows, total])


def curate(p: Params, *, progress: bool = True) -> dict[str, Any]:
    """Run curation end to end (see :func:`liverlib.pipeline.stages.run_curation`, which writes its outputs).

    Every volume is judged (:func:`scan_volumes`; ``strict: true`` stops at the first bad file instead). When
    no selection is possible, the judged table is written all the same (:func:`write_rejected_volumes`) and
    the error names it.

    Returns:
        dict with ``data_dir``, ``volumes`` (DataFrame, with ``problem``/``status``/``split``),
        ``splits``, ``manifest`` and ``slices``.

    Raises:
        CaseError: the folder holds no volumes, or (``strict``) a bad file.
        SelectionError: no selection possible (too few eligible volumes, bad explicit ids); ``.volumes``
            holds the judged table and ``.path`` where it was written.
    """
    data_dir = prepare_data(p)
    cases = find_cases(data_dir)
    volumes, slices = scan_volumes(cases, progress=progress, exclude_ids=p.exclude_ids, strict=p.strict)
    volumes = assess(volumes, min_tumor_voxels=p.min_tumor_voxels, min_tumor_slices=p.min_tumor_slices,
                     exclude_ids=p.exclude_ids)  # fmt: skip
    if "tumor_ml" not in volumes.columns:  # every volume rejected before counting
        volumes = volumes.assign(tumor_ml=np.nan)
    try:
        splits = explicit_split(p, volumes)
        if splits is None:
            chosen = select_volumes(volumes, p.n_volumes, seed=p.seed, volume_ids=p.volume_ids)
            sizes = dict(zip(volumes.volume_id.astype(int), volumes.tumor_ml.fillna(0.0)))
            splits = split_volumes(chosen, sizes, val_fraction=p.val_fraction, test_fraction=p.test_fraction,
                                   seed=p.seed, folds=p.folds, fold=p.fold)  # fmt: skip
    except CurationError as exc:
        table = volumes.assign(split="")
        path = write_rejected_volumes(p, table)
        raise SelectionError(f"{exc}; every volume's status is in {path}", table, path) from None
    split_of = {v: s for s, ids in splits.items() for v in ids}
    volumes = volumes.assign(split=volumes.volume_id.map(split_of).fillna(""))
    manifest = build_manifest(slices, volumes, splits, keep_empty_slices=p.keep_empty_slices,
                              train_empty_fraction=p.train_empty_fraction, seed=p.seed)  # fmt: skip
    return {"data_dir": data_dir, "volumes": volumes, "splits": splits, "manifest": manifest, "slices": slices}


def write_rejected_volumes(p: Params, volumes: pd.DataFrame) -> Path:
    """Write the judged volumes of a failed selection where the user will look: the run's ``volumes.csv``.

    When the run folder already holds a curation (``manifest.csv``), its ``volumes.csv`` stays with it and
    the table goes to ``volumes.failed.csv`` beside it instead. (The two names are the run folder's,
    :class:`liverlib.run.RunDir`; data modules do not import it.)
    """
    root = resolve_path(p.output_root) / p.run_name
    root.mkdir(parents=True, exist_ok=True)
    path = root / "volumes.csv" if not (root / "manifest.csv").exists() else root / "volumes.failed.csv"
    return write_table(volumes, path, markdown=False)
