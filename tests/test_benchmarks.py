"""The hand-run benchmark scripts still run and report what they claim (no timing is checked)."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import statistics
import subprocess
import sys

from tests.project import ROOT, env


def run(*args):
    return subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, env=env(), capture_output=True,
                          text=True, check=True).stdout


def load_benchmark():
    """benchmarks/mlp_epoch.py as a module."""
    spec = importlib.util.spec_from_file_location("mlp_epoch", ROOT / "benchmarks" / "mlp_epoch.py")
    bench = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench  # dataclasses look their module up there
    spec.loader.exec_module(bench)
    return bench


def test_layer_times_lists_every_layer_and_shares_add_up():
    out = run("benchmarks/layer_times.py", "--net", "cnn", "--steps", "2", "--warmup", "1")
    for layer in ("Conv2D(filters=32", "MaxPool2D(size=2)", "Conv2D(filters=64", "Dense(units=128",
                  "Dense(units=10", "loss", "Adam step"):
        assert layer in out
    shares = [float(s) for s in re.findall(r"(\d+\.\d)%$", out, flags=re.MULTILINE)]
    assert len(shares) == 14 and abs(sum(shares) - 100) < 1
    assert re.search(r"^whole step as fit runs it \(2 shards, [12] cores?\): \d+\.\d\d ms$", out, re.MULTILINE), out
    assert re.search(r"^whole step in one piece, one core \(1 shard, 1 core\): \d+\.\d\d ms$", out, re.MULTILINE)


def test_epoch_benchmark_writes_its_table_and_json_to_scratch(tmp_path):
    """Without --update or --out the tables go to the git-ignored scratch folder, and it says so;
    the committed results are left alone. (Run in a copy: the checkout is not written to.)"""
    copy = tmp_path / "repo"
    shutil.copytree(ROOT / "benchmarks", copy / "benchmarks", ignore=shutil.ignore_patterns("scratch", "__pycache__"))
    committed = {p: p.read_bytes() for p in (copy / "benchmarks" / "results").iterdir() if p.is_file()}
    assert committed
    out = subprocess.run([sys.executable, copy / "benchmarks" / "mlp_epoch.py", "--epochs", "3", "--pause", "0",
                          "--only", "ours-sgd", "ours-adam"], cwd=copy, env=env(), capture_output=True, text=True,
                         check=True).stdout
    assert {p: p.read_bytes() for p in committed} == committed
    scratch = copy / "benchmarks" / "results" / "scratch"
    assert sorted(p.name for p in scratch.iterdir()) == ["mlp_cpu.json", "mlp_cpu.md"]
    assert "wrote benchmarks/results/scratch/mlp_cpu.md" in out and "--update" in out
    report = json.loads((scratch / "mlp_cpu.json").read_text())
    assert [row["name"] for row in report["results"]] == ["ours-sgd", "ours-adam"]
    for row in report["results"]:
        seconds = row["epoch_seconds"]
        assert len(seconds) == 3 and all(s > 0 for s in seconds)
        # the warm-up epoch is left out of the figures
        assert row["min_s"] == min(seconds[1:]) and row["median_s"] == statistics.median(seconds[1:])
        assert 0 < row["peak_fraction"] < 1.5 and 0.0 <= row["test_accuracy"] <= 1.0
        assert row["peak_rss_mib"] > 0
    table = (scratch / "mlp_cpu.md").read_text()
    assert "| ours-sgd |" in table and "| ours-adam |" in table
    ignored = subprocess.run(["git", "check-ignore", "-q", "benchmarks/results/scratch/mlp_cpu.md"], cwd=ROOT)
    assert ignored.returncode == 0, "benchmarks/results/scratch/ must be git-ignored"


def test_report_goes_where_asked(tmp_path):
    bench = load_benchmark()
    assert bench.report_path(None, False, "cnn", "gpu") == ROOT / "benchmarks/results/scratch/cnn_gpu"
    assert bench.report_path(None, True, "cnn", "gpu") == ROOT / "benchmarks/results/cnn_gpu"
    assert bench.report_path(str(tmp_path / "x"), False, "mlp", "cpu") == tmp_path / "x"
    out = tmp_path / "bench.v1"  # a dot in the name must not be taken for a suffix
    meta = {"command": "c", "machine": "m", "data": "d", "net": "n", "batch": 1, "epochs": 2,
            "gemm_peak_gflops": 1.0, "gflop_per_epoch": 1.0, "device": "cpu", "references": ["torch-adam"]}
    row = {"name": "ours-adam", "median_s": 1.0, "min_s": 1.0, "gflops": 1.0, "peak_fraction": 0.5,
           "test_accuracy": 0.5, "peak_rss_mib": 1.0}
    bench.write_report(out, meta, [row])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench.v1.json", "bench.v1.md"]
    assert "| ours-adam |" in (tmp_path / "bench.v1.md").read_text()


def test_benchmark_help_is_whole_sentences():
    for script in ("mlp_epoch.py", "layer_times.py"):
        text = run(f"benchmarks/{script}", "--help")
        assert text.startswith(f"usage: python benchmarks/{script}")
        description = text.split("\n\n")[1]  # the docstring's first paragraph, not its first line
        assert description.rstrip().endswith("."), description
    assert "pip install torch --index-url https://download.pytorch.org/whl/cpu" in run("benchmarks/mlp_epoch.py", "-h")


def test_ratios_pair_epoch_with_epoch_and_drop_the_warm_up():
    bench = load_benchmark()
    times = {"ours-adam": [9.0, 1.0, 4.0, 3.0], "torch-adam": [1.0, 2.0, 1.0, 10.0]}
    final = {"test_accuracy": 0.9, "peak_rss_mib": 1.0, "n_train": 10}
    row = bench.summarise("ours-adam", times, final, gflop=3.0, peak=10.0)
    assert row["vs_torch-adam"] == 0.5  # median of 1/2, 4/1, 3/10 - not 3/2, the ratio of medians
    assert row["median_s"] == 3.0 and row["min_s"] == 1.0 and row["gflops"] == 1.0
    assert "vs_torch-sgd" not in row
