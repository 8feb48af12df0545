"""Checkpoints: where they live, how they are written and read, and the model rebuilt from one.

A liverlib checkpoint is a plain ``dict`` of tensors, numbers, strings and lists (``model`` state dict,
``config`` = the training parameters, ``epoch``, for ``last.pt`` the optimizer state and history, and for
``normalization: ct_norm`` the training split's statistics as ``normalization``: :func:`attach_normalization`). It is
read with ``torch.load(weights_only=True)``: a file that would need to unpickle anything else — a crafted
pickle that runs code — is refused before any of it executes.
"""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any

import torch

from liverlib.errors import RunError
from liverlib.files import atomic_write, read_json
from liverlib.model.hybrid import build_model
from liverlib.run import RunDir


def model_dir(run: RunDir, model_name: str) -> Path:
    """``models/<model_name>/`` of the run: checkpoints and history of one model."""
    return run.root / "models" / model_name


def attach_normalization(state: dict[str, Any], path: Path) -> dict[str, Any]:
    """``state`` with the ``ct_norm`` statistics its model was trained on, so ``segment`` applies them to other CT.

    For a ``config`` with ``normalization: ct_norm`` and no ``normalization`` entry yet, the statistics are read
    from the run's ``preprocess.json`` (the cache's metadata, written by notebook 02): ``path`` is
    ``<run>/models/<model>/<file>.pt``. Other states are returned unchanged.

    Raises:
        RunError: a ``ct_norm`` checkpoint outside a run folder, a ``preprocess.json`` without statistics, or
            statistics of other training volumes than the checkpoint's split.
    """
    cfg = state.get("config") or {}
    if cfg.get("normalization") != "ct_norm" or state.get("normalization"):
        return state
    path = Path(path)
    info_path = path.parent.parent.parent / "preprocess.json"
    if path.parent.parent.name != "models" or not info_path.is_file():
        raise RunError(f"{path}: a ct_norm checkpoint needs the training statistics, but {info_path} is missing")
    stats = read_json(info_path).get("normalization")
    if not stats:
        raise RunError(f"{info_path}: holds no ct_norm statistics (normalization); rerun notebook 02")
    trained = (state.get("split") or cfg.get("split") or {}).get("train")
    if trained is not None and sorted(int(i) for i in trained) != sorted(int(i) for i in stats.get("train_ids", [])):
        raise RunError(f"{info_path}: its ct_norm statistics come from training volumes {stats.get('train_ids')}, "
                       f"the model trains on {sorted(trained)}; rerun notebook 02")  # fmt: skip
    return {**state, "normalization": stats}


def check_normalization(ckpt: dict[str, Any], run_root: Path, source: str | Path) -> None:
    """Refuse to score a ``ct_norm`` checkpoint on a cache normalised with other statistics than it trained on
    (after a re-curation whose new test volumes it never saw, the leak check alone would let it through).

    Raises:
        RunError: the checkpoint's ``normalization`` differs from the run's ``preprocess.json`` (or either is missing).
    """
    if (ckpt.get("config") or {}).get("normalization") != "ct_norm":
        return
    info_path = Path(run_root) / "preprocess.json"
    cache = read_json(info_path).get("normalization") if info_path.is_file() else None
    if not ckpt.get("normalization") or ckpt["normalization"] != cache:
        raise RunError(f"{source}: trained with ct_norm statistics {ckpt.get('normalization')}, but the cache of "
                       f"{info_path} holds {cache}; retrain (rerun notebook 03 with overwrite: true)")  # fmt: skip


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """``torch.save`` to a temp file, then rename: a crash never leaves a half-written checkpoint. A ``ct_norm``
    model's checkpoint gets its training statistics (:func:`attach_normalization`)."""
    state = attach_normalization(state, path)
    with atomic_write(path) as tmp:
        try:
            torch.save(state, tmp)
        except RuntimeError as exc:  # a full disk: "[enforce fail at inline_container.cc] … file write failed"
            if "PytorchStreamWriter" not in str(exc) and "inline_container" not in str(exc):
                raise
            raise OSError(errno.EIO, f"the checkpoint writer failed ({' '.join(str(exc).split())[:160]}; a full disk?)",
                          str(tmp)) from None  # fmt: skip


def load_checkpoint(path: str | Path, *, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a liverlib checkpoint without executing code from it (``weights_only=True``).

    Raises:
        RunError: naming the file — missing, a folder, unreadable, holding objects other than tensors and
            plain containers (refused unexecuted), or not a liverlib checkpoint.
    """
    path = Path(path)
    if path.is_dir():
        raise RunError(f"{path}: is a folder, not a checkpoint file (give models/<name>/best.pt)")
    if not path.is_file():
        raise RunError(f"{path}: checkpoint does not exist")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # UnpicklingError for foreign objects, RuntimeError for a truncated zip, ...
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        if "weights_only" in str(exc) or "Unsupported global" in str(exc):
            raise RunError(f"{path}: refused: the file holds Python objects other than weights (it could run "
                           "code when loaded); only liverlib checkpoints are read") from exc  # fmt: skip
        raise RunError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {first})") from exc
    if not isinstance(ckpt, dict) or "model" not in ckpt or "config" not in ckpt:
        raise RunError(f"{path}: not a liverlib checkpoint (no model/config entries)")
    return ckpt


def model_from_checkpoint(ckpt: dict[str, Any], device: torch.device | str = "cpu") -> torch.nn.Module:
    """Rebuild the model a checkpoint was trained with and load its weights (eval mode, on ``device``)."""
    cfg = ckpt["config"]
    model = build_model(cfg["model"], image_size=cfg["image_size"], encoder=cfg.get("encoder", "resnet34"),
                        encoder_weights=None, fused_attention=cfg.get("fused_attention", True))  # fmt: skip
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        raise RunError(f"checkpoint weights do not fit model {cfg['model']!r}: {str(exc)[:300]}") from exc
    return model.to(device).eval()


def split_ids(ckpt: dict[str, Any]) -> dict[str, list[int]]:
    """The volume ids a checkpoint was trained and validated on (``{"train": [...], "val": [...]}``; empty if unrecorded)."""
    rec = ckpt.get("split") or {}
    return {k: [int(i) for i in rec.get(k, [])] for k in ("train", "val", "test")}


def check_not_trained_on(ckpt: dict[str, Any], test_ids: list[int], source: str | Path) -> None:
    """Refuse to score a checkpoint on volumes it was trained or validated on (test-set leakage).

    Raises:
        RunError: the checkpoint records no split (cannot be checked), or its train/val volumes meet ``test_ids``.
    """
    rec = ckpt.get("split")
    if not rec:
        raise RunError(f"{source}: the checkpoint records no training split, so it cannot be shown not to have "
                       "trained on the test volumes; retrain it with this liverlib")  # fmt: skip
    ids = split_ids(ckpt)
    leak = sorted(set(ids["train"] + ids["val"]) & {int(i) for i in test_ids})
    if leak:
        raise RunError(f"{source}: trained or validated on test volume(s) {leak}: the split changed since it was "
                       "trained; retrain (rerun notebook 03 with overwrite: true) before evaluating")  # fmt: skip
