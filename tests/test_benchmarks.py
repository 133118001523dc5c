"""The hand-run benchmark scripts still run and report what they claim (no timing is checked)."""

from __future__ import annotations

import importlib.util
import json
import re
import statistics
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
    out = tmp_path / "bench.v1"  # a dot in the name must not be taken for a suffix
    run("benchmarks/mlp_epoch.py", "--epochs", "3", "--pause", "0", "--only", "ours-sgd", "ours-adam",
        "--out", out)
    report = json.loads((tmp_path / "bench.v1.json").read_text())
    assert [row["name"] for row in report["results"]] == ["ours-sgd", "ours-adam"]
    for row in report["results"]:
        seconds = row["epoch_seconds"]
        assert len(seconds) == 3 and all(s > 0 for s in seconds)
        # the warm-up epoch is left out of the figures
        assert row["min_s"] == min(seconds[1:]) and row["median_s"] == statistics.median(seconds[1:])
        assert 0 < row["peak_fraction"] < 1.5 and 0.0 <= row["test_accuracy"] <= 1.0
        assert row["peak_rss_mib"] > 0
    table = (tmp_path / "bench.v1.md").read_text()
    assert "| ours-sgd |" in table and "| ours-adam |" in table


def test_ratios_pair_epoch_with_epoch_and_drop_the_warm_up():
    spec = importlib.util.spec_from_file_location("mlp_epoch", ROOT / "benchmarks" / "mlp_epoch.py")
    bench = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench  # dataclasses look their module up there
    spec.loader.exec_module(bench)
    times = {"ours-adam": [9.0, 1.0, 4.0, 3.0], "torch-adam": [1.0, 2.0, 1.0, 10.0]}
    final = {"test_accuracy": 0.9, "peak_rss_mib": 1.0, "n_train": 10}
    row = bench.summarise("ours-adam", times, final, gflop=3.0, peak=10.0)
    assert row["vs_torch-adam"] == 0.5  # median of 1/2, 4/1, 3/10 - not 3/2, the ratio of medians
    assert row["median_s"] == 3.0 and row["min_s"] == 1.0 and row["gflops"] == 1.0
    assert "vs_torch-sgd" not in row
