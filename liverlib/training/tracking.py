"""Optional experiment tracking (``tracking: mlflow``): parameters, per-epoch metrics and the final summary in a
local MLflow store inside the run folder.

Off by default (``tracking: off``), and MLflow is an extra (``pip install -e ".[tracking]"``), not a dependency.
The store is ``<run>/mlflow.db`` (SQLite) with artifacts under ``<run>/mlartifacts/``: local files, no server, no
network. MLflow 3 refuses its older ``./mlruns`` directory store unless ``MLFLOW_ALLOW_FILE_STORE`` is set and
recommends SQLite for local use, so that is the store here. Browse it with the full ``mlflow`` package:
``mlflow ui --backend-store-uri sqlite:///outputs/<run>/mlflow.db``. MLflow's usage telemetry is switched off
before MLflow is imported (the study makes no network calls at run time).

One MLflow run per trained model (tags ``liverlib.model``, ``liverlib.run_dir``): training logs the parameters
once and each epoch's ``history.csv`` row at ``step = epoch``; a resumed training continues the same MLflow run
and logs only the epochs it has not logged yet; a training started afresh (``overwrite``) opens a new MLflow run.
Evaluation adds the test metrics of ``summary.json`` (``test/...``) and the file itself as an artifact to the
model's latest MLflow run. Only rank 0 logs under DDP.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from liverlib.errors import RunError

EXPERIMENT = "liverlib"
"""The MLflow experiment every run folder's store holds."""

SUMMARY_SECTIONS: tuple[str, ...] = ("per_volume", "per_slice", "counts", "val_best")
"""The ``summary.json`` sections whose numbers become ``test/<section>/...`` metrics."""


class TrackingError(RunError):
    """``tracking: mlflow`` without MLflow installed."""


def store_uri(root: str | Path) -> str:
    """The MLflow tracking URI of a run folder: ``sqlite:///<root>/mlflow.db``."""
    return "sqlite:///" + str(Path(root).resolve() / "mlflow.db")


def _client(root: Path) -> Any:
    """An ``MlflowClient`` on the run folder's store (telemetry off), or :class:`TrackingError`."""
    return _client_class()(tracking_uri=store_uri(root))


def _client_class() -> Any:
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"  # read by MLflow at import and when it would send
    os.environ["DO_NOT_TRACK"] = "true"
    try:
        import sqlalchemy  # noqa: F401  (MLflow's SQLite store)
        from mlflow.tracking import MlflowClient
    except ImportError as exc:
        raise TrackingError(f"tracking: mlflow needs MLflow and SQLAlchemy ({exc}); install the extra: "
                            "pip install -e '.[tracking]', or set tracking: off") from None  # fmt: skip
    return MlflowClient


def enabled(p: Mapping[str, Any]) -> bool:
    """Whether the run's parameters ask for MLflow tracking (``tracking: mlflow``)."""
    return p.get("tracking", "off") == "mlflow"


def require(p: Mapping[str, Any]) -> None:
    """Fail before a stage's work, not after it, when ``tracking: mlflow`` but MLflow is missing (:class:`TrackingError`)."""
    if enabled(p):
        _client_class()


def _experiment_id(client: Any, root: Path) -> str:
    exp = client.get_experiment_by_name(EXPERIMENT)
    if exp is not None:
        return exp.experiment_id
    return client.create_experiment(EXPERIMENT, artifact_location=(root.resolve() / "mlartifacts").as_uri())


def _latest_run(client: Any, exp_id: str, model_name: str) -> Any | None:
    runs = client.search_runs([exp_id], filter_string=f"tags.`liverlib.model` = '{model_name}'",
                              order_by=["attributes.start_time DESC"], max_results=1)  # fmt: skip
    return runs[0] if runs else None


def _new_run(client: Any, exp_id: str, root: Path, model_name: str, params: Mapping[str, Any]) -> str:
    """Open a model's MLflow run (tagged with the model and the run folder), log ``params``; its run id."""
    run = client.create_run(exp_id, run_name=model_name,
                            tags={"liverlib.model": model_name, "liverlib.run_dir": str(root.resolve())})  # fmt: skip
    _log_params(client, run.info.run_id, params)
    return run.info.run_id


def _is_metric(value: Any) -> bool:
    """A finite number (not a boolean): what MLflow can log as a metric."""
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(float(value))


def flatten_summary(summary: Mapping[str, Any], sections: tuple[str, ...] = SUMMARY_SECTIONS) -> dict[str, float]:
    """``summary.json``'s numbers as flat metric names: ``test/per_volume/liver_dice_per_case/mean`` …

    Every finite number of the given sections at any depth (means, n, CI bounds, global Dice, counts); text
    (rules) is left out, since MLflow metrics are numbers.
    """

    def walk(node: Any, prefix: str) -> Iterator[tuple[str, float]]:
        if isinstance(node, Mapping):
            for key, value in node.items():
                yield from walk(value, f"{prefix}/{key}")
        elif _is_metric(node):
            yield prefix, float(node)

    return {k: v for s in sections if s in summary for k, v in walk(summary[s], f"test/{s}")}


def _log_metrics(client: Any, run_id: str, metrics: Mapping[str, float], step: int) -> None:
    from mlflow.entities import Metric
    from mlflow.utils.time import get_current_time_millis

    now = get_current_time_millis()
    items = [Metric(k, v, now, step) for k, v in metrics.items()]
    for i in range(0, len(items), 500):  # MLflow's batch limit is 1,000 metrics
        client.log_batch(run_id, metrics=items[i : i + 500])


def _log_params(client: Any, run_id: str, params: Mapping[str, Any]) -> None:
    from mlflow.entities import Param

    items = [Param(str(k), str(v)[:6000]) for k, v in sorted(params.items())]
    for i in range(0, len(items), 100):  # MLflow's batch limit is 100 parameters
        client.log_batch(run_id, params=items[i : i + 100])


class Tracker:
    """Logs nothing: ``tracking: off``, and every rank but 0 under DDP."""

    run_id: str | None = None

    def log_epoch(self, row: Mapping[str, Any]) -> None:
        """Log one epoch's ``history.csv`` row (its numbers) at ``step = row["epoch"]``."""

    def close(self, status: str = "FINISHED") -> None:
        """End the MLflow run (``FINISHED``, or ``KILLED`` when training was interrupted)."""


class MlflowTracker(Tracker):
    """One model's training in the run folder's MLflow store (module docstring)."""

    def __init__(self, root: Path, model_name: str, params: Mapping[str, Any], *, history: list[dict[str, Any]],
                 resumed: bool) -> None:  # fmt: skip
        self.client = _client(root)
        exp_id = _experiment_id(self.client, root)
        last = _latest_run(self.client, exp_id, model_name) if resumed else None
        if last is None:
            self.run_id = _new_run(self.client, exp_id, root, model_name, params)
            logged = 0
        else:
            self.run_id = last.info.run_id
            self.client.update_run(self.run_id, status="RUNNING")
            steps = [m.step for m in self.client.get_metric_history(self.run_id, "val_loss")]
            logged = max(steps, default=0)
        for row in history:  # epochs trained (and checkpointed) before a kill that were not logged yet
            if int(row["epoch"]) > logged:
                self.log_epoch(row)

    def log_epoch(self, row: Mapping[str, Any]) -> None:
        metrics = {str(k): float(v) for k, v in row.items() if k != "epoch" and _is_metric(v)}
        _log_metrics(self.client, self.run_id, metrics, step=int(row["epoch"]))

    def close(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status=status)


def training_tracker(p: Mapping[str, Any], root: Path, model_name: str, *, history: list[dict[str, Any]],
                     resumed: bool, rank: int = 0) -> Tracker:  # fmt: skip
    """The tracker of one training: :class:`MlflowTracker` when ``tracking: mlflow`` (rank 0), else a no-op.

    Args:
        p: the run's parameters (logged as MLflow parameters when a new MLflow run is opened).
        root: the run folder (the store lives in it).
        history: the epochs already trained (a resume logs those not logged yet).
        resumed: training continues from ``last.pt`` (then the model's latest MLflow run is continued).

    Raises:
        TrackingError: ``tracking: mlflow`` but MLflow is not installed.
    """
    if not enabled(p) or rank != 0:
        return Tracker()
    return MlflowTracker(Path(root), model_name, dict(p), history=history, resumed=resumed)


def log_evaluation(p: Mapping[str, Any], root: Path, model_name: str, summary: Mapping[str, Any],
                   summary_path: Path | None = None) -> str | None:  # fmt: skip
    """Add the test metrics of ``summary`` (and the file as an artifact) to the model's latest MLflow run.

    A model trained with tracking off gets a new MLflow run holding its parameters and the test metrics.
    Returns the MLflow run id, or None when ``tracking`` is off.
    """
    if not enabled(p):
        return None
    root = Path(root)
    client = _client(root)
    exp_id = _experiment_id(client, root)
    last = _latest_run(client, exp_id, model_name)
    run_id = last.info.run_id if last is not None else _new_run(client, exp_id, root, model_name, p)
    _log_metrics(client, run_id, flatten_summary(summary), step=0)
    if summary_path is not None and Path(summary_path).is_file():
        client.log_artifact(run_id, str(summary_path), artifact_path="evaluation")
    return run_id
