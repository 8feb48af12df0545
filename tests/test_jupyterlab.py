"""A real JupyterLab server (what `make lab` starts) serves the notebooks and runs them in this environment.

No mocks: the server runs as a subprocess on a free 127.0.0.1 port with a random token; the test talks to
it only through the jupyter_server REST API (``/api/contents``, ``/api/kernels``) and the kernel's
websocket channel (``/api/kernels/<id>/channels``, Jupyter messaging protocol 5.x as JSON text frames).

The browser tests drive JupyterLab's own UI with Playwright in Debian's Chromium (``executable_path``; Playwright
downloads no browser): Run › Run All Cells on notebook 01, and open + save of every stored notebook. Without a
``chromium`` on PATH they skip, saying so; ``make test`` installs it with apt-get where it runs as root (CI).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import nbformat
import pytest

from liverlib.progress import ENV as PROGRESS_ENV
from tests.tiny import STUDY, copy_project, liverlib_cli

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

websocket = pytest.importorskip("websocket")  # websocket-client, a dependency of jupyter_server

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
STAGES = ("01_curation", "02_preprocessing", "03_training", "04_evaluation", "05_ablation", "06_figures")
START_TIMEOUT_S = 120
CELL_TIMEOUT_S = 120


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """HTTP and websocket calls to a token-protected jupyter_server on 127.0.0.1."""

    def __init__(self, port: int, token: str) -> None:
        self.base, self.ws_base, self.token = f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}", token

    def api(self, method: str, path: str, body: dict | None = None, timeout: float = 30) -> tuple[int, object]:
        """One REST call: (HTTP status, decoded JSON body or None)."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Authorization": f"token {self.token}",
                                              "Content-Type": "application/json"})  # fmt: skip
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                raw = r.read()
                return r.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as e:
            return e.code, None

    def execute(self, ws: websocket.WebSocket, code: str, session: str) -> dict:
        """Run ``code`` in the kernel; collect its stdout, results and error until it reports idle."""
        msg_id = uuid.uuid4().hex
        ws.send(json.dumps({
            "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": "test", "session": session,
                       "date": "", "version": "5.3"},
            "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
            "content": {"code": code, "silent": False, "store_history": True, "user_expressions": {},
                        "allow_stdin": False, "stop_on_error": True},
        }))  # fmt: skip
        out: dict = {"stdout": "", "results": [], "error": None, "status": None}
        idle = replied = False
        deadline = time.monotonic() + CELL_TIMEOUT_S
        while not (idle and replied):
            ws.settimeout(max(1.0, deadline - time.monotonic()))
            if time.monotonic() > deadline:
                raise TimeoutError(f"no reply within {CELL_TIMEOUT_S} s to {code[:80]!r}")
            msg = json.loads(ws.recv())
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream" and content["name"] == "stdout":
                out["stdout"] += content["text"]
            elif kind in ("execute_result", "display_data"):
                out["results"].append(content["data"].get("text/plain", ""))
            elif kind == "error":
                out["error"] = f"{content['ename']}: {content['evalue']}"
            elif kind == "status" and content["execution_state"] == "idle":
                idle = True
            elif kind == "execute_reply":
                replied, out["status"] = True, content["status"]
        return out


LAB_SETTINGS = {
    # no requests to the Jupyter news feed or update check (no network here), no toast over the notebook
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false", "checkForUpdates": False},
    # every cell attached to the page, so the test sees every prompt and output
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
}


@contextlib.contextmanager
def jupyterlab(notebook_dir: Path, tmp_path: Path) -> Iterator[Server]:
    """JupyterLab on ``notebook_dir`` as `make lab` starts it, isolated from the user's Jupyter config and settings."""
    port, token = free_port(), secrets.token_hex(16)
    settings = tmp_path / "lab-settings"
    for name, values in LAB_SETTINGS.items():
        (settings / name).parent.mkdir(parents=True, exist_ok=True)
        (settings / name).write_text(json.dumps(values), encoding="utf-8")
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(tmp_path / "config"), "JUPYTER_RUNTIME_DIR": str(tmp_path / "rt"),
           "IPYTHONDIR": str(tmp_path / "ipython"), "JUPYTER_PLATFORM_DIRS": "1",
           "JUPYTERLAB_SETTINGS_DIR": str(settings), "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "workspaces")}  # fmt: skip
    env.pop(PROGRESS_ENV, None)
    # no PyPI queries from the extension manager
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", f"--notebook-dir={notebook_dir}",
           "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
           f"--IdentityProvider.token={token}", "--ServerApp.open_browser=False",
           "--LabApp.extension_manager=readonly"]  # fmt: skip
    if hasattr(os, "geteuid") and os.geteuid() == 0:  # containers, Kaggle
        cmd.append("--allow-root")
    log = open(tmp_path / "server.log", "w+")  # closed in finally
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        server, deadline = Server(port, token), time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                log.seek(0)
                pytest.fail(f"jupyter lab exited with {proc.returncode}:\n{log.read()[-3000:]}")
            try:
                if server.api("GET", "/api/status", timeout=5)[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"jupyter lab did not answer within {START_TIMEOUT_S} s")
            time.sleep(0.5)
        yield server
        server.api("POST", "/api/shutdown", timeout=10)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=15)
        log.close()


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Server]:
    """JupyterLab on this checkout's notebooks/."""
    with jupyterlab(NOTEBOOKS, tmp_path) as server:
        yield server


@pytest.mark.slow
def test_jupyterlab_lists_notebooks_and_runs_first_cells_in_this_env(lab: Server, tmp_path: Path) -> None:
    # Unauthenticated requests are refused: the token is what protects the kernel.
    assert Server(int(lab.base.rsplit(":", 1)[1]), "wrong").api("GET", "/api/contents")[0] in (401, 403)
    # The lab UI itself is served (the JupyterLab extension is loaded, not only jupyter_server).
    assert lab.api("GET", "/lab/api/settings", timeout=30)[0] == 200

    status, listing = lab.api("GET", "/api/contents?content=1")
    assert status == 200 and listing["type"] == "directory"
    names = {item["name"] for item in listing["content"] if item["type"] == "notebook"}
    assert names == {p.name for p in NOTEBOOKS.glob("*.ipynb")}
    assert {f"{s}.ipynb" for s in STAGES} <= names

    status, nb = lab.api("GET", "/api/contents/01_curation.ipynb?content=1&type=notebook")
    assert status == 200 and nb["content"]["metadata"]["kernelspec"]["name"] == "python3"
    code = [c for c in nb["content"]["cells"] if c["cell_type"] == "code"]
    assert "parameters" in code[0]["metadata"].get("tags", [])

    status, kernel = lab.api("POST", "/api/kernels", {"name": "python3"})
    assert status == 201, status
    ws = websocket.create_connection(f"{lab.ws_base}/api/kernels/{kernel['id']}/channels",
                                     header=[f"Authorization: token {lab.token}"], timeout=60)  # fmt: skip
    try:
        session = uuid.uuid4().hex
        out_root = json.dumps(str(tmp_path / "outputs"))
        # the notebook's parameters cell, then what papermill would inject, then the validating cell
        cells = [code[0]["source"], f'run_name = "lab-test"\noutput_root = {out_root}', code[1]["source"]]
        results = [lab.execute(ws, "".join(src) if isinstance(src, list) else src, session) for src in cells]
        for r in results:
            assert r["status"] == "ok" and r["error"] is None, r
        assert "run 'lab-test'" in results[2]["stdout"]
        # the `python3` kernel is this environment's interpreter, with this checkout's liverlib
        probe = lab.execute(ws, "import sys, liverlib\nprint(sys.prefix)\nprint(liverlib.__file__)", session)
        prefix, module = probe["stdout"].split()
        assert Path(prefix).resolve() == Path(sys.prefix).resolve()
        assert Path(module).resolve().is_relative_to(NOTEBOOKS.parent)
    finally:
        ws.close()
        assert lab.api("DELETE", f"/api/kernels/{kernel['id']}")[0] == 204
    status, kernels = lab.api("GET", "/api/kernels")
    assert status == 200 and kernel["id"] not in {k["id"] for k in kernels}


CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip
"""Debian's Chromium, headless as root, with nothing reaching for the network (closed here)."""
UI_TIMEOUT_MS = 120_000
RUN_TIMEOUT_MS = 600_000


@pytest.fixture
def browser() -> Iterator[Browser]:
    """The system Chromium (Debian's ``chromium``) driven by Playwright; no browser is downloaded."""
    chromium = shutil.which("chromium")
    if chromium is None:
        reason = "no chromium on PATH: `apt-get install chromium` (make test installs it where it runs as root)"
        if os.environ.get("CI"):  # CI must run the browser test, not skip it
            pytest.fail(reason)
        pytest.skip(reason)
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright missing: pip install -e '.[test]'")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def open_notebook(browser: Browser, lab: Server, name: str) -> Page:
    """A page with ``name`` open in JupyterLab and its kernel started and idle."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(UI_TIMEOUT_MS)
    page.goto(f"{lab.base}/lab/tree/{name}?reset&token={lab.token}")  # reset: only this notebook open
    page.locator(".jp-NotebookPanel .jp-Cell").first.wait_for()
    wait_idle(page)
    return page


def wait_idle(page: Page, timeout_ms: int = UI_TIMEOUT_MS) -> None:
    """Wait for the notebook's kernel to be started and idle: the status bar's kernel status and the notebook's
    execution indicator (what JupyterLab's own UI tests wait for)."""
    page.locator("#jp-main-statusbar", has_text=re.compile(r"\| Idle")).wait_for(timeout=timeout_ms)
    page.locator('.jp-NotebookPanel:visible .jp-Notebook-ExecutionIndicator[data-status="idle"]').wait_for(
        timeout=timeout_ms
    )


def menu(page: Page, top: str, item: str) -> None:
    """Click ``top`` › ``item`` in JupyterLab's menu bar, as a user does."""
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(rf"^{re.escape(top)}$")).click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(rf"^{re.escape(item)}$")).click()


def save(page: Page, path: Path) -> None:
    """File › Save Notebook, then wait until the file on disk is rewritten and the tab is clean."""
    before = path.stat().st_mtime_ns
    menu(page, "File", "Save Notebook")
    deadline = time.monotonic() + UI_TIMEOUT_MS / 1000
    while path.stat().st_mtime_ns == before:
        assert time.monotonic() < deadline, f"{path.name} was not saved"
        time.sleep(0.2)
    page.locator(".jp-NotebookPanel-tab.jp-mod-dirty, .lm-TabBar-tab.jp-mod-dirty").wait_for(state="detached")


@pytest.mark.slow
def test_opening_and_saving_a_stored_notebook_in_jupyterlab_changes_nothing(browser: Browser, tmp_path: Path) -> None:
    """Stored notebooks carry the metadata JupyterLab writes: open (kernel started) + save leaves them byte-identical,
    so JupyterLab's autosave does not show tracked notebooks as modified in `git status` (issue 18)."""
    copies = tmp_path / "notebooks"
    shutil.copytree(NOTEBOOKS, copies, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    changed = {}
    with jupyterlab(copies, tmp_path) as lab:
        for nb in sorted(copies.glob("*.ipynb")):
            page = open_notebook(browser, lab, nb.name)
            save(page, nb)
            page.close()
            if nb.read_bytes() != (NOTEBOOKS / nb.name).read_bytes():
                before, after = (json.loads(p.read_text(encoding="utf-8")) for p in (NOTEBOOKS / nb.name, nb))
                changed[nb.name] = {k: after["metadata"].get(k) for k in after["metadata"]
                                    if after["metadata"].get(k) != before["metadata"].get(k)} or "formatting"  # fmt: skip
    assert not changed, f"JupyterLab rewrites these stored notebooks on save: {changed}"


@pytest.mark.slow
def test_run_all_cells_of_notebook_01_in_a_browser(browser: Browser, tmp_path: Path) -> None:
    """A user's path (issue 18): after `make study` (here only its notebook 01, on a tiny profile), open the stored
    notebook 01 in JupyterLab, Run › Run All Cells, save: no cell fails (data_dir: auto reuses the phantom run)."""
    project = copy_project(tmp_path / "project")
    proc = liverlib_cli(project, *STUDY, "--only", "01")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    path = project / "notebooks" / "01_curation.ipynb"
    with jupyterlab(project / "notebooks", tmp_path) as lab:
        page = open_notebook(browser, lab, path.name)
        menu(page, "Run", "Run All Cells")
        page.wait_for_function(
            """() => { const p = [...document.querySelectorAll('.jp-NotebookPanel .jp-CodeCell .jp-InputPrompt')];
                       return p.length > 0 && p.every(e => /\\[\\d+\\]/.test(e.textContent)); }""",
            timeout=RUN_TIMEOUT_MS,
        )
        wait_idle(page, RUN_TIMEOUT_MS)
        page.screenshot(path=str(tmp_path / "jupyterlab-01_curation.png"), full_page=True)
        save(page, path)
        page.close()
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.execution_count for c in code), "not every cell ran"
    outputs = [o for c in code for o in c.outputs]
    errors = [f"{o.ename}: {o.evalue}" for o in outputs if o.output_type == "error"]
    assert not errors, errors
    streams = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "run 'smoke'" in streams and "Traceback" not in streams and "IProgress" not in streams, streams[-2000:]
    assert any("image/png" in o.get("data", {}) for o in outputs)  # Fig. 2
    assert (tmp_path / "jupyterlab-01_curation.png").stat().st_size > 10_000
