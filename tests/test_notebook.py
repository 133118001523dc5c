"""notebooks/tour.ipynb: committed without outputs, and it runs top to bottom with sane results.

The notebook runs in a fresh kernel of this interpreter (ipykernel's own spec: whatever kernels
are registered on the machine, or none), from a temporary directory, with PYTHONPATH set to
this checkout first so that the kernel imports the `nn` under test, not another editable install
(what PYTHONPATH held before follows it: the kernel may need it to import ipykernel).
Its last cell prints one JSON line of results, which the test reads.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from tests.project import ROOT

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOK = ROOT / "notebooks" / "tour.ipynb"
CELL_TIMEOUT = 120  # seconds for any one cell; the whole notebook takes about 10 s on 2 cores


def kernel_manager():
    """A manager for ipykernel's built-in `python3` spec - this interpreter - whatever is registered."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    return KernelManager(kernel_name="python3", kernel_spec_manager=KernelSpecManager(kernel_dirs=[]))


def stream_text(cell) -> str:
    return "".join(o.get("text", "") for o in cell.get("outputs", []) if o["output_type"] == "stream")


def test_committed_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code
    for cell in code:
        assert cell.outputs == [], cell.source[:80]
        assert cell.execution_count is None, cell.source[:80]
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"


def test_kernel_is_this_interpreter():
    km = kernel_manager()
    assert km.kernel_spec.argv[0] == sys.executable


def test_tour_runs_and_learns(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    km = kernel_manager()
    client = nbclient.NotebookClient(nb, km=km, timeout=CELL_TIMEOUT, resources={"metadata": {"path": str(tmp_path)}})
    try:
        client.execute()  # raises CellExecutionError, with the cell and its traceback, on any error
    finally:  # a kernel manager passed in is ours to stop
        if km.has_kernel:
            km.shutdown_kernel(now=True)

    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(o["output_type"] != "error" for c in code for o in c.outputs)
    assert f"nn from {ROOT / 'nn'}" in stream_text(code[0])
    figures = sum("image/png" in o.get("data", {}) for c in code for o in c.outputs)
    assert figures >= 4  # digits, curves, mistakes, first-layer weights
    result = json.loads(stream_text(code[-1]).strip().splitlines()[-1])
    assert result["grad_rel_error"] < 1e-6, result
    assert result["test_accuracy"] > 0.9, result
    assert result["val_accuracy"] > 0.9, result
    assert result["epochs"] == 30, result
    # nothing was written into the working directory
    assert not list(Path(tmp_path).iterdir())
