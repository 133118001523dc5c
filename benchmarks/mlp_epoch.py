"""Seconds per epoch of the 784-256-128-10 MLP (or, with --net cnn, the CNN
conv32-pool-conv64-pool-fc128-10), batch 128, float32: this project against
PyTorch (CPU, where importable) and scikit-learn's MLPClassifier (MLP only), in one run.

    python benchmarks/mlp_epoch.py                 # all contenders, 11 epochs each
    python benchmarks/mlp_epoch.py --only ours-adam torch-adam
    python benchmarks/mlp_epoch.py --device gpu    # this project on CuPy
    python benchmarks/mlp_epoch.py --net cnn --epochs 4 --only ours-adam torch-adam

Each contender runs in its own long-lived process (so its peak RSS is its own) and
the contenders take turns epoch by epoch (A B C, C B A, A B C, ...), a short pause
between turns: the machine's drift then hits neighbouring epochs alike, and the
ratios to PyTorch are medians of epoch-by-epoch ratios. The first epoch of each is dropped as
warm-up. Data: the pipeline's data/prepared/{train,test}.npz when present (then test
accuracy is real), else random MNIST-sized data. Writes
benchmarks/results/<net>_<device>.{md,json}. Run by hand; it is not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
HIDDEN = (256, 128)
CHANNELS, CNN_HIDDEN = (32, 64), (128,)
BATCH, LR, MOMENTUM_LR = 128, 1e-3, 0.05
CONTENDERS = ("ours-adam", "torch-adam", "ours-sgd", "torch-sgd", "sklearn-adam")  # pairs side by side


PREPARED = ROOT / "data" / "prepared"


def data_source() -> str:
    if (PREPARED / "train.npz").exists():
        return "MNIST (data/prepared)"
    return "random MNIST-sized (run dvc repro for real data)"


def load_data():
    """(x_train, y_train, x_test, y_test): the pipeline's prepared MNIST, else random data of its size."""
    if (PREPARED / "train.npz").exists():
        with np.load(PREPARED / "train.npz") as tr, np.load(PREPARED / "test.npz") as te:
            return tr["x"], tr["y"], te["x"], te["y"]
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (70000, 28, 28), dtype=np.uint8)
    y = rng.integers(0, 10, 70000).astype(np.uint8)
    return x[:60000], y[:60000], x[60000:], y[60000:]


def normalised(a, mean: float, std: float, shape=(-1,)):
    """uint8 images -> float32 (N, *shape), scaled as this project's model scales its input."""
    return (a.reshape(len(a), *shape).astype(np.float32) - mean) / std


def layer_macs(net: str) -> list[int]:
    """Multiply-adds per sample of each parametrised layer, in order."""
    if net == "mlp":
        sizes = (784, *HIDDEN, 10)
        return [a * b for a, b in zip(sizes, sizes[1:])]
    macs, side, c = [], 28, 1
    for f in CHANNELS:  # 3x3 same-padding conv, then 2x2 pool
        macs.append(side * side * 9 * c * f)
        side, c = side // 2, f
    sizes = (side * side * c, *CNN_HIDDEN, 10)
    return macs + [a * b for a, b in zip(sizes, sizes[1:])]


def epoch_gflop(n: int, net: str) -> float:
    """Forward 2 flops per multiply-add; backward twice that, minus the first layer's
    input gradient, which nobody computes."""
    macs = layer_macs(net)
    return n * (6 * sum(macs) - 2 * macs[0]) / 1e9


def sgemm_peak() -> float:
    """Best float32 GFLOP/s of a 2048^3 matrix multiply on this machine, now."""
    a = np.random.default_rng(0).random((2048, 2048), dtype=np.float32)
    best = min(_timed(lambda: a @ a) for _ in range(7))
    return 2 * 2048 ** 3 / best / 1e9


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def our_model(net: str, x, device: str):
    """This project's benchmark net on `device`, normalised for x, initialised from seed 0
    -> (model, the rng to go on with)."""
    from nn.backend import select
    from nn.model import Sequential, cnn_spec, mlp_spec

    spec = mlp_spec((28, 28), list(HIDDEN)) if net == "mlp" else cnn_spec((28, 28), CHANNELS, CNN_HIDDEN)
    spec["normalize"] = {"mean": float(x.mean()), "std": float(x.std())}
    model = Sequential(spec, backend=select(device))
    rng = np.random.default_rng(0)
    model.init_params(rng)
    return model, rng


def ours(opt_name, device, data, net):
    """This project's contender -> (one_epoch() -> seconds, test_accuracy() -> float)."""
    from nn.optim import OPTIMIZERS, Constant
    from nn.train import FitOptions, fit

    x, y, xt, yt = data
    model, rng = our_model(net, x, device)
    kw = {"momentum": 0.9} if opt_name == "sgd" else {}
    opt = OPTIMIZERS[opt_name](model.params_flat, model.grads_flat, backend=model.backend, **kw)
    schedule = Constant(LR if opt_name == "adam" else MOMENTUM_LR, 10 ** 9)
    opts = FitOptions(epochs=1, batch_size=BATCH, progress=False)

    def one_epoch():  # fit's own timer: the training pass, not its (one-sample) validation
        return fit(model, opt, schedule, x, y, xt[:1], yt[:1], opts, rng)[0]["seconds"]

    return one_epoch, lambda: float((model.predict(xt) == yt).mean())


def torch_net(net):
    import torch

    layers = []
    if net == "cnn":
        c = 1
        for f in CHANNELS:
            layers += [torch.nn.Conv2d(c, f, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2)]
            c = f
        layers.append(torch.nn.Flatten())
        sizes = (49 * c, *CNN_HIDDEN, 10)
    else:
        sizes = (784, *HIDDEN, 10)
    for a, b in zip(sizes, sizes[1:]):
        layers += [torch.nn.Linear(a, b), torch.nn.ReLU()]
    return torch.nn.Sequential(*layers[:-1])


def pytorch(opt_name, device, data, net):
    """PyTorch on the CPU, the same net, data and optimiser -> (one_epoch, test_accuracy)."""
    import torch

    torch.manual_seed(0)
    torch.set_num_threads(os.cpu_count() or 1)
    x, y, xt, yt = data
    mean, std = float(x.mean()), float(x.std())
    shape = (-1,) if net == "mlp" else (1, 28, 28)
    xs, xts = (torch.from_numpy(normalised(a, mean, std, shape)) for a in (x, xt))
    ys = torch.from_numpy(y.astype(np.int64))
    model = torch_net(net)
    opt = (torch.optim.Adam(model.parameters(), lr=LR) if opt_name == "adam"
           else torch.optim.SGD(model.parameters(), lr=MOMENTUM_LR, momentum=0.9))
    loss_fn = torch.nn.CrossEntropyLoss()

    def one_epoch():
        start = time.perf_counter()
        perm = torch.randperm(len(xs))
        for i in range(0, len(xs), BATCH):
            idx = perm[i:i + BATCH]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(xs[idx]), ys[idx])
            loss.backward()
            opt.step()
        return time.perf_counter() - start

    def test_accuracy():
        with torch.no_grad():
            return float((model(xts).argmax(1).numpy() == yt).mean())

    return one_epoch, test_accuracy


def sklearn(opt_name, device, data, net):
    """scikit-learn's MLPClassifier (Adam), one partial_fit pass per epoch -> (one_epoch, test_accuracy)."""
    import warnings

    from sklearn.neural_network import MLPClassifier

    x, y, xt, yt = data
    mean, std = float(x.mean()), float(x.std())
    xs = normalised(x, mean, std)
    clf = MLPClassifier(HIDDEN, solver="adam", batch_size=BATCH, learning_rate_init=LR, alpha=0.0,
                        random_state=0)

    def one_epoch():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "maximum iterations reached": one pass is what we ask
            return _timed(lambda: clf.partial_fit(xs, y, classes=np.arange(10)))

    return one_epoch, lambda: float((clf.predict(normalised(xt, mean, std)) == yt).mean())


FAMILIES = {"ours": ours, "torch": pytorch, "sklearn": sklearn}


def child(name, device, net):
    """A contender's process: set up, say "ready", then run one epoch per "epoch" line read
    (answering with its seconds); at end of input, answer with test accuracy and peak RSS."""
    x, y, xt, yt = load_data()
    family, opt = name.split("-")
    one_epoch, test_accuracy = FAMILIES[family](opt, device, (x, y, xt, yt), net)
    print("ready", flush=True)
    for _ in sys.stdin:
        print(json.dumps(one_epoch()), flush=True)
    # the training's peak, read before the test-set pass; KiB -> MiB on Linux
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"test_accuracy": test_accuracy(), "peak_rss_mib": peak_rss, "n_train": len(x)}),
          flush=True)


class Contender:
    """The parent's handle on one child process."""

    def __init__(self, name, args):
        self.name, self.log = name, tempfile.TemporaryFile(mode="w+")
        cmd = [sys.executable, __file__, "--child", name, "--device", args.device, "--net", args.net]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, text=True, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.log)
        self._answer()  # "ready"

    def _answer(self) -> str:
        line = self.proc.stdout.readline()
        if not line:
            self.log.seek(0)
            raise SystemExit(f"error: the {self.name} run failed:\n{self.log.read()[-2000:]}")
        return line

    def epoch(self) -> float:
        self.proc.stdin.write("epoch\n")
        self.proc.stdin.flush()
        return float(self._answer())

    def finish(self) -> dict:
        self.proc.stdin.close()
        result = json.loads(self._answer())
        self.proc.wait()
        return result


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=11, help="per contender; the first is dropped as warm-up")
    ap.add_argument("--only", nargs="*", choices=CONTENDERS)
    ap.add_argument("--device", default="cpu", choices=("cpu", "gpu"), help="for this project's runs")
    ap.add_argument("--net", default="mlp", choices=("mlp", "cnn"))
    ap.add_argument("--pause", type=float, default=0.25,
                    help="seconds between two contenders' epochs, for the last one's thread pool to go idle")
    ap.add_argument("--out", help="report path without suffix (default benchmarks/results/<net>_<device>)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return child(args.child, args.device, args.net)
    out = Path(args.out or ROOT / "benchmarks" / "results" / f"{args.net}_{args.device}")

    source = data_source()
    names = [name for name in args.only or CONTENDERS if runnable(name, args.net)]
    contenders = [Contender(name, args) for name in names]
    peaks = [sgemm_peak()]
    times: dict[str, list[float]] = {name: [] for name in names}
    for epoch in range(1, args.epochs + 1):  # A B C, C B A, A B C, ...: drift hits neighbours alike
        for c in contenders if epoch % 2 else contenders[::-1]:
            time.sleep(args.pause)
            times[c.name].append(c.epoch())
        print(f"epoch {epoch}: " + "  ".join(f"{n} {t[-1]:.3f} s" for n, t in times.items()), file=sys.stderr)
    peaks.append(sgemm_peak())
    finals = {c.name: c.finish() for c in contenders}
    peak = max(peaks)
    gflop = epoch_gflop(finals[names[0]]["n_train"], args.net) if names else 0.0
    rows = [summarise(name, times, finals[name], gflop, peak) for name in names]
    meta = {"command": " ".join(["python benchmarks/mlp_epoch.py", *(argv or sys.argv[1:])]),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
            "data": source, "epochs": args.epochs,
            "net": {"mlp": "784-256-128-10 ReLU", "cnn": "conv32-pool-conv64-pool-fc128-10 ReLU"}[args.net],
            "batch": BATCH, "pause_s": args.pause, "sgemm_peak_gflops": peak, "gflop_per_epoch": gflop, "device": args.device}
    write_report(out, meta, rows)


def runnable(name: str, net: str) -> bool:
    if name.startswith("sklearn") and net == "cnn":
        return False
    if name.startswith("torch"):
        try:
            import torch  # noqa: F401
        except ImportError:
            print(f"skip {name}: torch is not importable", file=sys.stderr)
            return False
    return True


def measured(seconds: list[float]) -> list[float]:
    """Epoch times without the first, which warms up (unless it is the only one)."""
    return seconds[1:] or seconds


def summarise(name: str, times: dict, final: dict, gflop: float, peak: float) -> dict:
    """One table row; ratios to PyTorch are medians of epoch-by-epoch ratios (epoch i against epoch i)."""
    own = measured(times[name])
    row = {"name": name, "min_s": min(own), "median_s": statistics.median(own), **final,
           "epoch_seconds": times[name]}
    row["gflops"] = gflop / row["median_s"]
    row["peak_fraction"] = row["gflops"] / peak
    for ref in ("torch-adam", "torch-sgd"):
        if ref in times:
            row[f"vs_{ref}"] = statistics.median(a / b for a, b in zip(own, measured(times[ref])))
    return row


def write_report(out: Path, meta: dict, rows: list[dict]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    (out.parent / f"{out.name}.json").write_text(json.dumps({"meta": meta, "results": rows}, indent=2) + "\n")
    lines = [f"`{meta['command']}` — {meta['machine']}; data: {meta['data']}; {meta['net']}, batch "
             f"{meta['batch']}; {meta['epochs']} epochs per contender, taken in turn epoch by epoch, "
             f"the order reversed every other epoch "
             f"(the first of each dropped as warm-up; ratios to PyTorch are medians of epoch-by-epoch ratios); "
             f"best sgemm peak "
             f"{meta['sgemm_peak_gflops']:.0f} GFLOP/s; {meta['gflop_per_epoch']:.1f} GFLOP per epoch.",
             "",
             "| run | s/epoch (median) | s/epoch (min) | GFLOP/s | % of sgemm peak | vs torch Adam "
             "| vs torch SGD | test acc | peak RSS MiB (training) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ratio = [f"{r[k]:.2f}×" if k in r else "–" for k in ("vs_torch-adam", "vs_torch-sgd")]
        lines.append(f"| {r['name']} | {r['median_s']:.3f} | {r['min_s']:.3f} | {r['gflops']:.0f} | "
                     f"{100 * r['peak_fraction']:.0f} % | {ratio[0]} | {ratio[1]} | "
                     f"{100 * r['test_accuracy']:.2f} % | {r['peak_rss_mib']:.0f} |")
    (out.parent / f"{out.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
