"""Tests of ``liverlib.segment``: orientation round trip, header keeping, refusals, folder mode and the CLI."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from scipy import ndimage

import liverlib.segment as seg
from liverlib.cli import main
from liverlib.io import CaseError, from_display, load_case
from liverlib.labels import LABELS
from liverlib.model import build_model
from liverlib.phantom import make_case, phantom_affine
from liverlib.preprocess import PreprocessConfig
from liverlib.run import RunError

REAL_CT = Path("/work/shared/data/real-ct/example_ct_sm.nii.gz")
HU = np.array([-600, 200, 900], np.int16)  # → 0.2, 0.6, 0.95 in the window below: background, liver, tumor
FAKE_CONFIG = {"image_size": 32, "hu_window": [-1000, 1000], "use_clahe": False, "clahe_clip": 2.0, "clahe_tile": 8,
               "use_gamma": False, "gamma": 1.2, "model": "threshold", "encoder": "none", "fused_attention": True}  # fmt: skip


class ThresholdModel(torch.nn.Module):
    """Liver where the preprocessed input > 0.5, tumor where > 0.8: labels follow the input voxel for voxel."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        liver, tumor = (x > 0.5).float(), (x > 0.8).float()
        return torch.cat([1 - liver, liver - tumor, tumor], 1) * 20


def expected_labels(hu: np.ndarray) -> np.ndarray:
    """What ThresholdModel predicts under FAKE_CONFIG's HU window, computed in any voxel order."""
    return np.select([hu > 600, hu > 0], [LABELS["tumor"], LABELS["liver"]], LABELS["background"]).astype(np.uint8)


def _ckpt(path: Path, config: dict, state: dict | None = None) -> Path:
    config = {**config, "preprocess_key": PreprocessConfig.from_params(config).key}
    torch.save({"model": state or {}, "config": config, "epoch": 1}, path)
    return path


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """A checkpoint whose model is ThresholdModel (injected in place of the checkpoint's weights)."""
    monkeypatch.setattr(seg, "model_from_checkpoint", lambda ckpt, device: ThresholdModel())
    return _ckpt(tmp_path / "fake.pt", FAKE_CONFIG)


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    """A real, untrained liverlib checkpoint: smp U-Net (MobileNetV2 encoder) at 32 × 32."""
    cfg = {
        **FAKE_CONFIG,
        "hu_window": [],
        "use_clahe": True,
        "use_gamma": True,
        "model": "unet_smp",
        "encoder": "mobilenet_v2",
    }
    torch.manual_seed(0)
    model = build_model("unet_smp", image_size=32, encoder="mobilenet_v2")
    return _ckpt(tmp_path_factory.mktemp("ckpt") / "best.pt", cfg, model.state_dict())


def _write(path: Path, data: np.ndarray, affine: np.ndarray) -> Path:
    img = nib.Nifti1Image(data, affine)
    img.header.set_xyzt_units("mm", "sec")
    nib.save(img, str(path))
    return path


def _random_volume(path: Path, shape: tuple[int, int, int], codes: tuple[str, str, str], block: tuple[int, int, int] = (1, 1, 1),
                   seed: int = 0) -> np.ndarray:  # fmt: skip
    """A file of random blocks of HU values in its own voxel order; returns the data as written."""
    rng = np.random.default_rng(seed)
    coarse = HU[rng.integers(0, 3, size=[-(-s // b) for s, b in zip(shape, block)])]
    data = np.kron(coarse, np.ones(block, np.int16))[tuple(slice(0, s) for s in shape)]
    # spacing (slice, row, col) of the display axes, display shape from the file's axis codes
    disp = [0, 0, 0]
    for i, c in enumerate(codes):
        disp[{"S": 0, "I": 0, "A": 1, "P": 1, "R": 2, "L": 2}[c]] = shape[i]
    _write(path, np.ascontiguousarray(data), phantom_affine(codes, (2.5, 0.7, 0.8), tuple(disp)))
    return data


def _truncated_bytes() -> bytes:
    """A .nii.gz whose header reads but whose voxel data stops half way."""
    data = np.random.default_rng(0).integers(-1000, 1000, (32, 32, 8), dtype=np.int16)
    full = gzip.compress(nib.Nifti1Image(data, np.eye(4)).to_bytes())
    return full[: len(full) // 2]


def test_lps_mask_overlays_input_voxel_for_voxel(tmp_path, fake):
    vol = tmp_path / "ct-lps.nii.gz"
    data = _random_volume(vol, (32, 32, 7), ("L", "P", "S"))
    (r,) = seg.segment_file(fake, vol, tmp_path / "out" / "mask.nii.gz", device="cpu", progress=False)
    out, ref = nib.load(r["output"]), nib.load(vol)
    mask = np.asanyarray(out.dataobj)
    assert mask.dtype == np.uint8 and out.get_data_dtype() == np.uint8
    assert mask.shape == ref.shape and np.array_equal(out.affine, ref.affine)
    assert out.header.get_zooms() == ref.header.get_zooms()
    assert set(np.unique(mask)) <= set(LABELS.values())
    expected = expected_labels(data)
    assert len(np.unique(expected)) == 3
    assert np.array_equal(mask, expected)  # file's own voxel order: no flip or transpose anywhere
    assert r["shape"] == (32, 32, 7) and r["orientation"] == "LPS"
    assert r["liver_voxels"] == int((expected == 1).sum()) and r["tumor_voxels"] == int((expected == 2).sum())


def test_oblique_axis_order_and_resize_keep_labels_in_place(tmp_path, fake):
    """File axes (P, I, R) of 40 × 6 × 24: resized to 32² and back; labels away from block edges are exact."""
    vol = tmp_path / "ct-pir.nii"
    data = _random_volume(vol, (40, 6, 24), ("P", "I", "R"), block=(8, 1, 8), seed=1)
    seg.segment_file(fake, vol, tmp_path / "mask.nii", device="cpu", batch_size=4, progress=False)
    mask = np.asanyarray(nib.load(tmp_path / "mask.nii").dataobj)
    expected = expected_labels(data)
    foot = np.ones((5, 1, 5), bool)  # in-plane neighbourhood: axes 0 (P) and 2 (R)
    interior = ndimage.maximum_filter(expected, footprint=foot) == ndimage.minimum_filter(expected, footprint=foot)
    assert mask.shape == data.shape and interior.mean() > 0.3
    assert np.array_equal(mask[interior], expected[interior])


def test_ras_and_lps_inputs_give_the_same_display_mask_and_keep_spacing(tmp_path, fake):
    image, _, spacing = make_case(0, 32, 16, np.random.default_rng(3))
    masks = {}
    for codes in [("R", "A", "S"), ("L", "P", "S")]:
        affine = phantom_affine(codes, spacing, image.shape)
        vol = _write(tmp_path / f"ct-{''.join(codes)}.nii.gz", from_display(image, affine), affine)
        out = tmp_path / f"mask-{''.join(codes)}.nii.gz"
        seg.segment_file(fake, vol, out, device="cpu", progress=False)
        src, written = nib.load(vol), nib.load(out)
        assert written.header.get_zooms() == src.header.get_zooms()
        assert written.header.get_xyzt_units() == ("mm", "sec")
        assert written.header["sform_code"] == src.header["sform_code"]
        case = load_case(vol, out)  # also checks the mask's shape and affine against the CT
        assert np.allclose(case.spacing, spacing)
        masks[codes] = case.mask
    ras, lps = masks.values()
    assert np.array_equal(ras, lps)
    assert np.array_equal(ras, expected_labels(image)) and len(np.unique(ras)) >= 2  # liver on the right only


def test_segment_volume_returns_display_labels_and_lcc(tmp_path, fake):
    image = np.full((4, 32, 32), -600, np.int16)
    image[:, 2:12, 2:12] = 200  # big liver component
    image[:, 20:22, 20:22] = 900  # small separate "tumor" component
    affine = phantom_affine(("L", "P", "S"), (2.0, 1.0, 1.0), image.shape)
    vol = _write(tmp_path / "ct.nii", from_display(image, affine), affine)
    model, cfg, _ = seg.load_model(fake)
    labels, case = seg.segment_volume(model, cfg, vol, device="cpu", progress=False)
    assert labels.dtype == np.uint8 and labels.shape == case.image.shape == image.shape
    assert np.array_equal(labels, expected_labels(image))
    kept, _ = seg.segment_volume(model, cfg, vol, device="cpu", liver_lcc=True, progress=False)
    assert (kept == LABELS["tumor"]).sum() == 0 and (kept == LABELS["liver"]).sum() == 4 * 100


@pytest.mark.skipif(not REAL_CT.is_file(), reason=f"{REAL_CT} not present (shared test data missing)")
def test_real_ct_segments_to_same_grid(tmp_path, tiny_ckpt):
    out = tmp_path / "example_seg_pred.nii.gz"
    (r,) = seg.segment_file(tiny_ckpt, REAL_CT, out, device="cpu", progress=False)
    ref, written = nib.load(REAL_CT), nib.load(out)
    mask = np.asanyarray(written.dataobj)
    assert mask.shape == ref.shape == (122, 101, 30) and mask.dtype == np.uint8
    assert np.allclose(written.affine, ref.affine) and np.allclose(written.header.get_zooms(), 3.0)
    assert set(np.unique(mask)) <= set(LABELS.values())
    assert r["liver_voxels"] + r["tumor_voxels"] <= mask.size


def test_refuses_existing_output_unless_overwrite(tmp_path, fake):
    vol = tmp_path / "ct.nii.gz"
    _random_volume(vol, (32, 32, 3), ("L", "P", "S"))
    out = tmp_path / "mask.nii.gz"
    out.write_bytes(b"keep me")
    with pytest.raises(FileExistsError, match="mask.nii.gz.*--overwrite"):
        seg.segment_file(fake, vol, out, device="cpu", progress=False)
    assert out.read_bytes() == b"keep me"
    seg.segment_file(fake, vol, out, device="cpu", overwrite=True, progress=False)
    assert nib.load(out).shape == (32, 32, 3)
    with pytest.raises(CaseError, match="replace the input"):
        seg.segment_file(fake, vol, vol, device="cpu", overwrite=True, progress=False)


def test_refuses_non_3d_and_corrupt_inputs(tmp_path, fake):
    _write(tmp_path / "four_d.nii.gz", np.zeros((8, 8, 4, 2), np.int16), np.eye(4))
    _write(tmp_path / "two_d.nii", np.zeros((8, 8), np.int16), np.eye(4))
    (tmp_path / "garbage.nii.gz").write_bytes(b"this is not a NIfTI file at all" * 20)
    full = _truncated_bytes()
    (tmp_path / "truncated.nii.gz").write_bytes(full)
    for name, msg in [("four_d", "3D"), ("two_d", "3D"), ("garbage", "not a readable NIfTI"), ("truncated", "corrupt")]:
        src = next(tmp_path.glob(f"{name}.nii*"))
        with pytest.raises(CaseError, match=msg) as err:
            seg.segment_file(fake, src, tmp_path / "out" / f"{name}.nii.gz", device="cpu", progress=False)
        assert src.name in str(err.value)
    with pytest.raises(CaseError, match="does not exist"):
        seg.segment_file(fake, tmp_path / "absent.nii", tmp_path / "m.nii.gz", device="cpu", progress=False)
    assert not (tmp_path / "out").exists()


def test_refuses_bad_checkpoints(tmp_path):
    vol = tmp_path / "ct.nii"
    _random_volume(vol, (32, 32, 2), ("L", "P", "S"))
    with pytest.raises(RunError, match="missing.pt: checkpoint does not exist"):
        seg.segment_file(tmp_path / "missing.pt", vol, tmp_path / "m.nii.gz", device="cpu", progress=False)
    torch.save({"weights": {}}, tmp_path / "foreign.pt")
    with pytest.raises(RunError, match="foreign.pt: not a liverlib checkpoint"):
        seg.segment_file(tmp_path / "foreign.pt", vol, tmp_path / "m.nii.gz", device="cpu", progress=False)
    torch.save({"model": {}, "config": {"model": "hybrid"}, "epoch": 1}, tmp_path / "partial.pt")
    with pytest.raises(RunError, match="config lacks image_size"):
        seg.segment_file(tmp_path / "partial.pt", vol, tmp_path / "m.nii.gz", device="cpu", progress=False)
    stale = {"model": {}, "config": {**FAKE_CONFIG, "preprocess_key": "0123456789ab"}, "epoch": 1}
    with pytest.raises(RunError, match="preprocessing changed"):
        seg.preprocess_config(stale)
    unknown = _ckpt(tmp_path / "unknown.pt", FAKE_CONFIG)  # model "threshold" is no liverlib model
    with pytest.raises(RunError, match="unknown.pt: cannot rebuild its model"):
        seg.segment_file(unknown, vol, tmp_path / "m.nii.gz", device="cpu", progress=False)
    with pytest.raises(RunError, match="unknown device 'gpu'"):
        seg.segment_file(unknown, vol, tmp_path / "m.nii.gz", device="gpu", progress=False)
    with pytest.raises(RunError, match="batch size"):
        seg.segment_file(unknown, vol, tmp_path / "m.nii.gz", device="cpu", batch_size=0, progress=False)
    assert not (tmp_path / "m.nii.gz").exists()


def test_folder_mode_writes_one_mask_per_input(tmp_path, fake):
    src, out = tmp_path / "cts", tmp_path / "masks"
    src.mkdir()
    a = _random_volume(src / "a.nii", (32, 32, 3), ("L", "P", "S"))
    b = _random_volume(src / "b.nii.gz", (32, 32, 5), ("R", "A", "S"), seed=2)
    (src / "notes.txt").write_text("not a volume")
    results = seg.segment_file(fake, src, out, device="cpu", progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["a_seg.nii.gz", "b_seg.nii.gz"]
    assert [Path(r["input"]).name for r in results] == ["a.nii", "b.nii.gz"]
    assert np.array_equal(np.asanyarray(nib.load(out / "a_seg.nii.gz").dataobj), expected_labels(a))
    assert np.array_equal(np.asanyarray(nib.load(out / "b_seg.nii.gz").dataobj), expected_labels(b))
    with pytest.raises(FileExistsError, match="a_seg.nii.gz and 1 more"):
        seg.segment_file(fake, src, out, device="cpu", progress=False)
    with pytest.raises(CaseError, match="is a folder, but the input .*a.nii is a single file"):
        seg.segment_file(fake, src / "a.nii", out, device="cpu", progress=False)
    with pytest.raises(CaseError, match="is a file, but the input .*cts is a folder"):
        seg.segment_file(fake, src, out / "a_seg.nii.gz", device="cpu", overwrite=True, progress=False)


def test_folder_mode_writes_the_good_volumes_and_names_the_bad_one(tmp_path, fake):
    src = tmp_path / "cts"
    src.mkdir()
    _random_volume(src / "good.nii.gz", (32, 32, 3), ("L", "P", "S"))
    full = _truncated_bytes()
    (src / "broken.nii.gz").write_bytes(full)
    with pytest.raises(CaseError, match=r"1 of 2 volumes failed \(1 written\).*broken.nii.gz"):
        seg.segment_file(fake, src, tmp_path / "masks", device="cpu", progress=False)
    assert [p.name for p in (tmp_path / "masks").iterdir()] == ["good_seg.nii.gz"]


def test_cli_returns_0_on_success_and_2_with_a_message(tmp_path, tiny_ckpt, capsys):
    vol = tmp_path / "ct.nii.gz"
    _random_volume(vol, (32, 32, 4), ("L", "P", "S"))
    out = tmp_path / "mask.nii.gz"
    args = ["segment", "--checkpoint", str(tiny_ckpt), "--input", str(vol), "--output", str(out), "--device", "cpu"]
    assert main([*args, "--batch-size", "3", "--liver-lcc"]) == 0
    printed = capsys.readouterr().out
    assert f"{vol} -> {out}: shape (32, 32, 4) LPS, liver" in printed and "tumor" in printed
    assert nib.load(out).shape == (32, 32, 4)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("liverlib segment: error: ") and "mask.nii.gz" in err and "--overwrite" in err
    assert len(err.strip().splitlines()) == 1
