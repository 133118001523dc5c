"""A throw-away copy of this project (git + DVC) to run the pipeline in, for tests."""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import os
import re
import resource
import shutil
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
# the code's rooms, as pyproject.toml installs them: nn/, stages/, and one package per concern
ROOMS = tuple(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
COPY = [*ROOMS, "data/source", "dvc.yaml", "params.yaml", ".dvcignore", ".dvc/config", ".dvc/.gitignore",
        ".dvc/plots", ".gitignore"]

# small, fast settings for the bundled 8x8 digits
DIGITS = {
    "fetch": {"dataset": "digits"},
    "prepare": {"val_size": 200},
    "model": {"hidden": [32]},
    "train": {"epochs": 6, "batch_size": 32, "shift": 0, "warmup_epochs": 0},
    "plots": {"samples": 9, "misclassified": 4, "dpi": 50},
}


def env() -> dict:
    """The environment for dvc and the stages: this interpreter's bin first on PATH."""
    e = dict(os.environ, DVC_NO_ANALYTICS="1", PYTHONHASHSEED="0")
    e["PATH"] = str(Path(sys.executable).parent) + os.pathsep + e.get("PATH", "")
    e.pop("CI", None)
    return e


GIB = 2 ** 30


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on at `host` now ("": on every address)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def assert_clean_failure(proc, *patterns):
    """Exit != 0; exactly one 'error:' line, containing each pattern; no traceback."""
    err = proc.stderr
    assert proc.returncode != 0, err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    for pattern in patterns:
        assert pattern in lines[0], lines[0]
    return lines[0]



def address_space_cap(limit: int):
    """A preexec_fn that caps the child's address space at `limit` bytes (like `prlimit --as`):
    past it, allocations fail instead of taking the machine down."""
    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    return cap


def no_override() -> None:
    """A preexec_fn: the child runs without root's override of file permissions, as a user would -
    a read-only folder is then read-only to it. As root (CI, this machine), the capabilities that
    override them (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH) leave the bounding set, so the program
    it executes (and all its children) never has them, while staying uid 0 (root's files, the
    interpreter under /root, stay its own). As another user there is nothing to drop."""
    if os.geteuid() != 0:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP: needs CAP_SETPCAP, which root has
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


def write_seen_by_git(path: Path, text: str) -> None:
    """Write a git-tracked file so that git sees the change. Git (built without USE_NSEC, as
    usual) compares a file with its index entry by size and mtime in whole seconds: a rewrite of
    the same size within the second the file was checked out in (train.lr 0.002 -> 0.003, right
    after a `git checkout`) looks unchanged, and `git checkout HEAD -- .` then leaves it as it is.
    So the new mtime is moved to a later second than the old one."""
    before = path.stat().st_mtime_ns if path.exists() else None
    path.write_text(text)
    if before is not None and path.stat().st_mtime_ns // 10 ** 9 <= before // 10 ** 9:
        later = (before // 10 ** 9 + 1) * 10 ** 9
        os.utime(path, ns=(later, later))


class Project:
    def __init__(self, path: Path, overrides: dict | None = None, like: Project | None = None) -> None:
        """A fresh copy of the repo at `path` - or, with `like`, a copy of that project's tree."""
        self.path = path
        if like is not None:
            shutil.copytree(like.path, path, dirs_exist_ok=True, symlinks=True)
            return
        for name in COPY:
            src = ROOT / name
            dst = path / name
            dst.parent.mkdir(parents=True, exist_ok=True)
            if src.is_dir():
                shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(src, dst)
        self.set_params(overrides or {})
        self.git("init", "-q")
        self.commit("init")

    def commit(self, message: str) -> None:
        """Commit everything in the working tree (git add -A), as a throw-away author."""
        self.git("add", "-A")
        self.git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", message)

    def params(self) -> dict:
        return yaml.safe_load((self.path / "params.yaml").read_text())

    def set_params(self, overrides: dict) -> None:
        data = self.params()
        for section, values in overrides.items():
            data[section].update(values)
        write_seen_by_git(self.path / "params.yaml", yaml.safe_dump(data, sort_keys=False))

    def set(self, dotted: str, value) -> None:
        section, key = dotted.split(".")
        self.set_params({section: {key: value}})

    def git(self, *args) -> str:
        return subprocess.run(["git", *args], cwd=self.path, check=True, capture_output=True, text=True).stdout

    def run(self, *args, check=True, extra_env=None, memory=None, as_user=False) -> subprocess.CompletedProcess:
        """Run a command in the project; `memory` caps its address space in bytes; `as_user` runs it
        without root's override of file permissions (no_override)."""
        preexec = no_override if as_user else address_space_cap(memory) if memory else None
        proc = subprocess.run(list(args), cwd=self.path, env={**env(), **(extra_env or {})}, capture_output=True,
                              text=True, preexec_fn=preexec)
        if check and proc.returncode:
            raise AssertionError(f"{' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
        return proc

    def dvc(self, *args, check=True, as_user=False) -> subprocess.CompletedProcess:
        return self.run(sys.executable, "-m", "dvc", *args, check=check, as_user=as_user)

    def stage(self, name: str, check=False, extra_env=None, memory=None) -> subprocess.CompletedProcess:
        return self.run(sys.executable, "-m", f"stages.{name}", check=check, extra_env=extra_env, memory=memory)

    def repro(self) -> list[str]:
        """dvc repro -> the stages that actually ran, in order."""
        out = self.dvc("repro").stdout
        return [line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage")]

    def status(self) -> dict:
        """What `dvc status --json` prints: the Repo.status() its command prints, called here in
        process (0.3 s a call instead of 1.2 s: test_dag asks once for each of 32 params)."""
        from dvc.repo import Repo

        with contextlib.chdir(self.path), Repo(".") as repo:  # stage names are relative to the cwd
            return repo.status()

    def exp_refs(self) -> set[str]:
        """Names of the finished experiments: refs/exps/<..>/<baseline>/<name> (a cheap git call)."""
        refs = self.git("for-each-ref", "--format=%(refname)", "refs/exps").split()
        return {m[1] for ref in refs if (m := re.fullmatch(r"refs/exps/[0-9a-f]{2}/[0-9a-f]{38}/(.+)", ref))}

    def start_queue(self, jobs: int, log: Path) -> None:
        """`dvc queue start -j jobs`, its output to `log`: the workers outlive the command, and a
        pipe of ours that they inherit would keep a reader waiting for them."""
        with open(log, "a") as f:
            subprocess.run([sys.executable, "-m", "dvc", "queue", "start", "-j", str(jobs)], cwd=self.path,
                           env=env(), stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, check=True)

    def queue_status(self) -> str:
        """`dvc queue status`'s table. DVC rewrites a run's info file in place while `queue status`
        may be reading it, and then fails with "unexpected error - Expecting value" (seen here,
        like treeverse/dvc#8014); asked again, it answers. That error alone is asked again."""
        for _ in range(3):
            proc = self.dvc("queue", "status", check=False)
            if proc.returncode == 0 or "unexpected error - Expecting value" not in proc.stderr:
                break
            time.sleep(1)
        assert proc.returncode == 0, f"dvc queue status exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
        return proc.stdout

    def wait_for_queue(self, names: set[str], timeout: float = 300) -> str:
        """Until every queued experiment in `names` has its ref (a cheap git call every second) or the
        queue has nothing queued or running (`dvc queue status`, every 15 s: it costs a second of CPU
        that the workers need); then the queue's status."""
        deadline, last = time.time() + timeout, 0.0
        while True:
            if names <= self.exp_refs():
                return self.queue_status()
            if time.time() - last > 15:
                status, last = self.queue_status(), time.time()
                if not re.search(r"\b(Queued|Running)\b", status):
                    return status
            assert time.time() < deadline, self.queue_status()
            time.sleep(1)

    def read(self, rel: str) -> bytes:
        return (self.path / rel).read_bytes()

    def experiments(self) -> dict[str, dict]:
        """name -> {"params": params.yaml, "metrics": reports/metrics.json} of every experiment
        `dvc exp show --json` lists."""
        found = {}
        for baseline in json.loads(self.dvc("exp", "show", "--json").stdout):
            for exp in baseline.get("experiments") or []:
                data = exp["revs"][0].get("data") or {}
                found[exp["name"]] = {
                    "params": (data.get("params") or {}).get("params.yaml", {}).get("data", {}),
                    "metrics": (data.get("metrics") or {}).get("reports/metrics.json", {}).get("data", {})}
        return found

    def digests(self, rels) -> dict[str, str]:
        """{path: sha256 of its bytes} - what tests compare, so that a failure shows which file
        changed in one short line instead of pages of bytes."""
        return {rel: hashlib.sha256(self.read(rel)).hexdigest() for rel in rels}
