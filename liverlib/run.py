"""The run folder ``outputs/<run_name>/``: paths, atomic writes, stage guards and provenance.

Stages talk only through files here (nnU-Net style). Each stage records the parameters it was run
with in ``stages/<stage>.json``; a rerun with the same values reuses or resumes, a rerun with other
values is refused unless ``overwrite: true`` — so nothing already written is silently replaced.
"""

from __future__ import annotations

import json
import os
import platform
import random
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from liverlib.io import atomic_write
from liverlib.params import DEFAULTS, ParamError, Params, resolve_path


class RunError(RuntimeError):
    """A stage cannot run: missing inputs from an earlier stage, or a conflicting earlier run."""


def write_text(path: str | Path, text: str) -> Path:
    """Write text atomically (temp file + rename)."""
    with atomic_write(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | Path, data: Any) -> Path:
    """Write JSON atomically (NaN written as null)."""
    return write_text(path, json.dumps(_clean(data), indent=2, sort_keys=False) + "\n")


def read_json(path: str | Path) -> Any:
    """Read JSON written by :func:`write_json`, naming the file if it is missing."""
    path = Path(path)
    if not path.is_file():
        raise RunError(f"{path}: missing; run the stage that writes it first")
    return json.loads(path.read_text(encoding="utf-8"))


def write_table(df: pd.DataFrame, path: str | Path, *, markdown: bool = True, floatfmt: str = ".4f") -> Path:
    """Write a table as CSV (and Markdown beside it, "–" for an undefined value), atomically."""
    path = Path(path)
    write_text(path.with_suffix(".csv"), df.to_csv(index=False))
    if markdown:
        shown = df.astype(object).where(df.notna(), None)
        write_text(path.with_suffix(".md"), shown.to_markdown(index=False, floatfmt=floatfmt, missingval="–") + "\n")
    return path.with_suffix(".csv")


def _clean(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        return None if not np.isfinite(obj) else float(obj)
    if isinstance(obj, np.ndarray):
        return _clean(obj.tolist())
    if isinstance(obj, Path):
        return str(obj)
    return obj


def cache_root(p: Params) -> Path:
    """Where preprocessed caches live: ``cache_dir`` or ``<output_root>/cache`` (shared by runs and ablation arms)."""
    return resolve_path(p.cache_dir) if p.cache_dir else resolve_path(p.output_root) / "cache"


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA)."""
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass(frozen=True)
class RunDir:
    """Paths of one run folder."""

    root: Path

    @classmethod
    def from_params(cls, p: Params) -> RunDir:
        """``<output_root>/<run_name>``, created if missing."""
        if not p.run_name or "/" in p.run_name or p.run_name.startswith("."):
            raise ParamError(f"run_name must be a plain folder name, got {p.run_name!r}")
        root = resolve_path(p.output_root) / p.run_name
        try:
            root.mkdir(parents=True, exist_ok=True)
            probe = root / ".liverlib-write-test"
            probe.touch()
            probe.unlink()
        except OSError as exc:
            raise ParamError(f"{root}: cannot create or write the run folder ({exc.strerror or exc}); "
                             "check output_root and run_name") from None  # fmt: skip
        return cls(root)

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.csv"

    @property
    def volumes(self) -> Path:
        return self.root / "volumes.csv"

    @property
    def splits(self) -> Path:
        return self.root / "splits.json"

    @property
    def figures(self) -> Path:
        return self.root / "figures"

    @property
    def tables(self) -> Path:
        return self.root / "tables"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    def figure(self, name: str) -> Path:
        """``figures/<name>.png``."""
        return self.figures / f"{name}.png"

    def table(self, name: str) -> Path:
        """``tables/<name>.csv`` (Markdown beside it)."""
        return self.tables / f"{name}.csv"

    def split_ids(self) -> dict[str, list[int]]:
        """Volume ids per split from ``splits.json`` (``{"train": [...], "val": [...], "test": [...]}``, sorted)."""
        splits = read_json(self.splits)["splits"]
        return {k: sorted(int(i) for i in splits.get(k, [])) for k in ("train", "val", "test")}

    def require(self, *names: str) -> None:
        """Raise a clear error when an earlier stage's file is missing."""
        for name in names:
            if not (self.root / name).exists():
                raise RunError(f"{self.root / name}: missing; run the earlier notebook of this run first")

    def guard(self, stage: str, values: dict[str, Any], *, overwrite: bool = False, record: bool = True,
              resolved: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> bool:  # fmt: skip
        """Record the parameters of ``stage``; refuse if an earlier run used others.

        Args:
            resolved: maps recorded and current values alike to what they mean on this machine before they are
                compared (curation: ``data_dir: auto`` and ``phantom`` both name the phantom where no Kaggle mount
                is attached); the raw values are what is recorded.

        Returns:
            True if the stage ran before with the same values (its files may be reused).

        Raises:
            RunError: the stage ran before with other values and ``overwrite`` is False.
        """
        path = self.root / "stages" / f"{stage}.json"
        current = _clean(values)
        if path.is_file():
            before = json.loads(path.read_text(encoding="utf-8"))
            # a key added to liverlib since that run counts as unchanged while it has its default value
            before = {**{k: v for k, v in _clean(DEFAULTS).items() if k in current and k not in before}, **before}
            # a key the stage no longer guards (e.g. eval_batch_size: how, not what, it scores) is not compared
            before = {k: v for k, v in before.items() if k in current}
            if resolved is not None:
                before, current = _clean(resolved(before)), _clean(resolved(current))
            if before == current:
                return True
            changed = sorted(k for k in set(before) | set(current) if before.get(k) != current.get(k))
            if not overwrite:
                raise RunError(
                    f"{self.root}: stage '{stage}' already ran here with other parameters ({', '.join(changed)}); "
                    "use another run_name, or set overwrite: true to replace its outputs"
                )
        if record:
            self.record(stage, values)
        return False

    def record(self, stage: str, values: dict[str, Any]) -> None:
        """Write ``stages/<stage>.json`` (call after the stage's outputs are written)."""
        write_json(self.root / "stages" / f"{stage}.json", _clean(values))


def provenance() -> dict[str, Any]:
    """Package versions, machine, CPU model, device with its CUDA runtime and driver, and git commit.

    Never raises and never touches the network; on CPU the CUDA fields are None. ``cuda_driver`` comes
    from ``nvidia-smi`` when it is on PATH (one call, 10 s at most), else None.
    """
    import shutil

    import torch

    versions = {}
    for pkg in ("torch", "torchvision", "segmentation-models-pytorch", "albumentations", "opencv-python-headless",
                "nibabel", "numpy", "scipy", "pandas", "papermill", "SimpleITK", "pydicom", "monai",
                "jupyterlab", "ipykernel"):  # fmt: skip
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                                cwd=Path(__file__).parent).stdout.strip() or None  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        commit = None
    cpu_model = platform.processor() or None
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            cpu_model = next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
    except (OSError, StopIteration, IndexError):
        pass
    cuda = {"cuda_runtime": None, "cuda_driver": None, "cudnn": None, "gpu_count": 0, "gpu_memory_gib": None,
            "gpu_capability": None}  # fmt: skip
    device = f"CPU ({os.cpu_count()} cores)"
    try:
        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            device = props.name
            cuda.update(cuda_runtime=torch.version.cuda, cudnn=torch.backends.cudnn.version(),
                        gpu_count=torch.cuda.device_count(), gpu_memory_gib=round(props.total_memory / 2**30, 1),
                        gpu_capability=f"{props.major}.{props.minor}")  # fmt: skip
            if smi := shutil.which("nvidia-smi"):
                out = subprocess.run([smi, "--query-gpu=driver_version", "--format=csv,noheader"],
                                     capture_output=True, text=True, timeout=10).stdout.split()  # fmt: skip
                cuda["cuda_driver"] = out[0] if out else None
    except Exception:  # provenance must never fail a run; what was found so far is kept
        pass
    return {
        "versions": versions,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_model": cpu_model,
        "device": device,
        **cuda,
        "git_commit": commit,
    }
