"""A damaged run folder heals or says so (issue 20 item 2): the cache, ``last.pt``, stage 04's record, ``params.json``.

Each test damages one file of the tiny phantom run (tests/tiny.py) as a disk, a kill or a user would, then runs the
stage that reads it.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from liverlib.data.cache import SliceCache
from liverlib.errors import RunError
from liverlib.files import read_json
from liverlib.params import resolve
from liverlib.pipeline import stages
from tests.tiny import TINY_RUN, prepare

TINY = {**TINY_RUN, "epochs": 1, "bootstrap_resamples": 20, "eval_batch_size": 8}


def _prepared(root: Path):
    """Run ``r`` under ``root``, curated and cached (notebooks 01-02); returns (params, cache folder)."""
    p = prepare(resolve(**TINY, output_root=str(root), run_name="r"))
    return p, Path(read_json(root / "r/preprocess.json")["cache_dir"])


def _rerun_02(p, capsys) -> tuple[dict, str]:
    out = stages.run_preprocessing(p, progress=False, figures_too=False)
    return out["stats"], capsys.readouterr().out


@pytest.mark.reliability("stage 02: 'cache: PATH/3_image.npy: N bytes where its header ... needs M (truncated); "
                         "rebuilding volume 3'; stage 03 alone: 'PATH: damaged cache file: ...; rerun notebook 02'",
                         None, "the other volumes' cache files (reused)")  # fmt: skip
def test_truncated_cache_file_is_rebuilt_and_named(tmp_path: Path, capsys) -> None:
    """A cache file cut short (disk full, a killed copy); stage 02 used to reuse it and stage 03 to fail with
    'mmap length is greater than file size'."""
    p, cache = _prepared(tmp_path)
    vid = 3 if (cache / "3_image.npy").is_file() else int(sorted(cache.glob("*_image.npy"))[0].name.split("_")[0])
    path = cache / f"{vid}_image.npy"
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(RunError, match=rf"{path}: damaged cache file: .*truncated.*rerun notebook 02"):
        SliceCache(cache).image(vid)
    stats, printed = _rerun_02(p, capsys)
    assert f"cache: {path}: " in printed and "(truncated); rebuilding volume" in printed
    assert (stats["volumes_built"], stats["volumes_repaired"], stats["volumes_reused"]) == (1, 1, 8)
    assert path.read_bytes() == whole
    stats, printed = _rerun_02(p, capsys)
    assert (stats["volumes_built"], stats["volumes_reused"]) == (0, 9) and "rebuilding" not in printed


def _damage(path: Path, change) -> np.ndarray:
    arr = np.load(path, mmap_mode="r+")
    before = np.array(arr)
    change(arr)
    arr.flush()
    del arr
    return before


@pytest.mark.reliability("stage 02: 'cache: PATH/N_mask.npy: mask values [7] outside {0, 1, 2}; rebuilding volume N'",
                         None, "the other volumes' cache files (reused)")  # fmt: skip
def test_cache_mask_with_value_7_is_rebuilt_and_named(tmp_path: Path, capsys) -> None:
    """Mask cache values set to 7 (training failed with 'IndexError: Target 7 is out of bounds')."""
    p, cache = _prepared(tmp_path)
    path = sorted(cache.glob("*_mask.npy"))[0]
    before = _damage(path, lambda a: a.__setitem__((0, 0, 0), 7))
    stats, printed = _rerun_02(p, capsys)
    assert f"cache: {path}: mask values [7] outside {{0, 1, 2}}; rebuilding volume" in printed
    assert stats["volumes_repaired"] == 1 and np.array_equal(np.load(path), before)


@pytest.mark.reliability("stage 02: 'cache: PATH/N_image.npy: 1 non-finite (NaN/inf) voxel(s); rebuilding volume N'",
                         None, "the other volumes' cache files (reused)")  # fmt: skip
def test_cache_image_with_nan_is_rebuilt_and_named(tmp_path: Path, capsys) -> None:
    """NaN in a cached image (epoch 1 trained with NaN loss)."""
    p, cache = _prepared(tmp_path)
    path = sorted(cache.glob("*_image.npy"))[-1]
    before = _damage(path, lambda a: a.__setitem__((1, 2, 3), np.nan))
    stats, printed = _rerun_02(p, capsys)
    assert f"cache: {path}: 1 non-finite (NaN/inf) voxel(s); rebuilding volume" in printed
    assert stats["volumes_repaired"] == 1 and np.array_equal(np.load(path), before)


@pytest.mark.reliability("'hybrid epoch 1/1, batch B: the training loss is nan (non-finite), on slices of volume(s) "
                         "[...]; stopped, nothing saved for this epoch; check the cache PATH (rerun notebook 02: ...)'",
                         1, "the last complete epoch's last.pt (none here)")  # fmt: skip
def test_nan_loss_stops_training_naming_the_volumes_and_cache(tmp_path: Path) -> None:
    """NaN in a cached image read by stage 03 alone (no stage 02 to rebuild it): epoch 1 used to train with NaN loss
    and save last.pt with NaN weights."""
    from liverlib.training.loop import train

    p, cache = _prepared(tmp_path)
    vid = read_json(tmp_path / "r/splits.json")["splits"]["train"][0]
    _damage(cache / f"{vid}_image.npy", lambda a: a.__setitem__(slice(None), np.nan))
    with pytest.raises(RunError) as err:
        train(p, progress=False)
    msg = str(err.value)
    assert re.match(
        r"hybrid epoch 1/1, batch \d+: the training loss is nan \(non-finite\), on slices of volume\(s\) \[", msg
    )
    assert vid in [int(v) for v in msg.split("volume(s) [")[1].split("]")[0].split(", ")]
    assert f"check the cache {cache} " in msg
    assert not (tmp_path / "r/models/hybrid/last.pt").exists()


@pytest.mark.reliability("'PATH/params.json: not valid JSON (line 1, column N: ...); rerun notebook 01 for run 'r' "
                         "with its parameters (it rewrites the file)'; under study: 'FAILED in 02_..., cell N: ...'", 1,
                         "the run folder as it was")  # fmt: skip
def test_truncated_params_json_is_named(tmp_path: Path) -> None:
    """params.json cut short (a full disk): notebooks 02-06 used to fail with a JSONDecodeError traceback."""
    from liverlib.params import ParamError, stage_params

    p, _ = _prepared(tmp_path)
    path = tmp_path / "r/params.json"
    path.write_text(path.read_text(encoding="utf-8")[:500], encoding="utf-8")
    with pytest.raises(ParamError, match=rf"^{path}: not valid JSON \(line \d+, column \d+: .*\); rerun notebook 01 "
                                         r"for run 'r' with its parameters \(it rewrites the file\)$"):  # fmt: skip
        stage_params("02", run_name="r", output_root=str(tmp_path))
    path.write_text('{"params": {}}', encoding="utf-8")
    with pytest.raises(ParamError, match=rf"^{path}: not the run's parameters \(KeyError: 'parameters'\)"):
        stage_params("02", run_name="r", output_root=str(tmp_path))
    stages.run_curation(p, progress=False)  # what the message says to do: the file is rewritten
    assert stage_params("02", run_name="r", output_root=str(tmp_path)).image_size == TINY["image_size"]


@pytest.mark.reliability("stage 03 alone: 'PATH/N_mask.npy: slice S holds label 7 (expected 0, 1, 2): a damaged cache; "
                         "rerun notebook 02, which rebuilds it'", 1, "the last complete epoch's last.pt (none here)")  # fmt: skip
def test_cache_mask_with_value_7_stops_training_naming_the_file(tmp_path: Path) -> None:
    """Mask cache values set to 7, read by stage 03 without stage 02 first: 'IndexError: Target 7 is out of bounds'."""
    from liverlib.training.loop import train

    p, cache = _prepared(tmp_path)
    vid = read_json(tmp_path / "r/splits.json")["splits"]["train"][0]
    path = cache / f"{vid}_mask.npy"
    _damage(path, lambda a: a.__setitem__(slice(None), 7))
    with pytest.raises(RunError, match=rf"^{path}: slice \d+ holds label 7 \(expected 0, 1, 2\): a damaged cache; "
                                       r"rerun notebook 02, which rebuilds it$"):  # fmt: skip
        train(p, progress=False)
    assert not (tmp_path / "r/models/hybrid/last.pt").exists()
