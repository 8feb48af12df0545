"""The tiny phantom run the training, stage, evaluation and DDP tests share: parameters and its preparation."""

from __future__ import annotations

import shutil
from pathlib import Path

from liverlib import stages
from liverlib.params import Params

TINY_RUN = dict(data_dir="phantom", phantom_cases=12, phantom_size=64, phantom_slices=[16, 20], n_volumes=9,
                test_fraction=0.2, image_size=32, batch_size=8, lr=1e-3, num_workers=0, train_baseline=False,
                device="cpu")  # fmt: skip
"""12 phantom cases at 64² (9 eligible: 6 train / 1 val / 2 test), 32² images, CPU: seconds per epoch."""


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
