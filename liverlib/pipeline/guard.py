"""The stages' rerun guard, one for all six stages: each stage records the parameters it ran with in
``<run>/stages/<stage>.json`` once its outputs exist; a rerun with the same values reuses or resumes, a rerun with
other values is refused unless ``overwrite: true``, so nothing already written is silently replaced.

What each stage compares: :data:`liverlib.params.GUARD_KEYS`; how: :func:`liverlib.params.changed_keys` (also the
rule of a checkpoint's resume, :func:`liverlib.training.state.resume`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from liverlib.errors import RunError
from liverlib.files import json_ready, write_json
from liverlib.params import DEFAULTS, changed_keys
from liverlib.run import RunDir


def record_path(run: RunDir, stage: str) -> Path:
    """``stages/<stage>.json``: the stage's record, its commit point."""
    return run.root / "stages" / f"{stage}.json"


def guard(run: RunDir, stage: str, values: dict[str, Any], *, overwrite: bool = False, record: bool = True,
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
    path = record_path(run, stage)
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
                f"{run.root}: stage '{stage}' already ran here with other parameters ({', '.join(changed)}); "
                "use another run_name, or set overwrite: true to replace its outputs"
            )
    if record:
        record_stage(run, stage, values)
    return False


def withdraw(run: RunDir, stage: str) -> None:
    """Delete the stage's record before a rerun of ``stage`` starts replacing its outputs: the record is the
    stage's commit point, so a rerun that is killed or fails leaves no record beside partial outputs."""
    record_path(run, stage).unlink(missing_ok=True)


def record_stage(run: RunDir, stage: str, values: dict[str, Any]) -> None:
    """Write the stage's record (call after the stage's outputs are written)."""
    write_json(record_path(run, stage), json_ready(values))
