"""Atomic file writes and the JSON, CSV and Markdown files every stage writes (the ground floor: it imports no
other liverlib module but :mod:`liverlib.errors`).

A write goes to a temporary sibling and is renamed over the target only when complete, with the mode an
ordinary ``open`` would give; a crash never leaves half a file, and an existing file stays intact.
"""

from __future__ import annotations

import contextvars
import errno
import json
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from liverlib.errors import RunError, WriteError


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


_GROUP: contextvars.ContextVar[list[tuple[Path, Path]] | None] = contextvars.ContextVar("atomic_group", default=None)
"""The (temporary file, target) pairs of the innermost :func:`atomic_group`, renamed when it ends; None outside one."""


@contextmanager
def atomic_group() -> Iterator[None]:
    """Every :func:`atomic_write` inside the block replaces its target only when the whole block succeeds.

    The files are written to their temporaries as usual; when the block ends without an error they are renamed over
    their targets together (one ``os.replace`` each, in the order written), and on an error or an interrupt every
    temporary is removed: a failed set of outputs (``segment``'s mask, probabilities and report) leaves none of them,
    and an existing set stays as it was. A group inside another joins it.
    """
    if _GROUP.get() is not None:
        yield
        return
    pending: list[tuple[Path, Path]] = []
    token = _GROUP.set(pending)
    done = 0
    try:
        yield
        _GROUP.reset(token)
        token = None
        for tmp, path in pending:
            _replace(tmp, path)
            done += 1
    finally:
        if token is not None:
            _GROUP.reset(token)
        for tmp, _ in pending[done:]:
            tmp.unlink(missing_ok=True)


_ADVICE: dict[int, str] = {errno.ENOSPC: "free disk space", errno.EDQUOT: "free space within your quota",
                           errno.EACCES: "check the folder's permissions", errno.EPERM: "check the folder's permissions",
                           errno.EROFS: "write to a writable file system"}  # fmt: skip
"""What to do about the usual write failures, by errno."""


def write_error(exc: OSError, path: Path, *, existed: bool) -> WriteError:
    """``exc`` (raised while writing ``path``'s temporary or renaming it) as one line naming ``path``: the system's
    reason (``No space left on device``), what was kept and what to do, e.g. ``PATH: cannot be written (No space
    left on device); the earlier file is kept unchanged; free disk space and rerun the same command``."""
    reason, code = exc.strerror or str(exc) or type(exc).__name__, exc.errno
    if code in (None, errno.EIO) and _disk_full(path.parent):  # numpy's short write, torch's writer: no errno
        reason, code = f"{reason}: {os.strerror(errno.ENOSPC)}", errno.ENOSPC
    kept = "the earlier file is kept unchanged" if existed else "nothing was written in its place"
    advice = _ADVICE.get(code or 0, "fix the cause")
    return WriteError(code or errno.EIO, f"cannot be written ({reason}); {kept}; {advice} and rerun the same command",
                      str(path))  # fmt: skip


def _disk_full(folder: Path) -> bool:
    """True when the file system of ``folder`` has less than 1 MiB free (False when that cannot be told)."""
    try:
        return shutil.disk_usage(folder).free < 1 << 20
    except OSError:
        return False


def _replace(tmp: Path, path: Path) -> None:
    """Give ``tmp`` the mode an ordinary ``open`` would give ``path`` and rename it over ``path``."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:  # no file to replace yet
        mode = 0o666 & ~current_umask()
    try:
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except OSError as exc:
        raise write_error(exc, path, existed=path.exists()) from None


@contextmanager
def atomic_write(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling of ``path`` to write; it replaces ``path`` only if the block succeeds.

    The temporary file keeps ``path``'s suffixes (so nibabel, numpy and matplotlib pick the format) and
    is removed on failure: a crash never leaves half a file, and an existing ``path`` stays intact.
    Parent folders are created. The written file gets the mode an ordinary ``open`` would give it:
    ``0o666 & ~umask`` for a new file, the old file's permission bits for a replaced one (mkstemp's 0600
    would otherwise survive the rename). A SIGKILL can still leave the temp file (named
    ``.<stem>.<8 random chars><suffixes>``); :func:`remove_stale_temps` removes those. Inside an
    :func:`atomic_group` the rename waits for the group's end.
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
    group, kept = _GROUP.get(), False
    try:
        try:
            yield tmp
        except WriteError:
            raise
        except OSError as exc:  # disk full, I/O error … while writing the temporary: name the target instead
            if exc.filename not in (None, str(tmp)):
                raise  # about another file (e.g. one read while writing): its own name says where
            raise write_error(exc, path, existed=path.exists()) from None
        if group is not None:  # renamed when the group ends
            group.append((tmp, path))
            kept = True
        else:
            _replace(tmp, path)
    finally:
        if not kept:
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


MISSING = "–"
"""How an undefined value (no slice to average, or no paper value) is printed."""


WHOLE_NAMES = ("n", "epoch", "epochs", "best_epoch", "year", "undefined", "parameters", "paper_parameters", "slices",
               "volumes", "volume_id", "slice_idx", "resamples", "volumes_built", "volumes_reused", "bytes")  # fmt: skip
"""Columns shown as integers when every value is whole (besides integer dtypes)."""
WHOLE_SUFFIXES = ("_n", "_px", "_undefined", "_slices", "_volumes", "_count", "_epoch")


def is_whole_column(name: Any, values: pd.Series) -> bool:
    """True when column ``name`` holds counts: an integer dtype, or a count-like name (:data:`WHOLE_NAMES`,
    :data:`WHOLE_SUFFIXES`) whose numbers are all whole."""
    if values.dtype.kind in "iu":
        return True
    if not (str(name) in WHOLE_NAMES or str(name).endswith(WHOLE_SUFFIXES)):
        return False
    nums = pd.to_numeric(values, errors="coerce").dropna()
    return len(nums) > 0 and bool((nums == np.round(nums)).all())


def to_markdown(df: pd.DataFrame, floatfmt: str = ".4f") -> str:
    """Markdown of a table with NaN/None printed as :data:`MISSING` and counts and years as integers."""
    d = df.copy()
    for c in d.columns:
        if d[c].dtype.kind == "f" and is_whole_column(c, d[c]):
            d[c] = [None if np.isnan(v) else str(int(v)) for v in d[c]]  # tabulate prints "2022", not "2022.00"
    d = d.astype(object).where(d.notna(), None)
    return d.to_markdown(index=False, floatfmt=floatfmt, missingval=MISSING) + "\n"


def write_table(df: pd.DataFrame, path: str | Path, *, markdown: bool = True, floatfmt: str = ".4f") -> Path:
    """Write a table as CSV (NaN empty) and, with ``markdown``, its :func:`to_markdown` beside it, atomically."""
    path = Path(path)
    write_text(path.with_suffix(".csv"), df.to_csv(index=False))
    if markdown:
        write_text(path.with_suffix(".md"), to_markdown(df, floatfmt))
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
