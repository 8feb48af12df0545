"""The import graph of the liverlib package (every ``import liverlib.x`` / ``from liverlib.x import``, lazy ones
included), its cycles between modules and between subpackages, private names imported across modules, module and
function sizes; used by tests/test_architecture.py and for the numbers in docs/architecture.md."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "liverlib"


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def graph() -> dict[str, set[str]]:
    """module → liverlib modules it imports (anywhere in the file)."""
    mods = {module_name(p): p for p in PKG.rglob("*.py")}
    out: dict[str, set[str]] = {m: set() for m in mods}
    for m, path in mods.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            for n in names:
                while n and n not in mods:
                    n = n.rpartition(".")[0]
                if n and n != m and n != "liverlib":
                    out[m].add(n)
    return out


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, res, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in g.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                res.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(g):
        if v not in index:
            visit(v)
    return res


def line_counts() -> dict[str, int]:
    return {module_name(p): len(p.read_text(encoding="utf-8").splitlines()) for p in sorted(PKG.rglob("*.py"))}


def function_lengths() -> dict[str, int]:
    """``module.function`` (methods ``module.Class.method``, nested functions by their own name) → lines, from the
    ``def`` line to the last line of its body."""
    rows: dict[str, int] = {}
    for p in sorted(PKG.rglob("*.py")):
        tree = ast.parse(p.read_text(encoding="utf-8"))
        owners = {id(c): n.name for n in ast.walk(tree) if isinstance(n, ast.ClassDef) for c in n.body}
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                owner = f"{owners[id(node)]}." if id(node) in owners else ""
                rows[f"{module_name(p)}.{owner}{node.name}"] = node.end_lineno - node.lineno + 1
    return rows


def longest_functions(n: int = 8) -> list[tuple[str, int]]:
    return sorted(function_lengths().items(), key=lambda r: -r[1])[:n]


def package_of(module: str) -> str:
    """The subpackage a module belongs to (``liverlib.data.nifti`` → ``liverlib.data``); a top-level module is its own
    unit (``liverlib.params``)."""
    parts = module.split(".")
    return ".".join(parts[:2])


def package_graph(g: dict[str, set[str]]) -> dict[str, set[str]]:
    """The import graph collapsed to subpackages and top-level modules (imports inside one subpackage dropped)."""
    out: dict[str, set[str]] = {}
    for m, deps in g.items():
        a = package_of(m)
        out.setdefault(a, set()).update(package_of(d) for d in deps if package_of(d) != a)
    return out


def private_imports() -> list[tuple[str, str]]:
    """``(module, name)`` for every ``from liverlib.x import _name`` in a module other than ``liverlib.x``."""
    found = []
    for p in sorted(PKG.rglob("*.py")):
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("liverlib"):
                found += [(module_name(p), f"{node.module}.{a.name}") for a in node.names if a.name.startswith("_")]
    return found


if __name__ == "__main__":
    g = graph()
    print("cycles:", cycles(g))
    for m, n in sorted(line_counts().items(), key=lambda r: -r[1]):
        print(f"{n:5d} {m}")
    print("longest functions:", longest_functions())
