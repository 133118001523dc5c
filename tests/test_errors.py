"""Bad input gets one clear line, exit != 0, no traceback, and nothing that looks valid.
Crashes leave old outputs intact or absent; reruns give the same bytes."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.project import DIGITS, ROOT, Project, assert_clean_failure, env


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A digits project with data/raw and data/prepared made."""
    project = Project(tmp_path_factory.mktemp("base"), DIGITS)
    for stage in ("fetch", "prepare"):
        assert project.stage(stage).returncode == 0
    return project


@pytest.fixture
def project(base, tmp_path):
    return Project(tmp_path / "p", like=base)


# -- params: validated before any work starts ------------------------------------
@pytest.mark.parametrize("key,value,patterns", [
    ("train.lr", -1, ["params.yaml", "train.lr must be a number > 0", "-1"]),
    ("train.lr", 0, ["train.lr must be a number > 0"]),
    ("train.epochs", 0, ["train.epochs must be an integer >= 1"]),
    ("train.batch_size", 0, ["train.batch_size must be an integer >= 1"]),
    ("model.dropout", 1.0, ["model.dropout must be a number in [0, 1)"]),
    ("model.dropout", -0.1, ["model.dropout"]),
    ("model.activation", "swish", ["model.activation must be one of relu"]),
    ("train.optimizer", "rmsprop", ["train.optimizer must be one of sgd, adam, adamw"]),
    ("model.hidden", [128, 0], ["model.hidden must be a list of positive integers"]),
    ("model.hidden", 128, ["model.hidden must be a list of positive integers"]),
    ("train.lr", "fast", ["train.lr must be a number", "'fast'"]),
    ("train.epochs", 2.5, ["train.epochs must be an integer"]),
    ("train.device", "tpu", ["train.device must be one of auto, cpu, gpu"]),
    ("train.warmup_epochs", 7, ["train.warmup_epochs = 7 is longer than the run (train.epochs = 6)", "at most 6"]),
])
def test_bad_train_params(project, key, value, patterns):
    for f in ("train.npz", "val.npz"):  # prove validation comes before reading any data
        (project.path / "data/prepared" / f).unlink()
    project.set(key, value)
    proc = project.stage("train")
    line = assert_clean_failure(proc, *patterns)
    assert proc.stderr.splitlines() == [line]  # the one line alone: no log line before it
    assert not (project.path / "models/model.npz").exists()


def test_unknown_key_suggests_the_right_one(project):
    params = project.params()
    params["train"]["lr_rate"] = 0.1
    (project.path / "params.yaml").write_text(json.dumps(params))  # JSON is YAML too
    assert_clean_failure(project.stage("train"), "unknown key train.lr_rate", "did you mean train.lr?")


@pytest.mark.parametrize("params,says", [
    ({"warmup_epochs": 6, "schedule": "cosine"}, "the warm-up takes the whole run (train.warmup_epochs = "
                                                 "train.epochs = 6): the learning rate rises to its peak and the "
                                                 "cosine schedule never starts"),
    ({"warmup_epochs": 2, "schedule": "step", "step_epochs": 4},
     "train.step_epochs = 4 is not less than the 4 epochs after the warm-up: the step schedule never decays"),
    ({"warmup_epochs": 2, "schedule": "step", "step_epochs": 3}, None),
    ({"warmup_epochs": 6, "schedule": "constant"}, None),
])
def test_a_schedule_that_never_runs_is_said(project, params, says):
    """A warm-up as long as the run leaves the schedule no step; a step schedule with its first decay
    after the run never decays: both train (the values are legal), and the log says so."""
    project.set_params({"train": {"epochs": 6, **params}})
    proc = project.stage("train")
    assert proc.returncode == 0, proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if "never" in line]
    assert warnings == ([f"train: {says}"] if says else []), proc.stderr


def test_missing_key(project):
    params = project.params()
    del params["train"]["seed"]
    (project.path / "params.yaml").write_text(json.dumps(params))
    assert_clean_failure(project.stage("train"), "missing key train.seed")


def test_missing_section(project):
    params = project.params()
    del params["plots"]
    (project.path / "params.yaml").write_text(json.dumps(params))
    assert_clean_failure(project.stage("plots"), "section 'plots' is missing")


def test_broken_yaml(project):
    (project.path / "params.yaml").write_text("train: [unclosed\n")
    assert_clean_failure(project.stage("train"), "params.yaml: not valid YAML")


@pytest.mark.parametrize("stage,output", [("train", "models/model.npz"), ("evaluate", "reports/metrics.json")])
def test_gpu_forced_without_gpu(project, stage, output):
    """No CuPy, or CuPy with every device hidden: the same one-line error, naming the stage's key."""
    project.set(f"{stage}.device", "gpu")
    no_gpu = project.stage(stage, extra_env={"CUDA_VISIBLE_DEVICES": ""})
    assert_clean_failure(no_gpu, f"params.yaml: {stage}.device", "no GPU is usable", f"set {stage}.device to auto")
    assert not (project.path / output).exists()


# -- fetch --------------------------------------------------------------------
def test_unknown_dataset(project):
    project.set("fetch.dataset", "cifar")
    assert_clean_failure(project.stage("fetch"), "fetch.dataset must be one of mnist, fashion-mnist, digits")


@pytest.mark.parametrize("make,pattern", [
    (lambda d: None, "no such folder"),
    (lambda d: d.mkdir(), "missing train-images-idx3-ubyte"),
])
def test_fetch_from_a_bad_folder_leaves_no_data(project, tmp_path, make, pattern):
    import shutil

    shutil.rmtree(project.path / "data/raw")
    folder = tmp_path / "src"
    make(folder)
    project.set("fetch.source", str(folder))
    line = assert_clean_failure(project.stage("fetch"), "every source failed", pattern)
    assert str(folder) in line
    assert not (project.path / "data/raw").exists()


# -- prepare ------------------------------------------------------------------
def corrupt(project, name, edit):
    path = project.path / "data/raw" / name
    path.write_bytes(edit(path.read_bytes()))
    for f in ("train.npz", "val.npz", "test.npz"):
        (project.path / "data/prepared" / f).unlink()


@pytest.mark.parametrize("name,edit,pattern", [
    ("train-images-idx3-ubyte", lambda b: b"\x01\x02" + b[2:], "not an idx file (bad magic number"),
    ("train-images-idx3-ubyte", lambda b: b[:-7], "header says shape"),
    ("t10k-images-idx3-ubyte", lambda b: b + b"\x00" * 64, "header says shape"),
    ("train-labels-idx1-ubyte", lambda b: b[:4] + (int.from_bytes(b[4:8], "big") - 3).to_bytes(4, "big")
     + b[8:-3], "labels for"),
    ("t10k-labels-idx1-ubyte", lambda b: b[:-1] + b"\x0c", "label 12 is out of range"),
    ("t10k-labels-idx1-ubyte", lambda b: b"", "not an idx file (empty)"),
])
def test_damaged_idx_files(project, name, edit, pattern):
    corrupt(project, name, edit)
    line = assert_clean_failure(project.stage("prepare"), pattern, "; rerun the fetch stage (dvc repro)")
    assert "data/raw" in line
    assert not list((project.path / "data/prepared").glob("*.npz"))


@pytest.mark.parametrize("val_size,pattern", [(0, "prepare.val_size must be a count >= 1"),
                                              (-5, "prepare.val_size"),
                                              (1.5, "prepare.val_size must be a count >= 1 or a fraction"),
                                              (1437, "of 10 classes needs between 10 and 1427"),
                                              (0.001, "gives 1 validation sample; a stratified split"),
                                              (1436, "gives 1436 validation samples; a stratified split of the "
                                                     "1437 training samples of 10 classes needs between 10 and 1427"),
                                              (5000, "prepare.val_size gives 5000")])
def test_impossible_split(project, val_size, pattern):
    for f in ("train.npz", "val.npz", "test.npz"):
        (project.path / "data/prepared" / f).unlink()
    project.set("prepare.val_size", val_size)
    assert_clean_failure(project.stage("prepare"), pattern)
    assert not list((project.path / "data/prepared").glob("*.npz"))


@pytest.mark.parametrize("value", ["0", "two"])
def test_a_bad_nn_threads_stops_train_before_any_work(project, value):
    proc = project.stage("train", extra_env={"NN_THREADS": value})
    assert_clean_failure(proc, f"NN_THREADS must be a whole number of at least 1 (got '{value}')")
    assert "model:" not in proc.stderr and not (project.path / "models/model.npz").exists()


def test_a_class_of_one_image_cannot_be_stratified():
    from harness.errors import StageError
    from stages.prepare import split

    y = np.array([0, 0, 1, 1, 2, 0, 1, 0], np.uint8)
    with pytest.raises(StageError, match="class 'c' has 1 training image; a stratified"):
        split(np.zeros((8, 2, 2), np.uint8), y, 3, 0, ["a", "b", "c"])


# -- train --------------------------------------------------------------------
def test_divergence_stops_without_a_model(project):
    # wide enough that the weights overflow to inf and the loss to NaN within the first epoch
    project.set_params({"model": {"hidden": [128]},
                        "train": {"lr": 1000.0, "optimizer": "sgd", "momentum": 0.9, "warmup_epochs": 0}})
    proc = project.stage("train")
    assert_clean_failure(proc, "train.lr = 1000.0", "diverged", "lower learning rate", "no model was written")
    assert "Warning" not in proc.stderr  # the loss check says it; NumPy's overflow warnings would not add to it
    assert not (project.path / "models/model.npz").exists()


# -- model file ---------------------------------------------------------------
class Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("content,pattern", [
    (lambda m: pickle.dumps(Payload(str(m))), "not a model file"),
    (lambda m: b"PK\x03\x04 truncated", "not a readable model file (BadZipFile"),
    (lambda m: b"PK\x03\x04 truncated", "; retrain it (dvc repro -f train)"),
    (lambda m: b"", "not a"),
])
def test_bad_model_file(project, tmp_path, content, pattern):
    marker = tmp_path / "payload-ran"
    (project.path / "models").mkdir(exist_ok=True)
    (project.path / "models/model.npz").write_bytes(content(marker))
    assert_clean_failure(project.stage("evaluate"), "models/model.npz", pattern)
    assert not marker.exists()
    assert not (project.path / "reports/metrics.json").exists()


# -- crash safety ---------------------------------------------------------------
SLOW_RENAME = ("import os, runpy, time\n"
               "real = os.replace\n"
               "def slow(*a, **k):\n"
               "    time.sleep(60)\n"
               "    return real(*a, **k)\n"
               "os.replace = slow\n"
               "runpy.run_module('stages.{stage}', run_name='__main__')\n")


def test_sigkill_while_writing_leaves_old_output_intact_and_repro_recovers(base, tmp_path):
    project = Project(tmp_path / "k", like=base)
    assert project.repro() == ["fetch", "prepare", "train", "evaluate", "plots"]  # no dvc.lock yet
    model = project.path / "models/model.npz"
    before = model.read_bytes()
    project.set("train.seed", 99)  # the next train writes a different model
    proc = subprocess.Popen([sys.executable, "-c", SLOW_RENAME.format(stage="train")], cwd=project.path,
                            env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while not list((project.path / "models").glob(".model.npz.*.tmp")):  # the new model is written ...
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)  # ... but not yet renamed into place
    proc.wait()
    assert model.read_bytes() == before  # the old model, whole
    from nn import serialize

    serialize.load(model)
    assert project.repro() == ["train", "evaluate", "plots"]  # dvc sees the change and recovers
    assert model.read_bytes() != before
    serialize.load(model)


def test_failing_stage_exit_code_propagates_through_dvc_repro(base, tmp_path):
    project = Project(tmp_path / "r", like=base)
    project.set("train.lr", -1)
    proc = project.dvc("repro", check=False)
    assert proc.returncode != 0
    assert "error: params.yaml: train.lr must be a number > 0 (got -1)" in proc.stderr + proc.stdout
    assert "train: bits:" not in proc.stderr  # a stage that stops before logging: not after the fact


def test_an_os_error_line_keeps_a_file_name_with_a_newline_whole(tmp_path):
    code = ("import errno\nfrom harness.command import run\n"
            "def main():\n    raise PermissionError(errno.EACCES, 'Permission denied', 'data/bad\\nname.png')\n"
            "run(main)\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    line = assert_clean_failure(proc, "data/bad\\nname.png")
    assert proc.stderr.splitlines() == [line]


# -- reproducibility ------------------------------------------------------------
OUTPUTS = ["data/prepared/train.npz", "data/prepared/val.npz", "data/prepared/test.npz", "models/model.npz",
           "reports/train/history.json", "reports/confusion.json", "data/predictions/test.npz",
           "reports/report.md", "reports/figures/predictions.png", "reports/figures/misclassified.png",
           "reports/figures/confusion_matrix.png", "reports/figures/training_curves.png"]


def run_all(project):
    for stage in ("prepare", "train", "evaluate", "plots"):
        proc = project.stage(stage)
        assert proc.returncode == 0, proc.stderr
    outputs = {rel: project.read(rel) for rel in OUTPUTS}
    metrics = json.loads(project.read("reports/metrics.json"))
    assert set(metrics) == {"accuracy", "loss", "macro_f1", "top3", "parameters"}  # no timing: it never repeats
    return outputs, metrics


def test_rerun_gives_identical_bytes_and_a_new_seed_does_not(base, tmp_path):
    a = Project(tmp_path / "a", like=base)
    b = Project(tmp_path / "b", like=base)
    first, second = run_all(a), run_all(b)
    assert first[1] == second[1]
    for rel in OUTPUTS:
        assert first[0][rel] == second[0][rel], rel
    b.set("train.seed", 1)
    third = run_all(b)
    changed = {rel for rel in OUTPUTS if third[0][rel] != first[0][rel]}
    assert {"models/model.npz", "reports/train/history.json"} <= changed
    assert "data/prepared/train.npz" not in changed  # a train key leaves prepare's output alone
