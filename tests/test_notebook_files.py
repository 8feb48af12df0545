"""The stored notebooks as files: no outputs, and exactly the metadata JupyterLab writes on open and save.

JupyterLab (through jupyter_server) stores a notebook with ``nbformat.write``: the kernelspec of the kernel it
ran (``python3`` of this venv, "Python 3 (ipykernel)") and the ``language_info`` that kernel reports. A stored
notebook already in that form is not rewritten when a user opens it, so ``git status`` stays clean (issue 18).
"""

from __future__ import annotations

import io
import platform
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
LANGUAGE_INFO = {
    "codemirror_mode": {"name": "ipython", "version": 3},
    "file_extension": ".py",
    "mimetype": "text/x-python",
    "name": "python",
    "nbconvert_exporter": "python",
    "pygments_lexer": "ipython3",
    "version": platform.python_version(),  # what the venv's python3 kernel reports
}


def test_there_are_six_notebooks() -> None:
    assert [nb.stem[:2] for nb in NOTEBOOKS] == ["01", "02", "03", "04", "05", "06"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_stored_without_outputs(path: Path) -> None:
    nb = nbformat.read(path, as_version=nbformat.NO_CONVERT)
    for cell in nb.cells:
        assert cell.get("id"), f"{path.name}: a cell without an id"
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{path.name}: cell {cell.id} holds outputs"
        assert set(cell.metadata) <= {"tags"}, f"{path.name}: cell {cell.id} metadata {dict(cell.metadata)}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_carries_the_metadata_jupyterlab_writes(path: Path) -> None:
    nb = nbformat.read(path, as_version=nbformat.NO_CONVERT)
    assert (nb.nbformat, nb.nbformat_minor) == (4, 5)
    assert dict(nb.metadata) == {"kernelspec": KERNELSPEC, "language_info": LANGUAGE_INFO}
    nbformat.validate(nb)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_saving_the_notebook_reproduces_the_file_byte_for_byte(path: Path) -> None:
    """What jupyter_server's save does (``nbformat.write``, UTF-8) gives back the stored bytes."""
    nb = nbformat.read(path, as_version=nbformat.NO_CONVERT)
    out = io.StringIO()
    nbformat.write(nb, out, version=nbformat.NO_CONVERT)
    assert out.getvalue().encode("utf-8") == path.read_bytes()


def test_the_venv_kernel_is_the_one_the_metadata_names() -> None:
    """The kernelspec named in the notebooks is the venv's, with the display name JupyterLab copies."""
    from jupyter_client.kernelspec import KernelSpecManager

    spec = KernelSpecManager().get_kernel_spec(KERNELSPEC["name"])
    assert spec.display_name == KERNELSPEC["display_name"] and spec.language == KERNELSPEC["language"]
    from ipykernel.ipkernel import IPythonKernel

    reported = dict(IPythonKernel.language_info)
    assert reported == LANGUAGE_INFO
