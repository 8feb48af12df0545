"""Smoke test of the benchmark functions at minimal sizes: table shape and positive numbers, never timings."""

import numpy as np
import pandas as pd
import pytest
import torch

from liverlib.bench import SUMMARY_COLUMNS, Reps, count_flops, format_table, render_report, run_benchmark, summary_table

TINY = Reps(warmup=0, min_steps=1, min_seconds=0.0, max_steps=1, matmul_seconds=0.0, cache_reads=200, aug_samples=8,
            loader_batches=2, loop_slices=2)  # fmt: skip
SMOKE = {"phantom_cases": 6, "phantom_size": 64, "phantom_slices": [16, 16], "n_volumes": 3, "val_fraction": 0.2,
         "test_fraction": 0.2, "image_size": 32}  # fmt: skip


@pytest.fixture(scope="module")
def result():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a busy 2-core CI machine slows multi-threaded tiny steps tenfold
    try:
        yield run_benchmark([32], batch_size=2, device="cpu", reps=TINY, volume_slices=4, image_size=32,
                            data_kwargs={"smoke": SMOKE, "big_size": 64, "big_slices": 16}, log=lambda _: None)  # fmt: skip
    finally:
        torch.set_num_threads(threads)


def test_count_flops_matches_the_known_paper_model_count():
    f = count_flops("hybrid", 128)
    assert f["forward"] / 1e9 == pytest.approx(25.3, rel=0.01)  # shared/NOTES.md: 76 G per training slice at 128²
    assert f["train"] / 1e9 == pytest.approx(76.0, rel=0.01)
    assert f["convolution"] + f["linear"] + f["attention"] == pytest.approx(1.0)


def test_model_rows_cover_both_models_and_paths(result):
    m = result["models"]
    assert sorted(zip(m.model, m.path)) == sorted((n, p) for n in ("hybrid", "unet_smp") for p in ("naive", "fast"))
    for col in ("train_slices_s", "infer_slices_s", "gflop_fwd_per_slice", "gflop_train_per_slice", "train_gflops"):
        assert (m[col] > 0).all(), col
    assert result["matmul"]["fp32"] > 0


def test_summary_table_has_every_group_and_target(result):
    s = result["summary"]
    assert list(s.columns) == SUMMARY_COLUMNS
    assert set(s.group) == {"machine", "model", "data", "volume"}
    rates = pd.to_numeric(s["fast / measured"], errors="coerce").dropna()
    assert len(rates) >= 15 and (rates > 0).all()
    targets = s[s.target != ""]
    # at 32² there is no 256² model row: the training-ratio target is absent and the loader ratio is n/a
    assert set(targets.target) == {"≥ 20,000/s", "≥ 5×", "≥ 3×"}
    assert set(targets.met) <= {"pass", "MISSED", "n/a"}
    vol = s[s.measure.str.startswith("vs one slice at a time, naive")].iloc[0]
    assert vol.ratio > 0 and vol.met in {"pass", "MISSED"}
    assert np.isfinite(result["volume"]["agreement"])


def test_report_has_header_and_sections(result):
    text = render_report(result)
    for heading in ("# Benchmarks", "## Machine", "## Summary", "## 1. Model step", "## 2. Data path",
                    "## 3. Volume inference", "## Targets", "## Where the time goes", "## Caveats"):  # fmt: skip
        assert heading in text, heading
    assert torch.__version__ in text and "intra-op threads" in text
    assert format_table(result["summary"]).count("\n") == len(result["summary"]) + 1


def _fake_models(train_naive: float, train_fast: float) -> pd.DataFrame:
    rows = []
    for path, train in (("naive", train_naive), ("fast", train_fast)):
        rows.append({"model": "hybrid", "size": 256, "path": path, "precision": "fp32", "train_slices_s": train,
                     "infer_slices_s": 2 * train, "train_peak_mib": 100.0, "gflop_train_per_slice": 323.0,
                     "train_gflops": 323.0 * train})  # fmt: skip
    return pd.DataFrame(rows)


@pytest.mark.parametrize("device, fast, met", [("cpu", 0.40, "pass"), ("cpu", 0.30, "MISSED"), ("cuda", 400.0, "pass")])
def test_targets_are_judged_against_the_stated_thresholds(device, fast, met):
    data = {"image_size": 256, "smoke_set": "12 cases at 128², 24–32 slices, cache at 64²", "big_shape": (150, 512, 512),
            "phantom_smoke_s": 1.0, "phantom_big_s": 5.0, "curation_smoke_s": 1.0, "cache_smoke_s": 1.0,
            "cache_big_s": 1.0, "preprocess_slices_s": 900.0, "cache_reads_s": 19_000.0, "augment_0w_s": 200.0,
            "loader_2w_s": 1.9}  # fmt: skip
    vol = {"shape": "512×512×100", "batch_size": 16, "batched_s": 10.0, "loop_naive_s": 31.0, "loop_fast_s": 12.0}
    s = summary_table(_fake_models(0.2, fast), data, vol, {"fp32": 100.0}, torch.device(device)).set_index("target")
    if device == "cpu":
        assert s.loc["≥ 1.8×", "met"] == met  # 0.40 / 0.20 = 2.0×, 0.30 / 0.20 = 1.5×
        assert s.loc["≥ 5×", "met"] == ("pass" if 1.9 / fast >= 5 else "MISSED")
    else:
        assert s.loc["≥ 350/s", "met"] == met and "≥ 1.8×" not in s.index
        assert s.loc["≥ 1× (keeps up)", "met"] == "MISSED"  # 1.9 slices/s cannot feed 400
    assert s.loc["≥ 20,000/s", "met"] == "MISSED" and s.loc["≥ 3×", "met"] == "pass"
