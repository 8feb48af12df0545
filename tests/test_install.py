"""Installation contract: ranges in pyproject.toml, exact pins in the constraints file, Kaggle keeps its torch.

docs/kaggle.md explains the recipe these tests stand behind.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from liverlib.runtime import provenance

ROOT = Path(__file__).resolve().parents[1]
CONSTRAINTS = ROOT / "requirements" / "constraints.txt"
TESTED = {"torch": "2.14.1", "torchvision": "0.29.1", "albumentations": "2.0.8",
          "segmentation-models-pytorch": "0.5.0", "monai": "1.6.1"}  # fmt: skip
"""The versions the study was measured with (README, shared/NOTES.md)."""
PREINSTALLED = re.compile(r"^(torch|torchvision|triton|nvidia-.*|cuda-.*)$")
"""What a Kaggle/Colab image brings, driver-matched, and `pip install -e .` must leave alone."""
NETWORK_ERRORS = ("NewConnectionError", "Failed to establish", "Name or service not known", "Temporary failure",
                  "Network is unreachable", "Connection refused", "ConnectTimeout", "Read timed out",
                  "ProxyError", "No matching distribution found for setuptools")  # fmt: skip


def project() -> dict:
    """pyproject.toml's [project] table."""
    tomllib = pytest.importorskip("tomllib", reason="Python >= 3.11")
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def pins() -> dict[str, str]:
    """The constraints file as {canonical name: version}."""
    out = {}
    for line in CONSTRAINTS.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"constraints must be exact pins, got {line!r}"
            out[canonicalize_name(name)] = version.strip()
    return out


def declared() -> list[Requirement]:
    """Every requirement of the package and of its test extra (the ones `make install` installs)."""
    p = project()
    return [Requirement(r) for r in p["dependencies"] + p["optional-dependencies"]["test"]]


def test_pyproject_declares_ranges_not_pins() -> None:
    for req in [Requirement(r) for r in project()["dependencies"]]:
        assert not any(s.operator in ("==", "===") for s in req.specifier), f"{req}: a library declares ranges"
    names = {canonicalize_name(Requirement(r).name) for r in project()["dependencies"]}
    assert {"jupyterlab", "nbconvert", "simpleitk", "pydicom", "ipykernel"} <= names
    assert "mlflow-skinny" not in names  # tracking is opt-in (`.[tracking]`)


def test_constraints_pin_every_dependency_inside_its_range() -> None:
    pinned = pins()
    for name, version in TESTED.items():
        assert pinned[canonicalize_name(name)] == version
    for req in declared():
        name = canonicalize_name(req.name)
        assert name in pinned, f"{req.name} has no pin in {CONSTRAINTS.name} (run `make constraints`)"
        assert req.specifier.contains(pinned[name], prereleases=True), f"pin {pinned[name]} outside {req}"
    assert "liverlib" not in pinned and "opencv-python" not in pinned  # never beside -headless (NOTES)


def test_runtime_dependencies_accept_the_oldest_declared_torch() -> None:
    """No installed runtime dependency (transitively, extras aside) asks for a newer torch than pyproject says.

    So on an image whose torch is inside pyproject's range, pip has no reason to replace it (the preinstalled
    torch/torchvision pair is taken as matched).
    """
    from importlib import metadata

    floor = {canonicalize_name(r.name): min(s.version for s in r.specifier if s.operator == ">=")
             for r in map(Requirement, project()["dependencies"]) if canonicalize_name(r.name) in ("torch", "torchvision")}  # fmt: skip
    seen, todo, asks = set(), ["liverlib"], []
    while todo:
        name = canonicalize_name(todo.pop())
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for req in map(Requirement, requires):
            if req.marker and not req.marker.evaluate({"extra": ""}):
                continue
            dep = canonicalize_name(req.name)
            if dep in floor and name not in floor and not req.specifier.contains(floor[dep], prereleases=True):
                asks.append(f"{name} needs {req}")
            todo.append(dep)
    assert {"torch", "torchvision", "segmentation-models-pytorch", "timm", "albumentations"} <= seen
    assert not asks, f"raise pyproject's floor or pin these lower: {asks}"


@pytest.mark.slow
def test_editable_install_keeps_the_installed_torch(tmp_path: Path) -> None:
    """`pip install -e .` where torch is already installed (Kaggle, Colab, this venv) reinstalls none of it."""
    report = tmp_path / "report.json"
    cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--report", str(report), "-e", str(ROOT)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    except subprocess.TimeoutExpired:
        pytest.skip("pip did not resolve within 600 s (registry unreachable or very slow)")
    if done.returncode != 0:
        if any(e in done.stdout + done.stderr for e in NETWORK_ERRORS):
            pytest.skip(f"package registry unreachable: {done.stderr.strip().splitlines()[-1:]}")
        pytest.fail(f"pip install --dry-run failed:\n{done.stderr[-3000:]}")
    install = {canonicalize_name(i["metadata"]["name"]): i["metadata"]["version"]
               for i in json.loads(report.read_text(encoding="utf-8"))["install"]}  # fmt: skip
    replaced = {n: v for n, v in install.items() if PREINSTALLED.match(n)}
    assert not replaced, f"pip would replace the preinstalled torch stack: {replaced}"
    assert "liverlib" in install  # the report is the real resolution, not an empty one


def test_provenance_records_versions_device_and_driver() -> None:
    import torch

    t0 = time.perf_counter()
    prov = provenance()
    assert time.perf_counter() - t0 < 10  # called at every summary: no network, at most one nvidia-smi
    assert {"versions", "python", "platform", "cpu_model", "device", "cuda_runtime", "cuda_driver", "cudnn",
            "gpu_count", "gpu_memory_gib", "gpu_capability", "git_commit"} <= prov.keys()  # fmt: skip
    for pkg in ("torch", "torchvision", "segmentation-models-pytorch", "albumentations", "SimpleITK", "pydicom",
                "jupyterlab", "monai"):  # fmt: skip
        assert prov["versions"][pkg], pkg  # all installed by `make install`
    assert prov["python"] == f"{sys.version_info.major}.{sys.version_info.minor}.{sys.version_info.micro}"
    assert prov["cpu_model"] is None or isinstance(prov["cpu_model"], str)
    json.dumps(prov)  # goes into summary.json as is
    if torch.cuda.is_available():
        assert prov["cuda_runtime"] == torch.version.cuda and prov["gpu_count"] >= 1
        assert prov["device"] == torch.cuda.get_device_name(0)
    else:
        assert prov["device"].startswith("CPU")
        assert prov["cuda_runtime"] is prov["cuda_driver"] is prov["cudnn"] is None and prov["gpu_count"] == 0
