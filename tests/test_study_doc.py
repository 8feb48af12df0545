"""docs/study.md is the project's specification: every citation of it must land on one of its sections.

Code, tests, notebooks and docs cite sections as ``docs/study.md §N`` (also ``§N–M``, ``§N, §M``, ``§N.M``) or link
to a heading anchor; a section is a heading ``## N. Title`` (``### N.M Title`` for a subsection).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "study.md"
DOC_NAME = "docs/study" + ".md"  # split so this file's own text is not read as a citation
SCANNED = ("liverlib", "tests", "notebooks", "docs", "params")
SUFFIXES = {".py", ".ipynb", ".md", ".yaml", ".yml"}

HEADING = re.compile(r"^(#{2,3}) (\d+(?:\.\d+)?)\.? (\S.*)$", re.MULTILINE)
NUMBER = r"\d+(?:\.\d+)?"
REF = rf"§\s*{NUMBER}(?:\s*[–-]\s*§?\s*{NUMBER})?"
CITATION = re.compile(rf"{re.escape(DOC_NAME)}`?(?:\]\([^)]*\))?\s*({REF}(?:\s*(?:,|and|&)\s*{REF})*)")
ANCHOR = re.compile(r"study\.md#([\w-]+)")


def sections(text: str) -> dict[str, str]:
    """Section number → heading text of the study doc's ``## N.`` and ``### N.M`` headings."""
    return {m.group(2): m.group(3) for m in HEADING.finditer(text)}


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def cited(text: str) -> list[str]:
    """Every section number a text cites as ``docs/study.md §…`` (ranges expanded)."""
    out = []
    for m in CITATION.finditer(text):
        for ref in re.finditer(rf"§\s*({NUMBER})(?:\s*[–-]\s*§?\s*({NUMBER}))?", m.group(1)):
            first, last = ref.group(1), ref.group(2)
            if last is None:
                out.append(first)
            elif "." in first or "." in last:
                out += [first, last]
            else:
                out += [str(n) for n in range(int(first), int(last) + 1)] or [first, last]
    return out


def citing_files() -> list[Path]:
    files = [ROOT / "README.md"]
    for folder in SCANNED:
        files += [p for p in sorted((ROOT / folder).rglob("*")) if p.suffix in SUFFIXES and p.is_file()]
    return [p for p in files if p.is_file() and ".ipynb_checkpoints" not in p.parts]


def test_sections_are_numbered_once_in_order() -> None:
    text = DOC.read_text(encoding="utf-8")
    numbers = [m.group(2) for m in HEADING.finditer(text) if m.group(1) == "##"]
    assert numbers == [str(i) for i in range(1, len(numbers) + 1)], numbers
    assert len(numbers) >= 9, "§1–§9 keep the numbers the code cited as 'docs/study.md §N'"
    every = [m.group(2) for m in HEADING.finditer(text)]
    assert len(every) == len(set(every)), "a section number used twice"


def test_every_citation_resolves() -> None:
    have = sections(DOC.read_text(encoding="utf-8"))
    anchors = {slug(f"{n}. {t}") for n, t in have.items()} | {slug(f"{n} {t}") for n, t in have.items()}
    missing = []
    for path in citing_files():
        text = path.read_text(encoding="utf-8", errors="replace")
        rel = path.relative_to(ROOT)
        missing += [f"{rel}: §{n}" for n in cited(text) if n not in have]
        missing += [f"{rel}: #{a}" for a in ANCHOR.findall(text) if a not in anchors]
    assert not missing, f"citations of {DOC_NAME} with no such section: {missing}"


def test_the_doc_points_nowhere_outside_the_repository() -> None:
    text = DOC.read_text(encoding="utf-8")
    for outside in ("STUDY.md", "shared/", "/work/", "NOTES.md"):
        assert outside not in text, outside
    for target in re.findall(r"\]\(([^)#\s]+)", text):  # relative Markdown links
        if "://" not in target:
            assert (DOC.parent / target).exists(), f"{DOC_NAME} links to a missing file: {target}"


@pytest.mark.parametrize(
    ("text", "numbers"),
    [
        (f"cites {DOC_NAME} §4.", ["4"]),
        (f"({DOC_NAME} §2, §6)", ["2", "6"]),
        (f"{DOC_NAME} §1–3 and §7", ["1", "2", "3", "7"]),
        (f"{DOC_NAME} §1 rule 3", ["1"]),
        (f"[{DOC_NAME}](study.md) §12", ["12"]),
        (f"`{DOC_NAME}` §5", ["5"]),
        (f"{DOC_NAME} §11.2", ["11.2"]),
        ("STUDY §4 and paper §II.D", []),
    ],
)
def test_citations_are_read(text: str, numbers: list[str]) -> None:
    assert cited(text) == numbers


def test_a_citation_of_a_missing_section_is_caught() -> None:
    have = sections(DOC.read_text(encoding="utf-8"))
    assert [n for n in cited(f"see {DOC_NAME} §99") if n not in have] == ["99"]
    assert slug("7. Evaluation") == "7-evaluation"
