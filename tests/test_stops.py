"""A stop signal is never lost: SIGTERM at hundreds of random points of short plots and evaluate
runs (and of predict) ends each run with 143 and the outputs as dvc.lock records them - or, sent
once every output is in place, finds a finished run (exit 0). tests/stop_points.py sends them
and judges each.

Also the parts one by one: a stop swallowed in a finaliser, caught by a library, received during
the imports, or sent to a training worker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from PIL import Image, ImageDraw

from tests.project import DIGITS, ROOT, Project, env

SMALL = {**DIGITS, "model": {"hidden": [4]}, "train": {**DIGITS["train"], "epochs": 2},
         "plots": {"samples": 1, "misclassified": 1, "dpi": 50}}  # a plots run of about a second


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    project = Project(tmp_path_factory.mktemp("done"), SMALL)
    assert project.repro() == ["fetch", "prepare", "train", "evaluate", "plots"]
    project.commit("a run")
    return project


def driver(project, result, *args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tests.stop_points", str(result), *args], cwd=project.path,
                            env={**env(), "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def run_two_at_a_time(jobs) -> list[tuple[str, dict]]:
    """[(project, result file, args)] -> [(what ran, its result)], two drivers side by side."""
    waiting, running, done = list(jobs), [], []
    while waiting or running:
        while waiting and len(running) < 2:
            project, result, args = waiting.pop(0)
            running.append((driver(project, result, *args), result, args))
        proc, result, args = running.pop(0)
        said = proc.communicate(timeout=600)[0]
        assert result.exists(), said
        done.append((" ".join(args), json.loads(result.read_text())))
        statuses = [p["status"] for p in done[-1][1]["points"]]
        print(f"{done[-1][0]}: a run takes {done[-1][1]['span']:.2f} s; exit statuses "
              f"{ {s: statuses.count(s) for s in sorted(set(statuses))} }")
    return done


def test_sigterm_at_260_random_points_of_plots_evaluate_and_predict_is_never_lost(done, tmp_path):
    """110 points in plots runs forked from a warm interpreter, 10 in plots runs started afresh
    (their start-up and imports), 100 in evaluate runs, 40 in predict runs: each one judged."""
    copies = [Project(tmp_path / f"p{i}", like=done) for i in range(6)]
    for project in copies[:3]:
        project.set("plots.dpi", 51)  # a finished run changes every figure
    other = copies[3]
    other.set("train.seed", 1)
    assert other.stage("train").returncode == 0
    for project in copies[3:5]:  # a finished evaluate of another model writes other predictions
        (project.path / "models/model.npz").write_bytes(other.read("models/model.npz"))
    image = tmp_path / "seven.png"
    page = Image.new("L", (64, 64), 255)
    ImageDraw.Draw(page).line([(16, 12), (48, 12), (28, 54)], fill=0, width=5)
    page.save(image)
    jobs = [(copies[0], tmp_path / "a.json", ("--points", "55", "--seed", "1")),
            (copies[1], tmp_path / "b.json", ("--points", "55", "--seed", "2")),
            (copies[3], tmp_path / "c.json", ("--stage", "evaluate", "--points", "50", "--seed", "3")),
            (copies[4], tmp_path / "d.json", ("--stage", "evaluate", "--points", "50", "--seed", "4")),
            (copies[2], tmp_path / "e.json", ("--points", "10", "--seed", "5", "--fresh")),
            (copies[5], tmp_path / "f.json", ("--points", "40", "--seed", "6", "--predict", str(image)))]
    results = run_two_at_a_time(jobs)
    lost = {what: [p for p in result["points"] if p["failure"]] for what, result in results}
    assert not any(lost.values()), json.dumps(lost, indent=1)
    points = [p for _, result in results for p in result["points"]]
    assert len(points) == 260
    assert sum(p["status"] == 143 for p in points) > len(points) // 2  # most fall before the outputs are in place


# -- the mechanism, part by part ------------------------------------------------------------------
def run_python(code: str, cwd, *args, **extra) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, env={**env(), **extra},
                          capture_output=True, text=True, timeout=120)


STAGE = """
import sys, weakref
from harness.command import run
from nn.atomic import write_text
{body}
sys.argv = ["python -m stages.x"]
run(main)
"""


def test_a_stop_swallowed_in_a_finaliser_still_stops_before_any_output(tmp_path):
    """SIGTERM raised inside a weakref callback: Python discards the exception; the stop is raised
    again at once (the stage goes no further), and nothing is written."""
    body = """
import os, signal
class Thing: pass
def main():
    write_text("out.txt", "new")
    thing = Thing()
    weakref.finalize(thing, os.kill, os.getpid(), signal.SIGTERM)  # the signal lands in the finaliser
    del thing
    import time
    began = time.time()
    while time.time() - began < 5:  # where the stop is raised again, within milliseconds
        pass
    open("late.txt", "w").close()  # not reached
"""
    (tmp_path / "out.txt").write_text("old")
    proc = run_python(STAGE.format(body=body), tmp_path, PYTHONPATH=str(ROOT))
    assert proc.returncode == 143, proc.stderr
    assert "Exception ignored" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == "error: interrupted (SIGTERM); no output was changed"
    assert (tmp_path / "out.txt").read_text() == "old" and not (tmp_path / "late.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_a_stop_a_library_catches_still_keeps_every_output(tmp_path):
    """Code that catches KeyboardInterrupt and goes on does not get the outputs written: the
    recorded stop is checked before the first rename."""
    body = """
import os, signal
def main():
    write_text("out.txt", "new")
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(10 ** 6):
            pass
    except KeyboardInterrupt:
        pass  # a library that swallows it
"""
    (tmp_path / "out.txt").write_text("old")
    proc = run_python(STAGE.format(body=body), tmp_path, PYTHONPATH=str(ROOT))
    assert proc.returncode == 143, proc.stderr
    assert (tmp_path / "out.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_a_stop_during_the_imports_is_honoured_and_sigint_and_sighup_have_their_own_status(done, tmp_path):
    """SIGINT sent while `python -m stages.plots` is still importing: exit 130, nothing changed;
    SIGHUP: 129."""
    project = Project(tmp_path / "p", like=done)
    project.set("plots.dpi", 51)
    before = project.digests(["reports/report.md", "reports/figures/predictions.png"])
    for signum in (signal.SIGINT, signal.SIGHUP):
        proc = subprocess.Popen([sys.executable, "-X", "importtime", "-m", "stages.plots"], cwd=project.path,
                                env=env(), stderr=subprocess.PIPE, text=True)
        for line in proc.stderr:  # Python reports each import as it finishes
            if line.split("|")[-1].strip() == "numpy":  # after the package's __init__: the stop is recorded
                break
        proc.send_signal(signum)
        err = proc.communicate(timeout=60)[1]
        assert proc.returncode == 128 + signum, err
        assert f"error: interrupted ({signal.Signals(signum).name}); no output was changed" in err
        assert project.digests(before) == before


def test_a_sigterm_to_a_training_worker_stops_the_trainer(done, tmp_path):
    """A worker passes a stop signal on to the trainer (it does not ignore it, nor die of it)."""
    project = Project(tmp_path / "t", like=done)
    # a step big enough to be cut into two shards (nn/shards.py), so a worker is forked
    project.set_params({"model": {"hidden": [512, 512]}, "train": {"batch_size": 256, "epochs": 300}})
    before = project.digests(["models/model.npz"])
    proc = subprocess.Popen([sys.executable, "-m", "stages.train"], cwd=project.path,
                            env={**env(), "NN_THREADS": "2"}, stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:
        if "epoch 1/" in line:
            break
    workers = []
    deadline = time.time() + 30
    while not workers and time.time() < deadline:
        workers = [int(pid) for pid in open(f"/proc/{proc.pid}/task/{proc.pid}/children").read().split()]
        time.sleep(0.05)
    assert workers, "train forked no shard worker"
    os.kill(workers[0], signal.SIGTERM)
    err = proc.communicate(timeout=60)[1]
    assert proc.returncode == 143, err
    assert "error: interrupted (SIGTERM); no output was changed" in err
    assert project.digests(before) == before
