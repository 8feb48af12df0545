"""tools/gpu_check.sh, the prepared GPU check (issue 21): on a machine without CUDA it checks what it can and stops
in one line, measuring and writing nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow  # ≈ 25 s: three interpreters import torch


def test_gpu_check_without_cuda_stops_in_one_line(tmp_path: Path) -> None:
    out = tmp_path / "benchmarks_gpu.md"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHON": sys.executable, "OUT": str(out),
           "WORK": str(tmp_path / "work")}  # fmt: skip
    proc = subprocess.run(["bash", str(ROOT / "tools/gpu_check.sh")], env=env, capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)  # fmt: skip
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert len(lines) == 1 and lines[0].startswith("gpu_check: no CUDA device"), lines
    assert "checks that need none passed" in lines[0] and not out.exists()
    steps = (tmp_path / "work" / "steps.tsv").read_text(encoding="utf-8").splitlines()[1:]
    assert [s.split("\t")[0] for s in steps] == ["check_python", "check_cli", "check_gpu_tests", "check_out_writable"]
    assert all(s.endswith("\t0") for s in steps)
