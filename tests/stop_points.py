"""Send SIGTERM to a stage (or predict) at many random points of its run, and judge each run.

    python -m tests.stop_points RESULT.json --points N --seed S [--predict IMAGE] [--stage NAME] [--fresh]

Run in a project (the current folder) whose outputs are as dvc.lock records them, with params
that make the stage write other bytes. For each point a child is forked from this process, which
imported the command once (as `python -m` does: with sys.argv[0] '-m'), and runs it as its
`python -m` would: harness.command.run, with DVC_STAGE set as under `dvc repro` - whose deletion
of the outputs that are not `persist` is done here first, as DVC does. A new interpreter per
point would spend most of its time on imports; with --fresh each run is one all the same, for
the points in its start-up. SIGTERM goes to the run after a random delay within one undisturbed
run's time. A point passes when:

- the child exited 128 + 15 = 143 with exactly one `error:` line that says it was interrupted,
  and every output is as dvc.lock records it; or
- the child exited 0, every output is the undisturbed run's, and the signal was sent after the
  outputs had been renamed into place (the folders' mtimes tell when): a stop that arrives
  later has nothing left to stop;

and, either way, no traceback or "Exception ignored" on stderr and no temporary file left. (A
fresh interpreter stopped before the first line of the project runs - in Python's own start-up,
some tens of milliseconds - ends by the signal's default action, which a shell reports as 143
too: it passes when the outputs are as dvc.lock records them.)
Points run one after the other; the workspace is put back as dvc.lock records it before each.
The result file holds one record per point; the exit status is 1 if any point failed.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

STOPPED = 128 + signal.SIGTERM
SLACK = 0.01  # s: file times come from the kernel's coarse clock, up to a tick behind time.time()


def outputs_of(stage: str) -> tuple[list[Path], bool]:
    """The stage's outputs as dvc.yaml lists them, and whether DVC leaves them in place (persist)."""
    entry = yaml.safe_load(Path("dvc.yaml").read_text())["stages"][stage]
    paths, persist = [], []
    for kind in ("outs", "metrics", "plots"):
        for out in entry.get(kind) or []:
            path, opts = (next(iter(out.items())) if isinstance(out, dict) else (out, {}))
            paths.append(Path(path))
            persist.append(bool((opts or {}).get("persist")))
    return paths, all(persist)


def files_under(paths) -> list[Path]:
    found = []
    for p in paths:
        found += sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p] if p.exists() else []
    return found


def digests(paths) -> dict[str, str]:
    return {str(f): hashlib.md5(f.read_bytes()).hexdigest() for f in files_under(paths)}


def snapshot(paths) -> dict[Path, bytes]:
    return {f: f.read_bytes() for f in files_under(paths)}


def put_back(paths, saved: dict[Path, bytes], kept: Path, kept_saved: dict[Path, bytes]) -> None:
    """The workspace (and the stage's kept copy) as they were when saved."""
    for p in [*paths, kept]:
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()
    for f, data in [*saved.items(), *kept_saved.items()]:
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(data)


def leftovers() -> list[str]:
    """Temporary files and folders of atomic writes anywhere in the workspace."""
    return sorted(str(p) for p in Path(".").rglob(".*") if p.name.endswith((".tmp", ".old"))
                  and ".git" not in p.parts)


def child(command, parser, stage: str, out: Path, err: Path) -> None:
    """In the forked child: run the command as `python -m` would, then leave with its status."""
    status = 1
    try:
        for fd, path in ((1, out), (2, err)):
            target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(target, fd)
            os.close(target)
        sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), line_buffering=True)
        sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), line_buffering=True)
        sys.unraisablehook, sys.excepthook = sys.__unraisablehook__, sys.__excepthook__
        logging.root.handlers.clear()
        if stage:
            os.environ["DVC_STAGE"] = stage
        from harness.command import run

        try:
            run(command, parser=parser)
            status = 0
        except SystemExit as exc:
            status = exc.code if isinstance(exc.code, int) else 1
        except BaseException:  # what would reach the top of `python -m`: Python prints it
            import traceback

            traceback.print_exc()
            status = 120
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(status)


def start(command, parser, stage, out, err, fresh: list[str] | None) -> int:
    """A run of the command: forked from here, or (fresh: its command line) a new interpreter."""
    if fresh:
        with open(out, "wb") as o, open(err, "wb") as e:
            env = dict(os.environ, **({"DVC_STAGE": stage} if stage else {}))
            return subprocess.Popen([sys.executable, *fresh], stdout=o, stderr=e, env=env).pid
    pid = os.fork()
    if pid == 0:
        child(command, parser, stage, out, err)
    return pid


def wait(pid: int) -> int:
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def judge(status, err_text, out_text, now, old, new, reference_out, sent, committed, temps, fresh) -> str | None:
    """Why this point failed, or None."""
    if "Traceback" in err_text or "Exception ignored" in err_text:
        return "a traceback or an ignored exception on stderr"
    if temps:
        return f"temporary files left: {temps}"
    if fresh and status == -signal.SIGTERM and not err_text:  # before the first line of the project's
        # code ran (Python's own start-up): the signal's default action, which a shell reports as 143
        return None if now == old else "killed in its start-up, with the outputs not as dvc.lock records them"
    if status == STOPPED:
        lines = [line for line in err_text.splitlines() if line.startswith("error:")]
        if len(lines) != 1 or "interrupted (SIGTERM)" not in lines[0]:
            return f"exit {STOPPED} without one 'error: interrupted (SIGTERM)' line"
        if now != old:
            return "stopped, but the outputs are not as dvc.lock records them"
        return None
    if status == 0:
        if now != new or out_text != reference_out:
            return "exit 0, but the outputs (or the printed answer) are not the finished run's"
        if committed is not None and sent < committed - SLACK:
            return (f"exit 0: the stop was lost (sent {committed - sent:.3f} s before the outputs were "
                    "renamed into place)")
        return None
    return f"exit status {status}"


def commit_time(paths) -> float | None:
    """When the first output was renamed into place: the earliest mtime of the folders that hold
    them (a rename into a folder changes its mtime; nothing else of the run touches them after)."""
    folders = {p.parent for p in paths}
    return min(f.stat().st_mtime for f in folders) if folders else None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("result", type=Path)
    ap.add_argument("--stage", default="plots")
    ap.add_argument("--predict", metavar="IMAGE", help="stop `python -m predict IMAGE` instead of a stage")
    ap.add_argument("--points", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fresh", action="store_true", help="each run a new interpreter (`python -m ...`): "
                    "the points then fall in its start-up and imports too")
    args = ap.parse_args()
    tmp = Path(".stop-points")
    tmp.mkdir(exist_ok=True)
    out, err = tmp / "stdout", tmp / "stderr"
    sys.argv = ["-m"]  # as while `python -m` imports the package: it may then set up its signals (early)
    if args.predict:
        import predict.__main__ as command_module

        command, parser, stage, paths, persist = command_module.predict, command_module.parser(), "", [], True
        sys.argv = ["python -m predict", args.predict]
        line = ["-m", "predict", args.predict]
    else:
        import importlib

        stage = args.stage
        command, parser = importlib.import_module(f"stages.{stage}").main, None
        paths, persist = outputs_of(stage)
        sys.argv = [f"python -m stages.{stage}"]
        line = ["-m", f"stages.{stage}"]
    fresh = line if args.fresh else None
    kept = Path(".dvc/tmp/outputs") / stage if stage else tmp / "none"
    old, saved, kept_saved = digests(paths), snapshot(paths), snapshot([kept])

    # one undisturbed run: what a finished run writes and prints, and how long a run takes
    began = time.perf_counter()
    status = wait(start(command, parser, stage, out, err, fresh))
    span = time.perf_counter() - began
    assert status == 0, err.read_text()
    new, reference_out = digests(paths), out.read_text()
    assert new != old or not paths, "the params must make the stage write other bytes than dvc.lock records"

    rng = random.Random(args.seed)
    records, changed = [], True
    for i in range(args.points):
        if changed:
            put_back(paths, saved, kept, kept_saved)
        if not persist:  # as `dvc repro` does before it runs the stage
            for p in paths:
                shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
        delay = (i + rng.random()) / args.points * span * 1.1  # one point in each slice of the run, and past it
        pid = start(command, parser, stage, out, err, fresh)
        time.sleep(delay)
        sent = time.time()
        os.kill(pid, signal.SIGTERM)
        status = wait(pid)
        now = digests(paths)
        changed = now != old
        why = judge(status, err.read_text(), out.read_text(), now, old, new, reference_out, sent,
                    commit_time(paths) if status == 0 and paths else None, leftovers(), args.fresh)
        records.append({"delay": round(delay, 4), "status": status, "failure": why,
                        "stderr": err.read_text()[-600:] if why else ""})
    shutil.rmtree(tmp)
    put_back(paths, saved, kept, kept_saved)
    args.result.write_text(json.dumps({"span": span, "points": records}, indent=1))
    sys.exit(1 if any(r["failure"] for r in records) else 0)


if __name__ == "__main__":
    main()
