"""Trials per minute of `python -m sweep`: the same grid on one 1-CPU Ray node, on two 1-CPU
nodes, and through DVC's own queue (`dvc exp run --queue` + `NN_THREADS=1 dvc queue start -j 2`)
on the same machine; and the cost of a trial over a plain `dvc exp run` of the same point.

    python benchmarks/sweep_scaling.py                  # 16 points (train.seed=range(1,17)), 3 rounds
    python benchmarks/sweep_scaling.py --points 4 --rounds 1

16 points, a 4 x 4 grid's worth, so that a sweep's fixed cost (Python and Ray's client starting,
the address check, the plan, the HEAD bundle, the table: a few seconds) weighs as it does in a
real grid, not as in a toy one.

The project is a git clone of this repository's HEAD on the bundled 8x8 digits (the tests' small
params: 6 epochs of a 32-unit network), run once and pushed to a DVC remote in a scratch folder
(seeds from 1: seed 0 is the committed run's, whose unchanged model would spare plots its rerun);
every scenario starts from a fresh clone of it, a fresh copy of that remote and fresh node HOMEs
(so no run cache of an earlier scenario is restored in place of training). Each Ray node is a
`ray start --block` on its own loopback address, held to one core with `taskset` (one node: core
0; two nodes: cores 0 and 1) and given one CPU; token authentication on. The plain runs are `dvc
exp run -S ...` one after the other in the workspace, on core 0, `NN_THREADS=1`; then two at a
time, one on each core, in two copies of the project: what two independent runs get out of this
machine - the ceiling for two 1-CPU nodes on it. The queue is left to the machine's two cores.
The driver (the sweep's command) is not pinned.

Per trial: `plain` is a plain `dvc exp run` of a point (median); `trial` the median of a trial's
own time on its node (clone, dvc exp run --pull, dvc push, bundle; the sweep's per-trial lines);
`all in` the one-node sweep's whole wall time over its points (Ray's start-up, scheduling, and
the landing of each trial included). Run by hand, when the machine is otherwise idle; not a test.
The CPU that other processes use meanwhile is measured (Others): rounds are taken until --rounds
of them were quiet (other processes kept under a tenth of a core busy in every phase; at most
--max-rounds), and the medians are of the quiet rounds.

Writes benchmarks/results/scratch/sweep.{md,json} (git-ignored), or with --update the committed
benchmarks/results/sweep.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
DIGITS = {"fetch": {"dataset": "digits"}, "prepare": {"val_size": 200}, "model": {"hidden": [32]},
          "train": {"epochs": 6, "batch_size": 32, "shift": 0, "warmup_epochs": 0},
          "plots": {"samples": 9, "misclassified": 4, "dpi": 50}}
BIN = Path(sys.executable).parent
QUIET = 0.1  # cores: a round in which other processes kept more busy (on average, in any phase) is not quoted


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def sh(*args, cwd=None, env=None, check=True) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True)
    if check and proc.returncode:
        sys.exit(f"{' '.join(map(str, args))} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def environment(home: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}", HOME=str(home), DVC_NO_ANALYTICS="1", **extra)
    return env


def baseline(scratch: Path) -> Path:
    """This repository's HEAD, cloned, on the digits, run and pushed -> the clone."""
    import yaml

    base = scratch / "base"
    sh("git", "clone", "-q", ROOT, base)
    sh("git", "config", "user.name", "bench", cwd=base)
    sh("git", "config", "user.email", "bench@localhost", cwd=base)
    params = yaml.safe_load((base / "params.yaml").read_text())
    for section, values in DIGITS.items():
        params[section].update(values)
    (base / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = environment(scratch / "home")
    sh("dvc", "remote", "add", "--local", "-d", "bench", scratch / "remote", cwd=base, env=env)
    sh("dvc", "repro", cwd=base, env=env)
    sh("git", "add", "-A", cwd=base)
    sh("git", "commit", "-qm", "digits", cwd=base)
    sh("dvc", "push", cwd=base, env=env)
    return base


def fresh(base: Path, scratch: Path, name: str) -> Path:
    """A clone of the baseline with its outputs, pointed at its own copy of the remote."""
    where = scratch / name
    shutil.copytree(base, where / "p", symlinks=True)
    shutil.copytree(scratch / "remote", where / "remote")
    sh("dvc", "remote", "modify", "--local", "bench", "url", where / "remote", cwd=where / "p",
       env=environment(scratch / "home"))
    return where / "p"


class Nodes:
    """`ray start --block` nodes on 127.0.0.2, .3, ..., each on one core (taskset), one CPU."""

    def __init__(self, scratch: Path, cores: list[int]) -> None:
        self.temp = Path(tempfile.mkdtemp(prefix="rb", dir="/tmp"))
        self.token = os.urandom(32).hex()
        self.port = free_port()
        self.address = f"127.0.0.2:{self.port}"
        self.procs = []
        for i, core in enumerate(cores):
            ip = f"127.0.0.{2 + i}"
            home = scratch / f"node-{ip}"
            home.mkdir(parents=True, exist_ok=True)
            args = ["taskset", "-c", str(core), BIN / "ray", "start", "--block", f"--node-ip-address={ip}",
                    "--num-cpus=1", "--num-gpus=0", "--object-store-memory=80000000", f"--temp-dir={self.temp}",
                    "--disable-usage-stats",
                    *(f"{flag}={free_port()}" for flag in ("--node-manager-port", "--object-manager-port",
                                                           "--runtime-env-agent-port", "--metrics-export-port",
                                                           "--dashboard-agent-listen-port",
                                                           "--dashboard-agent-grpc-port"))]
            args += ["--head", f"--port={self.port}", "--include-dashboard=false"] if i == 0 else \
                [f"--address={self.address}"]
            log = open(scratch / f"node-{ip}.log", "w")
            self.procs.append((subprocess.Popen([str(a) for a in args], stdout=log, stderr=subprocess.STDOUT,
                                                env=environment(home, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=self.token,
                                                                TMPDIR=str(home)),
                                                start_new_session=True), scratch / f"node-{ip}.log"))
        for proc, log in self.procs:
            while "Ray runtime started." not in log.read_text():
                if proc.poll() is not None:
                    sys.exit(log.read_text()[-2000:])
                time.sleep(0.3)

    def stop(self) -> None:
        for proc, _ in self.procs:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
        shutil.rmtree(self.temp, ignore_errors=True)


class Others(threading.Thread):
    """The CPU seconds that processes other than this benchmark's use meanwhile (another user's
    tests on the machine), sampled every half second: a round they disturb is not quoted."""

    def __init__(self, scratch: Path) -> None:
        super().__init__(daemon=True)
        self.scratch, self.seconds, self.seen, self.stopped = str(scratch), 0.0, {}, threading.Event()

    def ours(self, process, tree: set[int]) -> bool:
        """In this benchmark's tree, or working in its scratch folder (dvc queue's workers leave the tree)."""
        try:
            return process.pid in tree or process.cwd().startswith(self.scratch)
        except psutil.Error:
            return False

    def run(self) -> None:
        me, first = psutil.Process(), True
        while not self.stopped.wait(0.5):
            tree = {me.pid, *(p.pid for p in me.children(recursive=True))}
            for process in psutil.process_iter(["cpu_times"]):
                times = process.info["cpu_times"]
                if times is None or self.ours(process, tree):
                    continue
                used = times.user + times.system
                before = self.seen.get(process.pid, None if first else 0.0)
                if before is not None:
                    self.seconds += max(0.0, used - before)
                self.seen[process.pid] = used
            first = False


def points(n: int) -> list[str]:
    return [f"train.seed={k}" for k in range(1, n + 1)]


def sweep(project: Path, nodes: Nodes, n: int, scratch: Path) -> dict:
    env = environment(scratch / "home", RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=nodes.token)
    started = time.time()
    proc = sh(BIN / "python", "-m", "sweep", "-S", f"train.seed=range(1,{n + 1})", "--address", nodes.address,
              cwd=project, env=env)
    wall = time.time() - started
    trials = [float(s) for s in re.findall(r"landed .* \(([\d.]+) s\)$", proc.stderr, flags=re.M)]
    assert len(trials) == n, proc.stderr
    return {"wall": wall, "trials": trials}


def plain(project: Path, n: int, scratch: Path) -> list[float]:
    env = environment(scratch / "home", NN_THREADS="1")
    times = []
    for override in points(n):
        started = time.time()
        sh("taskset", "-c", "0", BIN / "dvc", "exp", "run", "-S", override, "-S", "train.device=cpu",
           "-S", "evaluate.device=cpu", cwd=project, env=env)
        times.append(time.time() - started)
    return times


def side_by_side(projects: tuple[Path, Path], n: int, scratch: Path) -> float:
    """The plain runs two at a time, one on each core, in two copies of the project -> wall seconds:
    what two independent runs get out of this machine (its ceiling for two 1-CPU nodes)."""
    env = environment(scratch / "home", NN_THREADS="1")
    started = time.time()
    overrides = points(n)
    for i in range(0, n, 2):
        runs = [subprocess.Popen(["taskset", "-c", str(core), BIN / "dvc", "exp", "run", "-S", override,
                                  "-S", "train.device=cpu", "-S", "evaluate.device=cpu"], cwd=project, env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                for core, (project, override) in enumerate(zip(projects, overrides[i:i + 2]))]
        if any(run.wait() for run in runs):
            sys.exit(f"a plain run of {overrides[i:i + 2]} failed")
    return time.time() - started


def queue(project: Path, n: int, scratch: Path) -> float:
    env = environment(scratch / "home", NN_THREADS="1")
    sh("dvc", "exp", "run", "--queue", "-S", f"train.seed=range(1,{n + 1})", "-S", "train.device=cpu",
       "-S", "evaluate.device=cpu", cwd=project, env=env)
    started = time.time()
    with open(scratch / "queue.log", "a") as log:  # its workers outlive the command: no pipe of ours
        subprocess.run([BIN / "dvc", "queue", "start", "-j", "2"], cwd=project, env=env, stdout=log,
                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, check=True)
    done = re.compile(r"^refs/exps/[0-9a-f]{2}/[0-9a-f]{38}/", re.M)  # finished experiments, not the queue's refs
    while len(done.findall(sh("git", "for-each-ref", "--format=%(refname)", "refs/exps", cwd=project).stdout)) < n:
        time.sleep(0.2)
    wall = time.time() - started
    sh("dvc", "queue", "stop", cwd=project, env=env, check=False)
    return wall


def one_round(base: Path, scratch: Path, n: int, k: int, others: Others) -> dict:
    out, busy = {}, {}
    for name in ("plain", "side by side", "one node", "two nodes", "queue"):
        project, before, started = fresh(base, scratch, f"{name.replace(' ', '-')}{k}"), others.seconds, time.time()
        if name == "plain":
            out[name] = plain(project, n, scratch)
        elif name == "side by side":
            out[name] = side_by_side((project, fresh(base, scratch, f"side-by-side-b{k}")), n, scratch)
        elif name == "queue":
            out[name] = queue(project, n, scratch)
        else:
            nodes = Nodes(scratch / f"{name.replace(' ', '-')}{k}", [0] if name == "one node" else [0, 1])
            try:
                out[name] = sweep(project, nodes, n, scratch)
            finally:
                nodes.stop()
        busy[name] = (others.seconds - before) / (time.time() - started)  # cores others kept busy, on average
    out["others"] = busy
    return out


def quiet(round_: dict) -> bool:
    """Whether other processes kept less than a tenth of a core busy in every phase of the round."""
    return max(round_["others"].values()) < QUIET

def table(every: list[dict], n: int, command: str) -> str:
    """The figures: each a median over the quiet rounds (all rounds if none was) of that round's
    own figure - ratios and differences taken within a round, between phases run back to back."""
    rounds = [r for r in every if quiet(r)] or every

    def med(figure) -> float:
        return statistics.median(figure(r) for r in rounds)

    one, two, que = med(lambda r: r["one node"]["wall"]), med(lambda r: r["two nodes"]["wall"]), med(
        lambda r: r["queue"])
    plain_s = med(lambda r: statistics.median(r["plain"]))
    trial_s = med(lambda r: statistics.median(r["one node"]["trials"]))
    over = med(lambda r: statistics.median(r["one node"]["trials"]) - statistics.median(r["plain"]))
    all_in = med(lambda r: r["one node"]["wall"] / n - statistics.median(r["plain"]))
    lines = [f"`{command}` - {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
             f"{n} points (train.seed=range(1,{n + 1})) on the digits; medians of "
             + (f"the {len(rounds)} quiet round{'s' * (len(rounds) > 1)} of {len(every)}" if rounds is not every
                else f"all {len(every)} rounds (none was quiet)")
             + " (other processes kept busy, on average, at most " + ", ".join(
                 f"{max(r['others'].values()):.2f}" for r in rounds) + " of a core in any phase); ratios and "
             "differences are taken within each round.", "",
             "| how | wall s | trials / min | vs one node |", "|---|---|---|---|",
             f"| plain `dvc exp run`, one after another (1 core) | {med(lambda r: sum(r['plain'])):.1f} | "
             f"{60 * n / med(lambda r: sum(r['plain'])):.2f} | |",
             f"| two plain `dvc exp run` side by side (2 cores): this machine's ceiling | "
             f"{med(lambda r: r['side by side']):.1f} | {60 * n / med(lambda r: r['side by side']):.2f} | "
             f"{med(lambda r: sum(r['plain']) / r['side by side']):.2f}× the plain runs |",
             f"| Ray, one 1-CPU node | {one:.1f} | {60 * n / one:.2f} | 1.00× |",
             f"| Ray, two 1-CPU nodes | {two:.1f} | {60 * n / two:.2f} | "
             f"{med(lambda r: r['one node']['wall'] / r['two nodes']['wall']):.2f}× |",
             f"| `dvc queue start -j 2` (2 cores) | {que:.1f} | {60 * n / que:.2f} | "
             f"{med(lambda r: r['one node']['wall'] / r['queue']):.2f}× |",
             "", "Round by round: two nodes over one "
             + ", ".join(f"{r['one node']['wall'] / r['two nodes']['wall']:.2f}×" for r in rounds)
             + "; the machine's ceiling (side by side over the plain runs) "
             + ", ".join(f"{sum(r['plain']) / r['side by side']:.2f}×" for r in rounds) + ".",
             "", "| per trial (each a median of the rounds' medians) | seconds | over plain |", "|---|---|---|",
             f"| plain `dvc exp run` (in place, 1 core) | {plain_s:.2f} | |",
             f"| a trial on its node (clone, run, push, bundle) | {trial_s:.2f} | +{over:.2f} |",
             f"| all in (one-node sweep's wall / points) | {one / n:.2f} | +{all_in:.2f} |"]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--points", type=int, default=16)
    p.add_argument("--rounds", type=int, default=3, help="quiet rounds to take (see Others)")
    p.add_argument("--max-rounds", type=int, default=8, help="rounds at most, quiet or not")
    p.add_argument("--update", action="store_true", help="write the committed benchmarks/results/sweep.{md,json}")
    args = p.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the nodes and remove the scratch folder
    command = "python benchmarks/sweep_scaling.py" + "".join(
        f" --{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "update" and v != p.get_default(k))
    scratch = Path(tempfile.mkdtemp(prefix="sweep-bench-"))
    others = Others(scratch)
    others.start()
    try:
        base = baseline(scratch)
        rounds = []
        while sum(map(quiet, rounds)) < args.rounds and len(rounds) < args.max_rounds:
            load = os.getloadavg()[0]
            rounds.append({"load": load, **one_round(base, scratch, args.points, len(rounds), others)})
            print(f"round {len(rounds)}: {json.dumps(rounds[-1])}", file=sys.stderr)
    finally:
        others.stopped.set()
        shutil.rmtree(scratch, ignore_errors=True)
    folder = ROOT / "benchmarks" / "results" / ("" if args.update else "scratch")
    folder.mkdir(parents=True, exist_ok=True)
    text = table(rounds, args.points, command)
    (folder / "sweep.md").write_text(text)
    (folder / "sweep.json").write_text(json.dumps({"command": command, "points": args.points, "rounds": rounds},
                                                  indent=1) + "\n")
    print(text)
    print(f"wrote {folder / 'sweep.md'} and sweep.json", file=sys.stderr)


if __name__ == "__main__":
    main()
