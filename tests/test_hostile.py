"""Files a stage reads that look valid but are not what it expects, damaged files, networks too
big for the machine, umask-following modes. Each failure: one `error:` line naming the file or
key, exit != 0, no traceback, and every earlier output byte-identical afterwards."""

from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from nn import serialize
from tests.project import DIGITS, GIB, Project, assert_clean_failure, env

OUTPUTS = ["data/prepared/train.npz", "data/prepared/val.npz", "data/prepared/test.npz", "models/model.npz",
           "reports/train/history.json", "data/predictions/test.npz", "reports/confusion.json",
           "reports/metrics.json", "reports/scores.json", "reports/report.md", "reports/figures/predictions.png",
           "reports/figures/misclassified.png", "reports/figures/confusion_matrix.png",
           "reports/figures/training_curves.png"]
STAGES = ("fetch", "prepare", "train", "evaluate", "plots")


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    """A digits project with every stage run."""
    project = Project(tmp_path_factory.mktemp("done"), DIGITS)
    for stage in STAGES:
        proc = project.stage(stage)
        assert proc.returncode == 0, proc.stderr
    return project


@pytest.fixture
def project(done, tmp_path):
    return Project(tmp_path / "p", like=done)


def fails_cleanly(project, stage, *patterns, damaged=(), memory=2 * GIB):
    """Run `stage` under a 2 GiB address-space cap: one clean error line with `patterns`, and
    every output except the `damaged` inputs exactly as before."""
    before = project.digests(rel for rel in OUTPUTS if rel not in damaged)
    line = assert_clean_failure(project.stage(stage, memory=memory), *patterns)
    assert project.digests(before) == before
    assert not list(project.path.rglob(".*.tmp"))  # no temporary file left behind
    return line


def rewrite_npz(project, rel, **changes):
    path = project.path / rel
    with np.load(path) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays.update(changes)
    np.savez(path, **arrays)


# -- wrong data that looks valid ------------------------------------------------------------
@pytest.mark.parametrize("split,change,pattern", [
    ("train", lambda a: {"x": a["x"] / 255.0}, "'x' must be uint8 images (N, H, W) or (N, H, W, C), not float64"),
    ("train", lambda a: {"x": a["x"].astype(np.float32) / 255}, "not float32"),
    ("train", lambda a: {"y": np.where(a["y"] == 3, 12, a["y"]).astype(np.uint8)}, "label 12 is outside the 10"),
    ("val", lambda a: {"y": a["y"].astype(np.int64)}, "'y' must be"),
    ("val", lambda a: {"x": a["x"][..., None].repeat(5, axis=-1)}, "5 channels per pixel"),
    ("val", lambda a: {"x": a["x"][..., None]}, "images of shape (8, 8, 1) but data/prepared/train.npz holds (8, 8)"),
    ("train", lambda a: {"x": a["x"][:0], "y": a["y"][:0]}, "holds no images"),
    ("train", lambda a: {"classes": np.array(["a", "a"] + [str(i) for i in range(8)])}, "distinct names"),
    ("train", lambda a: {"classes": np.arange(10)}, "'classes' must be two or more distinct names"),
    ("test", lambda a: {"y": np.where(a["y"] == 9, 10, a["y"]).astype(np.uint8)}, "label 10 is outside"),
])
def test_prepared_split_not_as_prepare_writes_it(project, split, change, pattern):
    rel = f"data/prepared/{split}.npz"
    with np.load(project.path / rel) as npz:
        arrays = {k: npz[k] for k in npz.files}
    rewrite_npz(project, rel, **change(arrays))
    stage = "evaluate" if split == "test" else "train"
    fails_cleanly(project, stage, rel, pattern, "rerun the prepare stage", damaged=[rel])


def other_model(project, **spec_changes):
    """Replace models/model.npz with one whose spec differs as given (its arrays made to fit)."""
    from nn.model import Sequential

    model = serialize.load(project.path / "models/model.npz")
    spec = {**model.spec, **spec_changes}
    other = Sequential(spec)
    other.init_params(np.random.default_rng(0))
    serialize.save(other, project.path / "models/model.npz")


@pytest.mark.parametrize("stage", ["evaluate", "plots"])
@pytest.mark.parametrize("change,pattern", [
    (lambda s: {"classes": [f"c{i}" for i in range(10)]}, "trained for the classes c0, c1"),
    (lambda s: {"input_shape": [28, 28]}, "takes inputs of shape (28, 28) but data/prepared/test.npz holds (8, 8)"),
    (lambda s: {"layers": s["layers"][:-1] + [{"kind": "dense", "units": 26, "init": "glorot"}],
                "classes": None}, "predicts 26 classes but data/prepared/test.npz has 10"),
])
def test_a_model_of_another_dataset(project, stage, change, pattern):
    spec = serialize.load(project.path / "models/model.npz").spec
    other_model(project, **change(spec))
    fails_cleanly(project, stage, "models/model.npz", pattern, "retrain", damaged=["models/model.npz"])


# -- damaged files --------------------------------------------------------------------------
def edit_spec(project, edit):
    """Rewrite the JSON spec inside models/model.npz."""
    path = project.path / "models/model.npz"
    with np.load(path) as npz:
        arrays = {k: npz[k] for k in npz.files}
    spec = json.loads(arrays["__spec__"].tobytes())
    edit(spec)
    arrays["__spec__"] = np.frombuffer(json.dumps(spec).encode(), np.uint8)
    np.savez(path, **arrays)


@pytest.mark.parametrize("edit,pattern", [
    (lambda s: s.update(dtype="float16"), "dtype 'float16' is not one of float32, float64"),
    (lambda s: s.update(dtype="not-a-type"), "dtype 'not-a-type'"),
    (lambda s: s.update(normalize={"mean": 33.0, "std": 0.0}), "a std > 0"),
    (lambda s: s.update(normalize={"mean": float("nan"), "std": 1.0}), "normalize must be a finite mean"),
    (lambda s: s.update(normalize="none"), "normalize"),
    (lambda s: s.update(classes=[1, 2, 3]), "classes must be a list of names"),
    (lambda s: s.update(ink={"extent": "20", "centre": [14, 14]}), "ink must be an extent >= 1"),
    (lambda s: s.update(ink={"extent": 20, "centre": [14, float("inf")]}), "ink must be an extent >= 1"),
    (lambda s: s["layers"].insert(1, {"kind": "dense", "units": 10 ** 9}), "parameters, more than the"),
    (lambda s: s["layers"].append({"kind": "softmax"}), "unknown layer kind 'softmax'"),
    (lambda s: s["layers"][1].update(units="many"), "invalid model spec"),
])
def test_damaged_model_spec(project, edit, pattern):
    edit_spec(project, edit)
    fails_cleanly(project, "evaluate", "models/model.npz", pattern, damaged=["models/model.npz"])


def test_model_array_header_claiming_more_than_the_file_holds(project):
    """An .npy header asking for 4 TB: refused from the header, before any allocation."""
    path = project.path / "models/model.npz"
    with zipfile.ZipFile(path) as zf:
        entries = {i.filename: zf.read(i) for i in zf.infolist()}
    name = next(n for n in entries if n.endswith("W.npy"))
    head = io.BytesIO()
    np.lib.format.write_array_header_1_0(head, {"descr": "<f4", "fortran_order": False, "shape": (10 ** 6, 10 ** 6)})
    entries[name] = head.getvalue() + b"\0" * 64
    with zipfile.ZipFile(path, "w") as zf:
        for n, data in entries.items():
            zf.writestr(n, data)
    fails_cleanly(project, "evaluate", "models/model.npz", "claims shape (1000000, 1000000)",
                  damaged=["models/model.npz"])


@pytest.mark.parametrize("content,pattern", [
    ({"name": "digits"}, "'classes' must be a list of two or more distinct names"),
    ({"name": "digits", "classes": ["only"]}, "'classes' must be"),
    ({"name": "digits", "classes": ["1", "1"]}, "'classes' must be"),
    (["0", "1"], "'classes' must be"),
    ("not json {", "not valid JSON"),
])
def test_damaged_dataset_json(project, content, pattern):
    path = project.path / "data/raw/dataset.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    fails_cleanly(project, "prepare", "data/raw/dataset.json", pattern)


def test_idx_header_past_2_to_the_64(project):
    path = project.path / "data/raw/train-images-idx3-ubyte"
    data = path.read_bytes()
    path.write_bytes(data[:4] + (2 ** 32 - 1).to_bytes(4, "big") * 3 + data[16:])
    fails_cleanly(project, "prepare", "data/raw/train-images-idx3-ubyte", "header says shape (4294967295")


@pytest.mark.parametrize("history,pattern", [
    ([], "its training history must be a list with one record per epoch"),
    ({}, "its training history must be a list"),
    (None, "its training history must be a list"),
    ([{"epoch": 1}], "record 0 of its training history must have the numbers epoch, lr"),
    ([{"epoch": 1, "lr": 0.1, "train_loss": float("nan"), "train_acc": 1, "val_loss": 1, "val_acc": 1}], "record 0"),
])
def test_damaged_history_inside_the_model(project, history, pattern):
    edit_spec(project, lambda s: s.update(history=history))
    fails_cleanly(project, "plots", "models/model.npz", pattern, damaged=["models/model.npz"])


def damage(path, how: str) -> None:
    """Cut a file short, or flip one byte in the middle of its data."""
    data = bytearray(path.read_bytes())
    if how == "truncated":
        path.write_bytes(bytes(data[: len(data) // 2]))
    else:
        data[len(data) // 3] ^= 0xFF
        path.write_bytes(bytes(data))


@pytest.mark.parametrize("how", ["truncated", "one byte flipped"])
@pytest.mark.parametrize("stage,rel,maker", [
    ("train", "data/prepared/train.npz", "prepare"),
    ("evaluate", "data/prepared/test.npz", "prepare"),
    ("plots", "data/predictions/test.npz", "evaluate"),
])
def test_a_damaged_npz_between_stages(project, stage, rel, maker, how):
    """zipfile's BadZipFile (a bad CRC, a cut archive) is not an OSError: it gave a traceback."""
    damage(project.path / rel, how)
    fails_cleanly(project, stage, rel, "not readable", f"rerun the {maker} stage", damaged=[rel])


@pytest.mark.parametrize("scale,stage,pattern", [
    (np.nan, "evaluate", "holds NaN or infinite weights; retrain it"),
    (np.nan, "plots", "holds NaN or infinite weights; retrain it"),
    (1e30, "evaluate", "its answers on the test images are not finite numbers"),
])
def test_a_model_with_weights_that_are_not_numbers(project, scale, stage, pattern):
    """A model file that is well formed but whose weights are NaN, or so large that its answers
    overflow: one line naming the model, not NaN in metrics.json (nor blame on the predictions)."""
    model = serialize.load(project.path / "models/model.npz")
    flat = model.params_flat.copy()
    flat[:10] = np.nan if np.isnan(scale) else flat[:10]
    model.set_flat(flat if np.isnan(scale) else flat * np.float32(scale))
    serialize.save(model, project.path / "models/model.npz")
    fails_cleanly(project, stage, "models/model.npz", pattern, damaged=["models/model.npz"])
    assert "Warning" not in project.stage(stage).stderr  # no NumPy overflow warnings before the line


def test_a_batch_larger_than_the_data_needs_only_the_data_s_memory(project):
    """A batch of 2**20 rows on ~1,200 images is one batch of them all: the memory check counts the
    rows a batch can have (it refused this for 2**20 x the network's width, more than a machine has)."""
    project.set_params({"train": {"batch_size": 2 ** 20, "epochs": 1}})
    proc = project.stage("train", memory=2 * GIB)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("rel,write,pattern", [
    ("reports/scores.json", lambda p: p.write_text('{"accuracy": 1}'), "not the scores of this test split"),
    ("data/predictions/test.npz", lambda p: np.savez(p, probs=np.zeros((3, 10), np.float32)), "not finite"),
    ("data/predictions/test.npz", lambda p: np.savez(p, probs=np.full((359, 10), np.nan, np.float32)),
     "not finite probabilities"),
])
def test_damaged_inputs_of_plots(project, rel, write, pattern):
    write(project.path / rel)
    fails_cleanly(project, "plots", rel, pattern, damaged=[rel])


# -- params that only the data can check -----------------------------------------------------
@pytest.mark.parametrize("params,patterns", [
    ({"model": {"hidden": [65536, 65536]}}, ["model.hidden and train.batch_size ask for about", "GiB"]),
    ({"model": {"kind": "cnn", "channels": [4096, 4096, 4096], "hidden": []}},
     ["model.channels, model.hidden and train.batch_size ask for"]),
    ({"model": {"kind": "cnn", "channels": [4, 4, 4, 4]}}, ["model.channels has 4 conv blocks, but 8-pixel",
                                                             "at most 3"]),
])
def test_network_the_data_or_the_machine_cannot_take(project, params, patterns):
    project.set_params(params)
    fails_cleanly(project, "train", "params.yaml", *patterns)


# -- file modes -------------------------------------------------------------------------------
@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_outputs_follow_the_umask(done, tmp_path, umask):
    project = Project(tmp_path / "m", like=done)
    project.set("plots.dpi", 60)  # new figures
    for stage in ("fetch", "plots"):
        proc = subprocess.run([sys.executable, "-c", f"import os, runpy; os.umask({umask}); "
                               f"runpy.run_module('stages.{stage}', run_name='__main__')"],
                              cwd=project.path, env=env(), capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
    for rel in ("reports/report.md", "reports/figures/predictions.png", "data/raw/dataset.json",
                "data/raw/train-images-idx3-ubyte"):
        assert stat.S_IMODE(os.stat(project.path / rel).st_mode) == 0o666 & ~umask, rel
    assert stat.S_IMODE(os.stat(project.path / "data/raw").st_mode) == 0o777 & ~umask


def test_an_output_that_is_a_folder_changes_nothing(project):
    """evaluate's last output cannot be written: the earlier ones are not renamed either."""
    target = project.path / "data/predictions/test.npz"
    target.unlink()
    target.mkdir()
    line = fails_cleanly(project, "evaluate", "data/predictions/test.npz", "Is a directory",
                         damaged=["data/predictions/test.npz"])
    assert ".tmp" not in line


def test_a_cnn_on_images_too_small_for_one_block_is_told_to_use_the_mlp():
    """1-pixel images allow no 2x2 pooling: fewer blocks is no remedy (the cnn needs one), the mlp is."""
    from harness.errors import StageError
    from stages.train import model_spec

    pm = {"kind": "cnn", "channels": [4], "hidden": [], "activation": "relu", "dropout": 0.0}
    x = np.zeros((4, 1, 1), np.uint8)
    with pytest.raises(StageError, match=r"has 1 conv block, but 1-pixel images allow none .*use model.kind: mlp"):
        model_spec(pm, (1, 1), ["a", "b"], x)
    with pytest.raises(StageError, match=r"has 2 conv blocks, but 2-pixel images allow at most 1 .*use fewer"):
        model_spec({**pm, "channels": [4, 4]}, (2, 2), ["a", "b"], np.zeros((4, 2, 2), np.uint8))
