"""The tiny phantom run the training, stage, evaluation and DDP tests share: parameters and its preparation; and a
copied project for the whole study and the stored notebooks (tests/test_notebooks.py, tests/test_jupyterlab.py)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from liverlib.params import Params
from liverlib.pipeline import stages
from liverlib.progress import ENV as PROGRESS_ENV

TINY_RUN = dict(data_dir="phantom", phantom_cases=12, phantom_size=64, phantom_slices=[16, 20], n_volumes=9,
                test_fraction=0.2, image_size=32, batch_size=8, lr=1e-3, num_workers=0, train_baseline=False,
                device="cpu", cpu_bf16=False)  # fmt: skip
"""12 phantom cases at 64² (9 eligible: 6 train / 1 val / 2 test), 32² images, CPU: seconds per epoch; fp32 (the
default is bf16 where the CPU has it), so tests that compare numbers compare them exactly."""


def prepare(p: Params) -> Params:
    """Notebooks 01–02 of run ``p`` (curation, cache; no figures); returns ``p``."""
    stages.run_curation(p, progress=False)
    stages.run_preprocessing(p, progress=False, figures_too=False)
    return p


PREPARED_FILES = ("manifest.csv", "volumes.csv", "splits.json", "preprocess.json")
"""What notebooks 01–02 leave in a run folder (the cache itself is shared under ``outputs/cache``)."""


def share_prepared(root: Path, source: str, name: str) -> None:
    """Run folder ``name`` under ``root`` starts from run ``source``'s curation and cache (files copied once)."""
    run = root / name
    run.mkdir(exist_ok=True)
    for f in PREPARED_FILES:
        if not (run / f).exists():
            shutil.copy2(root / source / f, run / f)


ROOT = Path(__file__).resolve().parents[1]
STUDY_TINY = {"phantom_cases": 12, "n_volumes": 9, "phantom_size": 64, "phantom_slices": [16, 20], "image_size": 32,
              "epochs": 2, "baseline_epochs": 1, "bootstrap_resamples": 50,
              "ablation_arms": ["paper", "no_enhancement"]}  # fmt: skip
"""Over the smoke profile, for a whole study in a copied project: seconds per epoch. eval_batch_size stays the stored
notebook 04's (stage 04's guard compares it)."""
STUDY = ("-m", "liverlib", "study", "-f", "params/base.yaml", "-f", "params/smoke.yaml")
"""What `make study` runs (PROFILE=smoke), as arguments of the venv's python."""


def copy_project(dest: Path, profile: dict | None = None) -> Path:
    """A project folder ``dest`` that liverlib takes for its root, so that the stored notebooks run there unmodified
    (``output_root: outputs`` is ``dest/outputs``): this checkout's notebooks and params with ``profile`` (default
    :data:`STUDY_TINY`) over params/smoke.yaml, and pyproject.toml; ``liverlib`` links to this checkout's package."""
    shutil.copytree(ROOT / "notebooks", dest / "notebooks", ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    shutil.copytree(ROOT / "params", dest / "params")
    shutil.copy2(ROOT / "pyproject.toml", dest / "pyproject.toml")
    (dest / "liverlib").symlink_to(ROOT / "liverlib", target_is_directory=True)
    smoke = yaml.safe_load((ROOT / "params/smoke.yaml").read_text(encoding="utf-8"))
    smoke.update(STUDY_TINY if profile is None else profile)
    (dest / "params/smoke.yaml").write_text(yaml.safe_dump(smoke, sort_keys=False), encoding="utf-8")
    return dest


def liverlib_cli(project: Path, *args: str, timeout: float = 1500) -> subprocess.CompletedProcess:
    """``python -m liverlib ...`` run in ``project`` (its cwd makes it the project root), as a user runs it: without
    pytest's variables (ipykernel sends a kernel's own stderr to the console only outside pytest)."""
    env = {k: v for k, v in os.environ.items() if k != PROGRESS_ENV and not k.startswith("PYTEST_")}
    return subprocess.run([sys.executable, *args], cwd=project, env=env, capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip


def sigterm_once(args: list[str], ready: Path, *, wait: float) -> tuple[int, str]:
    """``python *args`` with this checkout on PYTHONPATH, sent SIGTERM once ``ready`` exists (or it ended, or ``wait``
    seconds passed), as kill and a scheduler send it; returns its exit code and stderr."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip
    deadline = time.monotonic() + wait
    while not ready.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err
