"""CLI mistakes are one-line errors with consistent exit codes (2 usage, 1 failure, 130 interrupted), and the
study runner never replaces the executed notebook of the last good run (issue 9 items 3, 6, 7)."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

import liverlib.pipeline.study as study
from liverlib.params import ParamError
from liverlib.pipeline.cli import _overrides, main

ROOT = Path(__file__).resolve().parents[1]
PROFILES = ["-f", str(ROOT / "params/base.yaml"), "-f", str(ROOT / "params/smoke.yaml")]


def _err(capsys: pytest.CaptureFixture) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err  # one line, no traceback
    return err


@pytest.mark.reliability("'--set epochs given twice (10 and 20); give it once'", 2, "nothing run")
def test_repeated_set_is_an_error_and_repeats_accumulate(capsys: pytest.CaptureFixture) -> None:
    assert main(["study", *PROFILES, "--set", "epochs=10", "--set", "epochs=20"]) == 2
    assert "epochs given twice" in _err(capsys)
    # two --set options with different keys are both kept (argparse used to keep only the last one)
    from liverlib.pipeline.cli import build_parser

    a = build_parser().parse_args(["study", *PROFILES, "--set", "epochs=3", "--set", "output_root=/tmp/x"])
    assert _overrides(a.set) == {"epochs": 3, "output_root": "/tmp/x"}


@pytest.mark.reliability("'epochs' needs a value / 'expected KEY=VALUE'", 2, "nothing run")
@pytest.mark.parametrize("pair, says", [("epochs=null", "'epochs' needs a value"), ("image_size=", "'image_size' needs a value"),
                                        ("seed", "expected KEY=VALUE"), ("=3", "expected KEY=VALUE"),
                                        ("hu_window=[1,", "not valid YAML")])  # fmt: skip
def test_bad_set_values_are_not_dropped(pair: str, says: str, capsys: pytest.CaptureFixture) -> None:
    assert main(["study", *PROFILES, "--set", pair]) == 2
    assert says in _err(capsys)


@pytest.mark.reliability("'--run-name '': give a folder name'", 2, "nothing run")
def test_empty_run_name_is_refused(capsys: pytest.CaptureFixture) -> None:
    assert main(["study", *PROFILES, "--run-name", ""]) == 2
    assert "--run-name" in _err(capsys)


@pytest.mark.reliability("'--only 07: no notebook ... starts with it'", 2, "nothing run")
def test_only_an_unknown_notebook_is_refused(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    assert main(["study", *PROFILES, "--set", f"output_root={tmp_path}", "--only", "07"]) == 2
    assert "--only 07" in _err(capsys)


@pytest.mark.reliability("'<output_root>/<run>: cannot create or write the run folder'", 2, "nothing written")
def test_unwritable_output_root_names_the_target(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    assert main(["study", *PROFILES, "--set", f"output_root={blocker}"]) == 2
    err = _err(capsys)
    assert f"{blocker}/smoke: cannot create or write the run folder" in err and ".tmp" not in err


@pytest.mark.reliability("'interrupted at epoch N ...; rerun the same command to resume'", 130, "last complete epoch")
def test_ctrl_c_exits_130_with_how_to_resume(capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch,
                                            tmp_path: Path) -> None:  # fmt: skip
    import liverlib.training.loop as tr

    def interrupted(p, model_name=None, progress=True):
        raise tr.TrainingInterrupted("hybrid: interrupted at epoch 3 of 6; rerun the same command to resume")

    monkeypatch.setattr(tr, "train", interrupted)
    assert main(["train", *PROFILES, "--set", f"output_root={tmp_path}"]) == 130
    assert "interrupted at epoch 3 of 6; rerun the same command to resume" in _err(capsys)


def test_overrides_parse_yaml_values() -> None:
    assert _overrides(["hu_window=[-200, 250]", "lr=1.0e-3", "data_dir=null"]) == {
        "hu_window": [-200, 250], "lr": 1e-3, "data_dir": None}  # fmt: skip
    with pytest.raises(ParamError):
        _overrides(["novalue"])


def _notebook(path: Path, code: str) -> Path:
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("run_name = 'x'")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(code)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


@pytest.mark.slow
@pytest.mark.reliability("'FAILED in 01_x.ipynb, cell 2: ...' / 'the kernel died'; names the partial in notebooks/failed/",
                         1, "the last good executed notebook")  # fmt: skip
@pytest.mark.parametrize("code, says", [("raise ValueError('bad cell')", "ValueError: bad cell"),
                                        ("import os; os._exit(3)", "the kernel died")])  # fmt: skip
def test_failed_rerun_keeps_the_last_good_notebook(code: str, says: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture) -> None:  # fmt: skip
    nb_dir = tmp_path / "nbs"
    nb_dir.mkdir()
    good = _notebook(nb_dir / "01_x.ipynb", "print('good run')")
    monkeypatch.setattr(study, "notebooks", lambda root=None: [good])
    out = tmp_path / "out"
    args = [*PROFILES, "--set", f"output_root={out}"]
    assert main(["study", *args]) == 0
    executed = out / "smoke/notebooks/01_x.ipynb"
    assert "good run" in executed.read_text(encoding="utf-8")
    _notebook(good, code)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(["study", *args])
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert says in err and str(out / "smoke/notebooks/failed/01_x.ipynb") in err
    assert "good run" in executed.read_text(encoding="utf-8")  # the last good run's notebook is kept
    assert (out / "smoke/notebooks/failed/01_x.ipynb").is_file()


@pytest.mark.reliability("continues with the run's settings; a --set that differs: 'PATH/params.json: run 'r' was made "
                         "with other settings than epochs=5 (the run has 3); leave them out to continue it, ...'", 2,
                         "the run folder as it was; nothing run")  # fmt: skip
def test_only_and_start_continue_a_run_with_its_recorded_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture) -> None:  # fmt: skip
    """After `study ... --only 01 02 --set epochs=3`, the same command with `--only 03` and without the --set failed in
    notebook 03 ('epochs differ from the run's parameters'): every --set of notebook 01 had to be retyped."""
    from liverlib.files import write_json
    from liverlib.params import load_profiles, resolve

    names = ["01_curation.ipynb", "02_preprocessing.ipynb", "03_training.ipynb", "04_evaluation.ipynb"]
    monkeypatch.setattr(study, "notebooks", lambda root=None: [tmp_path / n for n in names])
    ran: list[tuple[str, dict]] = []
    monkeypatch.setattr(study, "execute_notebook", lambda nb, out_dir, values: ran.append((nb.name, dict(values))))
    out = tmp_path / "out"
    profile = load_profiles(*PROFILES[1::2])
    recorded = dict(resolve(**{**profile, "profiles": [], "epochs": 3, "output_root": str(out), "run_name": "r"}))
    write_json(out / "r/params.json", {"parameters": recorded})
    args = ["study", *PROFILES, "--set", f"output_root={out}", "--run-name", "r"]
    assert main([*args, "--only", "03", "--set", "device=cpu"]) == 0
    assert [n for n, _ in ran] == ["03_training.ipynb"] and ran[0][1]["epochs"] == 3 and ran[0][1]["device"] == "cpu"
    assert main([*args, "--start", "03", "--set", "epochs=3"]) == 0  # a value equal to the run's is no conflict
    assert [n for n, _ in ran[1:]] == ["03_training.ipynb", "04_evaluation.ipynb"]
    capsys.readouterr()
    assert main([*args, "--only", "03", "04", "--set", "epochs=5"]) == 2
    err = _err(capsys)
    assert f"{out / 'r/params.json'}: run 'r' was made with other settings than epochs=5 (the run has 3)" in err
    assert len(ran) == 3
    assert main([*args, "--only", "01", "03"]) == 0  # notebook 01 runs: the profile's values, as for a new run
    assert ran[-1][1]["epochs"] == profile["epochs"] != 3


_STUDY_DRIVER = """
import sys
from pathlib import Path
import liverlib.pipeline.study as study
from liverlib.pipeline.cli import main
study.notebooks = lambda root=None: [Path(sys.argv[1])]
sys.exit(main(["study", *sys.argv[3:], "--set", f"output_root={sys.argv[2]}"]))
"""
"""Runs `liverlib study` on one given notebook (argv: notebook, output root, profile arguments)."""


@pytest.mark.slow
@pytest.mark.reliability("'liverlib study: interrupted in 01_x.ipynb (partial notebook PATH); rerun the same command to "
                         "resume: ...', the same line as Ctrl-C", 143,
                         "the partial notebook (valid JSON) in notebooks/failed/; the last good one")  # fmt: skip
def test_sigterm_to_study_is_handled_like_ctrl_c(tmp_path: Path) -> None:
    """SIGTERM to `liverlib study` while a notebook runs: it used to exit 143 with nothing printed."""
    from tests.tiny import sigterm_once

    started = tmp_path / "started"
    nb = _notebook(tmp_path / "01_x.ipynb", f"import time\nopen({str(started)!r}, 'w').close()\ntime.sleep(300)")
    driver = tmp_path / "driver.py"
    driver.write_text(_STUDY_DRIVER)
    code, err = sigterm_once([str(driver), str(nb), str(tmp_path / "out"), *PROFILES], started, wait=240)
    assert code == 143, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    partial = tmp_path / "out/smoke/notebooks/failed/01_x.ipynb"
    assert lines == [f"liverlib study: interrupted in 01_x.ipynb (partial notebook {partial}); rerun the same command "
                     "to resume: finished stages and epochs are reused"]  # fmt: skip
    nbformat.read(partial, as_version=4)  # valid JSON
