"""Run-folder and build locks (issue 21, liverlib.locks): a second writer is refused in one line naming the holder,
a stale lock of a dead process is taken over with a message, a second builder of a shared folder waits."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from liverlib.locks import LOCK_NAME, build_lock, holds, read_holder, run_lock
from liverlib.pipeline.cli import main
from liverlib.run import RunError

ROOT = Path(__file__).resolve().parents[1]


def _holder(folder: Path, kind: str = "run_lock", seconds: float = 60) -> subprocess.Popen:
    """A child process that takes ``kind`` on ``folder``, says "held", then sleeps."""
    code = textwrap.dedent(f"""
        import sys, time
        from liverlib.locks import {kind}
        with {kind}({str(folder)!r}):
            print("held", flush=True)
            time.sleep({seconds})
    """)
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert child.stdout is not None and child.stdout.readline().strip() == "held"
    return child


@pytest.fixture
def held_by_child(tmp_path: Path) -> Iterator[tuple[Path, subprocess.Popen]]:
    run = tmp_path / "run"
    child = _holder(run)
    try:
        yield run, child
    finally:
        child.kill()
        child.wait()


@pytest.mark.reliability(
    "'<run>: in use by pid P on host H since T (command); wait for it to finish'",
    1,
    "the holder's lock and run; nothing written",
)
def test_second_writer_is_refused_naming_the_holder(held_by_child: tuple[Path, subprocess.Popen], capsys) -> None:
    run, child = held_by_child
    holder = read_holder(run / LOCK_NAME)
    assert holder["pid"] == child.pid and holder["host"] == socket.gethostname()
    with pytest.raises(RunError, match=rf"{run}: in use by pid {child.pid} on host {socket.gethostname()}"):
        with run_lock(run):
            pass
    # through the command line: the study runner and pool are refused before anything is written
    args = ["study", "-f", str(ROOT / "params/base.yaml"), "-f", str(ROOT / "params/smoke.yaml"),
            "--set", f"output_root={run.parent}", "run_name=run"]  # fmt: skip
    for argv in (args, ["pool", str(run)]):
        capsys.readouterr()
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and f"pid {child.pid}" in err, err
    assert not (run / "notebooks").exists() and not (run / "study.json").exists()
    assert read_holder(run / LOCK_NAME)["pid"] == child.pid  # the holder keeps its lock


@pytest.mark.reliability(
    "'taking over the stale lock of pid P on host H ...: that process is no longer running'",
    None,
    "the run folder; the lock is now this process's",
)
def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path: Path, capsys) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    run = tmp_path / "run"
    run.mkdir()
    stale = {"host": socket.gethostname(), "pid": dead.pid, "since": "2026-01-01 00:00:00 UTC", "command": "killed"}
    (run / LOCK_NAME).write_text(json.dumps(stale), encoding="utf-8")
    with run_lock(run) as lock:
        assert "taking over the stale lock of pid" in capsys.readouterr().err
        assert read_holder(lock)["pid"] != dead.pid and holds(run)
        with run_lock(run):  # re-entrant within one process (the runner, then its arms and folds)
            pass
        assert holds(run)
    assert not (run / LOCK_NAME).exists() and not holds(run)


@pytest.mark.reliability(
    "'locked by pid P on host H, which this host cannot check; if that process is gone, delete <run>/run.lock'",
    None,
    "the lock file and the run",
)
def test_lock_from_another_host_is_not_taken_over(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    other = {"host": "elsewhere-node-7", "pid": 1, "since": "2026-01-01 00:00:00 UTC", "command": "liverlib study"}
    (run / LOCK_NAME).write_text(json.dumps(other), encoding="utf-8")
    with pytest.raises(RunError, match=rf"elsewhere-node-7.*delete {run / LOCK_NAME}"):
        with run_lock(run):
            pass


def test_a_second_builder_waits_for_the_first(tmp_path: Path, capsys) -> None:
    cache = tmp_path / "cache" / "key"
    child = _holder(cache, "build_lock", seconds=1.5)
    try:
        t0 = time.perf_counter()
        with build_lock(cache):
            waited = time.perf_counter() - t0
        assert "waiting for" in capsys.readouterr().out and waited > 0.3
    finally:
        child.kill()
        child.wait()
    assert not any(cache.parent.glob(".*.lock"))  # released and removed; nothing left inside the built folder
