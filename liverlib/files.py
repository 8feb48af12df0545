"""Atomic file writes and the JSON, CSV and Markdown files every stage writes (the ground floor: it imports no
other liverlib module but :mod:`liverlib.errors`).

A write goes to a temporary sibling and is renamed over the target only when complete, with the mode an
ordinary ``open`` would give; a crash never leaves half a file, and an existing file stays intact.
"""

from __future__ import annotations

import json
import os
import re
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from liverlib.errors import RunError


def _temp_affixes(name: str) -> tuple[str, str]:
    """(prefix, suffix) of :func:`atomic_write`'s temporary files for a target file name."""
    return f".{name.split('.')[0]}.", "".join(Path(name).suffixes)


def current_umask() -> int:
    """The process umask, read without changing it where Linux tells it (``/proc/self/status``)."""
    try:
        for line in Path("/proc/self/status").read_text(encoding="utf-8").splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # elsewhere: set and restore at once (not thread-safe, but rare)
    os.umask(mask)
    return mask


@contextmanager
def atomic_write(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling of ``path`` to write; it replaces ``path`` only if the block succeeds.

    The temporary file keeps ``path``'s suffixes (so nibabel, numpy and matplotlib pick the format) and
    is removed on failure: a crash never leaves half a file, and an existing ``path`` stays intact.
    Parent folders are created. The written file gets the mode an ordinary ``open`` would give it:
    ``0o666 & ~umask`` for a new file, the old file's permission bits for a replaced one (mkstemp's 0600
    would otherwise survive the rename). A SIGKILL can still leave the temp file (named
    ``.<stem>.<8 random chars><suffixes>``); :func:`remove_stale_temps` removes those.
    """
    path = Path(path)
    prefix, suffix = _temp_affixes(path.name)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=path.parent)
    except OSError as exc:  # name the target, not the temp file
        raise type(exc)(exc.errno, f"cannot write here ({exc.strerror})", str(path)) from None
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
        except OSError:  # no file to replace yet
            mode = 0o666 & ~current_umask()
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


_MKSTEMP_CHARS = re.compile(r"[a-z0-9_]{8}")
"""The random part of a :func:`tempfile.mkstemp` name (8 characters of ``[a-z0-9_]``)."""


def remove_stale_temps(folder: Path, name: str) -> list[Path]:
    """Delete the temporary files a killed :func:`atomic_write` of ``folder / name`` left behind.

    Only names made exactly as ``atomic_write`` makes them for that target are removed
    (``.last.k3j_x9ab.pt`` for ``last.pt``); other files, and other targets' temp files, are kept. Call it
    when no writer of that file is running (e.g. at the start of training, before the first checkpoint).

    Args:
        folder: the target's folder (a missing folder holds nothing to remove).
        name: the target's file name, e.g. ``"last.pt"``.

    Returns:
        The removed paths, sorted.
    """
    prefix, suffix = _temp_affixes(name)
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for f in sorted(folder.iterdir()):
        n = f.name
        middle = n[len(prefix) : len(n) - len(suffix)] if n.startswith(prefix) and n.endswith(suffix) else ""
        if len(n) == len(prefix) + 8 + len(suffix) and _MKSTEMP_CHARS.fullmatch(middle) and f.is_file():
            f.unlink(missing_ok=True)
            removed.append(f)
    return removed


def write_text(path: str | Path, text: str) -> Path:
    """Write text atomically (temp file + rename)."""
    with atomic_write(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | Path, data: Any) -> Path:
    """Write JSON atomically (NaN written as null)."""
    return write_text(path, json.dumps(json_ready(data), indent=2, sort_keys=False) + "\n")


def read_json(path: str | Path) -> Any:
    """Read JSON written by :func:`write_json`, naming the file if it is missing."""
    path = Path(path)
    if not path.is_file():
        raise RunError(f"{path}: missing; run the stage that writes it first")
    return json.loads(path.read_text(encoding="utf-8"))


def write_table(df: pd.DataFrame, path: str | Path, *, markdown: bool = True, floatfmt: str = ".4f") -> Path:
    """Write a table as CSV (and Markdown beside it, "–" for an undefined value), atomically."""
    path = Path(path)
    write_text(path.with_suffix(".csv"), df.to_csv(index=False))
    if markdown:
        shown = df.astype(object).where(df.notna(), None)
        write_text(path.with_suffix(".md"), shown.to_markdown(index=False, floatfmt=floatfmt, missingval="–") + "\n")
    return path.with_suffix(".csv")


def json_ready(obj: Any) -> Any:
    """``obj`` with NumPy scalars and arrays, paths and tuples made JSON types; a NaN or infinity becomes None."""
    if isinstance(obj, dict):
        return {str(k): json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_ready(v) for v in obj]
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        return None if not np.isfinite(obj) else float(obj)
    if isinstance(obj, np.ndarray):
        return json_ready(obj.tolist())
    if isinstance(obj, Path):
        return str(obj)
    return obj
