"""Embedded synthetic LiTS-like CT data: phantoms that need no download (docs/study.md §1).

Each case is an abdominal CT phantom built in the display convention of :mod:`liverlib.data.nifti` (slices
inferior → superior, rows anterior → posterior, columns patient's right → left): body outline with
subcutaneous fat, muscle wall and a cavity with visceral fat, spine and ribs, a contrast-enhanced liver
(label 1) on the image's left, organs of liver-like intensity (spleen, kidneys, aorta, IVC), stomach and
bowel holding air or fluid, and hypodense tumors (label 2) inside the liver, then a mild in-plane blur
and Gaussian noise. In-plane sizes are in mm and the field of view scales with 512/size, so a 128-px
set looks like a downscaled 512 set; along z, organs span fixed fractions of the scan. Case N is stored
in voxel order RAS, LPS or LAS (N mod 3), so loading exercises the reorientation. With 4 or more
cases the last three are built to fail curation (docs/study.md §1 rules 1–3): no tumor, tumor on 3 slices,
and a mask that lacks the last slice.

The anatomy is built in :mod:`liverlib.data.phantom_anatomy`; this module plans the cases and writes them to a
folder it owns (``phantom.json`` records every file's size and sha256, so a rerun never replaces or deletes
a file it did not write).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from liverlib.data.nifti import save_nifti
from liverlib.data.phantom_anatomy import (  # noqa: F401  (re-exported: the phantom's public API)
    BURDENS,
    MIN_SIZE,
    MIN_SLICES,
    ORIENTATIONS,
    OUTCOMES,
    PHANTOM_VERSION,
    file_array,
    make_case,
    phantom_affine,
)
from liverlib.files import atomic_write, remove_stale_temps
from liverlib.labels import LABELS
from liverlib.params import ParamError
from liverlib.progress import bar


def _plan(n_cases: int, n_slices: tuple[int, int], seed: int) -> list[dict]:
    """Per case: id, outcome, burden (balanced over eligible cases) and slice count."""
    special = list(OUTCOMES[1:]) if n_cases >= 4 else []
    n_elig = n_cases - len(special)
    burdens = [str(b) for b in np.random.default_rng(seed).permutation([BURDENS[i % 3] for i in range(n_elig)])]
    outcomes, burdens = ["eligible"] * n_elig + special, burdens + ["medium"] * len(special)
    slices = [int(np.random.default_rng([seed, i, 1]).integers(n_slices[0], n_slices[1] + 1)) for i in range(n_cases)]
    return [
        {"id": i, "outcome": outcomes[i], "tumor_burden": burdens[i], "n_slices": slices[i]} for i in range(n_cases)
    ]


def _check_values(n_cases: int, size: int, n_slices: tuple[int, int]) -> None:
    """Raise ParamError for values no phantom can be built with (before anything is written)."""
    if int(n_cases) < 1:
        raise ParamError(f"phantom: need at least 1 case, got cases = {n_cases}")
    if int(size) < MIN_SIZE:
        raise ParamError(f"phantom: slice size must be at least {MIN_SIZE} px, got size = {size}")
    if len(n_slices) != 2 or not MIN_SLICES <= int(n_slices[0]) <= int(n_slices[1]):
        raise ParamError(f"phantom: slices (min, max) must satisfy {MIN_SLICES} <= min <= max, got {tuple(n_slices)}")


def _file_record(path: Path) -> dict[str, int | str]:
    """Size and sha256 of a written file: what phantom.json records to recognise it later."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return {"bytes": path.stat().st_size, "sha256": digest.hexdigest()}


def _read_meta(meta_path: Path) -> dict:
    """phantom.json as a dict; {} when absent; FileExistsError when present but not a phantom's."""
    if not meta_path.exists():
        return {}
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        meta = None
    if not isinstance(meta, dict) or not isinstance(meta.get("params"), dict):
        raise FileExistsError(
            f"{meta_path.parent}: holds {meta_path.name}, which is not a phantom.json liverlib phantom wrote; "
            "use an empty or new folder (phantom never replaces or deletes files it did not write)"
        )
    return meta


def _owned(meta: dict) -> dict[str, dict]:
    """Files an earlier run wrote, by name: their size/sha256 record, or {} where none was recorded."""
    owned = {c[k]: {} for c in meta.get("cases", []) for k in ("volume", "segmentation")}  # version 1: no records
    return owned | {name: dict(rec or {}) for name, rec in meta.get("files", {}).items()}


def _check_folder(out: Path, owned: dict[str, dict], same_params: bool) -> None:
    """Refuse a folder holding anything the earlier phantom did not write, or a file changed since.

    A file phantom.json records with size and sha256 may be replaced or deleted only if it still matches;
    one recorded without them (older phantom.json, or a run killed before recording it) only when the same
    parameters will write it again byte for byte.
    """
    for f in sorted(out.iterdir()):
        if f.name == "phantom.json":
            continue
        rec = owned.get(f.name) if f.is_file() else None
        if rec is None:
            raise FileExistsError(
                f"{out}: holds {f.name}, which liverlib phantom did not write (not in its phantom.json); "
                "use an empty or new folder (phantom never replaces or deletes files it did not write)"
            )
        if rec and (f.stat().st_size != rec.get("bytes") or _file_record(f) != rec):
            raise FileExistsError(
                f"{out}: {f.name} differs from the file liverlib phantom wrote there (size or sha256 in "
                "phantom.json); nothing was changed; move it away or use an empty or new folder"
            )
        if not rec and not same_params:
            raise FileExistsError(
                f"{out}: {f.name} has no checksum in phantom.json (older liverlib or an interrupted run), so it "
                "cannot be told from your own data; nothing was changed; delete the folder yourself or use a new one"
            )


def generate_phantom(
    out_dir: str | Path,
    n_cases: int = 14,
    size: int = 512,
    n_slices: tuple[int, int] = (60, 120),
    seed: int = 42,
    *,
    compress: bool = False,
    progress: bool = True,
) -> list[Path]:
    """Write a synthetic LiTS folder: ``volume-N`` / ``segmentation-N`` NIfTI pairs and ``phantom.json``.

    Images are int16 HU, masks uint8 labels {0, 1, 2}; case N is stored in voxel order
    ``ORIENTATIONS[N % 3]`` with a matching affine, so :func:`liverlib.data.nifti.load_case` returns every case with
    the liver on the image's left. ``phantom.json`` holds ``params``, ``complete``, ``files`` (size and sha256
    of every file written) and, per case: id, outcome (see :data:`OUTCOMES`), tumor_burden, n_slices, file
    names, orientation (e.g. ``"LPS"``), spacing (slice, row, col) in mm, image and mask shape (display
    order), liver_voxels (label 1), tumor_voxels (label 2) and tumor_slices.

    Idempotent: when ``phantom.json`` holds the same parameters and every file exists with its recorded
    size, nothing is rewritten. User data is never touched: a folder holding any file phantom.json does not
    list, or a listed file changed since, is refused before anything is written; only files this function
    wrote (and that still match their record) are replaced or deleted (e.g. ``.nii`` after a switch to
    ``.nii.gz``). Files are written atomically; ``phantom.json`` is rewritten after each case, so a killed
    run is completed by the next, whose leftover temp files are removed.

    Args:
        out_dir: folder to write into (created).
        n_cases: cases 0..n_cases-1; with n_cases >= 4 the last three fail curation (docs/study.md §1).
        size: rows = cols per slice (512 like LiTS; 128 for a smoke run; at least :data:`MIN_SIZE`).
        n_slices: inclusive range of slice counts, drawn per case (each ≥ :data:`MIN_SLICES`).
        seed: same seed → identical arrays and byte-identical files.
        compress: write ``.nii.gz`` instead of ``.nii``.
        progress: show a progress bar.

    Returns:
        Paths of the volume files, by case id.

    Raises:
        ParamError: a value no phantom can be built with (cases < 1, size or slices too small, min > max).
        FileExistsError: ``out_dir`` is a file, or holds files this function did not write or that changed.
    """
    _check_values(n_cases, size, n_slices)
    out, ext = Path(out_dir), ".nii.gz" if compress else ".nii"
    params = {"version": PHANTOM_VERSION, "n_cases": int(n_cases), "size": int(size)}
    params |= {"n_slices": [int(n_slices[0]), int(n_slices[1])], "seed": int(seed), "compress": bool(compress)}
    meta_path = out / "phantom.json"
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out}: exists and is not a folder; phantom --out needs a folder")
    old = _read_meta(meta_path) if out.is_dir() else {}
    owned = _owned(old)
    if old.get("params") == params and old.get("complete", True) and owned and _all_present(out, owned):
        return [out / c["volume"] for c in old["cases"]]
    plans = _plan(n_cases, n_slices, seed)
    names = [f"{kind}-{c['id']}{ext}" for c in plans for kind in ("volume", "segmentation")]
    if out.is_dir():
        for name in {*names, *owned, meta_path.name} if old else ():
            remove_stale_temps(out, name)  # a killed run's half-written temp files (only in a phantom's folder)
        _check_folder(out, owned, old.get("params") == params)
    out.mkdir(parents=True, exist_ok=True)
    files = {name: owned.get(name, {}) for name in names} | {n: r for n, r in owned.items() if (out / n).exists()}

    def save_meta(**extra) -> None:
        with atomic_write(meta_path) as tmp:
            tmp.write_text(
                json.dumps({"params": params, "complete": False, "files": files} | extra, indent=1), encoding="utf-8"
            )

    save_meta()  # before the first file: whatever is written below is listed as this function's
    cases = []
    for plan in bar(plans, desc="phantom", unit="case", disable=not progress):
        cases.append(_write_case(out, plan, size, seed, ext, files, save_meta))
    for name in set(files) - set(names):
        (out / name).unlink(missing_ok=True)  # only files an earlier run wrote, checked above (e.g. .nii after .nii.gz)
        del files[name]
    save_meta(complete=True, cases=cases)
    return [out / c["volume"] for c in cases]


def _all_present(out: Path, owned: dict[str, dict]) -> bool:
    """Every file a phantom's record lists is there with its recorded size."""
    return all((out / f).is_file() and (out / f).stat().st_size == r.get("bytes", (out / f).stat().st_size)
               for f, r in owned.items())  # fmt: skip


def _write_case(out: Path, plan: dict, size: int, seed: int, ext: str, files: dict[str, dict],
                save_meta: Callable[..., None]) -> dict:  # fmt: skip
    """Draw case ``plan["id"]``, write its volume and mask (``files`` and ``phantom.json`` kept current) and return
    its record for ``phantom.json``."""
    i, codes = plan["id"], ORIENTATIONS[plan["id"] % len(ORIENTATIONS)]
    rng = np.random.default_rng([seed, i])
    image, mask, spacing = make_case(
        i, size, plan["n_slices"], rng, outcome=plan["outcome"], burden=plan["tumor_burden"]
    )
    affine = phantom_affine(codes, spacing, image.shape)
    vol, seg = f"volume-{i}{ext}", f"segmentation-{i}{ext}"
    for name, data in ((vol, image), (seg, mask)):
        if files[name]:
            files[name] = {}  # being replaced: a kill after the rename must not leave the old checksum
            save_meta()
        save_nifti(file_array(data, affine), affine, out / name)
        files[name] = _file_record(out / name)
    save_meta()
    tumor = mask == LABELS["tumor"]
    record = {"volume": vol, "segmentation": seg, "orientation": "".join(codes), "spacing": list(spacing)}
    record |= {"shape": list(image.shape), "mask_shape": list(mask.shape), "tumor_voxels": int(tumor.sum())}
    record |= {"liver_voxels": int((mask == LABELS["liver"]).sum()), "tumor_slices": int(tumor.any((1, 2)).sum())}
    return plan | record
