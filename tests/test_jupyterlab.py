"""A real JupyterLab server (what `make lab` starts) serves the notebooks and runs them in this environment.

No mocks: the server runs as a subprocess on a free 127.0.0.1 port with a random token; the test talks to
it only through the jupyter_server REST API (``/api/contents``, ``/api/kernels``) and the kernel's
websocket channel (``/api/kernels/<id>/channels``, Jupyter messaging protocol 5.x as JSON text frames).
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

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


@pytest.fixture
def lab(tmp_path: Path):
    """JupyterLab on notebooks/ as `make lab` starts it, isolated from the user's Jupyter config."""
    port, token = free_port(), secrets.token_hex(16)
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(tmp_path / "config"), "JUPYTER_RUNTIME_DIR": str(tmp_path / "rt"),
           "IPYTHONDIR": str(tmp_path / "ipython"), "JUPYTER_PLATFORM_DIRS": "1"}  # fmt: skip
    # no PyPI queries from the extension manager
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", f"--notebook-dir={NOTEBOOKS}",
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
