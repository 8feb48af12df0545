"""The run folder ``outputs/<run_name>/``: its paths (files: :mod:`liverlib.files`).

Stages talk only through files here (nnU-Net style); the stages' guard, which records each stage's parameters in
``stages/<stage>.json``, is the pipeline's (:mod:`liverlib.pipeline.guard`).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

from liverlib.errors import RunError
from liverlib.files import read_json
from liverlib.params import ParamError, Params, resolve_path


def cache_root(p: Params) -> Path:
    """Where preprocessed caches live: ``cache_dir`` or ``<output_root>/cache`` (shared by runs and ablation arms)."""
    return resolve_path(p.cache_dir) if p.cache_dir else resolve_path(p.output_root) / "cache"


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
            # one probe per process and thread: parallel arms and folds check the same folder at once
            probe = root / f".liverlib-write-test-{os.getpid()}-{threading.get_ident()}"
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
