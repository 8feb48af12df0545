"""Progress bars that fit where they run: one function, :func:`bar`, for every loop liverlib shows.

- **Interactive notebook** (JupyterLab, Kaggle, VS Code; an IPython kernel with ipywidgets installed): a widget bar
  (``tqdm.notebook``), which JupyterLab redraws in place.
- **Under the study runner** (:mod:`liverlib.pipeline.study` sets ``LIVERLIB_PROGRESS=runner`` for the kernels it starts):
  nothing in the executed notebook, and one line per finished loop on the runner's console (for training, one line
  per epoch). The executed notebook keeps only what the code prints itself — one line per epoch in training — with
  no per-batch text and no widget state.
- **Terminal** (``python -m liverlib segment``, scripts): tqdm's text bar on stderr.

``LIVERLIB_PROGRESS`` may also be ``text`` (always the text bar), ``off`` (no bar) or ``widget``.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator
from importlib.util import find_spec
from typing import Any

ENV = "LIVERLIB_PROGRESS"
"""Environment variable that chooses the kind of bar (module docstring); unset = pick by where the code runs."""
RUNNER = "runner"
"""Value of :data:`ENV` under the study runner: one console line per loop, nothing in the notebook."""


def bar(iterable: Iterable[Any], *, desc: str = "", unit: str = "it", total: int | None = None, leave: bool = True,
        disable: bool = False) -> Any:  # fmt: skip
    """Iterate over ``iterable`` with the progress display that fits where the code runs (module docstring).

    Args:
        iterable: what to loop over.
        desc: the bar's label (e.g. ``"hybrid epoch 3/6"``).
        unit: what one item is (``"batch"``, ``"vol"``).
        total: the number of items, when ``len(iterable)`` is not defined.
        leave: keep the finished bar (a widget or text bar; a runner line is always kept).
        disable: no display at all.

    Returns:
        An iterable over the same items with tqdm's ``set_postfix``, ``update`` and ``close``.
    """
    mode = "off" if disable else _mode()
    if mode == RUNNER:
        return ConsoleLine(iterable, desc=desc, unit=unit, total=total)
    if mode == "widget":
        from tqdm.notebook import tqdm
    else:
        from tqdm.std import tqdm
    return tqdm(iterable, desc=desc, unit=unit, total=total, leave=leave, disable=mode == "off")


def _mode() -> str:
    chosen = os.environ.get(ENV, "").strip().lower()
    if chosen in (RUNNER, "text", "off", "widget"):
        return chosen
    return "widget" if _in_kernel() and find_spec("ipywidgets") is not None else "text"


def _in_kernel() -> bool:
    """True inside a Jupyter kernel (a frontend can show widgets), False in a terminal or plain IPython."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


class ConsoleLine:
    """A loop that writes one line when it ends (``desc: n unit in s s, postfix``) to the console, not the notebook.

    In a Jupyter kernel ``sys.stderr`` is the notebook's stream; its ``fileno()`` is the kernel process's original
    stderr, the terminal of the program that started the kernel (the study runner). Elsewhere it is stderr.
    """

    def __init__(self, iterable: Iterable[Any], *, desc: str, unit: str, total: int | None = None) -> None:
        self.iterable, self.desc, self.unit, self.n, self.postfix = iterable, desc, unit, 0, ""
        self.total = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)
        self._t0, self._closed = time.perf_counter(), False

    def __iter__(self) -> Iterator[Any]:
        self._t0 = time.perf_counter()
        try:
            for item in self.iterable:
                yield item
                self.n += 1
        finally:
            self.close()

    def __len__(self) -> int:
        if self.total is None:
            raise TypeError(f"{self.desc}: the loop's length is unknown")
        return self.total

    def set_postfix(self, ordered_dict: dict[str, Any] | None = None, refresh: bool = True, **kwargs: Any) -> None:
        """Shown after the counts in the line, as ``key=value`` (tqdm's signature)."""
        items = {**(ordered_dict or {}), **kwargs}
        self.postfix = ", ".join(f"{k}={v}" for k, v in items.items())

    def update(self, n: int = 1) -> None:
        self.n += n

    def close(self) -> None:
        """Write the line once (a loop left early by an error says how far it got)."""
        if self._closed:
            return
        self._closed = True
        of = f"/{self.total}" if self.total is not None and self.total != self.n else ""
        line = f"      {self.desc}: {self.n}{of} {self.unit} in {time.perf_counter() - self._t0:.1f} s"
        write_console(line + (f", {self.postfix}" if self.postfix else ""))


def write_console(line: str) -> None:
    """Write one line to the console of the process that started this kernel (or this process's stderr).

    On a terminal the line first clears the one under the cursor (the runner's per-cell bar), as ``tqdm.write`` does;
    the bar redraws itself below.
    """
    text = line.rstrip("\n") + "\n"
    for stream in (sys.stderr, sys.__stderr__):
        try:
            fd = stream.fileno()
        except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is an OSError and a ValueError
            continue
        try:
            os.write(fd, (("\r\x1b[K" if os.isatty(fd) else "") + text).encode("utf-8", errors="replace"))
            return
        except OSError:
            continue
