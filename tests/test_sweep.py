"""python -m sweep on a real two-node Ray cluster on loopback, token authentication on, and on the
local Ray it starts by itself (tests/ray_cluster.py).

The project is a throw-away copy on the bundled digits (tests/project.py DIGITS: 6 epochs of a
32-unit network, prepare.val_size 200), run once, committed and pushed - as a user does before a
sweep - to a DVC remote every node reaches: a folder outside the project, set in config.local,
which does not travel with a clone (the sweep tells the trials). Each node has its own HOME and
TMPDIR, so the nodes share no DVC cache and no scratch folder. A watcher records every connection
of every process this test starts, the nodes and the sweep's own Ray included.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.project import DIGITS, Project, assert_clean_failure
from tests.ray_cluster import HEAD, WORKER, Cluster, Watcher

GRID = ["-S", "train.lr=0.001,0.003", "-S", "model.dropout=0,0.1"]  # 4 points


@pytest.fixture(scope="module")
def watcher():
    watch = Watcher(every=0.25)
    watch.start()
    yield watch
    watch.stop()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, watcher):
    """A head (127.0.0.2) and a worker (127.0.0.3), one CPU each."""
    nodes = Cluster(tmp_path_factory.mktemp("cluster"))
    try:
        nodes.start(HEAD, WORKER)
        yield nodes
    finally:
        nodes.stop()


@pytest.fixture(scope="module")
def projects(tmp_path_factory):
    """The project, run, committed and pushed -> (it, an untouched copy for a local run, another for
    the sweep on a local Ray): the copies have the same commit, so the same experiment names."""
    root = tmp_path_factory.mktemp("sweep")
    project = Project(root / "p", DIGITS)
    project.run("dvc", "remote", "add", "--local", "-d", "shared", str(root / "remote"))
    project.repro()
    project.commit("digits run")
    project.dvc("push")
    return project, Project(root / "local-run", like=project), Project(root / "local-ray", like=project)


def sweep(project: Project, *args, env: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "sweep", *args], cwd=project.path, env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def shown(project: Project) -> dict[str, dict]:
    """{name: params} of every experiment `dvc exp show --json` lists."""
    found = {}

    def walk(node):
        if isinstance(node, dict):
            data = node.get("data")
            if isinstance(data, dict) and node.get("name") and node.get("rev") != "workspace" and "params" in data:
                found[node["name"]] = data["params"]["params.yaml"]["data"]
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(json.loads(project.dvc("exp", "show", "--json").stdout))
    return found


def exp_refs(project: Project) -> dict[str, str]:
    """{experiment name: its commit}."""
    out = project.git("for-each-ref", "--format=%(refname) %(objectname)", "refs/exps")
    return {ref.rsplit("/", 1)[1]: sha for ref, sha in (line.split() for line in out.splitlines())
            if re.fullmatch(r"refs/exps/[0-9a-f]{2}/[0-9a-f]{38}/.+", ref)}


def model_md5(project: Project, name: str) -> str:
    """The model's md5 in the experiment's dvc.lock."""
    ref = next(r for r in project.git("for-each-ref", "--format=%(refname)", "refs/exps").split()
               if r.endswith("/" + name))
    lock = yaml.safe_load(project.git("show", f"{ref}:dvc.lock"))
    return next(o["md5"] for o in lock["stages"]["train"]["outs"] if o["path"] == "models/model.npz")


def landed(stderr: str) -> dict[str, str]:
    """{name: node} of the trials the sweep says landed."""
    return dict(re.findall(r"landed (\S+) .* on (127\.0\.0\.\d+) \(", stderr))


def test_a_grid_lands_named_experiments_from_both_nodes(projects, cluster, tmp_path):
    project, _, _ = projects
    proc = sweep(project, *GRID, "--address", cluster.address, env=cluster.env())
    assert proc.returncode == 0, proc.stderr
    ran = landed(proc.stderr)
    assert len(ran) == 4 and set(ran.values()) == {HEAD, WORKER}, proc.stderr
    experiments = shown(project)
    assert set(ran) <= set(experiments), experiments
    points = {(experiments[n]["train"]["lr"], experiments[n]["model"]["dropout"]) for n in ran}
    assert points == {(0.001, 0), (0.001, 0.1), (0.003, 0), (0.003, 0.1)}
    assert all(experiments[n]["train"]["device"] == "cpu" == experiments[n]["evaluate"]["device"] for n in ran)
    assert re.search(r"^Experiment +train\.lr +model\.dropout +test\.accuracy", proc.stdout, re.M), proc.stdout
    # the user's project: `dvc exp apply NAME && dvc pull` (the sweep fetched its outputs into the cache) ...
    name = next(iter(ran))
    mine = Project(tmp_path / "mine", like=project)
    mine.dvc("exp", "apply", name)
    mine.dvc("pull")
    assert hashlib.md5(mine.read("models/model.npz")).hexdigest() == model_md5(project, name)
    # ... and a colleague's clone with an empty cache: the model comes from the DVC remote
    theirs = Project(tmp_path / "theirs", like=project)
    theirs.run("rm", "-rf", ".dvc/cache", "models/model.npz")
    theirs.dvc("exp", "apply", name, check=False)  # the git part applied; its outputs are not in the cache
    theirs.dvc("pull")
    assert hashlib.md5(theirs.read("models/model.npz")).hexdigest() == model_md5(project, name)


def test_a_trial_s_model_equals_a_local_dvc_exp_run_byte_for_byte(projects, cluster):
    project, local, _ = projects
    name = next(n for n, p in shown(project).items() if p["train"]["lr"] == 0.003 and p["model"]["dropout"] == 0.1)
    local.dvc("exp", "run", "-S", "train.lr=0.003", "-S", "model.dropout=0.1", "-S", "train.device=cpu",
              "-S", "evaluate.device=cpu")
    assert hashlib.md5(local.read("models/model.npz")).hexdigest() == model_md5(project, name)


def test_a_rerun_adds_nothing_and_trains_nothing(projects, cluster):
    project, _, _ = projects
    before = exp_refs(project)
    proc = sweep(project, *GRID, "--address", cluster.address, env=cluster.env())
    assert proc.returncode == 0, proc.stderr
    assert "4 points: 0 to run, 4 already experiments of this commit" in proc.stderr
    assert "landed" not in proc.stderr and "running" not in proc.stderr
    assert exp_refs(project) == before
    assert proc.stdout.count("already there") == 4, proc.stdout


def test_a_bad_point_fails_alone_with_its_error_line(projects, cluster):
    project, _, _ = projects
    before = exp_refs(project)
    proc = sweep(project, "-S", "train.lr=-1,0.005", "--address", cluster.address, env=cluster.env())
    line = assert_clean_failure(proc, "1 of 2 trials failed: train.lr=-1")
    assert "params.yaml: train.lr must be a number > 0 (got -1)" in line, line
    failed = [x for x in proc.stderr.splitlines() if "FAILED" in x]
    assert len(failed) == 1 and "train.lr=-1" in failed[0] and "train.lr must be a number > 0 (got -1)" in failed[0]
    new = set(exp_refs(project)) - set(before)
    assert len(new) == 1 and shown(project)[new.pop()]["train"]["lr"] == 0.005


def test_a_driver_without_the_token_is_refused(projects, cluster, tmp_path):
    project, _, _ = projects
    for env in (cluster.env(RAY_AUTH_TOKEN="0" * 64), {**cluster.env(HOME=str(tmp_path))}):
        if env.get("RAY_AUTH_TOKEN") == cluster.token:
            del env["RAY_AUTH_TOKEN"]  # and an empty HOME: no ~/.ray/auth_token either
        started = time.time()
        proc = sweep(project, "-S", "train.seed=7,8", "--address", cluster.address, env=env, timeout=60)
        assert_clean_failure(proc, f"--address {cluster.address}: the cluster refused this driver")
        assert time.time() - started < 20
    # and Ray's own driver, without our check in front of it
    code = (f"import ray; ray.init(address='{cluster.address}', logging_level='ERROR'); "
            "print(ray.get(ray.remote(lambda: 1).remote()))")
    proc = subprocess.run([sys.executable, "-c", code], env={**cluster.env(HOME=str(tmp_path)), "RAY_AUTH_TOKEN": ""},
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "Authentication" in proc.stderr, proc.stderr[-2000:]


def test_the_local_default_lands_the_same_experiments_and_is_gone_after(projects, cluster, tmp_path):
    """No --address: a Ray of its own on 127.0.0.2, a token of its own, gone when the sweep ends."""
    project, _, copy = projects
    temps = set(Path("/tmp").glob("ray-sweep-*"))
    env = cluster.env(HOME=str(tmp_path / "home"))
    del env["RAY_AUTH_TOKEN"], env["RAY_AUTH_MODE"]
    proc = sweep(copy, *GRID, env=env)
    assert proc.returncode == 0, proc.stderr
    assert f"on a local Ray on {HEAD} (1 node" in proc.stderr, proc.stderr
    ran = landed(proc.stderr)
    assert set(ran) == set(landed_names := {n for n in exp_refs(project) if n in ran}) and len(ran) == 4, \
        (ran, landed_names)
    assert {n: model_md5(copy, n) for n in ran} == {n: model_md5(project, n) for n in ran}
    assert set(Path("/tmp").glob("ray-sweep-*")) == temps  # its temp dir removed
    assert not (tmp_path / "home" / ".ray").exists()  # its token never written to a file
    leftovers = [p.info for p in __import__("psutil").process_iter(["pid", "cmdline"])
                 if "ray-sweep-" in " ".join(p.info["cmdline"] or [])]
    assert leftovers == []


def test_a_lost_node_s_trial_is_rerun_and_every_point_lands_once(projects, cluster):
    project, _, _ = projects
    before = exp_refs(project)
    driver = subprocess.Popen([sys.executable, "-m", "sweep", "-S", "train.seed=3,4", "--address", cluster.address],
                              cwd=project.path, env=cluster.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    clones = cluster.tmp(WORKER) / "mnist-sweep"
    deadline = time.time() + 120
    while not any(clones.glob("*/repo/.dvc")):  # a trial on the worker: its clone is checked out
        assert driver.poll() is None and time.time() < deadline, driver.communicate()
        time.sleep(0.2)
    time.sleep(1)
    cluster.kill(WORKER)
    out, err = driver.communicate(timeout=300)
    assert driver.returncode == 0, err
    assert f"node {WORKER} left the cluster" in err, err
    ran = landed(err)
    assert len(ran) == 2 and set(ran.values()) == {HEAD}, err
    new = set(exp_refs(project)) - set(before)
    seeds = sorted(shown(project)[n]["train"]["seed"] for n in new)
    assert seeds == [3, 4]  # every point, once


def test_no_ray_connection_leaves_the_loopback_network(watcher, cluster):
    assert watcher.polls > 20
    ips = {ip for _, local, remote in watcher.connections for ip in (local, remote)}
    assert {f"::ffff:{WORKER}", f"::ffff:{HEAD}"} & ips or {WORKER, HEAD} <= ips, ips
    assert watcher.outside() == set()
