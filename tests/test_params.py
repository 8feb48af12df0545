"""Tests of liverlib.params (strict flat profiles) and the stage guard of liverlib.pipeline.guard."""

from __future__ import annotations

import json
import types
from pathlib import Path

import numpy as np
import pytest
import yaml

from liverlib.errors import RunError
from liverlib.files import read_json, write_json
from liverlib.params import DEFAULTS, ParamError, Params, digest, load_profiles, project_root, resolve, validate
from liverlib.pipeline.guard import guard
from liverlib.run import RunDir

PARAMS_DIR = Path(__file__).resolve().parents[1] / "params"
PROFILES = sorted(PARAMS_DIR.glob("*.yaml"))


def _yaml(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


# --- keys and types ------------------------------------------------------------------------------


def test_unknown_key_suggests_the_closest():
    with pytest.raises(ParamError, match=r"unknown parameter 'epoch'.*did you mean 'epochs'"):
        validate({"epoch": 3})
    with pytest.raises(ParamError, match="unknown parameter 'zzz_top'") as exc:
        validate({"zzz_top": 1})
    assert "did you mean" not in str(exc.value)


def test_yaml_1e_4_string_for_lr_points_to_1_0e_4(tmp_path):
    with pytest.raises(ParamError, match=r"'lr' must be a number.*1\.0e-4"):
        validate({"lr": "1e-4"})
    path = _yaml(tmp_path, "p.yaml", "lr: 1e-4\n")
    assert yaml.safe_load(path.read_text(encoding="utf-8"))["lr"] == "1e-4"  # why the hint exists: YAML 1.1 reads text
    with pytest.raises(ParamError, match=r"1\.0e-4") as exc:
        load_profiles(path)
    assert str(path) in str(exc.value)
    assert load_profiles(_yaml(tmp_path, "q.yaml", "lr: 1.0e-4\n"))["lr"] == 1e-4


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [
        ("epochs", 1.5, "integer"),
        ("epochs", True, "integer"),
        ("use_clahe", "yes", "true or false"),
        ("use_clahe", 1, "true or false"),
        ("lr", True, "number"),
        ("hu_window", "[-200, 250]", "list"),
        ("run_name", 3, "string"),
        ("epochs", None, "needs a value"),
        ("run_name", None, "needs a value"),
    ],
)
def test_wrong_types_are_errors_naming_the_key(key, value, match):
    with pytest.raises(ParamError, match=match) as exc:
        validate({key: value}, "somefile.yaml")
    assert f"'{key}'" in str(exc.value) and "somefile.yaml" in str(exc.value)


def test_coercions_and_nullable_keys():
    assert validate({"lr": 1}) == {"lr": 1.0} and isinstance(validate({"lr": 1})["lr"], float)
    assert validate({"hu_window": (-200, 250)}) == {"hu_window": [-200, 250]}
    assert validate({"data_dir": None, "encoder_weights": None, "cache_dir": None})["data_dir"] is None
    assert validate({"encoder_weights": "imagenet"})["encoder_weights"] == "imagenet"


def test_empty_yaml_value_is_an_error(tmp_path):
    with pytest.raises(ParamError, match="'epochs' needs a value"):
        load_profiles(_yaml(tmp_path, "p.yaml", "epochs:\n"))


def test_load_profiles_merges_in_order(tmp_path):
    a = _yaml(tmp_path, "a.yaml", "epochs: 5\nlr: 1.0e-3\nhu_window: [-200, 250]\n")
    b = _yaml(tmp_path, "b.yaml", "epochs: 7\nbatch_size: 2\n")
    assert load_profiles(a, b) == {"epochs": 7, "lr": 1e-3, "hu_window": [-200, 250], "batch_size": 2}
    assert load_profiles(b, a)["epochs"] == 5
    assert load_profiles() == {}
    assert load_profiles(_yaml(tmp_path, "empty.yaml", "# nothing\n")) == {}


def test_load_profiles_bad_files_are_named(tmp_path):
    with pytest.raises(ParamError, match="does not exist") as exc:
        load_profiles(tmp_path / "missing.yaml")
    assert "missing.yaml" in str(exc.value)
    lst = _yaml(tmp_path, "list.yaml", "- epochs\n- 3\n")
    with pytest.raises(ParamError, match="flat mapping") as exc:
        load_profiles(lst)
    assert str(lst) in str(exc.value)
    broken = _yaml(tmp_path, "broken.yaml", "epochs: [3\nlr: 1.0e-4\n")
    with pytest.raises(ParamError, match="not valid YAML") as exc:
        load_profiles(broken)
    assert str(broken) in str(exc.value)
    typo = _yaml(tmp_path, "typo.yaml", "epochs: 3\nbatchsize: 4\n")
    with pytest.raises(ParamError, match=r"typo\.yaml: unknown parameter 'batchsize'.*'batch_size'"):
        load_profiles(typo)


@pytest.mark.parametrize("path", PROFILES, ids=lambda p: p.name)
def test_every_profile_key_is_known_and_loads(path):
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(raw, dict) and set(raw) <= set(DEFAULTS), set(raw) - set(DEFAULTS)
    merged = load_profiles(PARAMS_DIR / "base.yaml", path)
    p = resolve(**merged)
    for k, v in raw.items():
        assert p[k] == (float(v) if isinstance(DEFAULTS[k], float) and v is not None else v), k


def test_profiles_exist_and_base_holds_the_papers_values():
    assert {"base.yaml", "smoke.yaml"} <= {p.name for p in PROFILES}
    base = load_profiles(PARAMS_DIR / "base.yaml")
    differs = {k: (v, DEFAULTS[k]) for k, v in base.items() if v != DEFAULTS[k]}
    assert not differs  # base.yaml restates DEFAULTS (the paper), it does not silently change them
    assert (base["lr"], base["batch_size"], base["epochs"], base["gamma"], base["clahe_clip"]) == (
        1e-4,
        8,
        100,
        1.2,
        2.0,
    )


# --- resolve -------------------------------------------------------------------------------------


def test_resolve_reads_a_notebook_namespace():
    ns = {"epochs": 3, "_private": 1, "In": [], "Out": {}, "np": np, "yaml": yaml, "get_ipython": lambda: None,
          "os_mod": types.ModuleType("m")}  # fmt: skip
    p = resolve(ns, lr=1e-3)
    assert isinstance(p, Params) and p.epochs == 3 and p.lr == 1e-3 and p.batch_size == DEFAULTS["batch_size"]
    with pytest.raises(ParamError, match="unknown parameter 'epohcs'.*'epochs'"):
        resolve({"epohcs": 3})  # a misspelled key injected by papermill
    with pytest.raises(AttributeError):
        p.not_a_key  # noqa: B018


def test_resolve_again_after_later_cells_ran():
    """Rerunning a notebook without a kernel restart: ``P`` and stage results (dicts) are in globals()."""
    ns = {"run_name": "x", "epochs": 2}
    ns["P"] = resolve(ns)
    ns["cur"] = {"manifest": None}
    assert resolve(ns) == ns["P"]


def test_resolve_cross_field_checks():
    with pytest.raises(ParamError, match="hu_window"):
        resolve(hu_window=[-200])
    with pytest.raises(ParamError, match="low < high"):
        resolve(hu_window=[250, -200])
    with pytest.raises(ParamError, match="'fold' must be in 0..4"):
        resolve(folds=5, fold=5)
    with pytest.raises(ParamError, match="'folds' must be 0"):
        resolve(folds=1)
    assert resolve(folds=5, fold=4).fold == 4


def test_resolve_does_not_share_mutable_defaults():
    p = resolve()
    p.volume_ids.append(3)
    p.ablation_arms.clear()
    assert DEFAULTS["volume_ids"] == [] and resolve().volume_ids == [] and resolve().ablation_arms


def test_digest_is_stable_and_order_free():
    assert digest({"a": 1, "b": [1, 2]}) == digest({"b": [1, 2], "a": 1})
    assert digest({"a": 1}) != digest({"a": 2}) and len(digest({"a": 1}, n=8)) == 8


def test_project_root_finds_the_checkout(tmp_path):
    root = project_root(Path(__file__).parent)
    assert (root / "pyproject.toml").is_file() and (root / "liverlib").is_dir()
    # outside a checkout the package's own checkout is found (notebooks run from copies elsewhere)
    assert project_root(tmp_path) == root


# --- run folder guard ----------------------------------------------------------------------------


def test_guard_refuses_other_values_unless_overwrite(tmp_path):
    run = RunDir(tmp_path)
    assert guard(run, "01_curation", {"seed": 42, "ids": [1, 2]}) is False
    record = tmp_path / "stages" / "01_curation.json"
    assert json.loads(record.read_text(encoding="utf-8")) == {"seed": 42, "ids": [1, 2]}
    assert guard(run, "01_curation", {"seed": 42, "ids": (1, 2)}) is True  # same values (tuple == list in JSON)
    with pytest.raises(RunError, match=r"other parameters \(seed\).*overwrite: true"):
        guard(run, "01_curation", {"seed": 7, "ids": [1, 2]})
    assert json.loads(record.read_text(encoding="utf-8"))["seed"] == 42  # the refused run recorded nothing
    assert guard(run, "01_curation", {"seed": 7, "ids": [1, 2]}, overwrite=True) is False
    assert json.loads(record.read_text(encoding="utf-8"))["seed"] == 7
    assert guard(run, "02_preprocessing", {"seed": 1}) is False  # stages are guarded separately


def test_run_dir_from_params(tmp_path):
    run = RunDir.from_params(resolve(output_root=str(tmp_path), run_name="r1"))
    assert run.root == tmp_path / "r1" and run.root.is_dir()
    assert run.manifest == run.root / "manifest.csv" and run.figure("fig02_x") == run.root / "figures" / "fig02_x.png"
    for bad in ("", "a/b", ".hidden", ".."):
        with pytest.raises(ParamError, match="run_name"):
            RunDir.from_params(resolve(output_root=str(tmp_path), run_name=bad))
    with pytest.raises(RunError, match="missing"):
        run.require("manifest.csv")


def test_write_json_cleans_numpy_and_nan(tmp_path):
    path = write_json(tmp_path / "a" / "x.json", {"n": np.int64(3), "f": np.float32(0.5), "nan": float("nan"),
                                                 "arr": np.arange(3), "p": tmp_path, "t": (1, 2),
                                                 "b": np.bool_(True)})  # fmt: skip
    assert read_json(path) == {
        "n": 3,
        "f": 0.5,
        "nan": None,
        "arr": [0, 1, 2],
        "p": str(tmp_path),
        "t": [1, 2],
        "b": True,
    }
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["x.json"]
    with pytest.raises(RunError, match="missing"):
        read_json(tmp_path / "nope.json")


def test_stage_params_read_the_run_and_refuse_other_settings(tmp_path):
    """Notebooks 02–06 take the run's settings from params.json; a differing run setting is an error naming it."""
    from liverlib.files import write_json
    from liverlib.params import ParamError, resolve, stage_params

    with pytest.raises(ParamError, match="params.json: missing; run notebook 01"):
        stage_params("03", run_name="r", output_root=str(tmp_path))
    write_json(tmp_path / "r/params.json", {"parameters": dict(resolve(run_name="r", output_root=str(tmp_path),
                                                                       epochs=7, lr=1e-3, image_size=64))})  # fmt: skip
    p = stage_params("03", {"run_name": "r", "output_root": str(tmp_path), "num_workers": 0, "lr": 1e-3, "_x": 1})
    assert (p.epochs, p.image_size, p.lr, p.num_workers) == (7, 64, 1e-3, 0)  # recorded + the stage's own key
    with pytest.raises(
        ParamError, match=r"notebook 06: image_size, lr differ from the run's parameters in .*params.json"
    ):
        stage_params("06", run_name="r", output_root=str(tmp_path), lr=5e-4, image_size=256)
    with pytest.raises(ParamError, match="unknown parameter 'epoch'"):
        stage_params("04", run_name="r", output_root=str(tmp_path), epoch=3)


def test_notebook_01_layers_its_profiles_under_its_cell():
    from liverlib.params import resolve

    p = resolve({"profiles": ["base", "smoke"], "epochs": 3})
    assert (p.image_size, p.epochs, p.run_name) == (64, 3, "smoke")  # smoke's size, the cell's epochs
    assert resolve({"profiles": []}).image_size == 256
