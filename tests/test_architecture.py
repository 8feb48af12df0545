"""The package's shape, checked (issue 19): modules and functions within the house size, no import cycle between
modules or between subpackages, dependencies that run one way, no private name imported across modules, the module
table of docs/architecture.md equal to the modules that exist, and notebooks without logic."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat

from liverlib.pipeline.study import notebooks
from tools import import_graph

ROOT = Path(__file__).resolve().parents[1]

MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80

GROUND = {"liverlib.errors", "liverlib.files", "liverlib.params", "liverlib.paper", "liverlib.labels",
          "liverlib.progress", "liverlib.runtime", "liverlib.run", "liverlib.locks"}  # fmt: skip
"""The ground floor: small shared modules that import no subpackage."""

LAYERS: dict[str, set[str]] = {
    "liverlib.data": GROUND - {"liverlib.run"},  # never the run folder
    "liverlib.model": GROUND,
    "liverlib.evaluation": GROUND | {"liverlib.data", "liverlib.model"},
    "liverlib.training": GROUND | {"liverlib.data", "liverlib.model", "liverlib.evaluation"},
    "liverlib.report": GROUND | {"liverlib.data", "liverlib.model", "liverlib.evaluation"},
    "liverlib.segment": GROUND | {"liverlib.data", "liverlib.model", "liverlib.evaluation"},  # never training
}
"""What each lower subpackage may import (pipeline, bench and the package root import anything below them)."""


def test_no_module_over_the_house_size() -> None:
    big = {m: n for m, n in import_graph.line_counts().items() if n > MAX_MODULE_LINES}
    assert big == {}, f"modules over {MAX_MODULE_LINES} lines: split them by responsibility"


def test_no_function_over_the_house_size() -> None:
    long = {f: n for f, n in import_graph.function_lengths().items() if n > MAX_FUNCTION_LINES}
    assert long == {}, f"functions over {MAX_FUNCTION_LINES} lines: name their steps"


def test_no_import_cycle_between_modules() -> None:
    g = import_graph.graph()
    assert "liverlib.training.loop" in g["liverlib.pipeline.stages"]  # the graph is real (a lazy import counts)
    assert import_graph.cycles(g) == []
    assert import_graph.cycles({"a": {"b"}, "b": {"a"}, "c": set()}) == [["a", "b"]]


def test_no_import_cycle_between_subpackages() -> None:
    packages = import_graph.package_graph(import_graph.graph())
    assert import_graph.cycles(packages) == []
    g = {"liverlib.a.x": {"liverlib.b.y"}, "liverlib.b.y": {"liverlib.a.z"}, "liverlib.a.z": set()}
    assert import_graph.cycles(import_graph.package_graph(g)) == [["liverlib.a", "liverlib.b"]]  # the check bites


def test_dependencies_run_one_way() -> None:
    packages = import_graph.package_graph(import_graph.graph())
    for unit in GROUND:
        assert packages[unit] <= GROUND, f"{unit} (ground floor) imports {sorted(packages[unit] - GROUND)}"
    for unit, allowed in LAYERS.items():
        assert packages[unit] <= allowed, f"{unit} imports {sorted(packages[unit] - allowed)}"


def test_inference_does_not_import_the_training_loop() -> None:
    g = import_graph.graph()
    for m, deps in g.items():
        if m.startswith(("liverlib.segment", "liverlib.evaluation", "liverlib.model")):
            assert not any(d.startswith("liverlib.training") for d in deps), m


def test_no_private_name_imported_across_modules() -> None:
    assert import_graph.private_imports() == []


def documented_modules() -> set[str]:
    """The first-column names of the module table under "## Modules by role" in docs/architecture.md."""
    text = (ROOT / "docs/architecture.md").read_text(encoding="utf-8")
    section = text.split("## Modules by role", 1)[1].split("\n## ", 1)[0]
    names = set()
    for line in section.splitlines():
        cells = line.split("|")
        if len(cells) > 2 and (m := re.fullmatch(r"\s*`([a-z_][a-z0-9_.]*)`\s*", cells[1])):
            names.add(m.group(1))
    return names


def test_every_module_is_in_the_architecture_doc_and_every_name_there_exists() -> None:
    modules = {m.removeprefix("liverlib.") for m in import_graph.line_counts()
               if m.startswith("liverlib.") and not m.endswith("__main__") and m.count(".") >= 1}  # fmt: skip
    modules = {m for m in modules if (ROOT / "liverlib" / (m.replace(".", "/") + ".py")).is_file()}
    documented = documented_modules()
    assert sorted(modules - documented) == [], "modules missing from docs/architecture.md"
    assert sorted(documented - modules) == [], "docs/architecture.md names modules that do not exist"


def test_no_notebook_defines_functions_or_starts_papermill() -> None:
    for nb in notebooks():
        code = "\n".join(c.source for c in nbformat.read(nb, as_version=4).cells if c.cell_type == "code")
        assert "def " not in code and "class " not in code and "papermill" not in code, nb.name
    assert "papermill" not in (ROOT / "liverlib/pipeline/ablation.py").read_text(encoding="utf-8")
