"""Progress that fits where it runs (liverlib.progress), what the runner injects, and the curation guard on resolved
``data_dir`` (issue 18 items 1, 3, 4). Fast: the whole study through the runner is in tests/test_notebooks.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from liverlib import progress
from liverlib.data import curation
from liverlib.data import nifti as io
from liverlib.errors import RunError
from liverlib.params import DEFAULTS, RUN_KEYS, STAGE_KEYS, resolve
from liverlib.pipeline import stages
from liverlib.pipeline.guard import guard, record_stage
from liverlib.pipeline.study import injected, notebooks
from liverlib.run import RunDir
from tests.tiny import TINY_RUN


def test_terminal_gets_tqdm_text_bar(monkeypatch: pytest.MonkeyPatch) -> None:
    from tqdm.std import tqdm

    monkeypatch.delenv(progress.ENV, raising=False)
    shown = progress.bar(range(3), desc="x", unit="vol")
    assert type(shown) is tqdm and list(shown) == [0, 1, 2]


def test_runner_writes_one_console_line_per_loop(monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture) -> None:
    monkeypatch.setenv(progress.ENV, progress.RUNNER)
    loop = progress.bar(range(4), desc="hybrid epoch 1/2", unit="batch", leave=False)
    for _ in loop:
        loop.set_postfix(loss="0.5000")
    assert list(progress.bar(range(2), desc="test volumes", unit="vol")) == [0, 1]
    out, err = capfd.readouterr()
    lines = err.splitlines()
    assert out == "" and len(lines) == 2, err
    assert lines[0].startswith("      hybrid epoch 1/2: 4 batch in ") and lines[0].endswith(", loss=0.5000")
    assert lines[1].startswith("      test volumes: 2 vol in ")


def test_runner_line_says_how_far_a_broken_loop_got(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv(progress.ENV, progress.RUNNER)
    with pytest.raises(ZeroDivisionError):
        for i in progress.bar(range(5), desc="cache", unit="vol"):
            if i == 2:
                raise ZeroDivisionError
    assert "cache: 2/5 vol in " in capfd.readouterr().err


@pytest.mark.parametrize("how", ["disable", "off"])
def test_no_display_when_disabled(how: str, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture) -> None:
    monkeypatch.setenv(progress.ENV, "off" if how == "off" else progress.RUNNER)
    assert list(progress.bar(iter(range(3)), desc="x", disable=how == "disable")) == [0, 1, 2]
    assert capfd.readouterr() == ("", "")


def test_kernel_with_ipywidgets_gets_a_widget_bar(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(progress.ENV, raising=False)
    monkeypatch.setattr(progress, "_in_kernel", lambda: True)
    assert progress._mode() == "widget"  # ipywidgets is a dependency (JupyterLab, Kaggle)
    monkeypatch.setenv(progress.ENV, progress.RUNNER)
    assert progress._mode() == progress.RUNNER


def test_runner_injects_only_what_a_stage_needs() -> None:
    values = {**DEFAULTS, "run_name": "smoke", "data_dir": "phantom"}
    for nb in notebooks():
        got = injected(nb, values)
        if nb.name.startswith("01"):
            assert got == values
        else:
            assert set(got) == set(RUN_KEYS) | set(STAGE_KEYS[nb.name[:2]]), nb.name
            assert all(got[k] == values[k] for k in got)


def test_data_dir_resolves_to_what_curation_reads(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(io, "find_kaggle_root", lambda: None)
    assert curation.resolve_data_dir("auto") == curation.resolve_data_dir("phantom") == "phantom"
    assert curation.resolve_data_dir(None) is None
    assert curation.resolve_data_dir(str(tmp_path)) == str(tmp_path)
    assert Path(curation.resolve_data_dir("data/LiTS")).is_absolute()
    monkeypatch.setattr(io, "find_kaggle_root", lambda: Path("/kaggle/input"))
    assert curation.resolve_data_dir("auto") is None  # the Kaggle mount, as data_dir: null


def test_guard_compares_resolved_values(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    record_stage(run, "01_curation", {"data_dir": "phantom", "seed": 42})
    same = {"phantom": "phantom", "auto": "phantom"}
    assert guard(run, "01_curation", {"data_dir": "auto", "seed": 42}, record=False,
                     resolved=lambda v: {**v, "data_dir": same.get(v["data_dir"], v["data_dir"])})  # fmt: skip
    with pytest.raises(RunError, match=r"other parameters \(data_dir\)"):
        guard(run, "01_curation", {"data_dir": "auto", "seed": 42}, record=False)


def test_curation_with_data_dir_auto_reuses_the_phantom_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Notebook 01 stores data_dir: auto; `make study` records phantom (what auto is here): Run All reuses it."""
    monkeypatch.setattr(io, "find_kaggle_root", lambda: None)
    p = resolve(**{**TINY_RUN, "output_root": str(tmp_path), "run_name": "smoke"})
    stages.run_curation(p, progress=False)
    kept = {f: (tmp_path / "smoke" / f).stat().st_mtime_ns for f in ("manifest.csv", "volumes.csv", "splits.json")}
    again = stages.run_curation(resolve(**{**p, "data_dir": "auto"}), progress=False)
    assert {f: (tmp_path / "smoke" / f).stat().st_mtime_ns for f in kept} == kept  # reused, not redone
    assert len(again["manifest"]) > 0
    with pytest.raises(RunError, match=r"\(data_dir\)"):  # another folder is other data
        stages.run_curation(resolve(**{**p, "data_dir": str(tmp_path / "elsewhere")}), progress=False)


@pytest.mark.reliability(
    "'note: no CUDA device; 100 epochs at 256² will train on the CPU for about N h', N from the run's training slices",
    0,
    "the run continues",
)
def test_no_cuda_note_of_a_curated_run_counts_its_own_training_slices(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The runner's "no CUDA device" note of a run that is already curated is computed from the run's real training
    split (its manifest.csv), not from an estimate of the profile."""
    import pandas as pd
    import torch

    from liverlib.pipeline.study import warn_gpu_sized_job
    from liverlib.training.loop import cpu_hours

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    p = resolve(output_root=str(tmp_path), run_name="big", data_dir="phantom", image_size=256, epochs=100)
    run = RunDir.from_params(p)
    pd.DataFrame({"split": ["train"] * 5000 + ["test"] * 10}).to_csv(run.manifest, index=False)
    warn_gpu_sized_job(p)
    out = capsys.readouterr().out
    assert f"about {cpu_hours(256, 5000, 100):,.0f} h" in out, out
