"""Training loop: resume equals an uninterrupted run; guards against mismatched caches, checkpoints and splits;
repairs after a kill; Ctrl-C leaves a resumable run. Every test prepares what it reads (no test order)."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from liverlib.errors import RunError
from liverlib.files import read_json, write_json
from liverlib.model.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from liverlib.params import resolve
from liverlib.training.loop import TrainingInterrupted, train
from tests.tiny import TINY_RUN, prepare, share_prepared, sigterm_once

TINY = {**TINY_RUN, "epochs": 3}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Curation and cache of a tiny phantom run ``base`` (no training)."""
    root = tmp_path_factory.mktemp("train")
    prepare(resolve(**TINY, output_root=str(root), run_name="base"))
    return root


def _params(root: Path, name: str, **kw: object):
    """Params of run folder ``name`` sharing ``base``'s curation and cache (files copied on first use)."""
    p = resolve(**TINY, output_root=str(root), run_name="base")
    if name != "base":
        share_prepared(root, "base", name)
    return resolve(**{**dict(p), **kw, "run_name": name})


@pytest.fixture(scope="module")
def full(prepared: Path) -> dict:
    """An uninterrupted 3-epoch run ``full``."""
    return train(_params(prepared, "full"), progress=False)


def test_resume_matches_uninterrupted_run(prepared: Path, full: dict) -> None:
    p = _params(prepared, "killed")
    first = train(p, progress=False, stop_after=1)
    assert len(first["history"]) == 1
    resumed = train(p, progress=False)
    assert resumed["resumed_from"] == 1
    cols = ["epoch", "train_loss", "val_loss", "val_liver_dice", "lr"]
    pd.testing.assert_frame_equal(full["history"][cols], resumed["history"][cols])
    a = load_checkpoint(prepared / "full/models/hybrid/last.pt")["model"]
    b = load_checkpoint(prepared / "killed/models/hybrid/last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_saved_batchnorm_statistics_are_those_of_the_saved_weights(prepared: Path, full: dict) -> None:
    """``last.pt`` holds BatchNorm statistics recomputed on the clean training slices (up to BN_SLICES) after the last epoch
    (docs/training.md), not the running average training left: recomputing them again gives the same buffers."""
    from liverlib.data.dataset import SliceDataset, open_run_cache, split_index
    from liverlib.data.preprocess import PreprocessConfig
    from liverlib.run import RunDir
    from liverlib.runtime import amp_settings
    from liverlib.training.loop import LoaderConfig, bn_slices, make_loader
    from liverlib.training.validation import recompute_bn_stats

    p = _params(prepared, "full")
    run = RunDir.from_params(p)
    saved = load_checkpoint(run.root / "models/hybrid/last.pt")
    model = model_from_checkpoint(saved)
    ds = SliceDataset(
        bn_slices(split_index(run.manifest, "train")), open_run_cache(run.root, PreprocessConfig.from_params(p)), None
    )
    use_amp, dtype, _ = amp_settings(torch.device("cpu"), p.amp, cpu_bf16=p.cpu_bf16)  # as training computed them
    recompute_bn_stats(model, make_loader(ds, LoaderConfig.from_params(p), shuffle=True, epoch=3, device=torch.device("cpu")), torch.device("cpu"),
                       channels_last=True, autocast=use_amp, dtype=dtype)  # fmt: skip
    again = model.state_dict()
    for k, v in saved["model"].items():
        if "running_" in k:
            torch.testing.assert_close(again[k], v, rtol=1e-4, atol=1e-5)


def test_learning_on_the_phantom(full: dict) -> None:
    h = full["history"]
    assert h.train_loss.iloc[-1] < h.train_loss.iloc[0]
    # GT-positive tumor Dice is logged beside the smoothed one, over the slices that hold tumor
    assert (h.val_tumor_gtpos_n > 0).all() and h.val_tumor_dice_gtpos.between(0, 1).all()


def test_finished_run_is_not_retrained_and_other_params_are_refused(prepared: Path, full: dict) -> None:
    p = _params(prepared, "full")
    best = prepared / "full/models/hybrid/best.pt"
    before = best.stat().st_mtime_ns
    again = train(p, progress=False)
    assert again["resumed_from"] == 3 and best.stat().st_mtime_ns == before
    with pytest.raises(RunError, match="other parameters"):
        train(_params(prepared, "full", lr=5e-4), progress=False)
    assert best.stat().st_mtime_ns == before


@pytest.mark.reliability("refused: 'an earlier training here used another split'; with overwrite: retrained", 1,
                         "the old checkpoints until overwrite")  # fmt: skip
def test_changed_split_is_refused_or_retrained(prepared: Path) -> None:
    """Re-curation moved a training volume into test: the finished model is not reused."""
    p = _params(prepared, "resplit", epochs=1)
    first = train(p, progress=False)
    splits = read_json(prepared / "resplit/splits.json")
    moved = splits["splits"]["train"][0]
    splits["splits"]["train"] = splits["splits"]["train"][1:]
    splits["splits"]["test"] = [*splits["splits"]["test"], moved]
    write_json(prepared / "resplit/splits.json", splits)
    with pytest.raises(RunError, match="another split"):
        train(p, progress=False)
    again = train(_params(prepared, "resplit", epochs=1, overwrite=True), progress=False)
    assert again["resumed_from"] == 0 and moved in again["split"]["test"] and moved not in again["split"]["train"]
    ckpt = load_checkpoint(prepared / "resplit/models/hybrid/best.pt")
    assert moved in ckpt["split"]["test"] and moved in first["split"]["train"]
    assert ckpt["config"]["split"] == again["split"]


@pytest.mark.reliability("nothing; the next run removes the temp file and repairs best.pt/history.csv", None,
                         "last.pt (the last complete epoch)")  # fmt: skip
def test_kill_between_writes_is_repaired(prepared: Path) -> None:
    """A kill during a checkpoint write (stale temp), or between last.pt and best.pt/history.csv."""
    p = _params(prepared, "repair", epochs=2)
    train(p, progress=False, stop_after=1)
    out = prepared / "repair/models/hybrid"
    stale = out / ".last.k3j_x9ab.pt"  # the name mkstemp gives an atomic write of last.pt
    stale.write_bytes(b"x" * 1000)
    last = load_checkpoint(out / "last.pt")
    (out / "history.csv").unlink()
    old_best = load_checkpoint(out / "best.pt")
    save_checkpoint({**old_best, "epoch": 0}, out / "best.pt")  # best.pt one epoch behind last.pt
    res = train(p, progress=False)
    assert not stale.exists()
    assert load_checkpoint(out / "best.pt")["epoch"] in (1, 2) and res["resumed_from"] == 1
    assert list(pd.read_csv(out / "history.csv").epoch) == [1, 2]
    assert last["best"]["epoch"] == 1  # the first epoch is always the best so far: repaired from last.pt


@pytest.mark.reliability("'interrupted at epoch N of M (... last.pt); rerun the same command to resume'", 130,
                         "last.pt of the last complete epoch")  # fmt: skip
def test_ctrl_c_leaves_a_resumable_run(prepared: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import liverlib.training.loop as tr

    p = _params(prepared, "ctrlc", epochs=2)
    train(p, progress=False, stop_after=1)
    real = tr.train_epoch

    def interrupt(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(tr, "train_epoch", interrupt)
    with pytest.raises(TrainingInterrupted, match="interrupted at epoch 2 of 2 .*rerun the same command to resume"):
        train(p, progress=False)
    monkeypatch.setattr(tr, "train_epoch", real)
    assert train(p, progress=False)["resumed_from"] == 1


@pytest.mark.reliability("'liverlib train: hybrid: interrupted at epoch N of M (... last.pt); rerun the same command to "
                         "resume', the same line as Ctrl-C", 143, "last.pt of the last complete epoch; a rerun resumes")  # fmt: skip
def test_sigterm_is_handled_like_ctrl_c(prepared: Path, tmp_path: Path) -> None:
    """SIGTERM (what kill and a scheduler send) to a training CLI: it used to exit 143 with nothing printed."""
    p = _params(prepared, "term", epochs=200)
    profile = tmp_path / "term.yaml"
    profile.write_text(yaml.safe_dump({**TINY, "epochs": 200, "output_root": str(prepared), "run_name": "term"}))
    last = prepared / "term/models/hybrid/last.pt"
    code, err = sigterm_once(["-m", "liverlib", "train", "-f", str(profile)], last, wait=300)
    assert code == 143, err
    lines = [ln for ln in err.splitlines() if ln.startswith("liverlib")]  # progress bars aside
    assert "Traceback" not in err and len(lines) == 1 and re.fullmatch(r"liverlib train: hybrid: interrupted at epoch \d+ of 200 \(\d+ complete in "
                                            r".*last\.pt\); rerun the same command to resume", lines[0]), err  # fmt: skip
    done = load_checkpoint(last)["epoch"]
    assert done >= 1 and not list(last.parent.glob(".last.*"))
    assert train(p, progress=False, stop_after=1)["resumed_from"] == done


@pytest.mark.reliability("one line: 'liverlib train: error: PATH/last.pt: cannot be written (the checkpoint writer "
                         "failed (... file write failed; a full disk?)); the earlier file is kept unchanged; ...'", 1,
                         "last.pt of the last complete epoch")  # fmt: skip
def test_a_failed_checkpoint_write_is_one_line_naming_it(prepared: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    """A full disk during a checkpoint write: `liverlib train` showed a traceback ending in 'RuntimeError: [enforce fail
    at inline_container.cc:672] ... file write failed'."""
    from liverlib.pipeline.cli import main

    p = _params(prepared, "full_disk", epochs=2)
    train(p, progress=False, stop_after=1)
    last = prepared / "full_disk/models/hybrid/last.pt"
    before = last.read_bytes()
    profile = tmp_path / "p.yaml"
    profile.write_text(yaml.safe_dump({**TINY, "epochs": 2, "output_root": str(prepared), "run_name": "full_disk"}))

    def full(obj, f, *a, **k):
        Path(f).write_bytes(b"PK half")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing file "
                           "data/0: file write failed")  # fmt: skip

    monkeypatch.setattr(torch, "save", full)
    assert main(["train", "-f", str(profile)]) == 1
    err = [ln for ln in capsys.readouterr().err.replace("\r", "\n").splitlines() if ln.startswith("liverlib")]
    assert len(err) == 1 and err[0].startswith(f"liverlib train: error: {last}: cannot be written (the checkpoint "
                                               "writer failed (") and "the earlier file is kept unchanged" in err[0]  # fmt: skip
    assert last.read_bytes() == before and not list(last.parent.glob(".last.*"))


def test_cache_made_with_other_preprocessing_is_refused(prepared: Path) -> None:
    with pytest.raises(RunError, match="other preprocessing"):
        train(_params(prepared, "other", use_clahe=False), progress=False)


def test_missing_cache_and_empty_split_are_clear_errors(prepared: Path, tmp_path: Path) -> None:
    with pytest.raises(RunError, match="notebook 01|notebook 02|missing"):
        train(resolve(**TINY, output_root=str(tmp_path), run_name="empty"), progress=False)
    p = _params(prepared, "nosplit")
    m = pd.read_csv(prepared / "nosplit/manifest.csv")
    m[m.split != "val"].to_csv(prepared / "nosplit/manifest.csv", index=False)
    with pytest.raises(RunError, match="'val' split has no slices"):
        train(p, progress=False)


def test_checkpoint_from_another_model_is_refused(prepared: Path) -> None:
    train(_params(prepared, "one", epochs=1), progress=False)
    ckpt = load_checkpoint(prepared / "one/models/hybrid/best.pt")
    ckpt["config"] = {**ckpt["config"], "model": "unet_smp"}
    with pytest.raises(RunError, match="do not fit"):
        model_from_checkpoint(ckpt)
    bad = prepared / "not_a_checkpoint.pt"
    torch.save({"weights": 1}, bad)
    with pytest.raises(RunError, match="not a liverlib checkpoint"):
        load_checkpoint(bad)


def test_gpu_feeder_trains_on_the_device_path(prepared: Path) -> None:
    """feeder: gpu (the split resident on the device, torch augmentation) trains, and switching feeder is refused."""
    p = _params(prepared, "feeder", epochs=2, feeder="gpu")
    res = train(p, progress=False)
    h = res["history"]
    assert list(h.epoch) == [1, 2] and (h.train_loss > 0).all() and h.val_liver_dice.between(0, 1).all()
    assert h.train_loss.iloc[-1] < h.train_loss.iloc[0]
    with pytest.raises(RunError, match="feeder"):
        train(_params(prepared, "feeder", epochs=2), progress=False)


@pytest.mark.reliability("'PATH/last.pt: holds non-finite weights (N of M tensors, e.g. ...); delete it or set "
                         "overwrite: true to retrain from scratch'; with overwrite: retrained from epoch 1", 1,
                         "last.pt untouched until overwrite")  # fmt: skip
def test_nan_last_pt_is_refused_or_retrained(prepared: Path) -> None:
    """A last.pt saved with NaN weights (a run fed a NaN cache image): every rerun resumed from it and failed with
    'Encountered all NA values', also with overwrite: true."""
    p = _params(prepared, "nanlast", epochs=1)
    train(p, progress=False)
    last = prepared / "nanlast/models/hybrid/last.pt"
    ckpt = load_checkpoint(last)
    ckpt["model"] = {k: t.fill_(float("nan")) if t.is_floating_point() else t for k, t in ckpt["model"].items()}
    save_checkpoint(ckpt, last)
    before = last.read_bytes()
    with pytest.raises(RunError, match=rf"^{last}: holds non-finite weights \(\d+ of \d+ tensors, e\.g\. .*\); delete "
                                       r"it or set overwrite: true to retrain from scratch$"):  # fmt: skip
        train(_params(prepared, "nanlast", epochs=2), progress=False)
    assert last.read_bytes() == before
    again = train(_params(prepared, "nanlast", epochs=1, overwrite=True), progress=False)
    assert again["resumed_from"] == 0 and list(again["history"].epoch) == [1]
    assert all(t.isfinite().all() for t in load_checkpoint(last)["model"].values() if t.is_floating_point())


def test_training_loader_drops_a_last_batch_of_one_slice() -> None:
    """BatchNorm cannot train on one slice whose deepest map is 1×1 (smp at 32²: "Expected more than 1 value per
    channel"); the training loader drops such a batch, validation keeps every slice."""
    from torch.utils.data import TensorDataset

    from liverlib.training.loop import LoaderConfig, make_loader

    p = resolve(batch_size=8, num_workers=0)
    cpu = torch.device("cpu")
    for n, train_batches in ((9, 1), (10, 2), (8, 1), (1, 1)):
        ds = TensorDataset(torch.zeros(n, 1))
        assert len(make_loader(ds, LoaderConfig.from_params(p), shuffle=True, epoch=1, device=cpu)) == train_batches
        assert len(make_loader(ds, LoaderConfig.from_params(p), shuffle=False, epoch=1, device=cpu)) == -(-n // 8)


def test_bn_slices_spread_over_the_split() -> None:
    """BatchNorm's statistics are recomputed on an evenly spaced subset: first and last rows in, every row once."""
    from liverlib.training.loop import bn_slices

    index = pd.DataFrame({"volume_id": [v for v in range(5) for _ in range(40)], "slice_idx": list(range(200))})
    sub = bn_slices(index, 96)
    assert len(sub) == 96 and sub.slice_idx.is_unique and sub.slice_idx.is_monotonic_increasing
    assert sub.slice_idx.iloc[0] == 0 and sub.slice_idx.iloc[-1] == 199 and set(sub.volume_id) == set(range(5))
    assert bn_slices(index.head(50), 96).equals(index.head(50))


def test_lr_schedules_take_the_run_parameters() -> None:
    """make_scheduler hands LrSchedule the five values it reads: onecycle warms up to lr, then decays; plateau
    multiplies lr by plateau_factor after plateau_patience epochs without improvement."""
    from liverlib.training.schedule import make_scheduler

    def lrs(p, losses):
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=p.lr)
        sched, out = make_scheduler(opt, p, epochs=2, steps_per_epoch=4), []
        for loss in losses:
            for _ in range(4):
                opt.step()
                sched.batch()
                out.append(opt.param_groups[0]["lr"])
            sched.epoch(loss)
        return out

    one = lrs(resolve(lr_schedule="onecycle", lr=1e-2, warmup_epochs=1), [1.0, 1.0])
    assert max(one) == pytest.approx(1e-2) and one.index(max(one)) == 2 and one[-1] < 1e-6  # peak after 8·½ − 1 steps
    plateau = lrs(resolve(lr_schedule="plateau", lr=1e-2, plateau_factor=0.5, plateau_patience=0), [1.0, 1.0])
    assert plateau[:4] == [1e-2] * 4 and plateau[4:] == [1e-2] * 4
    third = lrs(resolve(lr_schedule="plateau", lr=1e-2, plateau_factor=0.5, plateau_patience=0), [1.0, 1.0, 1.0])
    assert third[-1] == pytest.approx(5e-3)
