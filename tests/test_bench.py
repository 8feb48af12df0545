"""Smoke test of the benchmark functions at minimal sizes: table shape and positive numbers, never timings."""

import json

import pandas as pd
import pytest
import torch

from liverlib.bench import (
    SUMMARY_COLUMNS,
    Reps,
    count_flops,
    dense_peak_gflops,
    format_table,
    render_report,
    run_benchmark,
    summary_table,
)
from liverlib.bench.e2e import projected_hours
from liverlib.bench.models import build_paths
from liverlib.bench.summary import format_value
from liverlib.runtime import amp_settings, cpu_bf16_supported

TINY = Reps(warmup=0, min_steps=1, min_seconds=0.0, max_steps=1, matmul_seconds=0.0, cache_reads=200, aug_samples=8,
            loader_batches=2, loop_slices=2, e2e_steps=1)  # fmt: skip
SMOKE = {"phantom_cases": 6, "phantom_size": 64, "phantom_slices": [16, 16], "n_volumes": 3, "val_fraction": 0.2,
         "test_fraction": 0.2, "image_size": 32}  # fmt: skip


@pytest.fixture(scope="module")
def result():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a busy 2-core CI machine slows multi-threaded tiny steps tenfold
    try:
        yield run_benchmark([32], batch_size=2, device="cpu", reps=TINY, volume_slices=4, image_size=32, big_batch=4,
                            data_kwargs={"smoke": SMOKE, "big_size": 64, "big_slices": 16},
                            log=lambda _: None)  # fmt: skip
    finally:
        torch.set_num_threads(threads)


def test_count_flops_matches_the_known_paper_model_count():
    f = count_flops("hybrid", 128)
    assert f["forward"] / 1e9 == pytest.approx(25.3, rel=0.01)  # shared/NOTES.md: 76 G per training slice at 128²
    assert f["train"] / 1e9 == pytest.approx(76.0, rel=0.01)
    assert f["convolution"] + f["linear"] + f["attention"] == pytest.approx(1.0)


def test_model_rows_cover_both_models_and_paths(result):
    m = result["models"]
    bf16 = cpu_bf16_supported()  # then the fast path autocasts and "fast fp32" is measured beside it
    paths = ("naive", "fast", "fast, big batch") + (("fast fp32",) if bf16 else ())
    assert sorted(zip(m.model, m.path)) == sorted((n, p) for n in ("hybrid", "unet_smp") for p in paths)
    for col in ("train_slices_s", "infer_slices_s", "gflop_fwd_per_slice", "gflop_train_per_slice", "train_gflops",
                "loss_last"):  # fmt: skip
        assert (m[col] > 0).all(), col
    assert set(m[m.path == "fast"].precision) == {"bfloat16" if bf16 else "fp32"}
    assert set(m[m.path == "naive"].precision) == {"fp32"}
    assert set(m[m.path == "fast, big batch"].batch) == {4} and (m.loss_steps >= 2).all()  # warm-up + one timed
    assert result["matmul"]["fp32"] > 0 and result["matmul"]["bfloat16"] > 0
    for k, rate in result["matmul"].items():  # the ceiling: the highest of two samples at the start, one after
        assert len(result["matmul_samples"][k]) == 3 and rate == max(result["matmul_samples"][k])


def test_end_to_end_rows_and_projection(result):
    e = result["e2e"]
    assert sorted(zip(e.model, e.path)) == sorted((n, p) for n in ("hybrid", "unet_smp") for p in ("naive", "fast"))
    assert (e.train_slices_s > 0).all() and e[e.path == "fast"].resident.all()
    assert result["data"]["feeder_s"] > 0
    assert projected_hours(11.7, 50.0) == pytest.approx(100 * (1350 / 11.7 + 168 / 50.0) / 3600)
    proj = result["summary"][result["summary"].measure.str.contains("projected paper run")]
    assert len(proj) == 2 and (proj["fast / measured"] > 0).all()


def test_summary_table_has_every_group_and_target(result):
    s = result["summary"]
    assert list(s.columns) == SUMMARY_COLUMNS
    assert set(s.group) == {"machine", "model", "e2e", "data", "volume"}
    rates = pd.to_numeric(s["fast / measured"], errors="coerce").dropna()
    assert len(rates) >= 15 and (rates > 0).all()
    targets = s[s.target != ""]
    # at 32² there is no 256² model row: the training-ratio target is absent
    bf16 = cpu_bf16_supported()  # the volume's bf16 targets only where the CPU has bf16
    assert set(targets.target) == {"≥ 20,000/s", "≥ 5×"} | ({"≥ 1.8×", "≥ 99.5 %"} if bf16 else set())
    assert set(targets.met) <= {"pass", "MISSED", "n/a"}
    assert result["volume"]["fp32_s"] > 0 and (result["volume"]["amp_s"] is not None) == bf16


def test_report_has_header_and_sections(result):
    text = render_report(result)
    for heading in ("# Benchmarks", "## Machine", "## Summary", "## 1. Model step", "## 2. Training end to end",
                    "## 3. Data path", "## 4. Volume inference", "## Targets", "## Where the time goes",
                    "## Caveats"):  # fmt: skip
        assert heading in text, heading
    assert torch.__version__ in text and "intra-op threads" in text
    assert format_table(result["summary"]).count("\n") == len(result["summary"]) + 1
    assert "linear scaling rule" in text and "GpuBatches" in text
    assert "fp32 " + format_value(result["matmul"]["fp32"]) + " GFLOP/s (the highest of 3: " in text


def _fake_models(train_naive: float, train_fast: float) -> pd.DataFrame:
    rows = []
    for path, train in (("naive", train_naive), ("fast", train_fast)):
        rows.append({"model": "hybrid", "size": 256, "path": path, "precision": "fp32", "batch": 8,
                     "train_slices_s": train, "infer_slices_s": 2 * train, "train_peak_mib": 100.0,
                     "gflop_train_per_slice": 323.0, "train_gflops": 323.0 * train, "loss_last": 1.0,
                     "loss_steps": 3})  # fmt: skip
    return pd.DataFrame(rows)


@pytest.mark.parametrize("device, fast, met", [("cpu", 0.40, "pass"), ("cpu", 0.30, "MISSED"), ("cuda", 1200.0, "pass"),
                                               ("cuda", 400.0, "MISSED")])  # fmt: skip
def test_targets_are_judged_against_the_stated_thresholds(device, fast, met):
    data = {"image_size": 256, "smoke_set": "12 cases at 128², 24–32 slices, cache at 64²", "big_shape": (150, 512, 512),
            "phantom_smoke_s": 1.0, "phantom_big_s": 5.0, "curation_smoke_s": 1.0, "cache_smoke_s": 1.0,
            "cache_big_s": 1.0, "preprocess_slices_s": 900.0, "cache_reads_s": 19_000.0, "augment_0w_s": 200.0,
            "loader_2w_s": 1.9, "feeder_s": 2000.0}  # fmt: skip
    vol = {"shape": "512×512×100", "batch_size": 16, "fp32_s": 20.0, "amp_s": 10.0, "amp_precision": "bfloat16",
           "agreement": 0.996}  # fmt: skip
    e2e = pd.DataFrame([{"model": "hybrid", "size": 256, "path": p, "precision": "fp32", "train_slices_s": r}
                        for p, r in (("naive", 0.2), ("fast", fast))])  # fmt: skip
    s = summary_table(_fake_models(0.2, fast), data, vol, {"fp32": 100.0}, torch.device(device), e2e=e2e,
                      peak_gflops=989e3).set_index("target")  # fmt: skip
    if device == "cpu":
        assert s.loc["≥ 2×", "met"] == met  # 0.40 / 0.20 = 2.0×, 0.30 / 0.20 = 1.5×
        assert s.loc["≥ 5×", "met"] == ("pass" if 1.9 / fast >= 5 else "MISSED")
    else:
        assert s.loc["≥ 1,000/s", "met"] == met and "≥ 2×" not in s.index
        assert s.loc["≥ 1× (keeps up)", "met"] == ("pass" if 2000 >= fast else "MISSED")
    assert s.loc["≥ 20,000/s", "met"] == "MISSED" and s.loc["≥ 1.8×", "met"] == "pass"
    assert s.loc["≥ 99.5 %", "met"] == "pass"


@pytest.mark.parametrize("name, tflops", [("NVIDIA H200", 989.0), ("NVIDIA H100 80GB HBM3", 989.0),
                                          ("NVIDIA A100-SXM4-40GB", 312.0), ("Tesla T4", 65.0), ("NVIDIA L4", 121.0),
                                          ("NVIDIA A10G", 70.0), ("Some Future Card", None)])  # fmt: skip
def test_dense_peak_table(monkeypatch, name, tflops):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *_: name)
    got = dense_peak_gflops(torch.device("cuda"))
    assert got == (None if tflops is None else tflops * 1e3)
    assert dense_peak_gflops(torch.device("cpu")) is None


def test_forced_cpu_bf16_builds_the_bf16_and_fp32_fast_paths():
    paths = build_paths("unet_smp", 32, batch_size=2, device=torch.device("cpu"), cpu_bf16=True, big_batch=None)
    assert list(paths) == ["naive", "fast fp32", "fast"] and paths["fast"].precision == "bfloat16"
    assert paths["fast fp32"].precision == paths["naive"].precision == "fp32"
    assert amp_settings(torch.device("cpu"), True) == (False, None, False)  # the default stays fp32 on CPU
    want = (True, torch.bfloat16, False) if cpu_bf16_supported() else (False, None, False)
    assert amp_settings(torch.device("cpu"), True, cpu_bf16=True) == want
    assert amp_settings(torch.device("cpu"), False, cpu_bf16=True) == (False, None, False)


def test_compiled_path_is_judged_beside_the_fast_path():
    """With ``--compile`` the ≥ 2× CPU target is judged for ``fast`` and ``fast, compiled`` each, and the
    compiled path's warm-up (its compilation) is reported."""
    models = _fake_models(0.2, 0.36)
    extra = {**models.iloc[1].to_dict(), "path": "fast, compiled", "train_slices_s": 0.45, "train_gflops": 323 * 0.45}
    models = pd.concat([models, pd.DataFrame([extra])], ignore_index=True)
    models["train_warm_s"], models["infer_warm_s"] = [20.0, 21.0, 80.0], [5.0, 4.0, 40.0]
    s = summary_table(models, None, None, {"fp32": 100.0}, torch.device("cpu"))
    judged = s[s.target == "≥ 2×"].set_index("measure").met
    assert judged.filter(like="fast (fp32").tolist() == ["MISSED"]  # 0.36 / 0.2 = 1.8×
    assert judged.filter(like="fast, compiled").tolist() == ["pass"]  # 0.45 / 0.2 = 2.25×
    warm = s[s.measure.str.contains("warm-up incl. compilation")]
    assert warm["fast / measured"].tolist() == [120.0] and warm["naive / reference"].tolist() == [25.0]


def test_compiled_path_is_built_only_when_asked():
    kw = dict(batch_size=2, device=torch.device("cpu"), cpu_bf16=False, big_batch=None)
    assert "fast, compiled" not in build_paths("unet_smp", 32, **kw)
    paths = build_paths("unet_smp", 32, **kw, compiled=True)
    assert list(paths) == ["naive", "fast", "fast, compiled"]
    a, b = paths["fast"].model.state_dict(), paths["fast, compiled"].model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)  # the same starting weights: the loss compares them


def test_cpu_bf16_instructions_names_the_flags_it_finds(tmp_path):
    """The benchmark's machine table names the CPU's bf16 instruction sets from its ``flags`` line: AMX and
    AVX512-BF16 where listed, none on an AVX2-only CPU or where the file is missing."""
    from liverlib.bench.timing import cpu_bf16_instructions

    info = tmp_path / "cpuinfo"
    info.write_text("model name\t: Some Xeon\nflags\t\t: fpu sse avx2 avx512f avx512_bf16 amx_tile amx_bf16\n")
    assert cpu_bf16_instructions(str(info)) == ["AMX-BF16", "AVX512-BF16"]
    info.write_text("flags\t\t: fpu sse avx2 avx512_bf16\n")
    assert cpu_bf16_instructions(str(info)) == ["AVX512-BF16"]
    info.write_text("flags\t\t: fpu sse avx2\n")
    assert cpu_bf16_instructions(str(info)) == []
    assert cpu_bf16_instructions(str(tmp_path / "missing")) == []


def test_cpu_report_embeds_the_recorded_bf16_training(tmp_path):
    """The CPU report carries tools/cpu_bf16_training.py's record: the verdict against ±0.02 and both histories,
    labelled as a record (machine, date, commit); without a record it says how to make one."""
    from liverlib.bench.report import CPU_BF16_RECORD, section_cpu_bf16_record

    assert "No record" in "\n".join(section_cpu_bf16_record(tmp_path / "absent.json"))
    hist = [{"epoch": e, "train_loss": 1.0 / e, "val_loss": 0.5, "val_liver_dice": 0.8, "val_tumor_dice_gtpos": 0.1,
             "train_slices_per_s": 4.0} for e in (1, 2)]  # fmt: skip
    run = {"autocast": "off", "seconds": 600.0, "threads": 1, "test_per_volume_liver_dice": 0.95,
           "test_per_volume_tumor_dice": 0.70, "test_volumes": 4, "best_epoch": 2, "history": hist}  # fmt: skip
    rec = {"profile": "smoke", "machine": {"date": "2026-12-06 12:00 UTC", "CPU": "Some CPU", "git commit": "abc"},
           "fp32": run, "bf16": {**run, "autocast": "bfloat16", "seconds": 300.0, "test_per_volume_tumor_dice": 0.67}}  # fmt: skip
    path = tmp_path / "rec.json"
    path.write_text(json.dumps(rec), encoding="utf-8")
    text = "\n".join(section_cpu_bf16_record(path))
    assert "recorded 2026-12-06 12:00 UTC on Some CPU" in text
    assert "bf16 is **outside** ±0.02 of fp32 (liver 0.0000, tumor 0.0300 apart) and took 2.00× less time" in text
    assert text.count(" val liver Dice ") == 2 and "| 0.9500 | 0.6700 | 4 |" in text
    assert CPU_BF16_RECORD.startswith("docs/")
