"""Where a training step's time goes: median milliseconds per layer, forward and
backward, plus the loss and the optimiser step, for the benchmark MLP or CNN.

    python benchmarks/layer_times.py                 # the 784-256-128-10 MLP, Adam, batch 128
    python benchmarks/layer_times.py --net cnn       # conv32-pool-conv64-pool-fc128-10
    python benchmarks/layer_times.py --net cnn --steps 200 --device gpu

Batches come from data/prepared/train.npz when present (random MNIST-sized data
otherwise), in order, as in an epoch. The first --warmup steps are not counted.
Each layer is timed on its own, on one thread (BLAS too, as in `fit`), so on a GPU
the numbers include a synchronisation per layer (they show the split, not the speed).
On the CPU the last lines time whole steps: as `fit` runs them (the batch in shards side by side,
nn/shards.py) and in one piece on one core. Run by hand; it is not a test.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import defaultdict

import numpy as np
from mlp_epoch import BATCH, RECIPES, load_data, our_model

from nn.losses import SoftmaxCrossEntropy
from nn.optim import Adam


def step_times(net: str, steps: int, warmup: int, device: str) -> dict[str, list[float]]:
    x, y, _, _ = load_data()
    recipe = RECIPES["cpu"][net]  # the plain networks, whatever the device: the split, not the speed
    model, rng = our_model(recipe, x, device)
    backend = model.backend
    opt = Adam(model.params_flat, model.grads_flat, backend=backend)
    loss_fn = SoftmaxCrossEntropy(backend)
    times: dict[str, list[float]] = defaultdict(list)

    def timed(name, fn, *args):
        start = time.perf_counter()
        out = fn(*args)
        backend.synchronize()
        times[name].append(time.perf_counter() - start)
        return out

    n_batches = len(x) // BATCH
    for step in range(warmup + steps):
        rows = slice((step % n_batches) * BATCH, (step % n_batches + 1) * BATCH)
        h = timed("prepare", model.prepare, x[rows])
        for i, layer in enumerate(model.layers):
            h = timed(f"{i} {layer.describe()}|forward", layer.forward, h, True, rng)
        timed("loss|forward", loss_fn.forward, h, backend.to_device(y[rows].astype(np.intp)))
        grad = timed("loss|backward", loss_fn.backward)
        for i in reversed(range(len(model.layers))):
            layer = model.layers[i]
            grad = timed(f"{i} {layer.describe()}|backward", layer.backward, grad)
            if grad is None:
                break
        timed("Adam step", opt.step, recipe.lr)
        if step == warmup - 1:
            times.clear()
    return times


def whole_steps(net: str, steps: int, warmup: int) -> dict[str, float]:
    """CPU: median ms of a whole training step as `fit` runs it (nn/shards.py: its shards side by
    side, BLAS on one thread), and of the same step in one piece on one core."""
    from nn.feed import Feed
    from nn.shards import ShardedStep, default_threads, one_blas_thread, shard_count

    x, y, _, _ = load_data()
    model, rng = our_model(RECIPES["cpu"][net], x, "cpu")
    shards = shard_count(model, BATCH)
    result = {}
    configs = {"as fit runs it": (shards, default_threads(shards)), "in one piece, one core": (1, 1)}
    if configs["as fit runs it"] == (1, 1):  # the same step: timed once
        configs = {"as fit runs it, in one piece, one core": (1, 1)}
    for label, (n_shards, threads) in configs.items():
        opt = Adam(model.params_flat, model.grads_flat, backend=model.backend)
        feed = Feed(model, x[:BATCH * (warmup + steps)], y[:BATCH * (warmup + steps)], BATCH)
        with one_blas_thread(), ShardedStep(model, SoftmaxCrossEntropy(model.backend), opt, feed, n_shards,
                                            threads) as step:
            feed.load(feed.draw(rng))
            opt.schedule([1e-3] * feed.steps)
            times = []
            for _ in range(feed.steps):
                start = time.perf_counter()
                step(BATCH)
                times.append(time.perf_counter() - start)
        result[f"whole step {label} ({n_shards} shard{'s' * (n_shards > 1)}, {threads} core"
               f"{'s' * (threads > 1)})"] = 1e3 * statistics.median(times[warmup:])
    return result


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python benchmarks/layer_times.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--net", default="mlp", choices=("mlp", "cnn"), help="mlp (default) or cnn")
    ap.add_argument("--steps", type=int, default=100, help="steps timed (default 100)")
    ap.add_argument("--warmup", type=int, default=10, help="steps run first and not timed (default 10)")
    ap.add_argument("--device", default="cpu", choices=("cpu", "gpu"), help="cpu (default) or gpu")
    args = ap.parse_args(argv)
    from nn.shards import one_blas_thread

    with one_blas_thread():  # as fit runs: BLAS on one thread (harness/pins.py)
        times = step_times(args.net, args.steps, args.warmup, args.device)
    rows: dict[str, dict[str, float]] = defaultdict(dict)
    for key, values in times.items():
        name, _, phase = key.partition("|")
        rows[name][phase or "total"] = 1e3 * statistics.median(values)
    total = sum(ms for row in rows.values() for ms in row.values())
    print(f"{args.net}, batch {BATCH}, {args.device}: median ms per step over {args.steps} steps "
          f"(sum {total:.2f} ms)\n")
    width = max(map(len, rows)) + 2
    print(f"{'':{width}}{'forward':>10}{'backward':>10}{'share':>8}")
    for name, row in rows.items():  # rows without a phase (prepare, the Adam step) count as forward
        fwd, bwd = row.get("forward", row.get("total", 0.0)), row.get("backward", 0.0)
        print(f"{name:{width}}{fwd:>10.3f}{bwd:>10.3f}{100 * (fwd + bwd) / total:>7.1f}%")
    if args.device == "cpu":
        print()
        for label, ms in whole_steps(args.net, args.steps, args.warmup).items():
            print(f"{label}: {ms:.2f} ms")


if __name__ == "__main__":
    main()
