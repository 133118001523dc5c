"""Seconds per training epoch: this project against PyTorch (and, on the CPU,
scikit-learn's MLPClassifier), the same data, network, batch (128) and optimiser, in one run.

    python benchmarks/mlp_epoch.py                 # CPU: all contenders, 11 epochs each
    python benchmarks/mlp_epoch.py --only ours-adam torch-adam
    python benchmarks/mlp_epoch.py --net cnn --epochs 4 --only ours-adam torch-adam
    python benchmarks/mlp_epoch.py --device gpu    # GPU: this project against PyTorch CUDA
    python benchmarks/mlp_epoch.py --device gpu --net cnn

On the CPU the networks are plain - the 784-256-128-10 MLP or the CNN
conv32-pool-conv64-pool-fc128-10, no dropout, no shifts, Adam or SGD with momentum -
so that scikit-learn can run the MLP too. On a GPU they are the pipeline's own, as
params.yaml trains them: the default MLP 784-512-256-10 (or that CNN) with dropout
0.2, random shifts of up to 2 pixels and AdamW (weight decay 1e-4). There the
contenders are this project (each step replayed as a CUDA graph: `ours-adamw`; every
kernel launched from Python: `ours-eager`) and PyTorch CUDA, eager with its fused
AdamW (`torch-adamw`) and the same step captured as a CUDA graph (`torch-graph`);
both sides keep the data on the GPU, shift and drop out there, and sum the loss on
the device. fp32 throughout: TF32 is off for our cuBLAS and PyTorch's matmul and cuDNN.

Each contender runs in its own long-lived process (so its peak memory is its own)
and the contenders take turns epoch by epoch (A B C, C B A, A B C, ...), a short
pause between turns: the machine's drift then hits neighbouring epochs alike, and the
ratios to PyTorch are medians of epoch-by-epoch ratios. The first epoch of each is
dropped as warm-up. The matrix-product peak is measured in the same run (a 2048^3
sgemm on the CPU; an 8192^3 fp32 product timed with CUDA events on a GPU). Data:
the pipeline's data/prepared/{train,test}.npz when present (then test accuracy is
real), else random MNIST-sized data. Run by hand; it is not a test.

Writes the table and the JSON (every epoch's time) to benchmarks/results/scratch/
<net>_<device>.{md,json} (git-ignored), and says where; --update replaces the committed
benchmarks/results/<net>_<device>.{md,json} instead, --out PATH writes PATH.{md,json}.

PyTorch is optional: without it its contenders are skipped, and said so. For the CPU,
PyTorch's CPU-only wheel (no CUDA libraries):
    pip install torch --index-url https://download.pytorch.org/whl/cpu
for a GPU, PyPI's wheel, which brings its CUDA libraries (the `bench` extra):
    pip install -c constraints.txt -e ".[bench]"
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
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
BATCH = 128
PREPARED = ROOT / "data" / "prepared"


@dataclass(frozen=True)
class Recipe:
    """A network and how it is trained."""

    hidden: tuple[int, ...]
    channels: tuple[int, ...] = ()  # conv blocks; () for an MLP
    dropout: float = 0.0
    shift: int = 0
    lr: float = 1e-3
    weight_decay: float = 0.0

    def describe(self) -> str:
        convs = "".join(f"conv{c}-pool-" for c in self.channels)
        net = convs + ("fc" + "-".join(map(str, (*self.hidden, 10))) if self.channels else
                       "-".join(map(str, (784, *self.hidden, 10))))
        extras = [f"dropout {self.dropout}"] * bool(self.dropout) + [f"shifts {self.shift} px"] * bool(self.shift)
        return " ".join([net, "ReLU", *([", ".join(extras)] if extras else [])])


RECIPES = {
    "cpu": {"mlp": Recipe(hidden=(256, 128)), "cnn": Recipe(hidden=(128,), channels=(32, 64))},
    "gpu": {"mlp": Recipe(hidden=(512, 256), dropout=0.2, shift=2, lr=2e-3, weight_decay=1e-4),
            "cnn": Recipe(hidden=(128,), channels=(32, 64), dropout=0.2, shift=2, lr=2e-3, weight_decay=1e-4)},
}
CONTENDERS = {  # pairs side by side; the torch-* ones are the references of the ratio columns
    "cpu": ("ours-adam", "torch-adam", "ours-sgd", "torch-sgd", "sklearn-adam"),
    "gpu": ("ours-adamw", "torch-adamw", "ours-eager", "torch-graph"),
}
REFERENCES = {"cpu": ("torch-adam", "torch-sgd"), "gpu": ("torch-adamw", "torch-graph")}
MOMENTUM_LR = 0.05


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


def layer_macs(recipe: Recipe) -> list[int]:
    """Multiply-adds per sample of each parametrised layer, in order."""
    macs, side, c = [], 28, 1
    for f in recipe.channels:  # 3x3 same-padding conv, then 2x2 pool
        macs.append(side * side * 9 * c * f)
        side, c = side // 2, f
    sizes = (side * side * c, *recipe.hidden, 10)
    return macs + [a * b for a, b in zip(sizes, sizes[1:])]


def epoch_gflop(n: int, recipe: Recipe) -> float:
    """Forward 2 flops per multiply-add; backward twice that, minus the first layer's
    input gradient, which nobody computes."""
    macs = layer_macs(recipe)
    return n * (6 * sum(macs) - 2 * macs[0]) / 1e9


def gemm_peak(device: str) -> float:
    """Best float32 GFLOP/s of one large matrix product on this machine, now: 2048^3
    with NumPy on the CPU; 8192^3 with CuPy on a GPU (TF32 off, CUDA events, median of 10)."""
    if device == "cpu":
        a = np.random.default_rng(0).random((2048, 2048), dtype=np.float32)
        return 2 * 2048 ** 3 / min(_timed(lambda: a @ a) for _ in range(7)) / 1e9
    import cupy

    a = cupy.random.default_rng(0).random((8192, 8192), dtype=np.float32)
    for _ in range(3):
        a @ a
    start, stop = cupy.cuda.Event(), cupy.cuda.Event()
    times = []
    for _ in range(10):
        start.record()
        a @ a
        stop.record()
        stop.synchronize()
        times.append(cupy.cuda.get_elapsed_time(start, stop) / 1e3)
    return 2 * 8192 ** 3 / statistics.median(times) / 1e9


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def our_model(recipe: Recipe, x, device: str, graphs: bool = True):
    """This project's net for `recipe` on `device`, normalised for x, initialised from
    seed 0 -> (model, the rng to go on with)."""
    import dataclasses

    from nn.backend import select
    from nn.model import Sequential, cnn_spec, mlp_spec

    if recipe.channels:
        spec = cnn_spec((28, 28), recipe.channels, recipe.hidden, recipe.dropout)
    else:
        spec = mlp_spec((28, 28), list(recipe.hidden), dropout=recipe.dropout)
    spec["normalize"] = {"mean": float(x.mean()), "std": float(x.std())}
    backend = dataclasses.replace(select(device), use_graphs=graphs)
    model = Sequential(spec, backend=backend)
    rng = np.random.default_rng(0)
    model.init_params(rng)
    return model, rng


def ours(name, device, data, recipe):
    """This project -> (run(report), test_accuracy(), device memory in MiB or None)."""
    from nn.optim import OPTIMIZERS, Constant
    from nn.train import FitOptions, fit

    x, y, xt, yt = data
    model, rng = our_model(recipe, x, device, graphs=name != "ours-eager")
    opt_name = {"ours-adam": "adam", "ours-sgd": "sgd"}.get(name, "adamw")
    kw = {"momentum": 0.9} if opt_name == "sgd" else {"weight_decay": recipe.weight_decay}
    opt = OPTIMIZERS[opt_name](model.params_flat, model.grads_flat, n_decayed=model.n_decayed,
                               backend=model.backend, **kw)
    schedule = Constant(recipe.lr if opt_name != "sgd" else MOMENTUM_LR, 10 ** 12)

    def run(report):  # one fit, paused after each epoch: the training pass, not its one-sample validation
        fit(model, opt, schedule, x, y, xt[:1], yt[:1],
            FitOptions(epochs=10 ** 6, batch_size=BATCH, shift=recipe.shift, progress=False), rng,
            on_epoch=lambda record: report(record["seconds"]))

    def memory():
        if model.backend.is_gpu:
            return model.backend.xp.get_default_memory_pool().total_bytes() / 2 ** 20
        return None

    return run, lambda: float((model.predict(xt) == yt).mean()), memory


def torch_net(recipe: Recipe):
    import torch

    layers, c = [], 1
    for f in recipe.channels:
        layers += [torch.nn.Conv2d(c, f, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2)]
        c = f
    if recipe.channels:
        layers.append(torch.nn.Flatten())
    sizes = (49 * c if recipe.channels else 784, *recipe.hidden, 10)
    for a, b in zip(sizes, sizes[1:]):
        layers += [torch.nn.Linear(a, b), torch.nn.ReLU()] + [torch.nn.Dropout(recipe.dropout)] * bool(recipe.dropout)
    return torch.nn.Sequential(*layers[:-2 if recipe.dropout else -1])


def pytorch(name, device, data, recipe):
    """PyTorch, the same net, data and optimiser -> (run(report), test_accuracy(), device MiB)."""
    import torch

    torch.manual_seed(0)
    x, y, xt, yt = data
    mean, std = float(x.mean()), float(x.std())
    shape = (1, 28, 28) if recipe.channels else (-1,)
    model = torch_net(recipe)
    if device == "cpu":
        torch.set_num_threads(os.cpu_count() or 1)
        xs, xts = (torch.from_numpy(normalised(a, mean, std, shape)) for a in (x, xt))
        ys = torch.from_numpy(y.astype(np.int64))
        opt = (torch.optim.Adam(model.parameters(), lr=recipe.lr) if name == "torch-adam"
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

        return _epochs(one_epoch), test_accuracy, lambda: None
    return _pytorch_cuda(name, model, data, recipe, mean, std, shape)


def _pytorch_cuda(name, model, data, recipe, mean, std, shape, dev="cuda"):
    """PyTorch CUDA: data resident as uint8; per epoch a permutation and shifts drawn on
    the GPU; per batch one gather (shift as an index offset into padded images)."""
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = True
    dev = torch.device(dev)
    x, y, xt, yt = data
    s, n = recipe.shift, len(x)
    images = torch.nn.functional.pad(torch.from_numpy(x).to(dev), (s, s, s, s))  # (N, 28+2s, 28+2s) uint8
    labels = torch.from_numpy(y.astype(np.int64)).to(dev)
    grid = torch.arange(28, device=dev)
    model = model.to(dev)
    graph = name == "torch-graph"
    opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay, fused=True,
                            capturable=graph)
    loss_fn = torch.nn.CrossEntropyLoss()
    loss_sum = torch.zeros((), device=dev)

    def step(plan):  # plan: (3, B) int64 rows: sample index, dy, dx
        idx, dy, dx = plan
        rows = (grid[None, :] - dy[:, None] + s)[:, :, None]
        cols = (grid[None, :] - dx[:, None] + s)[:, None, :]
        xb = (images[idx[:, None, None], rows, cols].float() - mean) / std
        loss = loss_fn(model(xb.reshape(len(idx), *shape)), labels[idx])
        loss.backward()
        opt.step()
        loss_sum.add_(loss.detach())

    def draw():
        return torch.stack([torch.randperm(n, device=dev), torch.randint(-s, s + 1, (n,), device=dev),
                            torch.randint(-s, s + 1, (n,), device=dev)])

    full = n // BATCH
    replay = None
    if graph:  # warm up on a side stream, then capture one full-batch step (PyTorch's documented recipe)
        static = torch.zeros((3, BATCH), dtype=torch.int64, device=dev)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                static.copy_(draw()[:, :BATCH])
                opt.zero_grad(set_to_none=True)
                step(static)
        torch.cuda.current_stream().wait_stream(side)
        cuda_graph = torch.cuda.CUDAGraph()
        opt.zero_grad(set_to_none=True)
        with torch.cuda.graph(cuda_graph):
            step(static)

        def replay(batch):
            static.copy_(batch)
            cuda_graph.replay()

    def one_epoch():
        torch.cuda.synchronize()
        start = time.perf_counter()
        plan = draw()
        for b in range(full):
            batch = plan[:, b * BATCH:(b + 1) * BATCH]
            if replay:
                replay(batch)
            else:
                opt.zero_grad(set_to_none=True)
                step(batch)
        if full * BATCH < n:  # the short last batch, eagerly (gradients zeroed, not dropped, under a graph)
            opt.zero_grad(set_to_none=not graph)
            step(plan[:, full * BATCH:])
        torch.cuda.synchronize()
        return time.perf_counter() - start

    def test_accuracy():
        model.eval()
        with torch.no_grad():
            xs = torch.from_numpy(normalised(xt, mean, std, shape)).to(dev)
            return float((model(xs).argmax(1).cpu().numpy() == yt).mean())

    return _epochs(one_epoch), test_accuracy, lambda: torch.cuda.max_memory_allocated() / 2 ** 20


def sklearn(name, device, data, recipe):
    """scikit-learn's MLPClassifier (Adam), one partial_fit pass per epoch."""
    import warnings

    from sklearn.neural_network import MLPClassifier

    x, y, xt, yt = data
    mean, std = float(x.mean()), float(x.std())
    xs = normalised(x, mean, std)
    clf = MLPClassifier(recipe.hidden, solver="adam", batch_size=BATCH, learning_rate_init=recipe.lr, alpha=0.0,
                        random_state=0)

    def one_epoch():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "maximum iterations reached": one pass is what we ask
            return _timed(lambda: clf.partial_fit(xs, y, classes=np.arange(10)))

    return _epochs(one_epoch), lambda: float((clf.predict(normalised(xt, mean, std)) == yt).mean()), lambda: None


def _epochs(one_epoch):
    """run(report) for a contender that trains one epoch per call."""
    def run(report):
        while report(one_epoch()):
            pass
    return run


FAMILIES = {"ours": ours, "torch": pytorch, "sklearn": sklearn}


def child(name, device, net):
    """A contender's process: set up, say "ready", then train one epoch per "epoch" line
    read (answering with its seconds); at end of input, answer with test accuracy and
    peak memory."""
    data = load_data()
    run, test_accuracy, device_mib = FAMILIES[name.split("-")[0]](name, device, data, RECIPES[device][net])
    print("ready", flush=True)
    lines = iter(sys.stdin)

    def report(seconds):  # answer, then wait for the next turn; False at end of input
        print(json.dumps(seconds), flush=True)
        return next(lines, None) is not None

    if next(lines, None) is not None:
        run(report)
    # the training's peak, read before the test-set pass; KiB -> MiB on Linux
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = {"peak_rss_mib": peak_rss, "device_mib": device_mib(), "n_train": len(data[0])}
    print(json.dumps({**result, "test_accuracy": test_accuracy()}), flush=True)


def child_env(name: str, device: str) -> dict[str, str]:
    """This project on the CPU runs pinned, as `dvc repro` runs it (harness/pins.py: one BLAS
    thread, OpenBLAS's Haswell kernel on AVX2 CPUs; nn/shards.py then puts a step's shards on
    the cores); the others run as they come, on all the cores."""
    from harness import pins

    if name.startswith("ours") and device == "cpu":
        return {**os.environ, **pins.pinned(os.environ, platform.machine(), pins.cpu_flags())}
    return dict(os.environ)


class Contender:
    """The parent's handle on one child process."""

    def __init__(self, name, args):
        self.name, self.log = name, tempfile.TemporaryFile(mode="w+")
        cmd = [sys.executable, __file__, "--child", name, "--device", args.device, "--net", args.net]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, text=True, stdin=subprocess.PIPE, env=child_env(name, args.device),
                                     stdout=subprocess.PIPE, stderr=self.log)
        self._answer()  # "ready"

    def _answer(self) -> str:
        line = self.proc.stdout.readline()
        if not line:
            self.log.seek(0)
            raise SystemExit(f"error: the {self.name} run failed:\n{self.log.read()[-3000:]}")
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


def device_name(device: str) -> str:
    if device == "cpu":
        return f"{platform.machine()}, {os.cpu_count()} cores"
    from nn.backend import select

    return select("gpu").device_name


COMMITTED = ROOT / "benchmarks" / "results"
SCRATCH = COMMITTED / "scratch"


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python benchmarks/mlp_epoch.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    known = sorted({c for cs in CONTENDERS.values() for c in cs})
    ap.add_argument("--epochs", type=int, default=11,
                    help="epochs per contender (default 11); the first is dropped as warm-up")
    ap.add_argument("--only", nargs="*", choices=known, metavar="NAME",
                    help=f"the contenders to run (default all of the device's): {', '.join(known)}")
    ap.add_argument("--device", default="cpu", choices=("cpu", "gpu"), help="cpu (default) or gpu")
    ap.add_argument("--net", default="mlp", choices=("mlp", "cnn"), help="mlp (default) or cnn")
    ap.add_argument("--pause", type=float, default=0.25,
                    help="seconds between two contenders' epochs, for the last one's thread pool to go idle "
                         "(default 0.25)")
    where = ap.add_mutually_exclusive_group()
    where.add_argument("--out", help="report path without suffix (default benchmarks/results/scratch/<net>_<device>)")
    where.add_argument("--update", action="store_true",
                       help="replace the committed benchmarks/results/<net>_<device>.{md,json}")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return child(args.child, args.device, args.net)
    out = report_path(args.out, args.update, args.net, args.device)
    recipe = RECIPES[args.device][args.net]

    source = data_source()
    names = [name for name in args.only or CONTENDERS[args.device]
             if name in CONTENDERS[args.device] and runnable(name, args.net)]
    contenders = []
    for name in names:  # a contender that cannot start (no CUDA graphs there, say) is left out, and said so
        try:
            contenders.append(Contender(name, args))
        except SystemExit as exc:
            print(f"skip {name}: {exc}", file=sys.stderr)
    names = [c.name for c in contenders]
    peaks = [gemm_peak(args.device)]
    times: dict[str, list[float]] = {name: [] for name in names}
    for epoch in range(1, args.epochs + 1):  # A B C, C B A, A B C, ...: drift hits neighbours alike
        for c in contenders if epoch % 2 else contenders[::-1]:
            time.sleep(args.pause)
            times[c.name].append(c.epoch())
        print(f"epoch {epoch}: " + "  ".join(f"{n} {t[-1]:.3f} s" for n, t in times.items()), file=sys.stderr)
    peaks.append(gemm_peak(args.device))
    finals = {c.name: c.finish() for c in contenders}
    peak = max(peaks)
    gflop = epoch_gflop(finals[names[0]]["n_train"], recipe) if names else 0.0
    rows = [summarise(name, times, finals[name], gflop, peak, REFERENCES[args.device]) for name in names]
    meta = {"command": " ".join(["python benchmarks/mlp_epoch.py", *(argv or sys.argv[1:])]),
            "machine": f"{device_name(args.device)}, Python {platform.python_version()}"
                       + ("; ours pinned as `dvc repro` runs it (harness/pins.py)" if args.device == "cpu" else ""),
            "data": source, "epochs": args.epochs, "net": recipe.describe(), "batch": BATCH,
            "pause_s": args.pause, "gemm_peak_gflops": peak, "gflop_per_epoch": gflop, "device": args.device,
            "references": list(REFERENCES[args.device])}
    write_report(out, meta, rows)


def report_path(out: str | None, update: bool, net: str, device: str) -> Path:
    """Where the report goes (without suffix): --out, else the committed results with
    --update, else the git-ignored scratch folder."""
    if out:
        return Path(out)
    return (COMMITTED if update else SCRATCH) / f"{net}_{device}"


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


def summarise(name: str, times: dict, final: dict, gflop: float, peak: float,
              references=REFERENCES["cpu"]) -> dict:
    """One table row; ratios to PyTorch are medians of epoch-by-epoch ratios (epoch i against epoch i)."""
    own = measured(times[name])
    row = {"name": name, "min_s": min(own), "median_s": statistics.median(own), **final,
           "epoch_seconds": times[name]}
    row["gflops"] = gflop / row["median_s"]
    row["peak_fraction"] = row["gflops"] / peak
    for ref in references:
        if ref in times:
            row[f"vs_{ref}"] = statistics.median(a / b for a, b in zip(own, measured(times[ref])))
    return row


def write_report(out: Path, meta: dict, rows: list[dict]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    (out.parent / f"{out.name}.json").write_text(json.dumps({"meta": meta, "results": rows}, indent=2) + "\n")
    refs = meta["references"]
    gpu = meta["device"] == "gpu"
    lines = [f"`{meta['command']}` — {meta['machine']}; data: {meta['data']}; {meta['net']}, batch "
             f"{meta['batch']}; {meta['epochs']} epochs per contender, taken in turn epoch by epoch, "
             f"the order reversed every other epoch "
             f"(the first of each dropped as warm-up; ratios to PyTorch are medians of epoch-by-epoch ratios); "
             f"best fp32 matrix-product peak "
             f"{meta['gemm_peak_gflops']:.0f} GFLOP/s; {meta['gflop_per_epoch']:.1f} GFLOP per epoch.",
             "",
             "| run | s/epoch (median) | s/epoch (min) | GFLOP/s | % of peak | "
             + " | ".join(f"vs {r}" for r in refs)
             + " | test acc | peak RSS MiB (training) |" + (" GPU MiB (training) |" if gpu else ""),
             "|---|---|---|---|---|" + "---|" * len(refs) + "---|---|" + ("---|" if gpu else "")]
    for r in rows:
        ratio = [f"{r[f'vs_{k}']:.2f}×" if f"vs_{k}" in r else "–" for k in refs]
        memory = f" {r['device_mib']:.0f} |" if gpu and r.get("device_mib") is not None else (" – |" if gpu else "")
        lines.append(f"| {r['name']} | {r['median_s']:.3f} | {r['min_s']:.3f} | {r['gflops']:.0f} | "
                     f"{100 * r['peak_fraction']:.0f} % | " + " | ".join(ratio) + " | "
                     f"{100 * r['test_accuracy']:.2f} % | {r['peak_rss_mib']:.0f} |" + memory)
    (out.parent / f"{out.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    shown = out.resolve().relative_to(ROOT) if out.resolve().is_relative_to(ROOT) else out
    note = (" (scratch, git-ignored; --update replaces the committed tables)"
            if out.resolve().parent == SCRATCH.resolve() else "")
    print(f"\nwrote {shown}.md and {shown}.json{note}")


if __name__ == "__main__":
    main()
