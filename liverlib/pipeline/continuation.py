"""Continuing a run (``study --start 03`` or ``--only 03 04`` on a run whose notebook 01 ran): the runner works with the
run's recorded settings (``<run>/params.json``), not with what the profiles say today, so a user need not retype the
``--set`` values notebook 01 was run with. Only what the user sets now is compared with the record.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from liverlib.params import (
    DEFAULTS,
    RUN_KEYS,
    STAGE_KEYS,
    ParamError,
    changed_keys,
    read_run_parameters,
    resolve_path,
    validate,
)

MAY_CHANGE: frozenset[str] = frozenset(RUN_KEYS) | {k for keys in STAGE_KEYS.values() for k in keys}
"""What a continued run takes from the command rather than the record: which run, and how stages 02–06 run here."""


def runs_first(first: str, start: str | None, only: Iterable[str] | None) -> bool:
    """Whether the notebooks chosen by ``start`` and ``only`` include ``first`` (the name of notebook 01), with the
    runner's prefix matching (:func:`liverlib.pipeline.study.run_study`)."""
    if start and not first.startswith(start):
        return False
    return only is None or any(first.startswith(o) for o in only)


def continued_values(values: dict[str, Any], explicit: Mapping[str, Any], *, runs_curation: bool) -> dict[str, Any]:
    """The runner's values for a run it continues: the run's recorded parameters, with :data:`MAY_CHANGE` from ``values``.

    Args:
        values: the merged profiles and overrides (:func:`~liverlib.pipeline.study.study_parameters`).
        explicit: what the user set on this command (``--set``, ``--data-dir``); each must equal the recorded value.
        runs_curation: notebook 01 is among the notebooks to run; then it records ``values`` itself (its guard
            refuses other curation parameters) and they are returned unchanged, as they are for a new run.

    Raises:
        ParamError: an explicit value differs from the run's, naming both values and ``params.json``; a damaged
            ``params.json`` (:func:`~liverlib.params.read_run_parameters`).
    """
    run_name = str(values.get("run_name", DEFAULTS["run_name"]))
    path = resolve_path(values.get("output_root", DEFAULTS["output_root"])) / run_name / "params.json"
    if runs_curation or not path.is_file():
        return values
    recorded = read_run_parameters(path, run_name)
    now = validate({k: v for k, v in explicit.items() if k not in MAY_CHANGE}, "--set")
    differ = [f"{k}={now[k]!r} (the run has {recorded.get(k, DEFAULTS[k])!r})" for k in changed_keys(recorded, now)]
    if differ:
        raise ParamError(f"{path}: run {run_name!r} was made with other settings than {', '.join(differ)}; leave them "
                         "out to continue it, or rerun notebook 01 with them (overwrite: true) or use another run_name")  # fmt: skip
    return {**recorded, **{k: v for k, v in values.items() if k in MAY_CHANGE}, "profiles": []}
