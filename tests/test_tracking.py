"""Optional MLflow tracking (issue 12 item 5): off by default; with ``tracking: mlflow`` a local store in the run
folder holds the parameters, every epoch's metrics (a resumed training continues the same MLflow run) and the
test summary. Read back through MLflow's own client, not through liverlib."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from liverlib.params import ParamError, resolve
from liverlib.pipeline import stages
from liverlib.training import tracking
from liverlib.training.loop import train
from tests.tiny import TINY_RUN, prepare

mlflow = pytest.importorskip("mlflow", reason="the tracking extra (installed by make test)")
from mlflow.tracking import MlflowClient  # noqa: E402

TINY = {**TINY_RUN, "epochs": 3, "bootstrap_resamples": 20, "eval_batch_size": 8}


def _client(run: Path) -> MlflowClient:
    return MlflowClient(tracking_uri=tracking.store_uri(run))


def _runs(run: Path, model: str = "hybrid") -> list:
    c = _client(run)
    exp = c.get_experiment_by_name(tracking.EXPERIMENT)
    return c.search_runs([exp.experiment_id], filter_string=f"tags.`liverlib.model` = '{model}'")


@pytest.fixture(scope="module")
def tracked(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Run ``t`` with ``tracking: mlflow``: trained 1 epoch, killed, resumed to 3, evaluated."""
    root = tmp_path_factory.mktemp("tracking")
    p = prepare(resolve(**TINY, output_root=str(root), run_name="t", tracking="mlflow"))
    train(p, progress=False, stop_after=1)
    stages.run_training(p, progress=False)
    stages.run_evaluation(p, progress=False)
    return root / "t"


def test_tracking_is_off_by_default_and_checked() -> None:
    assert resolve().tracking == "off"
    with pytest.raises(ParamError, match="'tracking' must be 'off' or 'mlflow'"):
        resolve(tracking="wandb")


def test_untracked_run_writes_no_store(tmp_path: Path) -> None:
    p = prepare(resolve(**{**TINY, "epochs": 1}, output_root=str(tmp_path), run_name="u"))
    train(p, progress=False)
    assert not (tmp_path / "u" / "mlflow.db").exists() and not (tmp_path / "u" / "mlartifacts").exists()


def test_parameters_and_every_epoch_in_one_mlflow_run(tracked: Path) -> None:
    runs = _runs(tracked)
    assert len(runs) == 1, "the resumed training continues the MLflow run of the killed one"
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.params["lr"] == "0.001" and run.data.params["image_size"] == "32"
    assert run.data.params["tracking"] == "mlflow"
    history = pd.read_csv(tracked / "models/hybrid/history.csv")
    c = _client(tracked)
    val = c.get_metric_history(run.info.run_id, "val_loss")
    assert sorted(m.step for m in val) == [1, 2, 3], "each epoch once, the resume logged no duplicate"
    by_step = {m.step: m.value for m in val}
    assert [by_step[e] for e in history.epoch] == pytest.approx(history.val_loss.tolist())
    assert {"train_loss", "val_liver_dice", "val_tumor_dice_gtpos", "lr", "epoch_seconds"} <= set(run.data.metrics)


def test_the_test_summary_lands_in_the_models_run(tracked: Path) -> None:
    run = _runs(tracked)[0]
    summary = json.loads((tracked / "summary.json").read_text(encoding="utf-8"))
    metrics = run.data.metrics
    pv = summary["per_volume"]["liver_dice_per_case"]
    assert metrics["test/per_volume/liver_dice_per_case/mean"] == pytest.approx(pv["mean"])
    assert metrics["test/per_volume/liver_dice_per_case/n"] == pv["n"]
    assert metrics["test/counts/test_volumes"] == summary["counts"]["test_volumes"]
    assert metrics["test/per_slice/tumor_dice_gt_positive/mean"] == pytest.approx(
        summary["per_slice"]["tumor_dice_gt_positive"]["mean"]
    )
    artifacts = [a.path for a in _client(tracked).list_artifacts(run.info.run_id, "evaluation")]
    assert artifacts == ["evaluation/summary.json"]
    assert (tracked / "mlflow.db").is_file() and (tracked / "mlartifacts").is_dir()  # all inside the run folder


def test_a_fresh_training_opens_a_new_mlflow_run(tracked: Path, tmp_path: Path) -> None:
    run = tmp_path / "t"
    shutil.copytree(tracked, run)
    p = resolve(
        **{**TINY, "epochs": 1, "lr": 5e-4}, output_root=str(tmp_path), run_name="t", tracking="mlflow", overwrite=True
    )  # another lr: the training starts afresh
    train(p, progress=False)
    runs = _runs(run)
    assert len(runs) == 2
    newest = max(runs, key=lambda r: r.info.start_time)
    assert [m.step for m in _client(run).get_metric_history(newest.info.run_id, "val_loss")] == [1]
    assert newest.data.params["lr"] == "0.0005"


def test_flatten_summary_keeps_numbers_only() -> None:
    flat = tracking.flatten_summary({"per_volume": {"d": {"mean": 0.5, "n": 3, "rule": "nan", "ok": True,
                                                          "ci95": {"low": 0.1, "high": float("nan")}}},
                                     "provenance": {"x": 1}})  # fmt: skip
    assert flat == {"test/per_volume/d/mean": 0.5, "test/per_volume/d/n": 3.0, "test/per_volume/d/ci95/low": 0.1}


def test_telemetry_is_off() -> None:
    tracking.require({"tracking": "mlflow"})
    from mlflow.telemetry.utils import is_telemetry_disabled

    assert is_telemetry_disabled()
