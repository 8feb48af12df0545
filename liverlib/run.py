"""The run folder ``outputs/<run_name>/``: its paths and the stage guards (files: :mod:`liverlib.files`).

Stages talk only through files here (nnU-Net style). Each stage records the parameters it was run
with in ``stages/<stage>.json``; a rerun with the same values reuses or resumes, a rerun with other
values is refused unless ``overwrite: true`` — so nothing already written is silently replaced.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from liverlib.errors import RunError
from liverlib.files import json_ready, read_json, write_json
from liverlib.params import DEFAULTS, ParamError, Params, changed_keys, resolve_path


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
        if path.is_file():
            before, current = json.loads(path.read_text(encoding="utf-8")), values
            if resolved is not None:
                # a key added to liverlib since that run counts at its default (changed_keys), here before resolving
                before = resolved({**{k: DEFAULTS.get(k) for k in current}, **before})
                current = resolved(dict(current))
            changed = changed_keys(before, current)  # a key the stage no longer guards is not compared
            if not changed:
                return True
            if not overwrite:
                raise RunError(
                    f"{self.root}: stage '{stage}' already ran here with other parameters ({', '.join(changed)}); "
                    "use another run_name, or set overwrite: true to replace its outputs"
                )
        if record:
            self.record(stage, values)
        return False

    def withdraw(self, stage: str) -> None:
        """Delete ``stages/<stage>.json`` before a rerun of ``stage`` starts replacing its outputs: the record is the
        stage's commit point, so a rerun that is killed or fails leaves no record beside partial outputs."""
        (self.root / "stages" / f"{stage}.json").unlink(missing_ok=True)

    def record(self, stage: str, values: dict[str, Any]) -> None:
        """Write ``stages/<stage>.json`` (call after the stage's outputs are written)."""
        write_json(self.root / "stages" / f"{stage}.json", json_ready(values))
