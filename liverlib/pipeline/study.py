"""The study runner: executes the numbered notebooks in order through papermill (docs/study.md §1–9).

It is the one mechanism for variants: ablation arms (``outputs/<run>/ablation/<arm>/``, made before
notebook 05 by notebooks 02–04) and cross-validation folds (``outputs/<run>/folds/<k>/``, each a whole
study) are run folders made by the same notebooks, resumable and guarded like any run. No notebook
starts another.

``python -m liverlib study -f params/base.yaml -f params/smoke.yaml`` runs 01 → 06 into
``outputs/<run_name>/notebooks/``; it stops at the first failing notebook, naming the cell error and
the partial executed notebook, and ``--start 03`` resumes from a stage (each stage reads only the
files earlier stages wrote). A notebook is executed into ``notebooks/failed/`` and moved beside the
others only when it succeeded, so a refused, failed or interrupted rerun never replaces the executed
notebook of the last good run.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from liverlib import paper
from liverlib.errors import RunError
from liverlib.files import read_json, write_json, write_text
from liverlib.locks import holds, run_lock
from liverlib.params import RUN_KEYS, STAGE_KEYS, ParamError, Params, load_profiles, project_root, resolve
from liverlib.pipeline.continuation import continued_values, runs_first
from liverlib.progress import ENV as PROGRESS_ENV
from liverlib.progress import RUNNER
from liverlib.run import RunDir

THREADS_ENV = "OMP_NUM_THREADS"
"""Read by torch when a kernel imports it: the intra-op threads of a kernel started for a parallel arm."""

KERNEL_ARGUMENTS = ["--IPKernelApp.log_level=CRITICAL"]
"""Arguments of every kernel the runner starts. ipykernel >= 7.3 logs "Kernel is running over TCP without encryption"
(WARNING) at every start and "KeyboardInterrupt caught in kernel" (ERROR) when jupyter_client interrupts it at shutdown,
on the kernel's stderr, which is the runner's console; a cell's error still reaches the runner through the notebook."""


class _QuietParameters(logging.Filter):
    """Drop papermill's "Passed unknown parameter" warnings: notebook 01 receives the whole validated parameter
    set (liverlib checks unknown keys itself) while its cell names only the common ones."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Passed unknown parameter" not in record.getMessage()


logging.getLogger("papermill").addFilter(_QuietParameters())


class _QuietInterruptedClient(logging.Filter):
    """Drop asyncio's "Task exception was never retrieved" (with its traceback) that jupyter_client's pending tasks
    leave when a kernel is interrupted or killed under Ctrl-C or SIGTERM: the runner has already printed the one
    line that says what happened and how to resume."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "exception was never retrieved" not in record.getMessage()


logging.getLogger("asyncio").addFilter(_QuietInterruptedClient())


def notebooks(root: Path | None = None) -> list[Path]:
    """The study's notebooks in order (``notebooks/NN_*.ipynb``)."""
    nb_dir = (root or project_root()) / "notebooks"
    found = sorted(nb_dir.glob("[0-9][0-9]_*.ipynb"))
    if not found:
        raise FileNotFoundError(f"{nb_dir}: no numbered notebooks found; run from a liverlib checkout")
    return found


def study_parameters(profiles: list[str], overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Merge profiles and overrides, validated (an unknown key is an error, not papermill's warning)."""
    values = load_profiles(*profiles)
    values.update(overrides or {})  # a null override is checked like any value ("needs a value"), never dropped
    values["profiles"] = []  # the runner merged the profiles itself; notebook 01 must not layer its default ones
    resolve(_source="profiles and overrides", **values)  # full validation, including cross-field checks
    return values


def run_study(profiles: list[str], *, overrides: dict[str, Any] | None = None, start: str | None = None,
              only: list[str] | None = None, all_folds: bool = True) -> Path:  # fmt: skip
    """Execute the notebooks in order with papermill; return the run folder.

    Args:
        profiles: YAML files merged in order.
        overrides: values that win over the profiles (e.g. ``data_dir``, ``run_name``).
        start: a notebook number ("03") or name prefix to restart from.
        only: notebook numbers to run (default: all from ``start``).
        all_folds: with ``folds > 0``, run every fold (``<run_name>/folds/<k>/``) and pool them
            (:func:`run_folds`); False runs the one ``fold`` given.

    Raises:
        SystemExit: at the first failing notebook, after printing its error and partial output path.
    """
    values = study_parameters(profiles, overrides)
    # continuing a run (01 not chosen): its recorded settings, so the --set values of its notebook 01 need no retyping
    values = continued_values(values, overrides or {}, runs_curation=runs_first(notebooks()[0].name, start, only))
    p = resolve(**values)
    from liverlib.pipeline.ablation import arms_to_run

    arms = arms_to_run(p)  # an unknown arm is refused before anything runs
    if p.folds and all_folds:
        return run_folds(profiles, overrides=overrides, start=start, only=only)
    run = RunDir.from_params(p)
    if not holds(run.root):  # one writer per run folder (liverlib.locks): take its lock, run under it
        with run_lock(run.root):
            return run_study(profiles, overrides=overrides, start=start, only=only, all_folds=False)
    warn_gpu_sized_job(p)
    out_dir = run.root / "notebooks"
    out_dir.mkdir(parents=True, exist_ok=True)
    nbs = notebooks()
    if start:
        names = [nb.name for nb in nbs]
        if not any(n.startswith(start) for n in names):
            raise ParamError(f"--start {start!r}: no notebook of {names} starts with it")
        nbs = nbs[next(i for i, n in enumerate(names) if n.startswith(start)) :]
    if only:
        unknown = [o for o in only if not any(nb.name.startswith(o) for nb in nbs)]
        if unknown:
            raise ParamError(f"--only {' '.join(unknown)}: no notebook of {[nb.name for nb in nbs]} starts with it")
        nbs = [nb for nb in nbs if any(nb.name.startswith(o) for o in only)]
    timing_path = run.root / "study.json"
    timings = read_json(timing_path)["notebooks"] if timing_path.is_file() else {}
    print(f"liverlib study: run {p.run_name!r} -> {run.root}", flush=True)
    for i, nb in enumerate(nbs, 1):
        print(f"[{i}/{len(nbs)}] {nb.name}", flush=True)
        t0 = time.perf_counter()
        if nb.name.startswith("05") and arms:
            run_arms(p, arms)
        execute_notebook(nb, out_dir, values)
        seconds = time.perf_counter() - t0
        timings[nb.name] = round(seconds, 1)
        write_json(timing_path, {"profiles": profiles, "parameters": values, "notebooks": timings,
                                 "total_seconds": round(sum(timings.values()), 1)})  # fmt: skip
        print(f"      done in {seconds:.1f} s", flush=True)
    print(f"liverlib study: finished; outputs in {run.root}", flush=True)
    return run.root


def warn_gpu_sized_job(p: Params) -> None:
    """Say at the start when a GPU-sized run (the paper or full_lits profile) will train on the CPU, and for how long:
    from the run's own training split once it is curated (``manifest.csv``), else estimated from the profile."""
    import pandas as pd
    import torch

    from liverlib.training.loop import cpu_hours

    if p.device in ("auto", "cpu") and not torch.cuda.is_available():
        manifest = RunDir.from_params(p).manifest
        if manifest.is_file():  # a run that is curated already: its real training split
            slices = float((pd.read_csv(manifest, usecols=["split"]).split == "train").sum())
        elif p.data_dir == "phantom":  # about half of a phantom case's slices hold liver; 80 % of the volumes train
            slices = 0.8 * max(1, p.n_volumes or p.phantom_cases) * sum(p.phantom_slices) / 4
        else:  # the paper: 1,350 training slices per 11 volumes
            slices = paper.SPLITS["train"][1] * max(1, p.n_volumes or 131) / sum(v for v, _ in paper.SPLITS.values())
        hours = cpu_hours(p.image_size, slices, p.epochs)
        if hours > 1:
            print(f"liverlib study: note: no CUDA device; {p.epochs} epochs at {p.image_size}² will train on the CPU "
                  f"for about {hours:,.0f} h (≈ {hours / 24:.1f} days; derived from docs/benchmarks.md). The smoke "
                  "profile runs the whole study in minutes: -f params/base.yaml -f params/smoke.yaml", flush=True)  # fmt: skip


def run_arms(p: Params, arms: list[str]) -> None:
    """Make each ablation arm's run folder with notebooks 02–04 (stage 05's variants; finished stages are reused).

    With ``cpu_parallel_trainings: N`` on the CPU, N arms run at once, each kernel with ``cores // N`` threads
    (:func:`liverlib.runtime.parallel_trainings`); a failing arm lets the others finish, then the runner stops.
    """
    from concurrent.futures import ThreadPoolExecutor

    from liverlib.pipeline.ablation import arm_params, prepare_arm
    from liverlib.runtime import parallel_trainings

    stages = [nb for nb in notebooks() if nb.name[:2] in ("02", "03", "04")]
    at_once, threads = parallel_trainings(p.device, p.cpu_parallel_trainings, len(arms))

    def one(k: int, arm: str) -> None:
        with run_lock(Path(arm_params(p, arm)["output_root"]) / arm):  # the arm's folder: one writer (liverlib.locks)
            values, root = prepare_arm(p, arm)
            print(f"      ablation arm {k}/{len(arms)} {arm!r} -> {root}", flush=True)
            for nb in stages:
                execute_notebook(nb, root / "notebooks", values)

    if at_once == 1:
        for k, arm in enumerate(arms, 1):
            one(k, arm)
        return
    print(f"      {len(arms)} arms, {at_once} at a time with {threads} CPU thread(s) each", flush=True)
    saved = {key: os.environ.get(key) for key in (PROGRESS_ENV, THREADS_ENV)}
    # set once for every kernel of the pool (execute_notebook restores the value it found, so threads cannot race)
    os.environ.update({PROGRESS_ENV: RUNNER, THREADS_ENV: str(threads)})
    try:
        with ThreadPoolExecutor(max_workers=at_once) as pool:
            futures = [pool.submit(one, k, arm) for k, arm in enumerate(arms, 1)]
            errors = [f.exception() for f in futures]  # waits for every arm
        for exc in errors:
            if exc is not None:
                raise exc
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def injected(nb: Path, values: dict[str, Any]) -> dict[str, Any]:
    """What papermill injects into ``nb``: everything for notebook 01 (it records the run's parameters); for
    notebooks 02–06 only the run (``run_name``, ``output_root``, ``overwrite``) and what the stage may change
    (:data:`liverlib.params.STAGE_KEYS`): they read every other setting from the run's ``params.json``."""
    stage = nb.name[:2]
    if stage not in STAGE_KEYS:
        return dict(values)
    return {k: values[k] for k in (*RUN_KEYS, *STAGE_KEYS[stage]) if k in values}


def execute_notebook(nb: Path, out_dir: Path, values: dict[str, Any]) -> Path:
    """Run one notebook with papermill into ``out_dir/failed/``; move it to ``out_dir`` only if it succeeded, then
    render it to HTML (``<run>/html/<stem>.html``, beside ``out_dir``).

    The kernel runs with ``LIVERLIB_PROGRESS=runner`` (:mod:`liverlib.progress`): no per-batch progress in the
    executed notebook, one line per loop on this console; widget state is not stored in the notebook.

    Raises:
        SystemExit: (1) a cell failed or the kernel died — the message names the notebook, the cell and the
            partial notebook (left in ``failed/``); the last good executed notebook is kept.
        KeyboardInterrupt: Ctrl-C, with a message naming the partial notebook and how to resume.
    """
    import papermill as pm
    from nbclient.exceptions import DeadKernelError

    partial, out = out_dir / "failed" / nb.name, out_dir / nb.name
    partial.parent.mkdir(parents=True, exist_ok=True)
    before = os.environ.get(PROGRESS_ENV)
    os.environ[PROGRESS_ENV] = RUNNER  # the kernel inherits the runner's environment
    try:
        pm.execute_notebook(str(nb), str(partial), parameters=injected(nb, values), kernel_name="python3",
                            cwd=str(nb.parent), progress_bar=sys.stderr.isatty(), report_mode=False,
                            extra_arguments=KERNEL_ARGUMENTS, store_widget_state=False)  # fmt: skip
    except pm.PapermillExecutionError as exc:
        print(f"\nFAILED in {nb.name}, cell {exc.exec_count}: {exc.ename}: {' '.join(str(exc.evalue).split())}",
              file=sys.stderr)  # fmt: skip
        print(
            f"the partial executed notebook is {partial}; the last good one (if any) is kept at {out}", file=sys.stderr
        )
        raise SystemExit(1) from None
    except DeadKernelError as exc:
        print(f"\nFAILED in {nb.name}: the kernel died ({' '.join(str(exc).split())[:200]}; out of memory?)",
              file=sys.stderr)  # fmt: skip
        print(
            f"the partial executed notebook is {partial}; the last good one (if any) is kept at {out}", file=sys.stderr
        )
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        raise KeyboardInterrupt(f"interrupted in {nb.name} (partial notebook {partial}); rerun the same command to "
                                "resume: finished stages and epochs are reused") from None  # fmt: skip
    finally:
        if before is None:
            os.environ.pop(PROGRESS_ENV, None)
        else:
            os.environ[PROGRESS_ENV] = before
    os.replace(partial, out)
    render_html(out, out_dir.parent / "html" / f"{nb.stem}.html")
    return out


def render_html(executed: Path, html: Path) -> Path | None:
    """The executed notebook as one self-contained HTML page (figures embedded), for reading without Jupyter.

    A failure to render is reported and skipped: the run's results are in its files whatever the HTML.
    """
    import nbformat
    from nbconvert import HTMLExporter

    try:
        body, _ = HTMLExporter().from_notebook_node(nbformat.read(executed, as_version=4))
        html.parent.mkdir(parents=True, exist_ok=True)
        return write_text(html, body)
    except Exception as exc:  # nbconvert's templates and filters raise many kinds
        print(f"      note: {executed.name} was not rendered to HTML ({type(exc).__name__}: {exc})", file=sys.stderr)
        return None


def fold_overrides(p: Params, fold: int, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The overrides that make fold ``fold`` of the cross-validated run ``p`` a run of its own,
    ``<output_root>/<run_name>/folds/<fold>/``.

    Raises:
        ParamError: the run has no folds (``folds: 0``), or ``fold`` is not one of ``0 … folds − 1``.
    """
    if not p.folds:
        raise ParamError(f"--fold {fold}: run {p.run_name!r} has folds: 0 (no cross-validation); set folds: k "
                         "(e.g. params/full_lits.yaml) or leave --fold out")  # fmt: skip
    if not 0 <= fold < p.folds:
        raise ParamError(f"--fold {fold}: run {p.run_name!r} has folds 0 … {p.folds - 1} (folds: {p.folds})")
    return {**(overrides or {}), "fold": fold, "run_name": str(fold),
            "output_root": str(RunDir.from_params(p).root / "folds")}  # fmt: skip


def run_fold(profiles: list[str], fold: int, *, overrides: dict[str, Any] | None = None, start: str | None = None,
             only: list[str] | None = None) -> Path:  # fmt: skip
    """One fold of a cross-validated run, alone (``liverlib study … --fold K``): the whole study into
    ``<run_name>/folds/<fold>/``, resumable and guarded like any run; ``liverlib pool`` gathers the folds.

    Raises:
        ParamError: no folds, or ``fold`` out of range (:func:`fold_overrides`).
    """
    p = resolve(**study_parameters(profiles, overrides))
    return run_study(profiles, overrides=fold_overrides(p, fold, overrides), start=start, only=only, all_folds=False)


def run_arm(profiles: list[str], arm: str, *, overrides: dict[str, Any] | None = None, fold: int | None = None) -> Path:
    """One ablation arm, alone (``liverlib study … --arm NAME [--fold K]``): notebooks 02–04 into
    ``<run>/ablation/<arm>/`` (of fold ``fold`` with folds), resumable and guarded like any run. The run's curation
    (notebook 01) must be there; notebook 05 of the run, or ``liverlib pool``, reads the arm back into Table 4.

    Returns:
        The arm's run folder.

    Raises:
        ParamError: an arm that is not in ``ablation_arms``, or that repeats the main run; a cross-validated run
            without ``fold``. RunError: the run's curation is missing; another process writes the arm's folder.
    """
    from liverlib.pipeline.ablation import CURATION_FILES, arms_to_run

    p = resolve(**study_parameters(profiles, overrides))
    if p.folds and fold is None:
        raise ParamError(f"--arm {arm}: run {p.run_name!r} is cross-validated (folds: {p.folds}): give the fold too "
                         "(--fold K --arm NAME); each fold has its own arms")  # fmt: skip
    if fold is not None:
        overrides = fold_overrides(p, fold, overrides)
        p = resolve(**study_parameters(profiles, overrides))
    if arm not in p.ablation_arms:
        raise ParamError(f"--arm {arm}: not one of this run's ablation_arms {p.ablation_arms}; add it to them "
                         "(--set ablation_arms=[...]) first")  # fmt: skip
    if arm not in arms_to_run(p):
        raise ParamError(f"--arm {arm}: this arm repeats the main run (same preprocessing, epochs and model): its "
                         "results are the main run's; run the study itself")  # fmt: skip
    main = RunDir.from_params(p)
    for name in CURATION_FILES[:3]:
        if not (main.root / name).is_file():
            raise RunError(f"{main.root / name}: missing; run notebook 01 of the run first (liverlib study … "
                           f"{'--fold ' + str(fold) + ' ' if fold is not None else ''}--only 01), then its arms")  # fmt: skip
    warn_gpu_sized_job(p)
    run_arms(p, [arm])
    return main.root / "ablation" / arm


def run_folds(profiles: list[str], *, overrides: dict[str, Any] | None = None, start: str | None = None,
              only: list[str] | None = None) -> Path:  # fmt: skip
    """Cross-validation: run the study once per fold into ``<run_name>/folds/<k>/`` and pool per-volume metrics.

    The same as ``liverlib study … --fold K`` for every K, then ``liverlib pool`` (:func:`run_fold`,
    :func:`liverlib.pipeline.pool.pool_folds`): ``<output_root>/<run_name>/cv_per_volume.csv`` (every test volume of every
    fold, each exactly once), ``cv_summary.json`` (Dice per case and global Dice over all folds' test volumes) and
    Table 4 pooled over the folds (``tables/table04_ablation_cv``).

    Raises:
        RunError: a volume was tested in two folds, or a selected volume in none; folds made with other parameters.
    """
    from liverlib.pipeline.pool import pool_folds

    p = resolve(**study_parameters(profiles, overrides))
    out = RunDir.from_params(p)
    for fold in range(p.folds):
        print(f"cross-validation: fold {fold + 1}/{p.folds}", flush=True)
        run_fold(profiles, fold, overrides=overrides, start=start, only=only)
    with run_lock(out.root):
        pool_folds(out.root, required=False)
    return out.root
