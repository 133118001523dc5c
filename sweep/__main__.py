"""sweep: a grid of DVC experiments, run as trials on Ray (not a DVC stage).

    python -m sweep -S 'train.lr=0.001,0.002' -S 'model.dropout=0,0.2'          # a local Ray
    python -m sweep -S 'train.lr=0.001,0.002' --address 10.0.0.5:6379           # a cluster

-S takes what `dvc exp run -S` takes (comma lists, range(start,stop,step), choice(a,b));
the sweep runs the cartesian product of the values: one trial per point, each a real DVC
experiment of your current commit, named after its values (lr0.001-dropout0-1f3a9c).

With no --address it starts Ray on this machine for the sweep alone (loopback only, a
token of its own) and stops it after. With --address it joins the cluster whose head
is at HOST:PORT - run it on a node of that cluster, with the cluster's token in
RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH (docs/sweeps.md: how to start one).

Each trial clones the committed HEAD on its node (a git bundle Ray carries), runs
`dvc exp run` there, pushes the outputs to the default DVC remote and sends its
experiment back: when the sweep ends, `dvc exp show` lists every point, and
`dvc exp apply NAME && dvc pull` restores its model. So: commit first (uncommitted
changes to tracked files are refused), and give the nodes a DVC remote they all
reach (a local folder serves a local Ray only).

A trial whose node dies is rerun on another node (--retries); a trial that fails by
itself (a bad value) fails alone, and the sweep exits 1 naming it. Points that are
already experiments of this commit (same params) are not run again. Each trial's
output: .dvc/tmp/sweep/NAME.log; Ray's: .dvc/tmp/sweep/ray.log.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
import time

from harness.command import Parser, run
from harness.errors import StageError, one_line
from sweep import grid, repo
from sweep.report import Progress, accuracy, table


def _count(least: int):
    def count(text: str) -> int:
        if not text.isdigit() or int(text) < least:
            raise argparse.ArgumentTypeError(f"must be a whole number of at least {least} (got {text!r})")
        return int(text)
    return count


def parser() -> Parser:
    p = Parser(prog="python -m sweep", description=__doc__.strip())
    p.add_argument("-S", "--set-param", dest="set", action="append", default=[], metavar="KEY=VALUES",
                   help="a params.yaml key and its values, as dvc exp run -S takes them (repeat for more keys)")
    p.add_argument("--address", metavar="HOST:PORT", help="a Ray cluster's head (default: a local Ray for this sweep)")
    p.add_argument("--device", choices=("cpu", "gpu"), default="cpu",
                   help="train.device and evaluate.device of every trial; gpu asks Ray for a GPU each (default cpu)")
    p.add_argument("--cpus", type=_count(1), default=1, metavar="N",
                   help="CPUs each trial takes from Ray, and its NN_THREADS (default 1)")
    p.add_argument("--retries", type=_count(0), default=3, metavar="N",
                   help="reruns of a trial whose node or worker died (default 3); a trial's own failure is final")
    return p


def plan(args, baseline: str) -> tuple[list[grid.Point], dict[str, str]]:
    """The grid's points, and {name: existing experiment} for those this commit already has."""
    points = grid.points(args.set, args.device, repo.read_at("HEAD", "params.yaml") or "")
    existing = repo.experiments(baseline)
    params = {name: repo.params_at(ref) for name, ref in existing.items()}
    there = {}
    for point in points:
        same = [name for name, p in params.items() if p == point.params]
        if same:
            there[point.name] = same[0]
        elif point.name in existing:
            raise StageError(f"an experiment named {point.name} exists with other params; remove it "
                             f"(dvc exp remove {point.name}) and sweep again")
    return points, there


def land(result: dict, point: grid.Point, baseline: str, remote: str) -> str:
    """The trial's experiment into this repository, checked -> '' or what is wrong."""
    if not result["ok"]:
        return result["error"]
    try:
        ref = repo.land(result["bundle"], point.name, baseline)
    except StageError as exc:
        return str(exc)
    problem = ""
    if repo.params_at(ref) != point.params:
        problem = "its experiment has other params than the point's"
    elif failed := repo.fetch_outputs(ref, remote):
        problem = (f"its outputs did not come from the DVC remote '{remote}' ({failed}): the trial pushed them "
                   "where this machine does not look; give the nodes a remote they all reach (docs/sweeps.md)")
    if problem:
        repo.git("update-ref", "-d", ref)  # not landed: a rerun of the sweep tries it again
    return problem


def report(point: grid.Point, result: dict, problem: str, metrics: dict, row: dict, progress: Progress) -> None:
    """The trial's row of the table (`metrics`: its test metrics, if it landed), and its line."""
    row.update(node=result["node"], state="failed" if problem else "new", error=problem)
    where = result["node"] or "?"
    if problem:
        progress.trial(f"FAILED {point.name}  {point.label()}  on {where}: {problem} "
                       f"(log: {repo.SCRATCH}/{point.name}.log)")
        return
    row.update(accuracy=metrics.get("accuracy"), loss=metrics.get("loss"))
    progress.trial(f"landed {point.name}  {point.label()}  test accuracy {accuracy(row['accuracy'])}  "
                   f"on {where} ({result['seconds']:.1f} s)")
    if result.get("bits") and progress.bits and result["bits"] != progress.bits:
        progress.say(f"warning: {point.name} trained with other bits than this machine would ({result['bits']}; "
                     f"here: {progress.bits}): install the same packages on every node (constraints.txt)")


def dispatch(args, todo: list[grid.Point], baseline: str, remote: tuple[str, dict], rows: dict,
             progress: Progress) -> None:
    """Run `todo` on Ray, landing each trial as it ends (its row in `rows`)."""
    import ray
    import ray.cloudpickle

    from sweep import trial

    ray.cloudpickle.register_pickle_by_value(trial)  # the nodes run this driver's trial code
    task = ray.remote(trial.run_trial).options(num_cpus=args.cpus, num_gpus=int(args.device == "gpu"),
                                               max_retries=args.retries, retry_exceptions=False)
    head = ray.put(repo.bundle(repo.SCRATCH / "head.bundle"))
    author = repo.identity()
    pending = {task.remote(head, baseline, p.name, p.overrides, *remote, author, args.cpus): p for p in todo}
    alive = {n["NodeID"]: n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]}
    checked = time.time()
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1, timeout=2)
        if time.time() - checked > 5:  # a node that left: its trials are rerun elsewhere
            now = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
            for gone in set(alive) - now:
                progress.say(f"node {alive.pop(gone)} left the cluster; Ray reruns its trials on the others")
            checked = time.time()
        for ref in ready:
            point = pending.pop(ref)
            try:
                result = ray.get(ref)
            except ray.exceptions.RayError as exc:  # its retries spent, or Ray could not run it at all
                said = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                result = {"ok": False, "node": None, "seconds": 0, "log": "",
                          "error": f"Ray could not run it ({one_line(said)[:200]})"}
            (repo.SCRATCH / f"{point.name}.log").write_text(result.get("log", ""))
            problem = land(result, point, baseline, remote[0])
            metrics = {} if problem else repo.metrics_at(repo.exp_ref(baseline, point.name))
            report(point, result, problem, metrics, rows[point.name], progress)


def main(args) -> None:
    from sweep import cluster

    logging.getLogger("dvc").setLevel(logging.CRITICAL)  # DVC's own words come back as exceptions

    baseline = repo.check_workspace()
    points, there = plan(args, baseline)
    rows = {p.name: {"name": p.name, "values": {k: p.value(k) for k in p.keys()}, "state": "to run", "node": None}
            for p in points}
    for point in points:
        if point.name in there:
            metrics = repo.metrics_at(repo.exp_ref(baseline, there[point.name]))
            rows[point.name].update(name=there[point.name], state="already there", accuracy=metrics.get("accuracy"),
                                    loss=metrics.get("loss"))
    todo = [p for p in points if p.name not in there]
    print(f"sweep: {len(points)} point{'s' * (len(points) != 1)}: {len(todo)} to run, {len(there)} already "
          f"experiment{'s' * (len(there) != 1)} of this commit", file=sys.stderr)
    if todo:
        remote = repo.default_remote()
        repo.SCRATCH.mkdir(parents=True, exist_ok=True)
        with cluster.quiet(repo.SCRATCH / "ray.log") as terminal:
            progress = Progress(len(todo), terminal, bits=cluster.local_bits())
            try:
                with cluster.connected(args.address) as where:
                    progress.say(f"running {len(todo)} trial{'s' * (len(todo) != 1)} on {where}")
                    if warning := cluster.check_room(args.cpus, int(args.device == "gpu"), not args.address):
                        progress.say(warning)
                    dispatch(args, todo, baseline, remote, rows, progress)
            except KeyboardInterrupt as exc:  # run() says so in its error: line, with this note
                landed = sum(r["state"] == "new" for r in rows.values())
                exc.add_note(f"{landed} trial{'s' * (landed != 1)} landed and kept; the same command runs the rest")
                raise
            finally:
                progress.close()
    print(table(list(rows.values()), points[0].keys() if points else []))
    failed = [p for p in points if rows[p.name]["state"] in ("failed", "to run")]
    if failed:
        first = rows[failed[0].name]
        why = re.sub(r"^(error|ERROR): ", "", first.get("error") or "not run")
        more = f"; and {len(failed) - 1} more (see above)" if len(failed) > 1 else ""
        raise StageError(f"{len(failed)} of {len(points)} trials failed: {failed[0].label()} ({first['name']}): "
                         f"{why}{more}")


if __name__ == "__main__":
    run(main, parser=parser())
