"""Every stage is guarded (a rerun with other parameters is refused unless overwrite, naming the keys), and a
model is never scored on volumes it trained on (issue 9 items 4–5)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from liverlib.errors import RunError
from liverlib.files import read_json, write_json
from liverlib.params import resolve
from liverlib.pipeline import stages
from tests.tiny import TINY_RUN, prepare

TINY = {**TINY_RUN, "epochs": 1, "bootstrap_resamples": 20, "eval_batch_size": 8}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Output root holding run ``r``: curated, preprocessed, trained one epoch."""
    root = tmp_path_factory.mktemp("stages")
    p = prepare(resolve(**TINY, output_root=str(root), run_name="r"))
    stages.run_training(p, progress=False)
    return root


def _copy(root: Path, name: str) -> Path:
    dst = root / name
    if not dst.exists():
        shutil.copytree(root / "r", dst)
    return dst


def test_curation_records_the_resolved_parameters(trained: Path) -> None:
    params = read_json(trained / "r/params.json")["parameters"]
    assert params["image_size"] == 32 and params["run_name"] == "r"
    tj = read_json(trained / "r/training.json")
    assert tj["settings"]["lr"] == 1e-3 and tj["trained_parameters"] > 0
    assert set(tj["split"]) == {"train", "val", "test"}


@pytest.mark.reliability("'stage '02_preprocessing' already ran here with other parameters (image_size)'", 1,
                         "preprocess.json and Figs. 3-4 of the first run")  # fmt: skip
def test_preprocessing_rerun_with_other_size_is_refused(trained: Path) -> None:
    _copy(trained, "pre")
    before = (trained / "pre/preprocess.json").read_text(encoding="utf-8")
    p = resolve(**{**TINY, "image_size": 48}, output_root=str(trained), run_name="pre")
    with pytest.raises(RunError, match=r"'02_preprocessing' already ran here with other parameters \(image_size\)"):
        stages.run_preprocessing(p, progress=False, figures_too=False)
    assert (trained / "pre/preprocess.json").read_text(encoding="utf-8") == before
    stages.run_preprocessing(
        resolve(**TINY, output_root=str(trained), run_name="pre"), progress=False, figures_too=False
    )


@pytest.mark.reliability("'... trained or validated on test volume(s) [N] ...; retrain'", 1,
                         "no metrics written; the old model")  # fmt: skip
def test_evaluation_refuses_a_model_trained_on_a_test_volume(trained: Path) -> None:
    run = _copy(trained, "leak")
    splits = read_json(run / "splits.json")
    moved = splits["splits"]["train"][0]
    splits["splits"]["train"].remove(moved)
    splits["splits"]["test"].append(moved)
    write_json(run / "splits.json", splits)
    p = resolve(**TINY, output_root=str(trained), run_name="leak")
    with pytest.raises(RunError, match=rf"trained or validated on test volume\(s\) \[{moved}\]"):
        stages.run_evaluation(p, progress=False)
    assert not (run / "summary.json").exists()


@pytest.mark.reliability("'stage '04_evaluation' already ran here with other parameters (liver_lcc)'", 1,
                         "summary.json and Tables 6-7 of the first run")  # fmt: skip
def test_evaluation_rerun_with_other_parameters_is_refused(trained: Path) -> None:
    _copy(trained, "ev")
    p = resolve(**TINY, output_root=str(trained), run_name="ev")
    stages.run_evaluation(p, progress=False)
    before = (trained / "ev/summary.json").read_text(encoding="utf-8")
    with pytest.raises(RunError, match=r"'04_evaluation' already ran here with other parameters \(liver_lcc\)"):
        stages.run_evaluation(resolve(**{**TINY, "liver_lcc": True}, output_root=str(trained), run_name="ev"),
                              progress=False)  # fmt: skip
    assert (trained / "ev/summary.json").read_text(encoding="utf-8") == before
    # how it scores (batch size) is not what it scores: a rerun with another eval_batch_size is not refused
    stages.run_evaluation(resolve(**{**TINY, "eval_batch_size": 4}, output_root=str(trained), run_name="ev"),
                          progress=False)  # fmt: skip
    stages.run_evaluation(resolve(**{**TINY, "liver_lcc": True, "overwrite": True}, output_root=str(trained),
                                  run_name="ev"), progress=False)  # fmt: skip


def test_report_names_what_data_dir_auto_resolved_to(tmp_path: Path) -> None:
    from liverlib.report.report import run_settings
    from liverlib.run import RunDir

    run = RunDir(tmp_path)
    write_json(tmp_path / "params.json", {"parameters": {"data_dir": "auto"}})
    write_json(tmp_path / "splits.json", {"data_dir": str(tmp_path / "data/phantom-0123abcd"), "splits": {}})
    assert run_settings(run)["data_dir"] == "phantom"
    write_json(tmp_path / "splits.json", {"data_dir": "/kaggle/input/lits", "splits": {}})
    assert run_settings(run)["data_dir"] == "/kaggle/input/lits"


@pytest.mark.reliability("'PATH/stages/04_evaluation.json: missing: stage 04 (evaluation) did not finish in this run, "
                         "so its outputs may be partial; rerun notebook 04_evaluation before 06_figures'", 1,
                         "no report.md written")  # fmt: skip
def test_report_refuses_a_stage_04_that_did_not_finish(trained: Path) -> None:
    """Stage 04 killed after summary.json and the metric tables but before its record and Figs. 8-11: stage 06 used
    to exit 0 with a report linking to figures that were never drawn."""
    run = _copy(trained, "killed04")
    p = resolve(**TINY, output_root=str(trained), run_name="killed04")
    stages.run_evaluation(p, progress=False)
    record = run / "stages/04_evaluation.json"
    kept = record.read_text(encoding="utf-8")
    record.unlink()
    with pytest.raises(RunError, match=rf"^{record}: missing: stage 04 \(evaluation\) did not finish in this run"):
        stages.run_figures(p)
    assert not (run / "report.md").exists()
    record.write_text(kept, encoding="utf-8")  # a finished stage 04: reported
    assert stages.run_figures(p)["report"].is_file()


@pytest.mark.reliability("stage 06 on a run whose stage 04 rerun was killed: 'PATH/stages/04_evaluation.json: missing: "
                         "stage 04 (evaluation) did not finish in this run ...'", 1,
                         "no report.md written; a complete rerun of stage 04 records it again")  # fmt: skip
def test_a_killed_rerun_of_stage_04_leaves_no_old_record(trained: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A rerun of stage 04 killed after rewriting summary.json, before Figs. 8-11: the first run's record stayed beside
    the new partial outputs, so stage 06 would report them as finished."""
    from liverlib.report import report

    run = _copy(trained, "rerun04")
    p = resolve(**TINY, output_root=str(trained), run_name="rerun04")
    stages.run_evaluation(p, progress=False)
    record = run / "stages/04_evaluation.json"
    assert record.is_file()

    def killed(*a, **k):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(report, "render_evaluation", killed)
        with pytest.raises(KeyboardInterrupt):
            stages.run_evaluation(p, progress=False)
    assert not record.exists() and (run / "summary.json").is_file()
    with pytest.raises(RunError, match=rf"^{record}: missing: stage 04 \(evaluation\) did not finish"):
        stages.run_figures(p)
    stages.run_evaluation(p, progress=False)
    assert record.is_file()


@pytest.mark.reliability("'stage '03_training' already ran here with other parameters (lr)'", 1,
                         "the trained model of the first run")  # fmt: skip
def test_training_rerun_is_guarded_like_every_stage(trained: Path) -> None:
    """Stage 03 has the stages' guard: a rerun with the same settings reuses the finished model (and may add epochs),
    one with other settings is refused naming them; an interrupted training (no record yet) resumes from last.pt,
    which compares the same keys."""
    run = _copy(trained, "tr")
    record, best = run / "stages/03_training.json", run / "models/hybrid/best.pt"
    assert record.is_file() and "lr" in read_json(record) and "epochs" not in read_json(record)
    before = best.stat().st_mtime_ns
    p = resolve(**TINY, output_root=str(trained), run_name="tr")
    assert stages.run_training(p, progress=False)["main"]["resumed_from"] == 1 and record.is_file()
    with pytest.raises(RunError, match=r"'03_training' already ran here with other parameters \(lr\)"):
        stages.run_training(resolve(**{**TINY, "lr": 5e-4}, output_root=str(trained), run_name="tr"), progress=False)
    assert best.stat().st_mtime_ns == before and record.is_file()
    record.unlink()  # as a training killed before its record: last.pt still refuses other settings
    with pytest.raises(RunError, match=r"last.pt: an earlier training here used other parameters \(lr\)"):
        stages.run_training(resolve(**{**TINY, "lr": 5e-4}, output_root=str(trained), run_name="tr"), progress=False)
    assert not record.exists()
    stages.run_training(p, progress=False)  # the same settings: resumed (nothing left to train), recorded
    assert record.is_file() and best.stat().st_mtime_ns == before


def test_report_stage_is_guarded_and_reruns(trained: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Stage 06 has the same guard (it has no settings of its own, so a rerun is always the same): its record is written
    after report.md and withdrawn while a rerun writes, so a killed rerun leaves none."""
    from liverlib.report import document

    run = _copy(trained, "rep")
    p = resolve(**TINY, output_root=str(trained), run_name="rep")
    stages.run_evaluation(p, progress=False)
    record = run / "stages/06_figures.json"
    assert stages.run_figures(p)["report"].is_file() and read_json(record) == {}
    assert stages.run_figures(p)["report"].is_file() and record.is_file()  # a rerun with the same settings

    def killed(*a, **k):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(document, "write_report", killed)
        with pytest.raises(KeyboardInterrupt):
            stages.run_figures(p)
    assert not record.exists()
    stages.run_figures(p)
    assert record.is_file()


def test_cli_train_writes_what_notebook_03_writes(trained: Path) -> None:
    """``liverlib train`` is stage 03 for one model: training.json, Tables 1, 2, 5, Figs. 6-7 and the stage record, as
    notebook 03 writes them (one code path, stages.record_training), and its guard refuses other settings."""
    import yaml

    from liverlib.pipeline.cli import main
    from tests.tiny import share_prepared

    share_prepared(trained, "r", "cli")
    profile = trained / "cli.yaml"
    profile.write_text(yaml.safe_dump({**TINY, "output_root": str(trained), "run_name": "cli"}), encoding="utf-8")
    assert main(["train", "-f", str(profile)]) == 0
    run, notebook = trained / "cli", trained / "r"
    made = read_json(run / "training.json")
    assert made.keys() == read_json(notebook / "training.json").keys()
    assert made["settings"] == read_json(notebook / "training.json")["settings"]
    assert made["epochs"] == 1 and made["model"] == "hybrid" and made["baseline_best_epoch"] is None
    for name in ("tables/table01_architecture.md", "tables/table02_loss.md", "tables/table05_training_log.md",
                 "figures/fig06_loss_curves.png", "figures/fig07_dice_iou_curves.png"):  # fmt: skip
        assert (run / name).is_file() and (notebook / name).is_file(), name
    assert read_json(run / "stages/03_training.json") == read_json(notebook / "stages/03_training.json")
    assert main(["train", "-f", str(profile), "--set", "lr=5.0e-4"]) == 1  # the stage guard, as for notebook 03
