"""One trial, as a Ray task runs it on a node: a private clone of the user's commit (from the git
bundle the driver ships), `dvc exp run` of the point there - the stages run exactly as a local
`dvc exp run` runs them, pinning their own bits - then `dvc push` of its outputs to the DVC remote,
and the experiment's ref handed back as a small git bundle.

Only the standard library at module level: the driver ships this module's code with each task
(pickled by value), so a node needs Python, Ray and the project's dependencies, not this file."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CLONES = "mnist-sweep"  # under the node's temp dir: one folder per running trial, named <pid>-...
NODE_CACHE = "~/.cache/mnist-dvc-from-scratch/sweep-cache"  # the DVC cache the node's trials share
LOG_TAIL = 6000  # characters of a trial's output sent back to the driver (its log file there)


def clean_stale(root: Path) -> None:
    """Remove the clones of attempts whose process is gone (a killed trial, a node that died)."""
    for folder in root.glob("*-*"):
        pid = folder.name.split("-", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except PermissionError:  # another user's process: alive
            pass


def trial_env(threads: int) -> dict[str, str]:
    """The environment `dvc exp run` gets: this interpreter's bin first (the stages' `python`),
    NN_THREADS = the task's CPUs, and nothing that would change the bits (REPRO_NATIVE) or leak
    the cluster's token to the pipeline (RAY_*)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_") and k != "REPRO_NATIVE"}
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env.update(NN_THREADS=str(threads), DVC_NO_ANALYTICS="1", PYTHONUNBUFFERED="1")
    return env


def ini_value(value) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def config_local(remote: str, settings: dict, cache: str, site: Path) -> str:
    """The clone's .dvc/config.local: the default remote (settings the driver shipped, if any),
    the node's shared cache, and DVC's site cache in the trial's own folder (by default DVC keeps
    one under /var/tmp/dvc for every repository path it has seen: one a trial, for ever)."""
    lines = ["[core]", f"    remote = {remote}", f"    site_cache_dir = {site}", "[cache]", f"    dir = {cache}"]
    if settings:
        lines.append(f"['remote \"{remote}\"']")
        lines += [f"    {key} = {ini_value(value)}" for key, value in settings.items()]
    return "\n".join(lines) + "\n"


def last_error(output: str) -> str:
    """The line that says why a run failed, whole: a stage's `error:` line, else DVC's `ERROR:` one."""
    lines = output.splitlines()
    for prefix in ("error: ", "ERROR: "):
        found = [line for line in lines if line.startswith(prefix)]
        if found:
            return found[-1]
    return (lines[-1] if lines else "no output").strip()


def bits_of(output: str) -> str:
    """What decided the training's bits, as the train stage logged it (`train: bits: ...`)."""
    found = [line.partition("train: bits: ")[2] for line in output.splitlines() if line.startswith("train: bits: ")]
    return found[-1].strip() if found else ""


def sh(args: list[str], cwd: Path, env: dict, log) -> int:
    """Run a command, its output to `log` after the command line; then its time and exit status."""
    log.write(f"$ {' '.join(args)}\n")
    log.flush()
    started = time.time()
    code = subprocess.run(args, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                          stdin=subprocess.DEVNULL).returncode
    log.write(f"[{time.time() - started:.2f} s, exit {code}]\n")
    log.flush()
    return code


def run_trial(head: bytes, baseline: str, name: str, overrides: list[str], remote: str, settings: dict,
              author: dict, threads: int) -> dict:
    """Run one point -> {name, node, seconds, ok, error, bundle, bits, log}."""
    import ray

    started = time.time()
    node = ray.util.get_node_ip_address()
    root = Path(tempfile.gettempdir()) / CLONES
    root.mkdir(parents=True, exist_ok=True)
    clean_stale(root)
    work = Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-{name[:40]}-", dir=root))
    clone, logfile = work / "repo", work / "log"
    env = trial_env(threads)
    result = {"name": name, "node": node, "ok": False, "error": "", "bundle": b"", "bits": ""}
    try:
        with open(logfile, "w") as log:
            (work / "head.bundle").write_bytes(head)
            steps = [(["git", "init", "-q", str(clone)], work),
                     (["git", "fetch", "-q", str(work / "head.bundle"), "HEAD"], clone),
                     (["git", "checkout", "-q", "--detach", "FETCH_HEAD"], clone),
                     (["git", "config", "user.name", author["name"]], clone),
                     (["git", "config", "user.email", author["email"]], clone)]
            for args, cwd in steps:
                if sh(args, cwd, env, log):
                    raise RuntimeError(f"{args[1]} of the project's commit failed")
            (clone / ".dvc" / "config.local").write_text(
                config_local(remote, settings, os.path.expanduser(NODE_CACHE), work / "site"))
            dvc = [sys.executable, "-m", "dvc"]
            sets = [arg for override in overrides for arg in ("-S", override)]
            if sh([*dvc, "exp", "run", "--pull", "-n", name, *sets], clone, env, log):
                raise RuntimeError("dvc exp run")
            if sh([*dvc, "push"], clone, env, log):
                raise RuntimeError("dvc push")
            ref = f"refs/exps/{baseline[:2]}/{baseline[2:]}/{name}"
            if sh(["git", "bundle", "create", "-q", str(work / "exp.bundle"), ref, f"^{baseline}"], clone, env, log):
                raise RuntimeError("git bundle of the experiment")
        result["bundle"] = (work / "exp.bundle").read_bytes()
        result.update(ok=True, bits=bits_of(logfile.read_text(errors="replace")))
    except (RuntimeError, OSError, ValueError) as exc:
        output = logfile.read_text(errors="replace") if logfile.exists() else ""
        result["error"] = last_error(output) if isinstance(exc, RuntimeError) else f"{type(exc).__name__}: {exc}"
    finally:
        result["log"] = (logfile.read_text(errors="replace") if logfile.exists() else "")[-LOG_TAIL:]
        result["seconds"] = time.time() - started
        shutil.rmtree(work, ignore_errors=True)
    return result
