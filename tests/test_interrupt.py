"""Outputs survive a failed or interrupted `dvc repro`, and a stage writes all its outputs or none.

DVC deletes a stage's outputs before running it; the stage puts them back when it
fails or is stopped (harness/outputs.py), and holds its own writes back until all
of them are ready (nn.atomic.all_or_none)."""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import sys
import time

import pytest

from tests.project import DIGITS, Project, assert_clean_failure, env

# the outputs of train, evaluate and plots, cached by DVC or tracked by git
OUTPUTS = ["models/model.npz", "reports/train/history.json", "data/predictions/test.npz", "reports/confusion.json",
           "reports/metrics.json", "reports/scores.json", "reports/report.md", "reports/figures/predictions.png",
           "reports/figures/misclassified.png", "reports/figures/confusion_matrix.png",
           "reports/figures/training_curves.png"]
SLOW = {"model": {"hidden": [256, 256]}, "train": {"batch_size": 4, "epochs": 12}}  # ~0.5 s an epoch


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    """A digits project after a whole `dvc repro`."""
    project = Project(tmp_path_factory.mktemp("done"), DIGITS)
    assert project.repro() == ["fetch", "prepare", "train", "evaluate", "plots"]
    return project


def snapshot(project) -> dict[str, str]:
    return project.digests(OUTPUTS)


def start_repro(project, shell: str = "/bin/bash") -> subprocess.Popen:
    """`dvc repro` in its own process group, as a terminal would start it. dvc runs each stage
    as `$SHELL -c cmd`: bash replaces itself with the stage, dash (/bin/sh on Debian and Ubuntu,
    and what dvc uses where SHELL is unset) stays in between as the stage's parent."""
    return subprocess.Popen([sys.executable, "-m", "dvc", "repro"], cwd=project.path, env=dict(env(), SHELL=shell),
                            text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)


def wait_for(proc, text: str, limit: float = 120) -> str:
    seen, deadline = [], time.time() + limit
    for line in proc.stdout:
        seen.append(line)
        if text in line:
            return "".join(seen)
        assert time.time() < deadline, "".join(seen)
    raise AssertionError(f"{text!r} never appeared:\n{''.join(seen)}")


@pytest.mark.parametrize("send,shell", [
    pytest.param(lambda p: os.killpg(p.pid, signal.SIGINT), "/bin/bash", id="ctrl-c"),  # a terminal signals the group
    pytest.param(lambda p: os.kill(p.pid, signal.SIGTERM), "/bin/bash", id="sigterm-to-dvc"),  # `kill <dvc's pid>`
    pytest.param(lambda p: os.kill(p.pid, signal.SIGTERM), "/bin/sh", id="sigterm-to-dvc-with-sh-between"),
    pytest.param(lambda p: os.killpg(p.pid, signal.SIGTERM), "/bin/bash", id="sigterm-to-group"),
])
def test_interrupted_train_keeps_the_previous_outputs_and_the_next_repro_finishes(done, tmp_path, send, shell):
    project = Project(tmp_path / "p", like=done)
    before = snapshot(project)
    project.set_params(SLOW)
    proc = start_repro(project, shell)
    wait_for(proc, "epoch 2/")  # train is running: DVC has already deleted its outputs
    send(proc)
    rest = proc.communicate(timeout=60)[0]  # returns when every holder of the pipe - train too - has exited
    assert proc.returncode != 0, rest
    assert all((project.path / rel).exists() for rel in OUTPUTS), rest
    assert snapshot(project) == before, rest
    assert project.repro() == ["train", "evaluate", "plots"]  # the same params: the run finishes now
    assert project.status() == {}
    assert project.digests(["models/model.npz"]) != {"models/model.npz": before["models/model.npz"]}


def test_a_train_that_fails_under_dvc_keeps_the_previous_outputs(done, tmp_path):
    project = Project(tmp_path / "f", like=done)
    before = snapshot(project)
    project.set_params({"train": {"lr": 1000.0, "optimizer": "sgd", "momentum": 0.9}})  # diverges
    proc = project.dvc("repro", check=False)
    assert proc.returncode != 0 and "diverged" in proc.stdout + proc.stderr
    assert snapshot(project) == before
    project.set_params({"train": {"lr": 0.01}})
    assert project.repro() == ["train", "evaluate", "plots"]


@pytest.mark.parametrize("stage,key", [
    ("train", "train.lr"),  # DVC deleted the model: it comes back from DVC's cache
    ("evaluate", "evaluate.batch_size"),  # persist: DVC deleted nothing
    ("plots", "plots.dpi"),
])
def test_outputs_come_back_from_dvc_cache_when_the_kept_copy_is_stale(done, tmp_path, stage, key):
    """The stage's own copy is of another run (here: removed): outputs come from DVC's cache, md5-checked."""
    project = Project(tmp_path / "c", like=done)
    before = snapshot(project)
    shutil.rmtree(project.path / ".dvc/tmp/outputs" / stage)
    project.set(key, -1)
    proc = project.dvc("repro", stage, check=False)
    assert proc.returncode != 0
    assert snapshot(project) == before
    assert "no copy of the version" not in proc.stdout + proc.stderr


def test_an_output_no_copy_of_is_left_is_named_once(done, tmp_path):
    """Neither a kept copy nor DVC's cache holds the model dvc.lock records: one line names it, and
    what may bring it back; nothing is invented."""
    project = Project(tmp_path / "n", like=done)
    shutil.rmtree(project.path / ".dvc/tmp/outputs/train")
    shutil.rmtree(project.path / ".dvc/cache")
    project.set("train.lr", -1)
    proc = project.dvc("repro", "train", check=False)
    assert proc.returncode != 0
    assert not (project.path / "models/model.npz").exists()
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if "no copy of the version" in line]
    assert len(lines) == 1 and "models/model.npz" in lines[0] and "dvc pull train" in lines[0], lines


@pytest.mark.parametrize("stage,key,committed", [
    ("evaluate", "evaluate.batch_size", ["reports/confusion.json", "reports/metrics.json", "reports/scores.json"]),
    ("plots", "plots.dpi", ["reports/figures", "reports/report.md", "reports/train/history.json"]),
])
def test_a_fresh_clone_gets_its_git_tracked_reports_back_from_the_commit(done, tmp_path, stage, key, committed):
    """A fresh clone has the reports from git but no kept copy, and DVC keeps none of git-tracked
    outputs: a failed stage takes them from git's last commit, where its bytes are dvc.lock's -
    here after they were deleted (DVC leaves them in place: persist)."""
    project = Project(tmp_path / "f", like=done)
    project.commit("a run")
    shutil.rmtree(project.path / ".dvc/tmp/outputs")  # as in a fresh clone
    before = snapshot(project)
    for rel in committed:
        path = project.path / rel
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    project.set(key, -1)
    proc = project.dvc("repro", stage, check=False)
    assert proc.returncode != 0
    assert snapshot(project) == before
    assert project.git("status", "--porcelain").split() == ["M", "params.yaml"]
    for rel in committed:
        assert f"{rel}: put back as dvc.lock records it (from git's last commit)" in proc.stdout + proc.stderr
    assert "no copy of the version" not in proc.stdout + proc.stderr  # the rest came from DVC's cache


def test_a_stage_that_cannot_write_one_output_changes_none(done, tmp_path):
    """A file-size limit (like a full disk) stops plots at its biggest figure: nothing changes,
    and the line names the file."""
    project = Project(tmp_path / "w", like=done)
    before = snapshot(project)
    project.set("plots.dpi", 120)  # every figure would change
    sizes = {rel: (project.path / rel).stat().st_size for rel in before if rel.endswith(".png")}
    limit = sorted(sizes.values())[-1] - 1  # the smaller figures fit, the largest does not

    def cap():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    proc = subprocess.run([sys.executable, "-m", "stages.plots"], cwd=project.path, env=env(), capture_output=True,
                          text=True, preexec_fn=cap)
    assert_clean_failure(proc, "reports/figures/", "File too large")
    assert snapshot(project) == before
    assert not [p for p in (project.path / "reports").rglob(".*.tmp")]


def test_a_half_made_output_folder_and_a_file_of_the_failed_run_are_put_back(done, tmp_path, monkeypatch):
    """A stopped plots has already made reports/figures/ again (empty, or with some figures) and
    may have written other outputs: each output that is not dvc.lock's version is put back whole."""
    import logging

    from figures.report import FIGURES_SHOWN
    from harness import outputs

    project = Project(tmp_path / "h", like=done)
    before = snapshot(project)
    for png in (project.path / "reports/figures").glob("*.png"):
        png.unlink()
    (project.path / "reports/figures/.confidence.png.tmp").write_bytes(b"half a figure")
    (project.path / "reports/report.md").write_text("the failed run's report\n")
    monkeypatch.chdir(project.path)
    outputs.restore("plots", logging.getLogger("test"))
    assert snapshot(project) == before
    figures = sorted(p.name for p in (project.path / "reports/figures").iterdir())
    assert figures == sorted(f"{name}.png" for name in FIGURES_SHOWN)  # the failed run's temp file gone
    assert project.status() == {}


EVERY_OUTPUT = [*OUTPUTS, "data/raw/train-images-idx3-ubyte", "data/raw/dataset.json", "data/prepared/train.npz",
                "data/prepared/test.npz"]


@pytest.mark.parametrize("folder,key,says", [
    ("reports", "evaluate.batch_size", "error: reports/: not writable, and evaluate writes reports/scores.json "
     "there; make the folder writable (chmod u+w reports) and rerun - no output was changed"),
    ("data/predictions", "evaluate.batch_size", "error: data/predictions/: not writable, and evaluate writes "
     "data/predictions/test.npz there; make the folder writable (chmod u+w data/predictions)"),
    ("data", "fetch.seed", "error: data/: not writable, and fetch writes data/raw there; make the folder writable "
     "(chmod u+w data)"),  # data/raw itself writable: DVC used to empty it, then fail on data/
    ("models", "train.lr", "ERROR: failed to reproduce 'train': [Errno 13] Permission denied:"),  # DVC's own line
])
def test_a_read_only_folder_leaves_every_output_in_place_and_is_named_in_one_line(done, tmp_path, folder, key, says):
    """`dvc repro` as a user (root's override dropped) with one folder read-only: DVC deletes no
    output of a stage that writes into more than one place (persist), the stage names the folder
    before any work, and every output is byte-identical afterwards. train's one output is deleted
    by DVC or not at all: the line is DVC's, naming the file."""
    project = Project(tmp_path / "r", like=done)
    before = project.digests(EVERY_OUTPUT)
    project.set(key, {"evaluate.batch_size": 77, "fetch.seed": 5, "train.lr": 0.02}[key])
    (project.path / folder).chmod(0o555)
    try:
        proc = project.dvc("repro", check=False, as_user=True)
    finally:
        (project.path / folder).chmod(0o755)
    assert proc.returncode != 0
    said = [line for line in (proc.stdout + proc.stderr).splitlines() if line.lower().startswith("error:")]
    ours = [line for line in said if line.startswith("error:")]
    assert len(ours) <= 1 and any(line.startswith(says) for line in said), said
    if folder == "models":
        assert "models/model.npz" in said[0], said
    assert project.digests(EVERY_OUTPUT) == before
    assert not list(project.path.rglob(".*.tmp"))
