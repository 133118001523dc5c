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
import re
import sys
from pathlib import Path

import pytest
import yaml

from tests.project import ROOT, Project

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


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """The notebook, run top to bottom, and the directory it ran in."""
    cwd = tmp_path_factory.mktemp("nb")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
        nb = nbformat.read(NOTEBOOK, as_version=4)
        km = kernel_manager()
        client = nbclient.NotebookClient(nb, km=km, timeout=CELL_TIMEOUT, resources={"metadata": {"path": str(cwd)}})
        try:
            client.execute()  # raises CellExecutionError, with the cell and its traceback, on any error
        finally:  # a kernel manager passed in is ours to stop
            if km.has_kernel:
                km.shutdown_kernel(now=True)
    return nb, cwd


def result(nb) -> dict:
    """The JSON line the last cell prints."""
    return json.loads(stream_text([c for c in nb.cells if c.cell_type == "code"][-1]).strip().splitlines()[-1])


def test_tour_runs_and_learns(executed):
    nb, cwd = executed
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(o["output_type"] != "error" for c in code for o in c.outputs)
    assert f"nn from {ROOT / 'nn'}" in stream_text(code[0])
    figures = sum("image/png" in o.get("data", {}) for c in code for o in c.outputs)
    assert figures >= 4  # digits, curves, mistakes, first-layer weights
    got = result(nb)
    assert got["grad_rel_error"] < 1e-6, got
    assert got["test_accuracy"] > 0.9, got
    assert got["val_accuracy"] > 0.9, got
    assert got["epochs"] == 30, got
    # nothing was written into the working directory
    assert not list(Path(cwd).iterdir())


def test_the_pipeline_with_the_keys_the_notebook_names_scores_what_the_notebook_scores(executed, tmp_path):
    """The notebook says which keys of params.yaml make the pipeline its run: every one of them
    differs from the committed value, and the pipeline with them gets the notebook's test accuracy
    (to one image). With the committed train.shift of 2, 8x8 digits scored 24 %."""
    nb, _ = executed
    text = next(c.source for c in nb.cells if c.cell_type == "markdown" and "keys away" in c.source)
    keys = yaml.safe_load(re.search(r"```yaml\n(.*?)```", text, flags=re.S).group(1))
    committed = yaml.safe_load((ROOT / "params.yaml").read_text())
    named = [(section, key) for section, values in keys.items() for key in values]
    assert [f"{s}.{k}" for s, k in named if keys[s][k] == committed[s][k]] == []  # each one a change
    words = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]
    assert f"{words[len(named)]} keys away" in text, f"{len(named)} keys"
    project = Project(tmp_path / "p", keys)
    for stage in ("fetch", "prepare", "train", "evaluate"):
        proc = project.stage(stage)
        assert proc.returncode == 0, proc.stderr
    test = json.loads(project.read("reports/scores.json"))
    assert abs(test["accuracy"] - result(nb)["test_accuracy"]) <= 1 / test["samples"] + 1e-9, \
        (test["accuracy"], result(nb)["test_accuracy"])


def test_jupyter_lab_opens_the_tour(tmp_path):
    """The README's line opens the tour with `jupyter lab` (the [notebook] extra): here the same
    server, without a browser, on 127.0.0.1 with a token, serves notebooks/tour.ipynb whole."""
    import secrets
    import subprocess
    import time
    import urllib.request

    from tests.project import env, free_port

    port = free_port()
    token = secrets.token_hex(16)
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "jupyter"), "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={ROOT}", "notebooks/tour.ipynb",
         *(["--allow-root"] if os.geteuid() == 0 else [])],  # a user's is not root; this machine's tests are
        cwd=ROOT, env={**env(), **{f"JUPYTER_{kind.upper()}_DIR": str(tmp_path / kind)
                                   for kind in ("config", "data", "runtime")}},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}/api/contents/notebooks/tour.ipynb?token={token}"
        deadline = time.time() + 60
        while True:
            try:
                with urllib.request.urlopen(url, timeout=5) as answer:
                    served = json.loads(answer.read())
                break
            except OSError:
                assert server.poll() is None, server.stderr.read()
                assert time.time() < deadline, "jupyter lab did not answer in 60 s"
                time.sleep(0.5)
        assert served["type"] == "notebook"
        sources = ["".join(cell["source"]) for cell in json.loads(NOTEBOOK.read_text())["cells"]]
        assert [cell["source"] for cell in served["content"]["cells"]] == sources
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/lab/tree/notebooks/tour.ipynb?token={token}") as page:
            assert b"JupyterLab" in page.read()
    finally:
        server.terminate()
        server.wait(timeout=30)
