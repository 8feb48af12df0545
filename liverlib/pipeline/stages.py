"""One function per notebook stage: each reads the run folder's files, writes its own, returns what to show.

Notebooks stay thin: a parameters cell, ``P = liverlib.stage_params("NN", globals())`` (notebook 01:
``liverlib.resolve_params(globals())``, which records the run's parameters) and a few calls here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from liverlib.data.cache import build_cache, cache_dir_for
from liverlib.data.curation import curate, resolve_data_dir, table3
from liverlib.data.nifti import load_case
from liverlib.data.preprocess import PreprocessConfig, preprocess_slice
from liverlib.errors import RunError
from liverlib.files import read_json, write_json, write_table
from liverlib.locks import build_lock
from liverlib.params import GUARD_KEYS, TRAIN_KEYS, Params
from liverlib.pipeline.guard import guard, record_path, record_stage, withdraw
from liverlib.report.report import FIGURES, TABLES
from liverlib.run import RunDir, cache_root


def example_slice(run: RunDir, split: str = "train") -> pd.Series:
    """The manifest row with the most tumor pixels in ``split`` (figures' example slice)."""
    m = pd.read_csv(run.manifest)
    m = m[m.split == split] if (m.split == split).any() else m
    return m.sort_values(["tumor_px", "liver_px", "volume_id"], ascending=[False, False, True]).iloc[0]


def run_curation(p: Params, *, progress: bool = True) -> dict[str, Any]:
    """Notebook 01: curation → ``volumes.csv``, ``manifest.csv``, ``splits.json``, Table 3, Fig. 2."""

    run = RunDir.from_params(p)
    same = guard(run, "01_curation", p.subset(GUARD_KEYS["01"]), overwrite=p.overwrite, record=False,
                     resolved=lambda v: {**v, "data_dir": resolve_data_dir(v.get("data_dir"))})  # fmt: skip
    if same and run.manifest.is_file() and run.volumes.is_file() and run.splits.is_file():
        volumes, manifest = pd.read_csv(run.volumes, keep_default_na=False), pd.read_csv(run.manifest)
        splits = read_json(run.splits)["splits"]
    else:
        res = curate(p, progress=progress)
        volumes, manifest, splits = res["volumes"], res["manifest"], res["splits"]
        write_table(volumes, run.volumes, markdown=False)
        write_table(manifest, run.manifest, markdown=False)
        write_json(run.splits, {"seed": p.seed, "folds": p.folds, "fold": p.fold, "data_dir": str(res["data_dir"]),
                                "splits": splits})  # fmt: skip
        record_stage(run, "01_curation", p.subset(GUARD_KEYS["01"]))  # only once the outputs exist
    write_json(run.root / "params.json", {"parameters": dict(p)})  # the run's resolved parameters (later stages)
    t3 = table3(manifest)
    write_table(t3, run.table(TABLES["table03"]))
    render_fig02(run)
    return {"run": run, "volumes": volumes, "manifest": manifest, "splits": splits, "table03": t3,
            "fig02": run.figure(FIGURES["fig02"])}  # fmt: skip


def render_fig02(run: RunDir) -> Path:
    """Fig. 2 (CT, combined mask, liver, tumor) for the training slice with the most tumor (reads one NIfTI)."""
    from liverlib.report import drawing, figures

    row = example_slice(run)
    case = load_case(row.volume_path, row.mask_path)
    fig = figures.fig02_case_overview(case.image[int(row.slice_idx)], case.mask[int(row.slice_idx)],
                                      title=f"volume {int(row.volume_id)}, slice {int(row.slice_idx)}")  # fmt: skip
    return drawing.save_figure(fig, run.figure(FIGURES["fig02"]))


def render_fig03_04(run: RunDir, cfg: PreprocessConfig) -> dict[str, Any]:
    """Figs. 3–4 on the example slice; returns the stages and the liver−tumor contrast before/after."""
    from liverlib.labels import LABELS
    from liverlib.report import drawing, figures

    row = example_slice(run)
    case = load_case(row.volume_path, row.mask_path)
    hu, mask = case.image[int(row.slice_idx)], case.mask[int(row.slice_idx)]
    stages = preprocess_slice(hu, cfg, stages=True)
    drawing.save_figure(figures.fig03_pipeline(stages), run.figure(FIGURES["fig03"]))
    raw = stages["normalised"]
    enhanced = stages.get("gamma", stages.get("CLAHE", raw))
    drawing.save_figure(figures.fig04_histograms(raw, enhanced, mask), run.figure(FIGURES["fig04"]))
    liver, tumor = mask == LABELS["liver"], mask == LABELS["tumor"]
    out: dict[str, Any] = {
        "stages": stages,
        "example_slice": {"volume_id": int(row.volume_id), "slice_idx": int(row.slice_idx)},
    }
    if liver.any() and tumor.any():
        out["example_contrast"] = {
            "liver_minus_tumor_normalised": float(raw[liver].mean() - raw[tumor].mean()),
            "liver_minus_tumor_enhanced": float(enhanced[liver].mean() - enhanced[tumor].mean()),
        }
    return out


def selected_volumes(run: RunDir) -> pd.DataFrame:
    """Rows of ``volumes.csv`` that curation put in a split."""
    run.require("volumes.csv")
    v = pd.read_csv(run.volumes, keep_default_na=False)
    v = v[v.split != ""]
    if v.empty:
        raise RunError(f"{run.volumes}: no volume is in a split; rerun notebook 01")
    return v


def run_preprocessing(p: Params, cfg: PreprocessConfig | None = None, *, progress: bool = True,
                      figures_too: bool = True) -> dict[str, Any]:  # fmt: skip
    """Notebook 02: build (or reuse) the cache → ``preprocess.json``, Figs. 3–4."""

    run = RunDir.from_params(p)
    run.require("manifest.csv", "volumes.csv")
    cfg = cfg or PreprocessConfig.from_params(p)
    guard(run, "02_preprocessing", cfg.as_params(), overwrite=p.overwrite, record=False)
    volumes = selected_volumes(run)
    with build_lock(cache_dir_for(cache_root(p), cfg, volumes)):  # folds and arms in parallel build it once
        stats = build_cache(volumes, cfg, cache_root(p), progress=progress)
    manifest = pd.read_csv(run.manifest)
    out: dict[str, Any] = {"run": run, "stats": stats}
    if figures_too:
        example = render_fig03_04(run, cfg.with_stats(stats.get("normalization")))
        stats.update({k: v for k, v in example.items() if k != "stages"})
        out.update(stages=example["stages"], fig03=run.figure(FIGURES["fig03"]),
                   fig04=run.figure(FIGURES["fig04"]))  # fmt: skip
    stats["manifest_slices"] = {s: int((manifest.split == s).sum()) for s in ("train", "val", "test")}
    write_json(run.root / "preprocess.json", stats)
    record_stage(run, "02_preprocessing", cfg.as_params())
    return out


def run_training(p: Params, *, progress: bool = True) -> dict[str, Any]:
    """Notebook 03: train the model (and the smp baseline) → ``models/<name>/``, Tables 1, 2, 5, Figs. 6–7."""
    from liverlib.runtime import parallel_trainings
    from liverlib.training.loop import epoch_line, train

    run = _start_training(p)
    baseline = p.train_baseline and p.model != "unet_smp"
    at_once, threads = parallel_trainings(p.device, p.cpu_parallel_trainings, 2 if baseline else 1)
    if at_once > 1:  # the baseline trains in a second process while this one trains the model
        result = train_beside_baseline(p, threads, progress=progress)
    else:
        result = train(p, progress=progress)
    out: dict[str, Any] = {"run": run, "main": result}
    if baseline:  # after a parallel run this reads the finished baseline back from its last.pt
        epochs = p.baseline_epochs or p.epochs
        out["baseline"] = train(p, model_name="unet_smp", epochs=epochs, progress=progress)
        if at_once > 1 and progress:  # its epochs, as a sequential run would have shown them
            for row in out["baseline"]["history"].to_dict("records"):
                print(epoch_line("unet_smp", row, epochs), flush=True)
    out.update(record_training(run, p, result, out.get("baseline")))
    return out


def train_one(p: Params, model_name: str | None = None, *, progress: bool = True) -> dict[str, Any]:
    """``liverlib train`` (also under torchrun): one model, guarded as stage 03; after the run's own model (rank 0)
    it writes what notebook 03 writes (:func:`record_training`; ``baseline_best_epoch`` null: one model was trained
    here, notebook 03 adds the baseline's). ``--model unet_smp`` on another model's run trains the baseline only.

    Returns:
        :func:`liverlib.training.loop.train`'s result.
    """
    from liverlib.runtime import distributed_context
    from liverlib.training.loop import train

    rank = distributed_context()[0]  # the process group starts here (train joins it), so only rank 0 guards
    run = _start_training(p) if rank == 0 else RunDir.from_params(p)
    model_name = model_name or p.model
    result = train(p, model_name=model_name, progress=progress)
    if rank == 0 and model_name == p.model:
        record_training(run, p, result)
    return result


def _start_training(p: Params) -> RunDir:
    """Stage 03's guard; an interrupted training (no record yet) resumes from last.pt, which checks the same keys."""
    run = RunDir.from_params(p)
    guard(run, "03_training", p.subset(GUARD_KEYS["03"]), overwrite=p.overwrite, record=False)
    withdraw(run, "03_training")  # a rerun killed from here on leaves no old record beside new partial outputs
    return run


def record_training(run: RunDir, p: Params, result: dict[str, Any], baseline: dict[str, Any] | None = None
                    ) -> dict[str, Any]:  # fmt: skip
    """What stage 03 writes after a training: ``training.json``, Tables 1, 2, 5, Figs. 6–7, then its record.

    Args:
        result: the run's model's :func:`liverlib.training.loop.train` result.
        baseline: the smp baseline's, if it was trained by this call.

    Returns:
        ``parameters`` (the paper model's counts) and :func:`liverlib.report.report.render_training`'s tables and
        figures.
    """
    from liverlib.model.hybrid import HybridTransUNet, count_parameters
    from liverlib.report import report

    counts, hist = count_parameters(HybridTransUNet()), result["history"]
    settings_keys = (*TRAIN_KEYS, "data_dir", "device", "amp", "channels_last", "compile", "num_workers")
    write_json(run.root / "training.json", {
        "parameters": counts, "model": p.model, "best_epoch": result["best_epoch"], "device": result["device"],
        "amp": result["amp"], "epochs": int(hist.epoch.max()), "train_seconds": float(hist.epoch_seconds.sum()),
        "baseline_best_epoch": baseline["best_epoch"] if baseline else None,
        "trained_parameters": result["parameters"], "split": result["split"],
        "settings": {k: p[k] for k in settings_keys},
    })  # fmt: skip
    out = {"parameters": counts, **report.render_training(run, p)}
    record_stage(run, "03_training", p.subset(GUARD_KEYS["03"]))
    return out


def _train_baseline_process(p: Params, threads: int) -> None:
    """The smp baseline's training in its own process (:func:`train_beside_baseline`); a child of the kernel.

    It ends itself within seconds when the kernel is gone (killed, restarted), so no orphan keeps writing the run
    folder beside a rerun; its last complete epoch stays in ``last.pt``.
    """
    import os
    import threading
    import time

    import torch

    from liverlib.training.loop import train

    parent = os.getppid()

    def orphaned() -> None:
        while os.getppid() == parent:
            time.sleep(2)
        os._exit(1)

    threading.Thread(target=orphaned, name="liverlib-parent-watch", daemon=True).start()
    torch.set_num_threads(threads)
    train(p, model_name="unet_smp", epochs=p.baseline_epochs or p.epochs, progress=False)


def train_beside_baseline(p: Params, threads: int, *, progress: bool = True) -> dict[str, Any]:
    """Train the run's model here and the smp baseline at the same time in a child process, ``threads`` CPU
    threads each (``cpu_parallel_trainings``, :func:`liverlib.runtime.parallel_trainings`).

    The child writes ``models/unet_smp/`` as a sequential run would (its per-epoch lines go to the kernel's
    console, not the notebook); the caller then reads the finished run back with
    :func:`liverlib.training.train`, which also trains it here if the child failed, so any error shows where the
    user looks. An interrupt or error here stops the child; both runs stay resumable from their ``last.pt``.
    """
    import multiprocessing

    import torch

    from liverlib.training.loop import train

    child = multiprocessing.get_context("spawn").Process(target=_train_baseline_process, args=(p, threads),
                                                        name="liverlib-baseline", daemon=True)  # fmt: skip
    child.start()
    if progress:
        print(f"the smp baseline trains alongside in another process ({threads} CPU thread(s) each); its result is "
              "shown below when both are done", flush=True)  # fmt: skip
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        result = train(p, progress=progress)
        child.join()
    except BaseException:
        child.terminate()
        child.join()
        raise
    finally:
        torch.set_num_threads(before)
    if child.exitcode != 0:
        print(f"note: the baseline's process ended with exit code {child.exitcode}; training it here", flush=True)
    return result


def run_evaluation(p: Params, *, progress: bool = True) -> dict[str, Any]:
    """Notebook 04: test metrics → per_slice.csv, per_volume.csv, summary.json, Tables 6–7, Figs. 8–11."""
    from liverlib.evaluation.evaluate import evaluate, write_outputs
    from liverlib.model.checkpoint import model_dir
    from liverlib.report import report
    from liverlib.training.tracking import log_evaluation
    from liverlib.training.tracking import require as require_tracking

    run = RunDir.from_params(p)
    guard(run, "04_evaluation", p.subset(GUARD_KEYS["04"]), overwrite=p.overwrite, record=False)
    require_tracking(p)
    withdraw(run, "04_evaluation")  # a rerun killed from here on leaves no old record beside new partial outputs
    ev = evaluate(p, progress=progress)
    write_outputs(run, ev)
    log_evaluation(p, run.root, p.model, ev["summary"], run.root / "summary.json")
    out = {"run": run, **ev}
    if p.train_baseline and p.model != "unet_smp" and (model_dir(run, "unet_smp") / "best.pt").is_file():
        base = evaluate(p, model_name="unet_smp", progress=progress, save_predictions=False)
        write_outputs(run, base, prefix="models/unet_smp")
        log_evaluation(p, run.root, "unet_smp", base["summary"], run.root / "models" / "unet_smp" / "summary.json")
        out["baseline_summary"] = base["summary"]
    out.update(report.render_evaluation(run))
    record_stage(run, "04_evaluation", p.subset(GUARD_KEYS["04"]))
    return out


def run_ablation(p: Params, *, progress: bool = True) -> dict[str, Any]:
    """Notebook 05: Table 4 and its bar chart from the arms' run folders ``ablation/<arm>/`` (made by the runner)."""
    from liverlib.pipeline.ablation import table04 as _run
    from liverlib.report import drawing, figures

    run = RunDir.from_params(p)
    run.require("manifest.csv", "summary.json")
    guard(run, "05_ablation", p.subset(GUARD_KEYS["05"]), overwrite=p.overwrite, record=False)
    t4 = _run(p)
    write_table(t4, run.table(TABLES["table04"]))
    drawing.save_figure(figures.fig_ablation(t4), run.figure(FIGURES["fig_ablation"]))
    record_stage(run, "05_ablation", p.subset(GUARD_KEYS["05"]))
    return {"run": run, "table04": t4, "fig": run.figure(FIGURES["fig_ablation"])}


def run_figures(p: Params) -> dict[str, Any]:
    """Notebook 06: Table 8 and ``report.md`` from the run's files; every other table and figure has one writer,
    the stage that made its data (docs/architecture.md), and is read here, not redrawn."""
    from liverlib.report import document

    run = RunDir.from_params(p)
    # a stage's record is its commit point (written after its outputs): read first, so the report never mixes in
    # the partial outputs of a stage that was killed or failed (e.g. summary.json without Figs. 8-11)
    for stage, what in (("01_curation", "curation"), ("02_preprocessing", "preprocessing"), ("04_evaluation", "evaluation")):  # fmt: skip
        record = record_path(run, stage)
        if not record.is_file():
            raise RunError(f"{record}: missing: stage {stage[:2]} ({what}) did not finish in this run, so its outputs "
                           f"may be partial; rerun notebook {stage} before 06_figures")  # fmt: skip
    run.require("manifest.csv", "preprocess.json", "summary.json", "training.json")
    guard(run, "06_figures", p.subset(GUARD_KEYS["06"]), overwrite=p.overwrite, record=False)
    withdraw(run, "06_figures")
    path = document.write_report(run)  # writes Table 8 (report.render_tables), then report.md
    record_stage(run, "06_figures", p.subset(GUARD_KEYS["06"]))
    return {"run": run, "report": path, "figures": sorted(run.figures.glob("*.png")),
            "tables": sorted(run.tables.glob("*.csv"))}  # fmt: skip
