"""BatchNorm statistics that describe the weights being scored (docs/training.md, issue 17).

The collapse: a model trained a few epochs at lr 1e-3 and scored in ``eval()`` mode on its *own training slices*
with the running statistics training left scores far below what the same weights reach with batch statistics.
The fix (:func:`liverlib.training.validation.recompute_bn_stats`, before every validation and save) closes the gap.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from liverlib.data.dataset import SliceDataset, open_run_cache, split_index
from liverlib.data.preprocess import PreprocessConfig
from liverlib.model.checkpoint import load_checkpoint, model_from_checkpoint
from liverlib.params import resolve
from liverlib.run import RunDir
from liverlib.training import loop as training
from liverlib.training.losses import CombinedLoss
from liverlib.training.validation import BatchStatistics, batchnorms, recompute_bn_stats, validate
from tests.tiny import TINY_RUN, prepare

EPOCHS = 3
LR = 1e-2  # large steps: the running averages lag the weights (measured gap 0.30 liver Dice; at 2e-3 none)


def _net(dropout: float = 0.0) -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.Dropout(dropout), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
        torch.nn.Conv2d(4, 3, 1), torch.nn.BatchNorm2d(3),
    )  # fmt: skip


def _batches(n: int = 20, seed: int = 0) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 8, 8, generator=g) * 3 + 1
    return DataLoader(TensorDataset(x, torch.zeros(n, 8, 8, dtype=torch.long)), batch_size=6, shuffle=False)


def test_recompute_equals_torch_update_bn_without_dropout() -> None:
    """The oracle: torch.optim.swa_utils.update_bn (a cumulative average after a reset) on a model without dropout."""
    a, b = _net(), _net()
    b.load_state_dict(a.state_dict())
    for m in batchnorms(a) + batchnorms(b):  # stale statistics, far from the data's
        m.running_mean.fill_(-5.0)
        m.running_var.fill_(9.0)
    assert recompute_bn_stats(a, _batches(), torch.device("cpu")) == 20
    torch.optim.swa_utils.update_bn(_batches(), b)
    for ma, mb in zip(batchnorms(a), batchnorms(b), strict=True):
        torch.testing.assert_close(ma.running_mean, mb.running_mean)
        torch.testing.assert_close(ma.running_var, mb.running_var)
        assert ma.momentum == 0.1  # restored
    assert not a.training or a.training == b.training


def test_dropout_is_off_while_statistics_are_recomputed() -> None:
    """Dropout before a BatchNorm would widen its variance; the scored model runs without it, so must the pass."""
    with_dropout, plain = _net(dropout=0.5), _net()
    plain.load_state_dict(with_dropout.state_dict())
    with_dropout.train()
    recompute_bn_stats(with_dropout, _batches(), torch.device("cpu"))
    torch.optim.swa_utils.update_bn(_batches(), plain)
    for ma, mb in zip(batchnorms(with_dropout), batchnorms(plain), strict=True):
        torch.testing.assert_close(ma.running_var, mb.running_var)
    assert with_dropout.training  # the caller's mode is restored


@pytest.fixture(scope="module")
def stale(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny phantom run trained as before the fix: the recomputation switched off, so ``last.pt`` holds the running
    statistics training left (the weights are those of a fixed run: training never reads running statistics)."""
    root = tmp_path_factory.mktemp("bn")
    p = prepare(resolve(**{**TINY_RUN, "lr": LR}, epochs=EPOCHS, output_root=str(root), run_name="stale"))
    mp = pytest.MonkeyPatch()
    mp.setattr(training, "recompute_bn_stats", lambda *a, **k: 0)
    try:
        training.train(p, progress=False)
    finally:
        mp.undo()
    return root


def test_running_statistics_collapse_validation_and_recomputing_them_fixes_it(stale: Path) -> None:
    p = resolve(**{**TINY_RUN, "lr": LR}, epochs=EPOCHS, output_root=str(stale), run_name="stale")
    run = RunDir.from_params(p)
    own = DataLoader(SliceDataset(split_index(run.manifest, "train"), open_run_cache(run.root, PreprocessConfig.from_params(p)), None),
                     batch_size=8)  # fmt: skip
    model = model_from_checkpoint(load_checkpoint(run.root / "models/hybrid/last.pt"))
    loss, cpu = CombinedLoss(), torch.device("cpu")
    batch = validate(BatchStatistics(model), own, loss, cpu)["val_liver_dice"]
    before = validate(model, own, loss, cpu)["val_liver_dice"]
    # before the fix: the saved model, scored in eval() mode on the very slices it trained on, falls far below what
    # its weights do with batch statistics
    assert before < batch - 0.15, (before, batch)
    recompute_bn_stats(model, own, cpu)
    after = validate(model, own, loss, cpu)["val_liver_dice"]
    assert after > batch - 0.05 and after > before + 0.15, (before, after, batch)
