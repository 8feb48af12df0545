"""Tests of ``liverlib.segment.segment``: orientation round trip, header keeping, refusals, folder mode, DICOM input,
TTA, probabilities, the report, postprocessing, label sidecars, skipping and unwritable outputs, and the CLI."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from scipy import ndimage

import liverlib.segment.segment as seg
from liverlib.data.dicom import series_ids, write_series
from liverlib.data.geometry import from_display, to_display
from liverlib.data.nifti import load_case
from liverlib.data.phantom import make_case, phantom_affine
from liverlib.data.preprocess import PreprocessConfig
from liverlib.errors import CaseError, RunError
from liverlib.evaluation.inference import predict_volume
from liverlib.labels import LABELS
from liverlib.model.hybrid import build_model
from liverlib.pipeline.cli import main
from liverlib.runtime import autocast_dtype

REAL_CT = Path(__file__).resolve().parents[2] / "shared" / "data" / "real-ct" / "example_ct_sm.nii.gz"
""" The shared small real CT (122 × 101 × 30, 3 mm, RAS), beside the repository in ``../shared``."""
HU = np.array([-600, 200, 900], np.int16)  # → 0.2, 0.6, 0.95 in the window below: background, liver, tumor
FAKE_CONFIG = {"image_size": 32, "hu_window": [-1000, 1000], "quantize_8bit": False, "use_clahe": False, "clahe_clip": 2.0, "clahe_tile": 8,
               "use_gamma": False, "gamma": 1.2, "model": "threshold", "encoder": "none", "fused_attention": True}  # fmt: skip


class ThresholdModel(torch.nn.Module):
    """Liver where the preprocessed input > 0.5, tumor where > 0.8: labels follow the input voxel for voxel."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        liver, tumor = (x > 0.5).float(), (x > 0.8).float()
        return torch.cat([1 - liver, liver - tumor, tumor], 1) * 20


def expected_labels(hu: np.ndarray) -> np.ndarray:
    """What ThresholdModel predicts under FAKE_CONFIG's HU window, computed in any voxel order."""
    return np.select([hu > 600, hu > 0], [LABELS["tumor"], LABELS["liver"]], LABELS["background"]).astype(np.uint8)


class RampModel(torch.nn.Module):
    """Liver logit 8·(x − 0.5) + a cubic ramp rising left → right and top → bottom: not flip-equivariant."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows, cols = x.shape[-2:]
        u, v = torch.linspace(0, 1, cols)[None, None, None, :], torch.linspace(0, 1, rows)[None, None, :, None]
        ramp = 3 * u**3 + 1.5 * v**3 - 1.2
        liver = 8 * (x - 0.5) + ramp
        return torch.cat([torch.zeros_like(x), liver, torch.full_like(x, -30.0)], 1)


def _ckpt(path: Path, config: dict, state: dict | None = None, **extra) -> Path:
    config = {**config, "preprocess_key": PreprocessConfig.from_params(config).key}
    torch.save({"model": state or {}, "config": config, "epoch": 1, **extra}, path)
    return path


def real_ct() -> Path:
    """The shared real CT, or skip the test naming what is missing."""
    if not REAL_CT.is_file():
        pytest.skip(f"shared real CT not found at ../shared/data/real-ct/{REAL_CT.name} (beside the repository)")
    return REAL_CT


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """A checkpoint whose model is ThresholdModel (injected in place of the checkpoint's weights)."""
    monkeypatch.setattr(seg, "model_from_checkpoint", lambda ckpt, device: ThresholdModel())
    return _ckpt(tmp_path / "fake.pt", FAKE_CONFIG, split={"train": [1, 2], "val": [3], "test": [4]})


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    """A real, untrained liverlib checkpoint: smp U-Net (MobileNetV2 encoder) at 32 × 32."""
    cfg = {
        **FAKE_CONFIG,
        "hu_window": [],
        "quantize_8bit": True,
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
    (r,) = seg.segment_file(
        fake, vol, tmp_path / "out" / "mask.nii.gz", device="cpu", postprocess=False, progress=False
    )
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
    seg.segment_file(fake, vol, tmp_path / "mask.nii", device="cpu", batch_size=4, postprocess=False, progress=False)
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
        seg.segment_file(fake, vol, out, device="cpu", postprocess=False, progress=False)
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


def _liver_with_islands() -> np.ndarray:
    """Display HU: a big liver (10 × 10 per slice) holding a 2 × 2 tumor, a separate 3 × 3 liver island and a
    separate 2 × 2 tumor island, on 4 slices of 32 × 32."""
    image = np.full((4, 32, 32), -600, np.int16)
    image[:, 2:12, 2:12] = 200  # big liver component
    image[:, 5:7, 5:7] = 900  # tumor inside it
    image[:, 20:23, 2:5] = 200  # small liver island
    image[:, 20:22, 20:22] = 900  # tumor outside any liver
    return image


def test_segment_volume_returns_display_labels_and_postprocesses_by_default(tmp_path, fake):
    image = _liver_with_islands()
    affine = phantom_affine(("L", "P", "S"), (2.0, 1.0, 1.0), image.shape)
    vol = _write(tmp_path / "ct.nii", from_display(image, affine), affine)
    model, cfg, _ = seg.load_model(fake)
    raw = seg.segment_volume(model, cfg, vol, device="cpu", postprocess=False, progress=False)
    assert raw.labels.dtype == np.uint8 and raw.labels.shape == raw.case.image.shape == image.shape
    assert np.array_equal(raw.labels, expected_labels(image))
    assert set(raw.seconds) == set(seg.STAGES) - {"write"} and raw.probabilities is None
    kept = seg.segment_volume(model, cfg, vol, device="cpu", progress=False).labels
    assert (kept == LABELS["tumor"]).sum() == 4 * 4  # only the tumor inside the kept liver
    assert (kept == LABELS["liver"]).sum() == 4 * (100 - 4) and not kept[:, 20:, :].any()


def test_cli_postprocesses_by_default_and_no_postprocess_keeps_the_raw_prediction(tmp_path, fake, capsys):
    image = _liver_with_islands()
    affine = phantom_affine(("R", "A", "S"), (2.0, 1.0, 1.0), image.shape)
    vol = _write(tmp_path / "ct.nii.gz", from_display(image, affine), affine)
    base = ["segment", "--checkpoint", str(fake), "--input", str(vol), "--device", "cpu"]
    assert main([*base, "--output", str(tmp_path / "default.nii.gz")]) == 0
    assert main([*base, "--output", str(tmp_path / "lcc.nii.gz"), "--liver-lcc"]) == 0  # old flag: accepted, a no-op
    assert main([*base, "--output", str(tmp_path / "raw.nii.gz"), "--no-postprocess"]) == 0
    out = {n: load_case(vol, tmp_path / f"{n}.nii.gz").mask for n in ("default", "lcc", "raw")}
    assert np.array_equal(out["raw"], expected_labels(image))
    assert np.array_equal(out["default"], out["lcc"]) and not out["default"][:, 20:, :].any()
    assert np.array_equal(out["default"][:, :12, :12], out["raw"][:, :12, :12])
    assert "1 components" in capsys.readouterr().out


def test_real_ct_segments_to_same_grid(tmp_path, tiny_ckpt):
    ct = real_ct()
    out = tmp_path / "example_seg_pred.nii.gz"
    (r,) = seg.segment_file(tiny_ckpt, ct, out, device="cpu", progress=False)
    ref, written = nib.load(ct), nib.load(out)
    mask = np.asanyarray(written.dataobj)
    assert mask.shape == ref.shape == (122, 101, 30) and mask.dtype == np.uint8
    assert np.allclose(written.affine, ref.affine) and np.allclose(written.header.get_zooms(), 3.0)
    assert set(np.unique(mask)) <= set(LABELS.values())
    assert r["liver_voxels"] == int((mask == LABELS["liver"]).sum())  # the report counts what was written
    assert r["tumor_voxels"] == int((mask == LABELS["tumor"]).sum())
    assert r["liver_ml"] == round(r["liver_voxels"] * 27 / 1000, 1)  # 3 mm voxels: 27 mm³ each


@pytest.mark.reliability("'PATH: output exists; pass --overwrite'", 2, "the existing mask")
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


@pytest.mark.reliability("one line naming the file: not 3D / unreadable / corrupt", 2, "nothing written")
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


@pytest.mark.reliability(
    "'PATH: checkpoint does not exist' / 'not a liverlib checkpoint' / 'preprocessing changed'", 1, "nothing written"
)
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
    results = seg.segment_file(fake, src, out, device="cpu", postprocess=False, progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["a_seg.json", "a_seg.nii.gz", "b_seg.json", "b_seg.nii.gz"]
    assert [Path(r["input"]).name for r in results] == ["a.nii", "b.nii.gz"]
    assert np.array_equal(np.asanyarray(nib.load(out / "a_seg.nii.gz").dataobj), expected_labels(a))
    assert np.array_equal(np.asanyarray(nib.load(out / "b_seg.nii.gz").dataobj), expected_labels(b))
    with pytest.raises(FileExistsError, match="a_seg.nii.gz and 1 more"):
        seg.segment_file(fake, src, out, device="cpu", progress=False)
    with pytest.raises(CaseError, match="is a folder, but the input .*a.nii is a single file"):
        seg.segment_file(fake, src / "a.nii", out, device="cpu", progress=False)
    with pytest.raises(CaseError, match="is a file, but the input .*cts is a folder"):
        seg.segment_file(fake, src, out / "a_seg.nii.gz", device="cpu", overwrite=True, progress=False)


@pytest.mark.reliability(
    "the bad volume is named; '1 of N volumes failed (N-1 written)'", 2, "every good volume's mask"
)
def test_folder_mode_writes_the_good_volumes_and_names_the_bad_one(tmp_path, fake):
    src = tmp_path / "cts"
    src.mkdir()
    _random_volume(src / "good.nii.gz", (32, 32, 3), ("L", "P", "S"))
    full = _truncated_bytes()
    (src / "broken.nii.gz").write_bytes(full)
    with pytest.raises(CaseError, match=r"1 of 2 volumes failed \(1 written\).*broken.nii.gz"):
        seg.segment_file(fake, src, tmp_path / "masks", device="cpu", progress=False)
    assert sorted(p.name for p in (tmp_path / "masks").iterdir()) == ["good_seg.json", "good_seg.nii.gz"]


@pytest.mark.reliability("one line: 'liverlib segment: error: PATH.npz: cannot be written (No space left on device); "
                         "nothing was written in its place; ...'", 1,
                         "none of the set (mask, sidecar, probabilities, report); a rerun is not refused")  # fmt: skip
def test_outputs_are_all_or_nothing(tmp_path, fake, monkeypatch, capsys):
    """A full disk during the second of segment's writes (--save-probabilities --report): the mask used to stay, and
    the rerun was refused ('output exists')."""
    import errno

    vol = tmp_path / "ct.nii.gz"
    _random_volume(vol, (32, 32, 3), ("L", "P", "S"))
    out, probs, report = tmp_path / "out" / "mask.nii.gz", tmp_path / "out" / "p.npz", tmp_path / "out" / "r.json"
    args = ["segment", "--checkpoint", str(fake), "--input", str(vol), "--output", str(out), "--device", "cpu",
            "--save-probabilities", str(probs), "--report", str(report)]  # fmt: skip

    def full(path, **arrays):
        Path(path).write_bytes(b"PK half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with monkeypatch.context() as m:
        m.setattr(seg.np, "savez_compressed", full)
        assert main(args) == 1
    err = capsys.readouterr().err.split("\r")[-1].strip()  # after the progress bar
    assert (
        err.startswith(f"liverlib segment: error: {probs}: cannot be written (No space left on device)")
        and "\n" not in err
    )
    assert list(out.parent.iterdir()) == []  # no mask, sidecar, report or temporary
    assert main(args) == 0  # not refused over a half-written set
    assert sorted(f.name for f in out.parent.iterdir()) == ["mask.json", "mask.nii.gz", "p.npz", "r.json"]


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


# ---------------------------------------------------------------- DICOM input


def _series_geometry_affine(folder: Path) -> np.ndarray:
    """The RAS affine of a series, computed independently of liverlib from SimpleITK's index → LPS mapping."""
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    img = reader.Execute()
    corners = [(0, 0, 0), (1, 0, 0), (0, 1, 0), (0, 0, 1)]
    ras = [np.array(img.TransformIndexToPhysicalPoint(c)) * [-1, -1, 1] for c in corners]
    aff = np.eye(4)
    aff[:3, 3] = ras[0]
    for axis in range(3):
        aff[:3, axis] = ras[axis + 1] - ras[0]
    return aff


def test_dicom_series_of_the_real_ct_segments_like_the_nifti(tmp_path, fake):
    ct = real_ct()
    ref = nib.load(ct)
    write_series(np.asanyarray(ref.dataobj), ref.affine, tmp_path / "dicom")
    (r,) = seg.segment_file(fake, tmp_path / "dicom", tmp_path / "from_dicom.nii.gz", device="cpu", progress=False)
    seg.segment_file(fake, ct, tmp_path / "from_nifti.nii.gz", device="cpu", progress=False)
    out, nif = nib.load(tmp_path / "from_dicom.nii.gz"), nib.load(tmp_path / "from_nifti.nii.gz")
    assert np.allclose(out.affine, _series_geometry_affine(tmp_path / "dicom"), atol=1e-4)
    assert np.allclose(out.affine, ref.affine, atol=1e-4) and out.shape == ref.shape
    assert out.header["sform_code"] == 1 and out.header.get_xyzt_units()[0] == "mm"
    mask = np.asanyarray(out.dataobj)
    assert np.array_equal(mask, np.asanyarray(nif.dataobj)) and r["orientation"] == "RAS"
    assert r["liver_voxels"] > 1000 and r["tumor_voxels"] > 10  # HU thresholds: a mask with content to compare
    assert r["input"] == str(tmp_path / "dicom")


def test_dicom_lps_series_with_reversed_slices_lands_where_the_nifti_does(tmp_path, fake):
    """A NIfTI whose k axis runs S → I: the series is re-sorted by position, the masks still overlay in RAS."""
    image, _, spacing = make_case(0, 32, 16, np.random.default_rng(5))
    affine = phantom_affine(("L", "P", "I"), spacing, image.shape)
    data = from_display(image, affine)
    vol = _write(tmp_path / "ct.nii.gz", data, affine)
    write_series(data, affine, tmp_path / "dicom")
    seg.segment_file(fake, tmp_path / "dicom", tmp_path / "d.nii.gz", device="cpu", postprocess=False, progress=False)
    seg.segment_file(fake, vol, tmp_path / "n.nii.gz", device="cpu", postprocess=False, progress=False)
    d, n = nib.load(tmp_path / "d.nii.gz"), nib.load(tmp_path / "n.nii.gz")
    assert nib.aff2axcodes(d.affine) == ("L", "P", "S")  # GDCM sorts slices along the normal
    assert np.allclose(d.affine, _series_geometry_affine(tmp_path / "dicom"), atol=1e-4)
    dm, nm = np.asanyarray(d.dataobj), np.asanyarray(n.dataobj)
    assert np.array_equal(to_display(dm, d.affine), to_display(nm, n.affine))
    assert np.array_equal(to_display(dm, d.affine), expected_labels(image)) and len(np.unique(dm)) >= 2
    # world position of a voxel agrees: voxel (0, 0, 0) of the DICOM mask is the last slice of the NIfTI one
    assert np.allclose(d.affine @ [0, 0, 0, 1], n.affine @ [0, 0, data.shape[2] - 1, 1], atol=1e-4)


@pytest.mark.reliability(
    "'several DICOM series: UID (n files), ...; choose one with --series UID'", 2, "nothing written"
)
def test_folder_with_two_series_is_refused_naming_both_and_series_picks_one(tmp_path, fake, capsys):
    a = _random_volume(tmp_path / "a.nii", (32, 32, 3), ("L", "P", "S"))
    b = _random_volume(tmp_path / "b.nii", (32, 32, 4), ("L", "P", "S"), seed=2)
    aff = nib.load(tmp_path / "a.nii").affine
    write_series(a, aff, tmp_path / "dicom", series_uid="1.2.3.1")
    write_series(b, nib.load(tmp_path / "b.nii").affine, tmp_path / "dicom2", series_uid="1.2.3.2")
    for f in (tmp_path / "dicom2").iterdir():
        f.rename(tmp_path / "dicom" / f"b-{f.name}")
    assert series_ids(tmp_path / "dicom") == {"1.2.3.1": 3, "1.2.3.2": 4}
    args = ["segment", "--checkpoint", str(fake), "--input", str(tmp_path / "dicom"), "--device", "cpu"]
    assert main([*args, "--output", str(tmp_path / "m.nii.gz")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "1.2.3.1 (3 files)" in err and "1.2.3.2 (4 files)" in err
    assert "--series UID" in err and not (tmp_path / "m.nii.gz").exists()
    assert main([*args, "--output", str(tmp_path / "m.nii.gz"), "--series", "1.2.3.2", "--no-postprocess"]) == 0
    assert np.array_equal(np.asanyarray(nib.load(tmp_path / "m.nii.gz").dataobj), expected_labels(b))
    with pytest.raises(CaseError, match="no series 9.9"):
        seg.segment_file(fake, tmp_path / "dicom", tmp_path / "x.nii.gz", series="9.9", progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CaseError, match="no .nii or .nii.gz files and no DICOM series"):
        seg.segment_file(fake, tmp_path / "empty", tmp_path / "x.nii.gz", progress=False)


# ---------------------------------------------------------------- TTA, precision, probabilities


def test_tta_averages_the_four_flips(tmp_path):
    model = RampModel()
    images = np.full((2, 16, 16), 0.5, np.float32)  # a flat image: only the ramp decides
    plain, p_plain = predict_volume(model, images, keep_probabilities=True)
    tta, p_tta = predict_volume(model, images, tta=True, keep_probabilities=True)
    assert not np.array_equal(plain, plain[..., ::-1])  # the model alone is not symmetric …
    assert np.array_equal(tta, tta[..., ::-1]) and np.array_equal(tta, tta[..., ::-1, :])  # … its TTA average is
    x = torch.from_numpy(images)[:, None]
    flips = [(), (-1,), (-2,), (-2, -1)]
    manual = sum(model(x.flip(d) if d else x).softmax(1).flip(d) if d else model(x).softmax(1) for d in flips) / 4
    assert np.allclose(p_tta.astype(np.float32), manual.numpy(), atol=1e-3)
    assert np.allclose(p_plain.astype(np.float32), model(x).softmax(1).numpy(), atol=1e-3)
    same, _ = predict_volume(ThresholdModel(), np.random.default_rng(0).random((3, 16, 16)), tta=True)
    assert np.array_equal(same, predict_volume(ThresholdModel(), np.random.default_rng(0).random((3, 16, 16)))[0])


def test_cli_tta_and_report_record_it(tmp_path, monkeypatch):
    monkeypatch.setattr(seg, "model_from_checkpoint", lambda ckpt, device: RampModel())
    ckpt = _ckpt(tmp_path / "ramp.pt", FAKE_CONFIG)
    image = np.zeros((2, 32, 32), np.int16)  # 0 HU → 0.5: the ramp alone decides
    affine = phantom_affine(("L", "P", "S"), (2.0, 1.0, 1.0), image.shape)
    vol = _write(tmp_path / "ct.nii", from_display(image, affine), affine)
    args = ["segment", "--checkpoint", str(ckpt), "--input", str(vol), "--device", "cpu", "--no-postprocess"]
    assert main([*args, "--output", str(tmp_path / "tta.nii.gz"), "--tta", "--report", str(tmp_path / "r.json")]) == 0
    assert main([*args, "--output", str(tmp_path / "plain.nii.gz")]) == 0
    tta, plain = (load_case(vol, tmp_path / f"{n}.nii.gz").mask for n in ("tta", "plain"))
    assert np.array_equal(tta, tta[..., ::-1]) and not np.array_equal(plain, plain[..., ::-1])
    assert json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))["options"]["tta"] is True


def test_precision_choice_and_bf16_on_cpu(monkeypatch):
    import liverlib.runtime as runtime

    for native, auto in ((True, torch.bfloat16), (False, None)):  # auto: bf16 where the CPU has it natively
        monkeypatch.setattr(runtime, "cpu_bf16_supported", lambda native=native: native)
        assert autocast_dtype("cpu", "auto") is auto and autocast_dtype("cpu", "auto", amp=True) is auto
        assert autocast_dtype("cpu", "fp32") is None and autocast_dtype("cpu", "bf16") == torch.bfloat16
        assert autocast_dtype("cpu", "auto", cpu_bf16=False) is None  # the study's cpu_bf16 off: fp32
        # training's reading of the same rule: the amp switch, the CPU only with cpu_bf16
        assert runtime.amp_settings(torch.device("cpu"), True, cpu_bf16=True) == (auto is not None, auto, False)
        assert runtime.amp_settings(torch.device("cpu"), True) == (False, None, False)
    monkeypatch.undo()
    with pytest.raises(ValueError, match="precision must be one of"):
        autocast_dtype("cpu", "fp16")
    images = np.random.default_rng(1).random((3, 16, 16)).astype(np.float32)
    fp32, _ = predict_volume(ThresholdModel(), images, precision="fp32")
    bf16, _ = predict_volume(ThresholdModel(), images, precision="bf16")
    assert np.array_equal(fp32, bf16) and len(np.unique(fp32)) == 3


def test_probabilities_are_float16_on_the_input_grid_and_sum_to_one(tmp_path, fake):
    vol = tmp_path / "ct-pir.nii.gz"
    data = _random_volume(vol, (40, 6, 24), ("P", "I", "R"), block=(8, 1, 8), seed=1)
    out, probs = tmp_path / "mask.nii.gz", tmp_path / "probs.npz"
    seg.segment_file(fake, vol, out, device="cpu", probabilities=probs, postprocess=False, progress=False)
    with np.load(probs) as z:
        assert sorted(z.files) == ["background", "liver", "tumor"]
        p = np.stack([z["background"], z["liver"], z["tumor"]])
    assert p.dtype == np.float16 and p.shape == (3, *data.shape)  # the input's voxel order, not display
    assert np.allclose(p.astype(np.float32).sum(0), 1.0, atol=2e-3) and p.min() >= 0
    assert np.array_equal(p.astype(np.float32).argmax(0), np.asanyarray(nib.load(out).dataobj))
    with pytest.raises(CaseError, match="give a .npz file name"):
        seg.segment_file(fake, vol, tmp_path / "m2.nii.gz", probabilities=tmp_path / "p.npy", progress=False)
    with pytest.raises(FileExistsError, match="probs.npz"):
        seg.segment_file(fake, vol, tmp_path / "m3.nii.gz", probabilities=probs, progress=False)


def test_folder_mode_writes_probabilities_per_input(tmp_path, fake):
    src = tmp_path / "cts"
    src.mkdir()
    for name, shape in [("a.nii", (32, 32, 3)), ("b.nii.gz", (32, 32, 5))]:
        _random_volume(src / name, shape, ("L", "P", "S"))
    seg.segment_file(fake, src, tmp_path / "masks", device="cpu", probabilities=tmp_path / "probs", progress=False)
    assert sorted(p.name for p in (tmp_path / "probs").iterdir()) == ["a_probs.npz", "b_probs.npz"]
    with np.load(tmp_path / "probs" / "b_probs.npz") as z:
        assert z["liver"].shape == (32, 32, 5)


# ---------------------------------------------------------------- report, sidecar, skipping, unwritable outputs


def test_report_records_versions_checkpoint_timings_volumes_and_hu(tmp_path, fake):
    image = _liver_with_islands()
    image[:, 9:11, 9:11] = 900  # a second tumor inside the liver, not touching the first
    affine = phantom_affine(("L", "P", "S"), (2.0, 1.0, 0.5), image.shape)
    vol = _write(tmp_path / "ct.nii.gz", from_display(image, affine), affine)
    report = tmp_path / "out" / "report.json"
    seg.segment_file(fake, vol, tmp_path / "mask.nii.gz", device="cpu", report=report, progress=False)
    rep = json.loads(report.read_text(encoding="utf-8"))
    assert rep["versions"]["torch"] == torch.__version__.split("+")[0] or rep["versions"]["torch"] == torch.__version__
    assert rep["versions"]["SimpleITK"] and rep["versions"]["nibabel"] == nib.__version__
    assert rep["torch_device"] == "cpu" and rep["device"]
    assert rep["checkpoint"]["sha256"] == hashlib.sha256(fake.read_bytes()).hexdigest()
    assert rep["checkpoint"]["config"]["hu_window"] == [-1000, 1000]
    assert rep["checkpoint"]["split"] == {"train": [1, 2], "val": [3], "test": [4]}
    (v,) = rep["volumes"]
    assert set(v["seconds"]) == set(seg.STAGES) and all(s >= 0 for s in v["seconds"].values())
    assert v["tumor_components"] == 2 and v["tumor_voxels"] == 4 * 8  # the island outside the liver is gone
    assert v["liver_ml"] == round(4 * (100 - 8) * 1.0 / 1000, 1) and v["tumor_ml"] == round(32 / 1000, 1)
    kept = load_case(vol, tmp_path / "mask.nii.gz").mask
    assert v["mean_hu"] == {"background": round(float(image[kept == 0].mean()), 1), "liver": 200.0, "tumor": 900.0}
    assert v["mean_hu"]["background"] > -600  # the removed islands count as background
    assert rep["label_names"] == {"0": "background", "1": "liver", "2": "tumor"}


def test_mask_has_a_label_sidecar(tmp_path, fake):
    vol = tmp_path / "ct.nii.gz"
    _random_volume(vol, (32, 32, 3), ("L", "P", "S"))
    seg.segment_file(fake, vol, tmp_path / "mask.nii.gz", device="cpu", progress=False)
    side = json.loads((tmp_path / "mask.json").read_text(encoding="utf-8"))
    assert side == {"labels": {"0": "background", "1": "liver", "2": "tumor"}}
    assert {int(k): v for k, v in side["labels"].items()} == {v: k for k, v in LABELS.items()}
    with pytest.raises(CaseError, match="label sidecar"):
        seg.segment_file(fake, vol, tmp_path / "m.nii.gz", report=tmp_path / "m.json", progress=False)


@pytest.mark.reliability(
    "one line per skipped input; --overwrite with --skip-existing refused", 0, "masks already written"
)
def test_skip_existing_skips_written_masks_and_says_so(tmp_path, fake, capsys):
    src, out = tmp_path / "cts", tmp_path / "masks"
    src.mkdir()
    _random_volume(src / "a.nii", (32, 32, 3), ("L", "P", "S"))
    _random_volume(src / "b.nii", (32, 32, 3), ("L", "P", "S"), seed=4)
    out.mkdir()
    (out / "a_seg.nii.gz").write_bytes(b"keep me")
    results = seg.segment_file(fake, src, out, device="cpu", skip_existing=True, progress=False)
    printed = capsys.readouterr().out
    assert "skipping 1 input(s) whose mask exists: a_seg.nii.gz" in printed
    assert [Path(r["input"]).name for r in results] == ["b.nii"] and (out / "a_seg.nii.gz").read_bytes() == b"keep me"
    assert nib.load(out / "b_seg.nii.gz").shape == (32, 32, 3)
    assert seg.segment_file(fake, src, out, device="cpu", skip_existing=True, progress=False) == []
    with pytest.raises(RunError, match="exclude each other"):
        seg.segment_file(fake, src, out, overwrite=True, skip_existing=True, progress=False)


@pytest.mark.reliability(
    "'TARGET: cannot be written: PARENT is a file, not a folder' before the model loads", 2, "nothing written"
)
@pytest.mark.parametrize("which", ["mask", "probabilities", "report"])
def test_unwritable_output_is_refused_before_any_inference(tmp_path, monkeypatch, which, capsys):
    def no_model(ckpt, device):
        raise AssertionError("the model was loaded before the output was checked")

    monkeypatch.setattr(seg, "model_from_checkpoint", no_model)
    ckpt = _ckpt(tmp_path / "fake.pt", FAKE_CONFIG)
    vol = tmp_path / "ct.nii.gz"
    _random_volume(vol, (32, 32, 3), ("L", "P", "S"))
    (tmp_path / "a_file").write_text("not a folder")
    bad = tmp_path / "a_file" / "sub"
    paths = {"mask": tmp_path / "mask.nii.gz", "probabilities": None, "report": None}
    paths[which] = bad / {"mask": "mask.nii.gz", "probabilities": "p.npz", "report": "r.json"}[which]
    args = [
        "segment",
        "--checkpoint",
        str(ckpt),
        "--input",
        str(vol),
        "--output",
        str(paths["mask"]),
        "--device",
        "cpu",
    ]
    args += ["--save-probabilities", str(paths["probabilities"])] if paths["probabilities"] else []
    args += ["--report", str(paths["report"])] if paths["report"] else []
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(paths[which]) in err and "a_file is a file, not a folder" in err
    assert not (tmp_path / "mask.nii.gz").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders; the file-parent test covers root")
def test_read_only_output_folder_is_refused(tmp_path, fake):
    vol = tmp_path / "ct.nii.gz"
    _random_volume(vol, (32, 32, 3), ("L", "P", "S"))
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(CaseError, match="mask.nii.gz: cannot be written: no write permission"):
            seg.segment_file(fake, vol, ro / "mask.nii.gz", device="cpu", progress=False)
    finally:
        ro.chmod(0o700)


def test_dicom_io_leaves_the_process_locale_alone(tmp_path):
    """ITK's DICOM writer sets the C locale; liverlib restores it, so later text files still write UTF-8 (a
    suite-order bug: Table 1's '×' failed to write after the DICOM tests)."""
    import locale

    from liverlib.data import dicom

    before = locale.setlocale(locale.LC_ALL)
    dicom.write_series(np.zeros((3, 16, 16), np.int16), np.eye(4), tmp_path / "s")
    dicom.load_dicom_case(tmp_path / "s")
    assert locale.setlocale(locale.LC_ALL) == before
    (tmp_path / "t.md").write_text("256 × 256 – ε", encoding=locale.getpreferredencoding(False))
