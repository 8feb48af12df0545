"""Multi-process training under torchrun (DistributedDataParallel, gloo on CPU, 2 processes)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from liverlib.model.checkpoint import load_checkpoint
from liverlib.params import resolve
from tests.tiny import TINY_RUN, prepare

ROOT = Path(__file__).resolve().parents[1]
TINY = {**TINY_RUN, "epochs": 2, "batch_size": 4, "model": "unet_smp"}

pytestmark = pytest.mark.slow


def test_torchrun_two_processes_train_and_rank0_writes(tmp_path: Path) -> None:
    p = prepare(resolve(**TINY, output_root=str(tmp_path), run_name="ddp"))
    sets = [f"{k}={v}" for k, v in {**TINY, "output_root": str(tmp_path), "run_name": "ddp"}.items()]
    sets = [s.replace("[16, 20]", "[16,20]") for s in sets]
    # --standalone: torchrun picks a free port itself (a fixed one collides with a concurrent run on the machine)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "-m", "liverlib", "train", "-f", str(ROOT / "params/base.yaml"), "--set", *sets],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    hist = pd.read_csv(tmp_path / "ddp/models/unet_smp/history.csv")
    assert list(hist.epoch) == [1, 2]
    assert hist.val_liver_dice.between(0, 1).all() and (hist.train_loss > 0).all()
    ckpt = load_checkpoint(tmp_path / "ddp/models/unet_smp/last.pt")
    assert ckpt["world_size"] == 2
    assert not any(k.startswith("module.") for k in ckpt["model"])  # the unwrapped model was saved
    # rank 0's BatchNorm buffers were broadcast before validation: both ranks held identical buffers
    digests = ckpt["rank_buffer_digests"]
    assert len(digests) == 2 and digests[0] == digests[1]
    assert ckpt["split"]["train"] and not set(ckpt["split"]["train"]) & set(ckpt["split"]["test"])
    # validation metrics are gathered over all ranks and every rank scores with the saved model: the
    # single-process validation of the saved weights on the whole validation set gives the same per-slice metrics (the loss itself depends on how slices
    # are batched, because its Dice term pools a batch)
    import torch

    from liverlib.data.dataset import SliceDataset, open_run_cache, split_index
    from liverlib.data.preprocess import PreprocessConfig
    from liverlib.model.checkpoint import model_from_checkpoint
    from liverlib.run import RunDir
    from liverlib.training.loop import LoaderConfig, make_loader, validate
    from liverlib.training.losses import CombinedLoss

    run = RunDir.from_params(p)
    model = model_from_checkpoint(ckpt)
    ds = SliceDataset(split_index(run.manifest, "val"), open_run_cache(run.root, PreprocessConfig.from_params(p)))
    val = validate(
        model,
        make_loader(ds, LoaderConfig.from_params(p), shuffle=False, epoch=2, device=torch.device("cpu")),
        CombinedLoss(),
        torch.device("cpu"),
    )
    for key in ("val_liver_dice", "val_tumor_dice", "val_tumor_dice_gtpos", "val_pixel_acc"):
        assert val[key] == pytest.approx(hist[key].iloc[-1], abs=1e-6), key
