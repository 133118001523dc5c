"""python -m sweep's arguments and refusals, none of which starts Ray: one `error:` line each, in
seconds; the grid read as `dvc exp run -S` reads it; a killed trial's clone cleaned by the next."""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import threading
import time

import pytest
import yaml

from sweep import grid, trial
from tests.project import DIGITS, ROOT, Project, assert_clean_failure, free_port


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return Project(tmp_path_factory.mktemp("cli") / "p", DIGITS)


def sweep(project, *args, timeout=60):
    started = time.time()
    proc = project.run(sys.executable, "-m", "sweep", *args, check=False)
    proc.seconds = time.time() - started
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def test_help_says_what_it_does():
    out = subprocess.run([sys.executable, "-m", "sweep", "--help"], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    for words in ("dvc exp run -S", "cartesian product", "--address HOST:PORT", "local Ray", "loopback",
                  "token", "dvc exp apply NAME && dvc pull", "--retries", "already experiments of this commit",
                  "docs/sweeps.md"):
        assert words in " ".join(out.split()), words


@pytest.mark.parametrize("args,status,says", [
    (["--cpus", "0"], 2, "argument --cpus: must be a whole number of at least 1 (got '0')"),
    (["--device", "tpu"], 2, "argument --device: invalid choice: 'tpu'"),
    (["--nosuch"], 2, "unrecognized arguments: --nosuch"),
    (["-S", "train.lr"], 1, "-S 'train.lr': give key=value"),
    (["-S", "train.lrr=0.1,0.2"], 1, "-S train.lrr: params.yaml has no such key (did you mean train.lr?)"),
    (["-S", "train.lr=range(0.1"], 1, "-S train.lr=range(0.1: not in the grammar dvc exp run -S reads"),
    (["-S", "train.lr=0.1", "-S", "train.lr=0.2"], 1, "-S train.lr is given twice"),
    (["-S", "train.device=gpu"], 1, "-S train.device: the device is set by --device"),
    (["-S", "other.yaml:train.lr=1"], 1, "the params live in params.yaml"),
    (["-S", "train.lr=1", "--address", "nohost"], 1, "--address 'nohost': give HOST:PORT"),
    (["-S", "train.lr=1", "--address", "ray://10.0.0.5:10001"], 1, "without ray://"),
])
def test_a_bad_argument_is_one_line(project, args, status, says):
    proc = sweep(project, *args)
    assert proc.returncode == status
    assert_clean_failure(proc, says)
    assert proc.seconds < 15


def test_an_unreachable_address_is_one_line_in_seconds(project):
    port = free_port()  # a port nobody listens on
    proc = sweep(project, "-S", "train.lr=0.001,0.002", "--address", f"127.0.0.1:{port}")
    assert_clean_failure(proc, f"--address 127.0.0.1:{port}: nothing answers there (Connection refused)")
    assert proc.seconds < 10


def test_an_address_where_something_else_answers_is_one_line_in_seconds(project):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        address = f"127.0.0.1:{server.server_address[1]}"
        proc = sweep(project, "-S", "train.lr=0.001", "--address", address)
        assert_clean_failure(proc, f"--address {address}: something answers there, but not a Ray cluster's head")
        assert proc.seconds < 20
    finally:
        server.shutdown()


def test_uncommitted_changes_are_refused_by_name(tmp_path):
    p = Project(tmp_path / "p", DIGITS)
    p.set("train.lr", 0.004)
    (p.path / "untracked.txt").write_text("not in git: does not count\n")
    proc = sweep(p, "-S", "train.seed=1,2")
    assert_clean_failure(proc, "uncommitted changes to params.yaml: every trial runs the committed HEAD",
                         "git stash")
    os.remove(p.path / "untracked.txt")


def test_not_from_the_project_root(project):
    sub = project.path / "reports"
    sub.mkdir(exist_ok=True)
    proc = subprocess.run([sys.executable, "-m", "sweep", "-S", "train.lr=1"], cwd=sub, capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(project.path)})
    assert_clean_failure(proc, "run python -m sweep from the project's root")


def test_the_grid_is_dvc_s_own():
    """range(), choice() and lists as `dvc exp run --queue -S` expands them; a name per point that
    depends on the point alone; the params each trial will have."""
    text = (ROOT / "params.yaml").read_text()
    points = grid.points(["train.lr=0.001,0.002", "model.dropout=range(0,0.3,0.1)", "train.seed=choice(1,2)",
                          "model.hidden=[64,32]"], "cpu", text)
    assert len(points) == 2 * 3 * 2
    assert points[0].overrides == ["train.lr=0.001", "model.dropout=0.0", "train.seed=1", "model.hidden=[64,32]",
                                   "train.device=cpu", "evaluate.device=cpu"]
    assert points[0].swept == ["train.lr", "model.dropout", "train.seed"]
    assert points[0].name == "lr0.001-dropout0.0-seed1-" + points[0].name.rsplit("-", 1)[1]
    assert len({p.name for p in points}) == len(points)
    assert points[0].params["model"]["hidden"] == [64, 32] and points[0].params["train"]["device"] == "cpu"
    untouched = ("fetch", "prepare", "plots")
    assert {k: points[0].params[k] for k in untouched} == {k: yaml.safe_load(text)[k] for k in untouched}
    same = grid.points(["train.lr=0.001,0.002", "model.dropout=range(0,0.3,0.1)", "train.seed=choice(1,2)",
                        "model.hidden=[64,32]"], "cpu", text.replace("val_size: 5000", "val_size: 200"))
    assert same[0].params["prepare"]["val_size"] == 200  # other params, the same names:
    assert [p.name for p in same] == [p.name for p in points]
    one = grid.points(["train.lr=0.001", "model.dropout=0,0.1"], "gpu", text)
    assert [p.label() for p in one] == ["model.dropout=0", "model.dropout=0.1"]
    assert one[0].params["evaluate"]["device"] == "gpu"


def test_a_killed_trial_s_clone_is_removed_by_the_next(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / f"{dead.pid}-lr0.1-abc123-x" / "repo").mkdir(parents=True)
    (tmp_path / f"{os.getppid()}-alive-abc123-y").mkdir()
    trial.clean_stale(tmp_path)
    assert sorted(p.name.split("-")[1] for p in tmp_path.iterdir()) == ["alive"]


def test_a_landed_trial_s_line_and_a_warning_when_its_bits_differ(tmp_path):
    """The line per trial, and the warning when a node trained with other bits than this machine
    would (another NumPy or OpenBLAS there: other bytes than a local run)."""
    from sweep.__main__ import report
    from sweep.report import Progress

    point = grid.points(["train.lr=0.001,0.003"], "cpu", (ROOT / "params.yaml").read_text())[0]
    here = "numpy 2.4.6, SIMD X86_V3; openblas 0.3.31.188.0 Haswell, 1 thread"
    for bits, warned in ((here, False), (here.replace("2.4.6", "2.3.0"), True)):
        with open(tmp_path / "out", "w+") as stream:
            progress, row = Progress(2, stream, bits=here), {}
            report(point, {"node": "10.0.0.6", "seconds": 7.25, "bits": bits}, "", {"accuracy": 0.93, "loss": 0.2},
                   row, progress)
            stream.seek(0)
            lines = stream.read().splitlines()
        said = f"sweep: [1/2] landed {point.name}  train.lr=0.001  test accuracy 0.9300  on 10.0.0.6 (7.2 s)"
        assert lines[0] == said
        assert row["state"] == "new" and row["accuracy"] == 0.93
        assert (len(lines) == 2 and "trained with other bits than this machine would" in lines[1]) == warned, lines


def test_the_benchmark_s_table_computes_its_figures():
    """benchmarks/sweep_scaling.py's table from made-up rounds, the disturbed one left out (the
    benchmark itself is run by hand)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("sweep_scaling", ROOT / "benchmarks" / "sweep_scaling.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    calm = {"plain": 0.01, "side by side": 0.0, "one node": 0.02, "two nodes": 0.05, "queue": 0.0}
    one = {"load": 0.2, "plain": [6.0, 6.2], "side by side": 6.8, "one node": {"wall": 16.0, "trials": [6.9, 7.1]},
           "two nodes": {"wall": 8.5, "trials": [7.0, 7.2]}, "queue": 8.0, "others": calm}
    busy = {**one, "two nodes": {"wall": 15.0, "trials": [11.0, 12.0]}, "others": {**calm, "two nodes": 0.9}}
    text = bench.table([one, busy, {**one, "queue": 10.0}], 2, "CMD")
    assert text.startswith("`CMD` - ") and "medians of the 2 quiet rounds of 3" in text, text
    assert "at most 0.05, 0.05 of a core in any phase" in text
    assert "| two plain `dvc exp run` side by side (2 cores): this machine's ceiling | 6.8 | 17.65 | 1.79× " in text
    assert "| Ray, one 1-CPU node | 16.0 | 7.50 | 1.00× |" in text
    assert "| Ray, two 1-CPU nodes | 8.5 | 14.12 | 1.88× |" in text
    assert "| `dvc queue start -j 2` (2 cores) | 9.0 | 13.33 | 1.80× |" in text  # 16/8 and 16/10
    assert "Round by round: two nodes over one 1.88×, 1.88×; the machine's ceiling (side by side over the plain " \
        "runs) 1.79×, 1.79×." in text
    assert "| a trial on its node (clone, run, push, bundle) | 7.00 | +0.90 |" in text
    assert "| all in (one-node sweep's wall / points) | 8.00 | +1.90 |" in text
    assert "none was quiet" in bench.table([busy], 2, "CMD")
