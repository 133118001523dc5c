"""The CPU step in shards (nn/shards.py) and its workers (nn/workers.py): the same bytes whatever
the threads, processes and cores, the same training as one piece up to float rounding, and no
worker that fails silently or outlives its trainer."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from threadpoolctl import threadpool_info, threadpool_limits

from nn import shards, workers
from nn.model import Sequential, cnn_spec, mlp_spec
from nn.optim import AdamW, Constant
from nn.train import FitOptions, fit

SPECS = {  # dropout and shifts on: every source of randomness of a real run
    "mlp": mlp_spec((12, 12), [48, 24], dropout=0.25),
    "cnn": cnn_spec((12, 12), [6, 8], [16], dropout=0.25),
    "cnn-rgb": cnn_spec((12, 12, 3), [6], [16], dropout=0.25),
}


def data(shape, n=300, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, *shape), dtype=np.uint8), rng.integers(0, 10, n)


def train(spec, threads, batch_size=50, epochs=2) -> Sequential:
    """A few epochs (the last batch shorter than the others) with `threads` threads."""
    x, y = data(spec["input_shape"])
    model = Sequential({**spec, "normalize": {"mean": 127.5, "std": 73.9}})
    rng = np.random.default_rng(1)
    model.init_params(rng)
    opt = AdamW(model.params_flat, model.grads_flat, n_decayed=model.n_decayed, weight_decay=1e-4)
    fit(model, opt, Constant(0.003, 10 ** 6), x, y, x[:40], y[:40],
        FitOptions(epochs=epochs, batch_size=batch_size, shift=1, threads=threads, progress=False), rng)
    return model


def digest(model) -> str:
    return hashlib.sha256(model.params_flat.tobytes()).hexdigest()


@pytest.fixture
def always_shard(monkeypatch):
    """Small networks cut into shards too (they would run in one piece)."""
    monkeypatch.setattr(shards, "MIN_SHARD_FLOP", 1)


@pytest.mark.parametrize("net", SPECS)
def test_the_same_bytes_with_one_or_two_blas_threads_and_any_number_of_workers(net, always_shard, monkeypatch):
    """BLAS on 1 or 2 threads (fit holds it to one), the shards in this process alone or beside
    worker processes or threads: one set of bytes."""
    assert shards.shard_count(Sequential(SPECS[net]), 50) == 2
    seen = {}
    for blas in (1, 2):
        with threadpool_limits(limits=blas, user_api="blas"):
            assert {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"} == {blas}
            for kind in ("processes", "threads"):
                monkeypatch.setattr(workers, "WORKERS", kind)
                for threads in (1, 2, 3):
                    seen[blas, kind, threads] = digest(train(SPECS[net], threads))
    assert len(set(seen.values())) == 1, seen


@pytest.mark.parametrize("net", ["mlp", "cnn"])
def test_shards_train_as_the_whole_batch_up_to_rounding(net, monkeypatch):
    """Two shards (summed gradients, per-sample dropout bits of the whole batch) against one."""
    monkeypatch.setattr(shards, "MIN_SHARD_FLOP", 10 ** 30)
    whole = train(SPECS[net], 1, epochs=1)
    monkeypatch.setattr(shards, "MIN_SHARD_FLOP", 1)
    cut = train(SPECS[net], 2, epochs=1)
    assert digest(whole) != digest(cut)  # other sums, other rounding...
    np.testing.assert_allclose(cut.params_flat, whole.params_flat, rtol=2e-4, atol=2e-5)  # ... the same training


def test_the_shard_count_comes_from_the_network_and_the_batch():
    def count(spec, batch):
        return shards.shard_count(Sequential(spec), batch)

    assert count(mlp_spec((28, 28), [32]), 128) == 1  # 20 MFLOP a step: not worth the hand-overs
    assert count(mlp_spec((28, 28), [256, 128]), 128) == 2  # the benchmark's MLP: 0.18 GFLOP
    assert count(mlp_spec((28, 28), [512, 256]), 128) == 2  # the pipeline's MLP: 0.41 GFLOP
    assert count(cnn_spec((28, 28), [32, 64], [128]), 128) == 2
    assert count(cnn_spec((28, 28), [32, 64], [128]), 1) == 1  # never more shards than rows
    assert shards.bounds(50, 2) == [0, 25, 50] and shards.bounds(7, 2) == [0, 4, 7] and shards.bounds(1, 2) == [0, 1]


def test_nn_threads_caps_the_pool_and_a_bad_value_is_named(monkeypatch):
    monkeypatch.setattr(shards.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    assert shards.default_threads(2) == 2 and shards.default_threads(1) == 1
    monkeypatch.setenv("NN_THREADS", "1")
    assert shards.default_threads(2) == 1
    monkeypatch.setenv("NN_THREADS", "two")
    with pytest.raises(ValueError, match="NN_THREADS must be a whole number of at least 1"):
        shards.default_threads(2)


@pytest.fixture
def forked(monkeypatch):
    """The pids of the shard workers forked during the test."""
    pids, fork = [], os.fork

    def recording_fork():
        pid = fork()
        if pid:
            pids.append(pid)
        return pid

    monkeypatch.setattr(workers.os, "fork", recording_fork)
    monkeypatch.setattr(workers, "WORKERS", "processes")
    return pids


def reaped(pid: int) -> bool:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return False


def test_workers_are_forked_for_the_run_and_reaped_after_it(forked, always_shard):
    train(SPECS["mlp"], 2, epochs=1)
    assert len(forked) == 1 and reaped(forked[0])


def fail_in_worker(monkeypatch, fail):
    """Make shard 1 - a worker's - call fail() from the third step on."""
    parent, shard = os.getpid(), shards.ShardedStep._shard

    def failing(self, k, edges, rows):
        if os.getpid() != parent and int(self.step[0]) >= 2:
            fail()
        shard(self, k, edges, rows)

    monkeypatch.setattr(shards.ShardedStep, "_shard", failing)


def raise_memory_error():
    raise MemoryError


def raise_bug():
    raise ZeroDivisionError("a bug in a worker")


@pytest.mark.parametrize("fail,error,message", [
    (raise_memory_error, MemoryError, "a shard worker of the training step ran out of memory"),
    (lambda: os.kill(os.getpid(), signal.SIGKILL), MemoryError, r"was killed \(SIGKILL"),
    (raise_bug, RuntimeError, "failed; its traceback is above"),
])
def test_a_failing_worker_stops_training_with_an_error_and_is_reaped(forked, always_shard, monkeypatch, capfd, fail,
                                                                   error, message):
    fail_in_worker(monkeypatch, fail)
    with pytest.raises(error, match=message):
        train(SPECS["mlp"], 2, epochs=1)
    assert len(forked) == 1 and reaped(forked[0])
    if fail is raise_bug:
        assert "ZeroDivisionError: a bug in a worker" in capfd.readouterr().err


TRAIN_UNTIL_STOPPED = textwrap.dedent("""
    import numpy as np
    from nn import shards, workers
    from nn.model import Sequential, mlp_spec
    from nn.optim import Adam, Constant
    from nn.train import FitOptions, fit

    shards.MIN_SHARD_FLOP = 1
    model = Sequential({**mlp_spec((12, 12), [64]), "normalize": {"mean": 127.5, "std": 73.9}})
    model.init_params(np.random.default_rng(0))
    rng = np.random.default_rng(1)
    x, y = rng.integers(0, 256, (20000, 12, 12), dtype=np.uint8), rng.integers(0, 10, 20000)

    def started(record):
        print("epoch", record["epoch"], flush=True)

    fit(model, Adam(model.params_flat, model.grads_flat), Constant(1e-3, 10 ** 9), x, y, x[:100], y[:100],
        FitOptions(epochs=10 ** 6, batch_size=32, threads=2, progress=False), rng, on_epoch=started)
""")


def group_is_gone(pgid: int, within: float = 20) -> bool:
    deadline = time.time() + within
    while time.time() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("stop", [
    pytest.param(lambda p: os.killpg(p.pid, signal.SIGINT), id="ctrl-c-to-the-group"),
    pytest.param(lambda p: os.killpg(p.pid, signal.SIGTERM), id="sigterm-to-the-group"),
    pytest.param(lambda p: os.kill(p.pid, signal.SIGKILL), id="sigkill-to-the-trainer-alone"),
])
def test_no_worker_outlives_a_stopped_training(stop):
    """Workers ignore stop signals and leave when the trainer closes their pipe - as it stops,
    or as the kernel closes it for a killed trainer."""
    proc = subprocess.Popen([sys.executable, "-c", TRAIN_UNTIL_STOPPED], cwd=os.getcwd(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        assert proc.stdout.readline().startswith("epoch 1"), proc.stderr.read()
        stop(proc)
        try:
            proc.wait(timeout=60)  # ~0.1 s alone; the suite's busiest minutes (Ray nodes beside it) took over 20
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail("the training did not stop in 60 s; its stderr:\n" + proc.communicate()[1][-3000:])
        assert group_is_gone(proc.pid), "a worker outlived the trainer"
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
