"""The command line a newcomer meets: --help on every stage and command runs nothing, a stray
argument is one `error:` line, log lines name their stage, the layer table lines up."""

from __future__ import annotations

import os
import sys

import pytest

from nn.model import Sequential, cnn_spec
from tests.project import DIGITS, Project, assert_clean_failure

STAGES = ("fetch", "prepare", "train", "evaluate", "plots")
COMMANDS = ("predict", "remote")  # the user commands that are not stages: `python -m predict`
MODULE = {**{stage: f"stages.{stage}" for stage in STAGES}, **{name: name for name in COMMANDS}}


def snapshot(project: Project) -> dict[str, tuple]:
    """Every file of the project but .git: its bytes, inode and mtime (a rewrite with the same
    bytes - a deterministic stage run again - still shows)."""
    files = {}
    for root, dirs, names in os.walk(project.path):
        dirs[:] = [d for d in dirs if d != ".git"]
        for name in names:
            path = os.path.join(root, name)
            st = os.stat(path)
            with open(path, "rb") as f:
                files[os.path.relpath(path, project.path)] = (f.read(), st.st_ino, st.st_mtime_ns)
    return files


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    """A digits project after one run of every stage (one epoch), with each stage's stderr."""
    project = Project(tmp_path_factory.mktemp("cli"), {**DIGITS, "train": {**DIGITS["train"], "epochs": 1}})
    logs = {}
    for stage in STAGES:
        proc = project.stage(stage)
        assert proc.returncode == 0, proc.stderr
        logs[stage] = proc.stderr
    return project, logs


def command(project: Project, name: str, *args):
    return project.run(sys.executable, "-m", MODULE[name], *args, check=False)


@pytest.mark.parametrize("name", [*STAGES, *COMMANDS])
def test_help_explains_and_runs_nothing(done, name):
    project, _ = done
    before = snapshot(project)
    proc = command(project, name, "--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"usage: python -m {MODULE[name]} [-h]"), proc.stdout
    assert f"\n{name}: " in proc.stdout  # the module docstring, which opens with the command's name
    assert proc.stderr == ""  # not even the bits line: nothing started
    if name in STAGES:
        assert "Takes no arguments" in proc.stdout and "params.yaml" in proc.stdout
        assert f"dvc repro {name}" in proc.stdout
    assert snapshot(project) == before


@pytest.mark.parametrize("name,args", [
    ("train", ["--epochs", "3"]),
    ("evaluate", ["extra"]),
    ("predict", ["--epochs", "3", "digit.png"]),
    ("remote", ["a", "b"]),
])
def test_a_stray_argument_is_one_error_line_and_runs_nothing(done, name, args):
    project, _ = done
    before = snapshot(project)
    proc = command(project, name, *args)
    line = assert_clean_failure(proc, "unrecognized arguments", args[0], "see --help")
    assert proc.returncode == 2, line
    assert "bits:" not in proc.stderr
    assert snapshot(project) == before


def test_log_lines_name_their_stage(done):
    _, logs = done
    for stage, err in logs.items():
        lines = err.splitlines()
        assert lines and lines[0].startswith(f"{stage}: bits: "), err
        assert all(line.startswith(f"{stage}: ") for line in lines), err
    assert "prepare: wrote the train split: " in logs["prepare"]
    assert "for 1 epoch in" in logs["train"]  # not "1 epochs"


def test_layer_table_columns_line_up_for_a_cnn():
    rows = Sequential(cnn_spec((28, 28), [32, 64], [128], 0.2, 10)).summary().splitlines()
    assert len({len(row) for row in rows}) == 1, "\n".join(rows)  # every row as wide as the header
    assert rows[0].split() == ["layer", "output", "params"]
    conv = next(row for row in rows if row.startswith("Conv2D("))
    name = conv[:conv.index(")") + 1]
    output = rows[0].index("output") + len("output")  # the output column ends under its header
    assert conv[len(name)] == " " and conv[:output].endswith("(28, 28, 32)")
    assert conv.endswith(" 320") and rows[-1].endswith(" 421,642")
