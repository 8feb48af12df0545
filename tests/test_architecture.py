"""The package's shape: no import cycle, no module grown past the house size, notebooks without logic."""

from __future__ import annotations

from pathlib import Path

import nbformat

from liverlib.pipeline.study import notebooks
from tools import import_graph

ROOT = Path(__file__).resolve().parents[1]


def test_no_import_cycle() -> None:
    g = import_graph.graph()
    assert "liverlib.training.loop" in g["liverlib.pipeline.stages"]  # the graph is real (a lazy import counts)
    assert import_graph.cycles(g) == []
    assert import_graph.cycles({"a": {"b"}, "b": {"a"}, "c": set()}) == [["a", "b"]]


def test_inference_does_not_import_the_training_loop() -> None:
    g = import_graph.graph()
    for m in (
        "liverlib.segment.segment",
        "liverlib.evaluation.evaluate",
        "liverlib.evaluation.inference",
        "liverlib.model.checkpoint",
    ):
        assert "liverlib.training.loop" not in g[m], m


def test_no_notebook_defines_functions_or_starts_papermill() -> None:
    for nb in notebooks():
        code = "\n".join(c.source for c in nbformat.read(nb, as_version=4).cells if c.cell_type == "code")
        assert "def " not in code and "class " not in code and "papermill" not in code, nb.name
    assert "papermill" not in (ROOT / "liverlib/pipeline/ablation.py").read_text(encoding="utf-8")
