"""Study parameters: one flat schema, YAML profiles, strict validation (docs/study.md §1–8).

Every key a notebook or profile may set is in :data:`DEFAULTS` (the paper's values; comments cite the
STUDY section). papermill only warns about unknown keys, so :func:`resolve` turns an unknown or
misspelled key, or a value of the wrong type, into an error with a suggestion.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from liverlib.files import json_ready

DEFAULTS: dict[str, Any] = {
    # run
    "run_name": "paper",  # folder under output_root
    "output_root": "outputs",  # relative paths resolve against the project root
    "data_dir": "auto",  # "auto" (the Kaggle LiTS mount if attached, else the phantom), "phantom", a folder, or null (Kaggle mount)
    "profiles": [],  # params/ profiles (names like "smoke" or paths) layered under the notebook's own values
    "cache_dir": "",  # "" = <output_root>/cache (shared by runs and ablation arms)
    "seed": 42,  # docs/study.md §1, §6
    "overwrite": False,  # allow a stage to replace files written with other parameters
    # embedded phantom (data_dir: phantom)
    "phantom_cases": 14,
    "phantom_size": 512,
    "phantom_slices": [60, 120],
    # curation, docs/study.md §1
    "n_volumes": 11,  # paper: 11 volumes, 1,688 slices; 0 = all eligible
    "volume_ids": [],  # explicit selection overrides the seeded draw
    "exclude_ids": [],  # volumes excluded by eye (artefacts)
    "train_ids": [],  # explicit split (all three or none)
    "val_ids": [],
    "test_ids": [],
    "min_tumor_voxels": 1,
    "min_tumor_slices": 5,
    "keep_empty_slices": False,  # paper dropped slices without liver/tumor (62.8%)
    "train_empty_fraction": 0.0,  # share of training volumes' liver-free slices kept for training (0 = paper)
    "strict": False,  # true: the first unreadable or invalid volume stops curation (else: rejected, in volumes.csv)
    "val_fraction": 0.1,  # 80/10/10 at volume level: 11 volumes -> 8/1/2
    "test_fraction": 0.1,
    "folds": 0,  # k-fold cross-validation by volume (0 = off); full_lits uses 5
    "fold": 0,  # which fold is the test set when folds > 0
    # preprocessing, docs/study.md §2
    "image_size": 256,
    "hu_window": [],  # [] = paper (no window); e.g. [-200, 250]
    "quantize_8bit": True,  # round the normalised image to k/255 in every arm (CLAHE's 8-bit input), docs/study.md §2
    "use_clahe": True,
    "clahe_clip": 2.0,
    "clahe_tile": 8,
    "use_gamma": True,
    "gamma": 1.2,
    "normalization": "minmax",  # "minmax" (paper, per slice) or "ct_norm" (nnU-Net CT: training foreground clip + z-score)
    # augmentation, docs/study.md §3
    "augment": True,
    "elastic_alpha": 1.0,  # paper value; moves pixels ~0.03 px in albumentations 2.x
    "elastic_sigma": 50.0,
    # model, docs/study.md §4
    "model": "hybrid",  # "hybrid" (paper) or "unet_smp" (segmentation-models-pytorch baseline)
    "encoder": "resnet34",  # smp baseline encoder
    "encoder_weights": None,  # None: nothing is downloaded at run time
    "fused_attention": True,
    # loss, docs/study.md §5
    "ce_weight": 1.0,
    "dice_weight": 1.0,
    "focal_weight": 0.5,
    "focal_alpha": 0.25,
    "focal_gamma": 2.0,
    "dice_eps": 1.0e-6,
    # training, docs/study.md §6
    "epochs": 100,
    "batch_size": 8,
    "lr": 1.0e-4,
    "weight_decay": 1.0e-5,
    "plateau_factor": 0.5,
    "plateau_patience": 5,
    "lr_schedule": "plateau",  # "plateau" (paper: ReduceLROnPlateau on val loss) or "onecycle" (warm-up + cosine)
    "warmup_epochs": 0,  # onecycle: epochs of linear warm-up (at least 1)
    "grad_clip": 1.0,
    "device": "auto",  # auto | cpu | cuda | cuda:N
    "amp": True,  # mixed precision: CUDA bf16 where supported, else fp16 + grad scaler (T4); a CPU only with cpu_bf16
    "cpu_parallel_trainings": 2,  # on a CPU: trainings at once (arms; model + baseline), cores // N threads each
    "cpu_bf16": True,  # with amp: train and score in bf16 on a CPU with native bf16 (AVX512-BF16, AMX); else fp32
    "channels_last": True,
    "num_workers": 2,
    "compile": False,  # torch.compile
    "feeder": "dataloader",  # "dataloader" (CPU DataLoader + albumentations: the paper path) or "gpu" (the training
    # split resident on the device, augmentation in torch: liverlib.training.device_batches, the fast GPU path)
    "tracking": "off",  # "off" or "mlflow": parameters, per-epoch metrics, summary in <run>/mlflow.db (liverlib.training.tracking)
    "train_baseline": True,  # also train the smp baseline on the same split (Table 8)
    "baseline_epochs": 0,  # 0 = same as epochs
    # evaluation, docs/study.md §7
    "eval_batch_size": 16,
    "liver_lcc": False,  # keep the largest liver component per volume
    "bootstrap_resamples": 1000,
    # ablation, docs/study.md §8
    "ablation_arms": ["paper", "no_enhancement", "clahe_only", "gamma_only", "hu_window"],
    "ablation_epochs": 0,  # 0 = same as epochs
}

LR_SCHEDULES = ("plateau", "onecycle")
"""Values of ``lr_schedule`` (:class:`liverlib.training.schedule.LrSchedule`)."""

TRACKING = ("off", "mlflow")
"""Values of ``tracking`` (:mod:`liverlib.training.tracking`)."""

PREPROCESS_KEYS = (
    "image_size", "hu_window", "quantize_8bit", "use_clahe", "clahe_clip", "clahe_tile", "use_gamma", "gamma",
    "normalization",
)  # fmt: skip
"""Parameters that change the preprocessed cache (its key hashes them)."""

CURATION_KEYS = (
    "data_dir", "seed", "n_volumes", "volume_ids", "exclude_ids", "train_ids", "val_ids", "test_ids",
    "min_tumor_voxels", "min_tumor_slices", "keep_empty_slices", "train_empty_fraction", "val_fraction", "test_fraction", "folds", "fold",
    "phantom_cases", "phantom_size", "phantom_slices", "strict",
)  # fmt: skip

TRAIN_KEYS = PREPROCESS_KEYS + (
    "seed", "augment", "elastic_alpha", "elastic_sigma", "model", "encoder", "encoder_weights", "fused_attention",
    "ce_weight", "dice_weight", "focal_weight", "focal_alpha", "focal_gamma", "dice_eps", "epochs", "batch_size",
    "lr", "weight_decay", "plateau_factor", "plateau_patience", "lr_schedule", "warmup_epochs", "grad_clip",
    "feeder",
)  # fmt: skip
"""Parameters a training run is defined by; resuming with other values is refused (``epochs`` may grow)."""

GUARD_KEYS: dict[str, tuple[str, ...]] = {
    "01": CURATION_KEYS,
    "02": PREPROCESS_KEYS,
    "03": tuple(k for k in TRAIN_KEYS if k != "epochs"),  # more epochs resume a finished or interrupted training
    "04": ("model", "liver_lcc", "bootstrap_resamples", "train_baseline"),
    "05": ("ablation_arms", "ablation_epochs"),
    "06": (),  # the report reads only what 01-05 wrote (and guarded)
}
"""What each stage's rerun guard compares (:func:`liverlib.pipeline.guard.guard`): a rerun with other values is refused
without ``overwrite``. Stage 02 guards its :class:`~liverlib.data.preprocess.PreprocessConfig` (these keys); stage 03
also records them in every checkpoint, so an interrupted training resumes only with the same ones."""


def changed_keys(before: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """The keys of ``current`` whose values differ from the record ``before``, compared as JSON.

    A key missing from an older record counts at its default (a key added to liverlib since that record); a key of
    the record that ``current`` does not hold (no longer compared) is left out.
    """
    now, then = json_ready(dict(current)), json_ready(dict(before))
    return sorted(k for k in now if then.get(k, json_ready(DEFAULTS.get(k))) != now[k])


NULLABLE = ("data_dir", "cache_dir", "encoder_weights")
"""Keys that may be null (``data_dir: null`` = the Kaggle mount); elsewhere null (e.g. ``epochs:``) is an error."""


class ParamError(ValueError):
    """An unknown key or a value of the wrong type in a profile or notebook parameters."""


class Params(dict):
    """Resolved parameters: a dict with attribute access (``p.epochs``)."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError as exc:
            raise AttributeError(name) from exc

    def subset(self, keys: Iterable[str]) -> dict[str, Any]:
        """The values of ``keys`` as a plain dict (for hashing and provenance)."""
        return {k: self[k] for k in keys}


def _check_type(key: str, value: Any, source: str) -> Any:
    default = DEFAULTS[key]
    if value is None and default is not None and key not in NULLABLE:
        raise ParamError(f"{source}: '{key}' needs a value, got null (an empty YAML value is null)")
    if default is None or value is None:
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ParamError(f"{source}: '{key}' must be true or false, got {value!r}")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            hint = " (YAML 1.1 reads 1e-4 as text: write 1.0e-4)" if isinstance(value, str) else ""
            raise ParamError(f"{source}: '{key}' must be a number, got {value!r}{hint}")
        return float(value)
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ParamError(f"{source}: '{key}' must be an integer, got {value!r}")
        return value
    if isinstance(default, str):
        if not isinstance(value, str):
            raise ParamError(f"{source}: '{key}' must be a string, got {value!r}")
        return value
    if isinstance(default, list):
        if not isinstance(value, (list, tuple)):
            raise ParamError(f"{source}: '{key}' must be a list, got {value!r}")
        return list(value)
    return value


def validate(values: Mapping[str, Any], source: str = "parameters") -> dict[str, Any]:
    """Check keys and types of ``values`` against :data:`DEFAULTS`.

    Raises:
        ParamError: naming the first unknown key (with the closest known keys) or bad value.
    """
    out = {}
    for key, value in values.items():
        if key not in DEFAULTS:
            close = difflib.get_close_matches(key, DEFAULTS, n=3)
            hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise ParamError(f"{source}: unknown parameter '{key}'{hint}")
        out[key] = _check_type(key, value, source)
    return out


def load_profiles(*paths: str | Path) -> dict[str, Any]:
    """Merge flat YAML profiles in order (later files win, like ``papermill -f a -f b``), validated."""
    merged: dict[str, Any] = {}
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise ParamError(f"{path}: params file does not exist")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise ParamError(f"{path}: not valid YAML ({exc})") from exc
        if not isinstance(data, dict):
            raise ParamError(f"{path}: a params file must be a flat mapping of key: value")
        merged.update(validate(data, str(path)))
    return merged


def resolve(
    namespace: Mapping[str, Any] | None = None, *, _source: str = "notebook parameters", **overrides: Any
) -> Params:
    """Resolve the parameters a notebook sees: DEFAULTS ← its variables ← overrides, all validated.

    In a notebook call ``P = liverlib.resolve_params(globals())`` after the parameters cell (and the
    cell papermill injects): every plain literal variable whose name does not start with ``_`` counts
    as a parameter, so a misspelled key injected by papermill is an error here.
    """
    values: dict[str, Any] = {}
    for key, value in (namespace or {}).items():
        if key.startswith("_") or key in ("In", "Out", "exit", "quit", "get_ipython"):
            continue
        # no parameter is a mapping: dicts are results of later cells (``P`` itself, ``cur = run_curation(P)``)
        # that a rerun of the notebook without a kernel restart would otherwise report as unknown parameters
        if isinstance(value, (bool, int, float, str, list, tuple)) or value is None:
            values[key] = value
    values.update(overrides)
    if values.get("profiles"):  # notebook 01 opened alone: DEFAULTS ← profiles ← its cell ← injected values
        values = {**load_profiles(*(profile_path(x) for x in values["profiles"])), **values}
    p = Params(copy.deepcopy(DEFAULTS))  # list defaults must not be shared with (and mutated through) a run
    p.update(validate(values, _source))
    if p.hu_window and (len(p.hu_window) != 2 or not p.hu_window[0] < p.hu_window[1]):
        raise ParamError(f"'hu_window' must be [] or [low, high] with low < high, got {p.hu_window}")
    if p.folds == 1 or p.folds < 0:
        raise ParamError(f"'folds' must be 0 (no cross-validation) or at least 2, got {p.folds}")
    if p.feeder not in ("dataloader", "gpu"):
        raise ParamError(f"'feeder' must be 'dataloader' or 'gpu', got {p.feeder!r}")
    if p.lr_schedule not in LR_SCHEDULES:
        raise ParamError(f"'lr_schedule' must be one of {', '.join(LR_SCHEDULES)}, got {p.lr_schedule!r}")
    if p.tracking not in TRACKING:
        raise ParamError(f"'tracking' must be 'off' or 'mlflow', got {p.tracking!r}")
    if not 0.0 <= p.train_empty_fraction <= 1.0:
        raise ParamError(f"'train_empty_fraction' must be in [0, 1], got {p.train_empty_fraction}")
    if p.folds and not 0 <= p.fold < p.folds:
        raise ParamError(f"'fold' must be in 0..{p.folds - 1}, got {p.fold}")
    return p


def profile_path(name: str | Path) -> Path:
    """A profile by name (``"smoke"`` → ``params/smoke.yaml`` of the project) or by path."""
    text = str(name)
    if "/" in text or text.endswith((".yaml", ".yml")):
        return resolve_path(text)
    return project_root() / "params" / f"{text}.yaml"


STAGE_KEYS: dict[str, tuple[str, ...]] = {
    "02": ("cache_dir",),
    "03": ("device", "amp", "cpu_bf16", "cpu_parallel_trainings", "channels_last", "num_workers", "compile"),
    "04": ("device", "amp", "cpu_bf16", "eval_batch_size"),
    "05": (),
    "06": (),
}
"""What notebooks 02–06 may change in their own parameters cell; every other setting is the run's, recorded by
notebook 01 in ``<run>/params.json``. These keys say how a stage runs on this machine, not what it computes."""

RUN_KEYS = ("run_name", "output_root", "overwrite")
"""Which run a stage works on, and whether it may replace outputs made with other parameters."""


def read_run_parameters(path: Path, run_name: str) -> dict[str, Any]:
    """The validated ``parameters`` of a run's ``params.json`` (written by notebook 01).

    Raises:
        ParamError: naming ``path``: not valid JSON (e.g. cut short by a full disk), not a run's parameters, or a
            bad value; the message says to rerun notebook 01 for ``run_name``.
    """
    try:
        recorded = json.loads(path.read_text(encoding="utf-8"))["parameters"]
    except json.JSONDecodeError as exc:  # e.g. cut short by a full disk or a killed copy
        raise ParamError(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); rerun notebook 01 "
                         f"for run {run_name!r} with its parameters (it rewrites the file)") from None  # fmt: skip
    except (OSError, UnicodeDecodeError, KeyError, TypeError) as exc:
        raise ParamError(f"{path}: not the run's parameters ({type(exc).__name__}: {exc}); rerun notebook 01 for run "
                         f"{run_name!r} with its parameters (it rewrites the file)") from None  # fmt: skip
    return validate(recorded, str(path))


def stage_params(stage: str, namespace: Mapping[str, Any] | None = None, **overrides: Any) -> Params:
    """The parameters of notebook ``stage`` (02–06): the run's recorded ones, plus what the stage may change.

    Reads ``<output_root>/<run_name>/params.json`` (written by notebook 01 or, for an ablation arm, by the
    runner), so a notebook opened alone works on the run's settings, not on its own defaults. A value given
    for another of the run's settings must equal the recorded one (the runner passes every value).

    Raises:
        ParamError: unknown key; no ``params.json`` (notebook 01 has not run); a run setting that differs
            from the recorded one (names the keys and the file).
    """
    stage = stage[:2]
    values = {k: v for k, v in (namespace or {}).items() if _is_parameter(k, v)}
    values.update(overrides)
    values = validate(values, f"notebook {stage} parameters")
    run_name, output_root = (
        values.get("run_name", DEFAULTS["run_name"]),
        values.get("output_root", DEFAULTS["output_root"]),
    )
    path = resolve_path(output_root) / str(run_name) / "params.json"
    if not path.is_file():
        raise ParamError(
            f"{path}: missing; run notebook 01 for run {run_name!r} first (it records the run's parameters)"
        )
    recorded = read_run_parameters(path, str(run_name))
    may = set(STAGE_KEYS[stage]) | set(RUN_KEYS)
    differ = changed_keys(recorded, {k: v for k, v in values.items() if k not in may and k != "profiles"})
    if differ:
        raise ParamError(f"notebook {stage}: {', '.join(differ)} differ from the run's parameters in {path}; these are "
                         "set in notebook 01 (rerun it, with overwrite: true where a stage ran) or use another run_name")  # fmt: skip
    return resolve(**{**recorded, **{k: v for k, v in values.items() if k in may}, "profiles": []},
                   _source=f"notebook {stage} parameters")  # fmt: skip


def _is_parameter(key: str, value: Any) -> bool:
    """A notebook variable that counts as a parameter (see :func:`resolve`)."""
    if key.startswith("_") or key in ("In", "Out", "exit", "quit", "get_ipython"):
        return False
    return isinstance(value, (bool, int, float, str, list, tuple)) or value is None


def project_root(start: str | Path | None = None) -> Path:
    """The folder holding ``params/`` and ``pyproject.toml`` above ``start`` (or cwd), else cwd."""
    here = Path(start or Path.cwd()).resolve()
    package_parent = Path(__file__).resolve().parents[1]  # an editable/source checkout
    for d in (here, *here.parents, package_parent):
        if (d / "pyproject.toml").is_file() and (d / "liverlib").is_dir():
            return d
    return here


def resolve_path(value: str | Path, root: Path | None = None) -> Path:
    """An absolute path: relative values are taken from the project root (notebooks run in notebooks/)."""
    p = Path(value).expanduser()
    return p if p.is_absolute() else (root or project_root()) / p


def digest(values: Mapping[str, Any], n: int = 12) -> str:
    """A short stable hash of JSON-serialisable values (cache and run keys)."""
    blob = json.dumps(values, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:n]
