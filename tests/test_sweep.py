"""python -m sweep on a real two-node Ray cluster on loopback, token authentication on, and on the
local Ray it starts by itself - following docs/sweeps.md.

The cluster is started with the commands of docs/sweeps.md "A cluster of your machines", as
written but for what a test on one machine must change: the docs' machines 10.0.0.5 (head) and
10.0.0.6 (worker) are 127.0.0.2 and 127.0.0.3 (Ray keeps every loopback address but 127.0.0.1),
port 6379 is a free port, each `ray start` gets the test's own flags appended (one CPU, no GPU, a
small object store, a short --temp-dir, every port its own: tests/ray_cluster.py), and the token
is copied from the head's HOME to the worker's by the test instead of `scp`, and the head checks
its nodes' health every 0.5 s instead of 3 s (a lost node is noticed in seconds). Each node has its
own HOME and TMPDIR, so the nodes share no DVC cache, token file or scratch folder. The nodes
are stopped by their process ids, never `ray stop`. The section "One machine" runs as written in
a copy of the project. Commands of the page that cannot run here are in tests/docs.py NOT_RUN, with why.

The project is a throw-away copy on the bundled digits (tests/project.py DIGITS: 6 epochs of a
32-unit network, prepare.val_size 200), run once, committed and pushed - as the docs ask before a
sweep - to a DVC remote every node reaches: a folder outside the project, set in config.local,
which does not travel with a clone (the sweep tells the trials). A watcher records every
connection of every process this test starts, the nodes and the sweep's own Ray included.
"""

from __future__ import annotations

import hashlib
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml

from tests.docs import section_blocks, shown_outputs
from tests.project import DIGITS, Project, assert_clean_failure, env
from tests.ray_cluster import HEAD, WORKER, Cluster, Watcher

PAGE = "docs/sweeps.md"
ONE_MACHINE, CLUSTER = "## One machine", "## A cluster of your machines"
MACHINES = {"10.0.0.5": HEAD, "10.0.0.6": WORKER}  # the docs' example machines -> the test's nodes
def on_loopback(command: str, port: int) -> str:
    for docs_ip, ip in MACHINES.items():
        command = command.replace(docs_ip, ip)
    return command.replace(":6379", f":{port}").replace("--port=6379", f"--port={port}")


def run_block(commands: list[str], environment: dict, port: int) -> list[str]:
    """Run a docs block's commands in order, on loopback (an `export` changes `environment` for the
    next; the rest runs in bash) - but its `ray start` and `python -m sweep` -> those (on loopback),
    for the caller."""
    left = []
    for command in commands:
        if command.startswith("export "):
            for pair in shlex.split(command)[1:]:
                key, _, value = pair.partition("=")
                environment[key] = value
        elif command.startswith(("ray start", "python -m sweep")):
            left.append(on_loopback(command, port))
        else:
            proc = subprocess.run(["bash", "-c", on_loopback(command, port)], env=environment, capture_output=True,
                                  text=True)
            assert proc.returncode == 0, (command, proc.stdout, proc.stderr)
    return left


@pytest.fixture(scope="module")
def watcher():
    watch = Watcher(every=0.25)
    watch.start()
    yield watch
    watch.stop()


@pytest.fixture(scope="module")
def launched(tmp_path_factory, watcher):
    """docs/sweeps.md's head (127.0.0.2) and worker (127.0.0.3), one CPU each, token auth on:
    started, not yet waited for (they start while the project runs its pipeline)."""
    nodes = Cluster(tmp_path_factory.mktemp("cluster"))
    head_block, worker_block, driver_block = section_blocks(PAGE, CLUSTER)[:3]
    envs = {HEAD: nodes.node_env(HEAD), WORKER: nodes.node_env(WORKER)}
    starts = {}
    for ip, block in ((HEAD, head_block), (WORKER, worker_block)):
        if ip == WORKER:  # the docs' scp of the head's token (tests/docs.py NOT_RUN)
            token = nodes.home(WORKER) / ".ray" / "auth_token"
            token.parent.mkdir(mode=0o700, exist_ok=True)
            shutil.copy(nodes.home(HEAD) / ".ray" / "auth_token", token)
            token.chmod(0o600)
        ray_start, = run_block(block, envs[ip], nodes.port)
        args = shlex.split(ray_start)
        starts[ip] = [str(Path(sys.executable).parent / args[0]), *args[1:], *nodes.test_flags(ip == HEAD)]
    assert (nodes.home(HEAD) / ".ray" / "auth_token").stat().st_mode & 0o077 == 0  # private, as the docs make it
    try:
        nodes.start(starts, envs)
        nodes.sweep, = run_block(driver_block, nodes.env(HEAD), nodes.port)
        yield nodes
    finally:
        nodes.stop()


@pytest.fixture(scope="module")
def projects(tmp_path_factory, launched):
    """The project, run, committed and pushed -> (it, an untouched copy for a local run, another for
    the sweep on a local Ray): the copies have the same commit, so the same experiment names."""
    root = tmp_path_factory.mktemp("sweep")
    project = Project(root / "p", DIGITS)
    project.run("dvc", "remote", "add", "--local", "-d", "shared", str(root / "remote"))
    project.repro()
    project.commit("digits run")
    project.dvc("push")
    return project, Project(root / "local-run", like=project), Project(root / "local-ray", like=project)


@pytest.fixture(scope="module")
def cluster(launched, projects):
    launched.wait()
    return launched


def quiet_ray(stderr: str) -> None:
    """The sweep's own lines and nothing else: Ray's messages went to its log file."""
    assert [line for line in stderr.splitlines() if not line.startswith(("sweep: ", "error: "))] == [], stderr


def sweep(project: Project, *args, env: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "sweep", *args], cwd=project.path, env=env, capture_output=True,
                          text=True, timeout=timeout)
    quiet_ray(proc.stderr)
    return proc


def docs_sweep(cluster) -> list[str]:
    """The docs' sweep on the cluster: its arguments (4 points)."""
    return shlex.split(cluster.sweep)[3:]


def shown(project: Project) -> dict[str, dict]:
    """{name: params} of every experiment `dvc exp show --json` lists."""
    return {name: e["params"] for name, e in project.experiments().items()}


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
    """{name: node} of the trials the sweep says landed, each with its test accuracy."""
    return dict(re.findall(r"landed (\S+) .* test accuracy \d\.\d{4}  on (127\.0\.0\.\d+) \(", stderr))


def trial_lines(text: str) -> list[tuple[str, ...]]:
    """(name, its values, test accuracy) of each landed trial's line, and (name, values, error) of
    each failed one's: what a sweep's lines say whatever node ran a trial and however long it took."""
    return sorted(re.findall(r"landed (\S+)  (.*?)  test accuracy (\S+)  on ", text)
                  + re.findall(r"FAILED (\S+)  (.*?)  on \S+: (error: .*) \(log: ", text))


def test_a_grid_lands_every_point_once_from_both_nodes_though_the_worker_dies(projects, cluster, tmp_path):
    """The docs' 4-point sweep on the cluster; once the worker has landed a trial and started its
    next, every process of the worker node is killed: Ray reruns that trial on the head."""
    project, _, _ = projects
    driver = subprocess.Popen([sys.executable, "-m", "sweep", *docs_sweep(cluster)], cwd=project.path,
                              env=cluster.env(HEAD), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    said = []
    for line in driver.stderr:  # until a trial landed from the worker
        said.append(line)
        if WORKER in landed(line).values():
            break
    clones = cluster.tmp(WORKER) / "mnist-sweep"
    deadline = time.time() + 60
    while not any(clones.glob("*/repo/.dvc")):  # the worker's next trial: its clone is checked out
        assert driver.poll() is None and time.time() < deadline, "".join(said)
        time.sleep(0.2)
    cluster.kill(WORKER)
    out, rest = driver.communicate(timeout=300)
    err = "".join(said) + rest
    assert driver.returncode == 0, err
    quiet_ray(err)  # Ray's word of the lost node and the rerun too
    assert f"node {WORKER} left the cluster" in err, err
    ran = landed(err)
    assert len(ran) == 4 and set(ran.values()) == {HEAD, WORKER}, err
    assert set(exp_refs(project)) == set(ran)  # each point once, named as the sweep said
    experiments = shown(project)
    points = sorted((experiments[n]["train"]["lr"], experiments[n]["model"]["dropout"]) for n in ran)
    assert points == [(0.001, 0), (0.001, 0.1), (0.003, 0), (0.003, 0.1)]
    assert all(experiments[n]["train"]["device"] == "cpu" == experiments[n]["evaluate"]["device"] for n in ran)
    assert re.search(r"^Experiment +train\.lr +model\.dropout +accuracy +loss", out, re.M), out
    assert trial_lines(shown_outputs(PAGE, CLUSTER)[0]) == trial_lines(err)  # what the docs show is what it says
    # `dvc exp apply NAME && dvc pull` in (a copy of) the user's project: the sweep fetched the outputs ...
    name = next(iter(ran))
    mine = Project(tmp_path / "mine", like=project)
    mine.dvc("exp", "apply", name)
    mine.dvc("pull")
    assert hashlib.md5(mine.read("models/model.npz")).hexdigest() == model_md5(project, name)
    # ... and with an empty cache (a colleague's clone), `dvc pull` takes the model from the DVC remote
    mine.run("rm", "-rf", ".dvc/cache", "models/model.npz")
    mine.dvc("pull")
    assert hashlib.md5(mine.read("models/model.npz")).hexdigest() == model_md5(project, name)
    cluster.ran = ran


def test_a_trial_s_model_equals_a_local_dvc_exp_run_byte_for_byte(projects, cluster):
    """The point the worker trained, against a plain `dvc exp run` of its params here."""
    project, local, _ = projects
    name = next(n for n, node in cluster.ran.items() if node == WORKER)
    params = shown(project)[name]
    local.dvc("exp", "run", "-S", f"train.lr={params['train']['lr']}", "-S",
              f"model.dropout={params['model']['dropout']}", "-S", "train.device=cpu", "-S", "evaluate.device=cpu")
    assert hashlib.md5(local.read("models/model.npz")).hexdigest() == model_md5(project, name)


def test_a_rerun_adds_nothing_and_trains_nothing(projects, cluster):
    project, _, _ = projects
    before = exp_refs(project)
    proc = sweep(project, *docs_sweep(cluster), env=cluster.env(HEAD))
    assert proc.returncode == 0, proc.stderr
    assert "4 points: 0 to run, 4 already experiments of this commit" in proc.stderr
    assert "landed" not in proc.stderr and "running" not in proc.stderr
    assert exp_refs(project) == before
    assert proc.stdout.count("already there") == 4, proc.stdout


def test_a_bad_point_fails_alone_with_its_error_line(projects, cluster):
    project, _, _ = projects
    before = exp_refs(project)
    proc = sweep(project, "-S", "train.lr=-1,0.005", "--address", cluster.address, env=cluster.env(HEAD))
    line = assert_clean_failure(proc, "1 of 2 trials failed: train.lr=-1")
    assert "params.yaml: train.lr must be a number > 0 (got -1)" in line, line
    failed = [x for x in proc.stderr.splitlines() if "FAILED" in x]
    assert len(failed) == 1 and "train.lr=-1" in failed[0], proc.stderr
    assert "error: params.yaml: train.lr must be a number > 0 (got -1)" in failed[0], failed  # the stage's own line
    new = set(exp_refs(project)) - set(before)
    assert len(new) == 1 and shown(project)[new.pop()]["train"]["lr"] == 0.005
    assert trial_lines(shown_outputs(PAGE, CLUSTER)[1]) == trial_lines(proc.stderr)  # as docs/sweeps.md shows it


def test_ctrl_c_keeps_what_landed_and_the_same_command_runs_the_rest(projects, cluster, tmp_path):
    project, _, _ = projects
    mine = Project(tmp_path / "mine", like=project)
    before = exp_refs(mine)
    args = ["-S", "train.seed=21,22,23", "--address", cluster.address]
    driver = subprocess.Popen([sys.executable, "-m", "sweep", *args], cwd=mine.path, env=cluster.env(HEAD),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    said = []
    for line in driver.stderr:
        said.append(line)
        if landed(line):
            driver.send_signal(signal.SIGINT)
            break
    _, rest = driver.communicate(timeout=60)
    err = "".join(said) + rest
    assert driver.returncode == 130, err
    quiet_ray(err)
    assert err.strip().splitlines()[-1] == \
        "error: interrupted (SIGINT); 1 trial landed and kept; the same command runs the rest", err
    kept = set(exp_refs(mine)) - set(before)
    assert kept == set(landed(err)), err
    proc = sweep(mine, *args, env=cluster.env(HEAD))
    assert proc.returncode == 0, proc.stderr
    assert "3 points: 2 to run, 1 already experiment of this commit" in proc.stderr
    assert len(landed(proc.stderr)) == 2 and set(landed(proc.stderr)).isdisjoint(kept)
    assert len(set(exp_refs(mine)) - set(before)) == 3


def test_a_driver_without_the_token_is_refused(projects, cluster, tmp_path):
    project, _, _ = projects
    for token in ({"RAY_AUTH_TOKEN": "0" * 64}, {"HOME": str(tmp_path)}):  # another token; none at all
        started = time.time()
        proc = sweep(project, "-S", "train.seed=7,8", "--address", cluster.address, env=cluster.env(HEAD, **token),
                     timeout=60)
        assert_clean_failure(proc, f"--address {cluster.address}: the cluster refused this driver")
        assert time.time() - started < 20
    # Ray's own driver, without the sweep's check in front of it, is refused too
    code = (f"import ray; ray.init(address='{cluster.address}', logging_level='ERROR'); "
            "print(ray.get(ray.remote(lambda: 1).remote()))")
    proc = subprocess.run([sys.executable, "-c", code], env=cluster.env(HEAD, HOME=str(tmp_path)),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "AuthenticationError" in proc.stderr, proc.stderr[-2000:]


def test_a_driver_off_the_cluster_is_told_to_run_on_a_node(cluster, monkeypatch):
    """Ray runs a driver on a node of its cluster (it attaches to that node's raylet): from a machine
    with no raylet of the cluster, `ray.init` would look for one for a minute, then fail."""
    from harness.errors import StageError
    from sweep import address

    monkeypatch.setenv("HOME", str(cluster.home(HEAD)))
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    assert address.resolved(cluster.address) in address.local_raylets()  # the nodes here: found
    monkeypatch.setattr(address, "local_raylets", lambda: set())  # a machine with none
    with pytest.raises(StageError, match="this machine is not a node of that cluster"):
        address.check_address(cluster.address)


def test_the_local_default_lands_the_same_experiments_and_is_gone_after(projects, cluster, tmp_path):
    """docs/sweeps.md "One machine", as written: a Ray of its own on 127.0.0.2 with a token of its
    own, gone when the sweep ends; the same experiments as the cluster's, byte for byte."""
    project, _, copy = projects
    temps = set(Path("/tmp").glob("ray-sweep-*"))
    environment = {**env(), "HOME": str(tmp_path / "home")}
    (push, run, show), = section_blocks(PAGE, ONE_MACHINE)
    for command in (push, run, show):
        proc = subprocess.run(["bash", "-c", command], cwd=copy.path, env=environment, capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, (command, proc.stderr)
        if command == run:
            said = proc.stderr
            quiet_ray(said)
    assert f"on a local Ray on {HEAD} (1 node" in said, said
    assert trial_lines(shown_outputs(PAGE, ONE_MACHINE)[0]) == trial_lines(said)  # as docs/sweeps.md shows it
    ran = landed(said)
    assert len(ran) == 4 and set(ran) <= set(exp_refs(project)), (ran, said)
    assert all(name in proc.stdout for name in ran), proc.stdout  # dvc exp show lists them
    assert {n: model_md5(copy, n) for n in ran} == {n: model_md5(project, n) for n in ran}
    assert set(Path("/tmp").glob("ray-sweep-*")) == temps  # its temp dir removed
    assert not (tmp_path / "home" / ".ray").exists()  # its token never written to a file
    leftovers = [p.info for p in psutil.process_iter(["pid", "cmdline"])
                 if "ray-sweep-" in " ".join(p.info["cmdline"] or [])]
    assert leftovers == []


def test_no_ray_connection_leaves_the_loopback_network(watcher, cluster):
    assert watcher.polls > 20
    ips = {ip.removeprefix("::ffff:") for _, local, remote in watcher.connections for ip in (local, remote)}
    assert {HEAD, WORKER} <= ips, ips
    assert watcher.outside() == set()
