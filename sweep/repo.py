"""The user's project, as the sweep's driver sees it: its committed HEAD (what every trial runs,
shipped as a git bundle), the experiments it already has, the DVC remote the trials push to, and
the landing of a trial's experiment (its ref fetched from the trial's bundle, its outputs checked
in the remote)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml

from harness.errors import StageError, one_line

# a remote's settings that are secrets: never shipped to the trials (each node has its own credentials)
SECRET = re.compile(r"secret|password|passphrase|token|key_id|account_key|keyfile|credential|connection_string|sas_",
                    re.IGNORECASE)
SCRATCH = Path(".dvc/tmp/sweep")  # git-ignored (.dvc/.gitignore): bundles in transit, each trial's log


def git(*args: str, check: bool = True, text: bool = True) -> str:
    proc = subprocess.run(["git", *args], capture_output=True, text=text)
    if check and proc.returncode:
        raise StageError(f"git {' '.join(args[:2])}: {one_line((proc.stderr or '').strip())[:300]}")
    return proc.stdout


def check_workspace() -> str:
    """The commit the trials run (HEAD's sha), or StageError: not a project's root, no commit yet,
    or uncommitted changes to tracked files (a trial runs the commit, not the workspace)."""
    if not Path("dvc.yaml").is_file() or not Path(".dvc").is_dir():
        raise StageError("no dvc.yaml and .dvc/ here: run python -m sweep from the project's root")
    top = subprocess.run(["git", "rev-parse", "--show-toplevel"], capture_output=True, text=True)
    if top.returncode or Path(top.stdout.strip()).resolve() != Path.cwd().resolve():
        raise StageError("not the root of a git repository: run python -m sweep from the project's root")
    head = subprocess.run(["git", "rev-parse", "--verify", "-q", "HEAD"], capture_output=True, text=True)
    if head.returncode:
        raise StageError("no commit yet: the trials run the committed HEAD (git add -A && git commit)")
    changed = git("status", "--porcelain", "--untracked-files=no").splitlines()
    if changed:
        files = ", ".join(line[3:] for line in changed[:4]) + (f" and {len(changed) - 4} more" if len(changed) > 4
                                                               else "")
        raise StageError(f"uncommitted changes to {files}: every trial runs the committed HEAD on its node, "
                         "so commit them (git commit -am ...) or set them aside (git stash), then sweep")
    return head.stdout.strip()


def bundle(path: Path) -> bytes:
    """HEAD and its history as a git bundle: what a trial clones, on a node that shares no filesystem."""
    git("bundle", "create", "-q", str(path), "HEAD")
    try:
        return path.read_bytes()
    finally:
        path.unlink()


def identity() -> dict[str, str]:
    """The user's git name and e-mail: the author of the trials' experiment commits."""
    found = {key: git("config", f"user.{key}", check=False).strip() for key in ("name", "email")}
    return {"name": found["name"] or "python -m sweep", "email": found["email"] or "sweep@localhost"}


def exp_ref(baseline: str, name: str) -> str:
    """The ref DVC keeps the experiment `name` of the commit `baseline` under."""
    return f"refs/exps/{baseline[:2]}/{baseline[2:]}/{name}"


def experiments(baseline: str) -> dict[str, str]:
    """{name: ref} of the experiments of the commit `baseline`."""
    prefix = exp_ref(baseline, "")
    refs = git("for-each-ref", "--format=%(refname)", prefix).split()
    return {ref.removeprefix(prefix): ref for ref in refs}


def read_at(ref: str, path: str) -> str | None:
    proc = subprocess.run(["git", "show", f"{ref}:{path}"], capture_output=True, text=True)
    return proc.stdout if proc.returncode == 0 else None


def params_at(ref: str) -> dict | None:
    text = read_at(ref, "params.yaml")
    return yaml.safe_load(text) if text is not None else None


def metrics_at(ref: str) -> dict:
    """The experiment's metrics (reports/metrics.json: accuracy, loss, ... of the test set), {} if unreadable."""
    import json

    text = read_at(ref, "reports/metrics.json")
    try:
        metrics = json.loads(text) if text else {}
    except ValueError:
        return {}
    return metrics if isinstance(metrics, dict) else {}


def default_remote() -> tuple[str, dict]:
    """The default DVC remote's name, and what a trial's clone must be told of it in its
    .dvc/config.local: nothing when the committed .dvc/config defines it alone (a clone has that),
    else its settings from config.local or the user's DVC config - but never a secret."""
    from dvc.repo import Repo

    with Repo(".") as repo:
        name = repo.config["core"].get("remote")
        if not name:
            raise StageError(".dvc/config: no default DVC remote; the trials push their outputs to it "
                             "(dvc remote add -d NAME URL: a folder, or s3://... for a cluster)")
        if name not in repo.config["remote"]:
            raise StageError(f"the default DVC remote '{name}' is not defined; the remotes are: "
                             f"{', '.join(repo.config['remote']) or 'none'} (dvc remote list)")
        elsewhere = any(repo.config.load_one(level)["remote"].get(name) for level in ("local", "global", "system"))
        settings = dict(repo.config["remote"][name]) if elsewhere else {}
    return name, {k: v for k, v in settings.items() if not SECRET.search(k)}


def fetch_outputs(ref: str, remote: str) -> str:
    """Download the experiment `ref`'s outputs (its dvc.lock's) from the DVC remote into this
    project's cache, so that `dvc exp apply NAME` restores them -> '' or what failed. That they
    come is the proof that the trial's push reached a remote this machine reaches too."""
    import contextlib
    import io

    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    try:
        with Repo(".") as repo, contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            repo.fetch(revs=[ref], workspace=False, remote=remote)
    except DvcException as exc:
        return one_line(str(exc))[:200]
    return ""


def land(data: bytes, name: str, baseline: str) -> str:
    """Fetch the experiment `name` from a trial's bundle into this repository -> its ref. A ref of
    that name already here (another experiment) is never overwritten: StageError."""
    ref = exp_ref(baseline, name)
    SCRATCH.mkdir(parents=True, exist_ok=True)
    path = SCRATCH / f"{name}.bundle"
    path.write_bytes(data)
    try:
        proc = subprocess.run(["git", "fetch", "-q", "--no-write-fetch-head", str(path), f"{ref}:{ref}"],
                              capture_output=True, text=True)
    finally:
        path.unlink(missing_ok=True)
    if proc.returncode:
        raise StageError(f"could not fetch the experiment from its trial: {one_line(proc.stderr.strip())[:300]}")
    return ref
