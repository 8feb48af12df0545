"""Locks that keep processes apart: one writer per run folder, one builder per shared folder (docs/scaling.md).

Two kinds, both a file holding the owner's host, PID, start time and command, and an exclusive ``flock`` on it
that the kernel drops when the owner dies (so a crashed or killed owner never blocks the next run for long):

- :func:`run_lock` — ``<folder>/run.lock`` while the study runner (or ``liverlib pool``) writes a run folder, a
  fold's folder ``<run>/folds/<k>/`` or an arm's ``<run>/ablation/<arm>/``. A second process on the same folder is
  refused at once, in one line naming the holder (:class:`~liverlib.run.RunError`). A lock file left by a process
  that is no longer running on this host (killed with SIGKILL, a machine that lost power) is taken over, with a
  message. A lock file written on another host is never taken over: this host cannot tell whether that process
  still runs, so the message says which file to delete once it is gone.
- :func:`build_lock` — ``.<name>.lock`` beside a folder that several runs share and one builds (the preprocessed
  cache ``outputs/cache/<key>/<sources>/``, the phantom's data folder): a second builder *waits* for the first,
  then finds the files made and reuses them.

Both are re-entrant within one process (a nested request for a lock the process holds is granted). The lock file's
descriptor is not inherited by child processes (notebook kernels), so only the process that took it holds it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from liverlib.errors import RunError

try:
    import fcntl
except ImportError:  # Windows: no flock; the lock file and its PID check still keep processes apart on one host
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = "run.lock"
"""The lock file of a run folder (present only while a process writes the folder)."""

_HELD: dict[Path, list[int]] = {}
"""Lock files this process holds: path → [file descriptor, nesting depth]."""


def holder_record() -> dict[str, Any]:
    """This process as a lock holder: host, PID, start time (UTC) and the command line (shortened)."""
    prog = Path(sys.argv[0]) if sys.argv and sys.argv[0] else Path("python")
    name = prog.parent.name if prog.name == "__main__.py" else prog.name  # python -m liverlib → liverlib
    return {"host": socket.gethostname(), "pid": os.getpid(),
            "since": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
            "command": " ".join([name, *sys.argv[1:]])[:200]}  # fmt: skip


def describe(holder: dict[str, Any]) -> str:
    """A holder in words: ``pid 123 on host gpu01 since 2026-12-06 05:00:00 UTC (liverlib study ...)``."""
    if not holder:
        return "another process (its lock file is empty: it is being written)"
    cmd = f" ({holder['command']})" if holder.get("command") else ""
    return f"pid {holder.get('pid')} on host {holder.get('host')} since {holder.get('since')}{cmd}"


def read_holder(lock: Path) -> dict[str, Any]:
    """The record in a lock file; ``{}`` when it is missing, empty or unreadable."""
    try:
        data = json.loads(Path(lock).read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def pid_alive(pid: int) -> bool:
    """Whether a process with this PID runs on this host (``kill(pid, 0)``; a PID we may not signal is alive)."""
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except (OSError, ValueError, OverflowError):
        return False
    return True


def _flock(fd: int, *, wait: bool) -> bool | None:
    """Take the exclusive flock on ``fd``: True taken, False held by another process, None not supported here."""
    if fcntl is None:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        return True
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        if exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            return None  # e.g. a network file system without lock support: the PID check below decides alone
        raise


def _is_current(fd: int, lock: Path) -> bool:
    """Whether ``fd`` is still the file at ``lock`` (a releasing holder unlinks it; then we must open it anew)."""
    try:
        return os.fstat(fd).st_ino == os.stat(lock).st_ino
    except FileNotFoundError:
        return False


def _acquire(lock: Path, *, wait: bool, subject: Path) -> None:
    """Take ``lock`` for this process (see the module docstring); ``subject`` is the folder named in messages."""
    key = lock.resolve()
    if key in _HELD:
        _HELD[key][1] += 1
        return
    lock.parent.mkdir(parents=True, exist_ok=True)
    announced = False
    for _ in range(100):  # a retry only follows a holder's release between our open and our flock
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise RunError(f"{lock}: cannot create the lock file ({exc.strerror or exc})") from None
        try:
            taken = _flock(fd, wait=False)
            if taken is False and wait:
                if not announced:
                    _say(f"liverlib: waiting for {subject}: {describe(read_holder(lock))} is building it")
                    announced = True
                taken = _flock(fd, wait=True)
            if taken is False:
                raise RunError(f"{subject}: in use by {describe(read_holder(lock))}; wait for it to finish (or stop "
                               f"it), or give this run another folder")  # fmt: skip
            if not _is_current(fd, lock):
                os.close(fd)
                continue
            before = read_holder(lock)
            if before and not wait:
                _take_over(lock, subject, before, flock_held=taken is True)
            record = json.dumps(holder_record()).encode()
            os.ftruncate(fd, 0)
            os.pwrite(fd, record, 0)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            raise
        _HELD[key] = [fd, 1]
        return
    raise RunError(f"{lock}: could not take the lock (it was released and re-created 100 times in a row)")


def _take_over(lock: Path, subject: Path, before: dict[str, Any], *, flock_held: bool) -> None:
    """A lock file is there but no process holds its flock: take it over when its owner is gone, else refuse."""
    same_host = before.get("host") == socket.gethostname()
    if not same_host:
        raise RunError(f"{subject}: locked by {describe(before)}, which this host cannot check; if that process is "
                       f"gone, delete {lock} and rerun")  # fmt: skip
    if int(before.get("pid", -1)) == os.getpid():
        return  # our own record (a lock file left by this process, e.g. after an exception in a nested run)
    if not flock_held and pid_alive(before.get("pid", -1)):
        raise RunError(f"{subject}: in use by {describe(before)}; wait for it to finish (or stop it), or give this "
                       "run another folder")  # fmt: skip
    line = f"liverlib: {lock}: taking over the stale lock of {describe(before)}: that process is no longer running"
    print(line, file=sys.stderr, flush=True)


def _say(line: str) -> None:
    """Print ``line``; in a notebook kernel started by the study runner also on the runner's console (a build lock
    is taken inside the kernel, whose output goes to the executed notebook)."""
    from liverlib.progress import ENV, RUNNER, write_console

    print(line, flush=True)
    if os.environ.get(ENV) == RUNNER:
        write_console(line)


def _release(lock: Path) -> None:
    key = lock.resolve()
    held = _HELD.get(key)
    if held is None:
        return
    held[1] -= 1
    if held[1] > 0:
        return
    fd = held[0]
    del _HELD[key]
    try:
        if _is_current(fd, lock):
            os.unlink(lock)  # while still holding the flock: a waiter that opened it sees it gone and opens anew
    except OSError:
        pass
    finally:
        os.close(fd)  # drops the flock


@contextlib.contextmanager
def run_lock(folder: str | Path) -> Iterator[Path]:
    """Hold ``<folder>/run.lock`` while this process writes the run folder ``folder`` (created if missing).

    Yields:
        The lock file's path.

    Raises:
        RunError: another running process holds it (the message names its host, PID, start time and command), or
            a lock file written on another host is there (the message names the file to delete once it is gone).
    """
    folder = Path(folder)
    lock = folder / LOCK_NAME
    _acquire(lock, wait=False, subject=folder)
    try:
        yield lock
    finally:
        _release(lock)


@contextlib.contextmanager
def build_lock(folder: str | Path) -> Iterator[Path]:
    """Build the shared folder ``folder`` alone: wait while another process builds it, then hold
    ``.<name>.lock`` beside it (not in it: a phantom folder refuses files it did not write).

    Yields:
        The lock file's path.
    """
    folder = Path(folder)
    lock = folder.parent / f".{folder.name}.lock"
    _acquire(lock, wait=True, subject=folder)
    try:
        yield lock
    finally:
        _release(lock)


def holds(folder: str | Path) -> bool:
    """Whether this process holds the run lock of ``folder`` (:func:`run_lock`)."""
    return (Path(folder) / LOCK_NAME).resolve() in _HELD


def held() -> list[Path]:
    """The lock files this process holds now (for tests and messages)."""
    return sorted(_HELD)
