"""docs/reliability.md is generated from the tests, never typed by hand: it must match them."""

from __future__ import annotations

from pathlib import Path

from tools import reliability_table

ROOT = Path(__file__).resolve().parents[1]


def test_reliability_doc_matches_the_tests() -> None:
    assert len(reliability_table.rows()) >= 20
    doc = ROOT / "docs/reliability.md"
    assert doc.is_file() and doc.read_text(encoding="utf-8") == reliability_table.render(), (
        "run `make reliability-doc` and commit docs/reliability.md"
    )


def test_the_generator_sees_a_new_marked_test(tmp_path: Path) -> None:
    (tmp_path / "test_x.py").write_text(
        "import pytest\n\n@pytest.mark.reliability('says X', 2, 'all')\ndef test_bad():\n    '''Bad input.'''\n"
    )
    assert reliability_table.rows(tmp_path) == [("`test_x.py::test_bad`", "Bad input.", "says X", "2", "all")]
