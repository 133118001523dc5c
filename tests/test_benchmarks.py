"""The hand-run benchmark scripts still run and report what they claim (no timing is checked)."""

from __future__ import annotations

import json
import re
import subprocess
import sys

from tests.project import ROOT, env


def run(*args):
    return subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, env=env(), capture_output=True,
                          text=True, check=True).stdout


def test_layer_times_lists_every_layer_and_shares_add_up():
    out = run("benchmarks/layer_times.py", "--net", "cnn", "--steps", "2", "--warmup", "1")
    for layer in ("Conv2D(filters=32", "MaxPool2D(size=2)", "Conv2D(filters=64", "Dense(units=128",
                  "Dense(units=10", "loss", "Adam step"):
        assert layer in out
    shares = [float(s) for s in re.findall(r"(\d+\.\d)%$", out, flags=re.MULTILINE)]
    assert len(shares) == 14 and abs(sum(shares) - 100) < 1


def test_epoch_benchmark_writes_its_table_and_json(tmp_path):
    out = tmp_path / "bench"
    run("benchmarks/mlp_epoch.py", "--epochs", "2", "--rounds", "2", "--only", "ours-sgd", "--out", out)
    report = json.loads(out.with_suffix(".json").read_text())
    (row,) = report["results"]
    assert row["name"] == "ours-sgd" and len(row["runs"]) == 2
    assert all(len(r["epoch_seconds"]) == 2 for r in row["runs"])
    assert row["min_s"] <= row["median_s"] and 0 < row["peak_fraction"] < 1.5
    assert 0.0 <= row["test_accuracy"] <= 1.0
    assert "| ours-sgd |" in out.with_suffix(".md").read_text()
