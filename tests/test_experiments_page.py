"""docs/experiments.md, followed top to bottom in a throw-away project on the 8x8 digits.

The commands of the page's ```bash blocks run as written, in order, in a fresh git + DVC copy
whose committed baseline has the digits params (tests/project.py DIGITS: 6 epochs, a 32-unit
network), so each run takes seconds; the commands' own `-S` values (`train.epochs=12`,
`model.hidden=[1024,512]`, ...) are kept. What the test does differently, and why:

* `. .venv/bin/activate` is not run (tests/docs.py NOT_RUN): the copy has no venv, and every
  command already runs with this interpreter's bin first on PATH (tests/project.py env()).
* a command that sets `train.device=gpu` runs with `train.device=cpu` where no GPU is usable:
  the run, its experiment and the param column it adds to the tables are the same on every
  machine (the tables' width was once checked only where no GPU ran, and a GPU machine's was wider).
* `dvc queue status` - "again until all four read Success" - is a wait until every queued run
  has its ref, checking the queue's status every 15 s (a `dvc` call costs the workers a second of
  CPU: polled every 2 s, the four runs took 127 s instead of 45 s); a status that fails with
  DVC's "unexpected error - Expecting value" is asked again (tests/project.py queue_status).
* every command's output goes to a file, never a pipe (the queue's workers outlive
  `dvc queue start`, see tests/test_queue.py).
* `dvc exp show` runs in a terminal of 120 columns (a pseudo-terminal, its pager `cat`), as a
  user's, so that what it prints is what a user sees.

Checked: every command exits 0; every experiment has exactly the committed baseline's params but
for the keys its `-S` names (a sweep: one run per combination of its values), and test metrics;
the `dvc exp show` tables fit in 120 columns with no cell cut short (`…`); the page leaves the
workspace as the committed baseline it started from (params.yaml, dvc.lock, reports/, the model).
"""

from __future__ import annotations

import itertools
import re
import shlex
import subprocess

import pytest
import yaml

from tests.docs import section_commands
from tests.project import DIGITS, Project, env
from tests.terminal import WIDTH, in_terminal, too_wide

PAGE, SECTION = "docs/experiments.md", "# Experiments"


def split_top_level(value: str) -> list[str]:
    """'0.001,0.003' -> ['0.001', '0.003']; '[1024,512]' stays whole (commas inside brackets)."""
    parts, depth, current = [], 0, ""
    for char in value:
        depth += char in "[{("
        depth -= char in "]})"
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    return [*parts, current]


def set_params(command: str) -> dict[str, list]:
    """`dvc exp run ... -S k=v -S k=a,b` -> {k: [v], k: [a, b]} (values parsed as YAML)."""
    args = shlex.split(command, comments=True)
    found = {}
    for flag, arg in zip(args, args[1:]):
        if flag in ("-S", "--set-param"):
            key, _, value = arg.partition("=")
            found[key] = [yaml.safe_load(v) for v in split_top_level(value)]
    return found


def flatten(params: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in params.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def experiments(project: Project) -> dict[str, dict]:
    """name -> {"params": flat params.yaml, "accuracy": test accuracy or None} from `dvc exp show --json`."""
    return {name: {"params": flatten(e["params"]), "accuracy": e["metrics"].get("accuracy")}
            for name, e in project.experiments().items()}


def gpu_usable() -> bool:
    from nn import backend

    try:
        backend.select("gpu")
    except backend.BackendError:
        return False
    return True


def run(project: Project, command: str, log) -> str:
    """Run one command of the page with bash in the project; its output goes through a file
    (never a pipe: the queue's workers outlive `dvc queue start`). `dvc exp show` runs in a
    120-column terminal instead, and must fit it."""
    if command.startswith("dvc exp show"):
        status, output = in_terminal(command, project.path, env())
        assert status == 0, f"{command!r} exited {status}:\n{output}"
        assert too_wide(output) == [], f"{command!r} does not fit {WIDTH} columns:\n{output}"
        return output
    log.seek(0)
    log.truncate()
    proc = subprocess.run(["bash", "-c", command], cwd=project.path, env=env(),
                          stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    log.seek(0)
    output = log.read()
    assert proc.returncode == 0, f"{command!r} exited {proc.returncode}:\n{output}"
    return output


def test_the_section_has_experiments_that_name_their_params():
    runs = [c for c in section_commands(PAGE, SECTION) if c.startswith("dvc exp run")]
    assert len(runs) >= 3 and all(set_params(c) for c in runs), runs


def test_the_experiments_page_top_to_bottom(tmp_path):
    commands = section_commands(PAGE, SECTION)
    project = Project(tmp_path / "p", DIGITS)
    project.repro()
    project.commit("baseline run")
    baseline = flatten(project.params())
    committed = {rel: project.read(rel) for rel in ("params.yaml", "dvc.lock", "reports/metrics.json")}
    model = project.read("models/model.npz")
    has_gpu = gpu_usable()

    owner: dict[str, str] = {}  # experiment name -> the command that made it
    tables = []
    with open(tmp_path / "command.log", "w+") as log:
        for command in commands:
            if "train.device=gpu" in command and not has_gpu:
                command = command.replace("train.device=gpu", "train.device=cpu")
            if command.startswith("dvc queue status"):  # "again until all four read Success"
                status = project.wait_for_queue({n for n, c in owner.items() if "--queue" in c})
                assert "Failed" not in status, status
                continue
            before = project.exp_refs()
            output = run(project, command, log)
            if command.startswith("dvc exp run"):
                made = set(re.findall(r"Queued experiment '([^']+)'", output)) or project.exp_refs() - before
                assert made, f"{command!r} made no experiment:\n{output}"
                owner.update(dict.fromkeys(made, command))
            if command.startswith("dvc exp show"):
                tables.append(output)

    project.dvc("queue", "stop", check=False)  # idle workers would otherwise linger a while

    # each experiment: the committed params, but for exactly the keys its command sets
    final = experiments(project)
    for command in set(owner.values()):
        names = sorted(n for n, c in owner.items() if c == command)
        grid = set_params(command)
        combos = [dict(zip(grid, values)) for values in itertools.product(*grid.values())]
        assert len(names) == len(combos), (command, names)
        got = []
        for name in names:
            params, accuracy = final[name]["params"], final[name]["accuracy"]
            assert accuracy is not None and accuracy > 0.5, (name, command, accuracy)
            assert set(params) == set(baseline), (name, sorted(set(params) ^ set(baseline)))
            changed = {k: v for k, v in params.items() if baseline[k] != v}
            assert set(changed) <= set(grid), (name, command, changed)
            got.append({k: params[k] for k in grid})
        assert sorted(map(repr, got)) == sorted(map(repr, combos)), (command, got)

    # the page compares the runs in tables that fit a terminal (run() checked each one's width)
    assert len(tables) >= 2 and all(name in "".join(tables) for name in owner if "--queue" not in owner[name])

    # and the workspace is the baseline again
    for rel, data in committed.items():
        assert project.read(rel) == data, f"{rel} differs from the commit after the section"
    assert project.read("models/model.npz") == model
    dirty = [line for line in project.git("status", "--porcelain").splitlines() if "dvc_plots" not in line]
    assert not dirty, dirty
    print("\n\n".join(tables))


@pytest.mark.parametrize("command,expected", [
    ("dvc exp run -n wide -S train.lr=0.001 -S 'model.hidden=[1024,512]'   # a comment",
     {"train.lr": [0.001], "model.hidden": [[1024, 512]]}),
    ("dvc exp run --queue -S 'train.lr=0.001,0.003' -S 'model.dropout=0.1,0.3'",
     {"train.lr": [0.001, 0.003], "model.dropout": [0.1, 0.3]}),
    ("dvc exp run --temp -S model.kind=cnn", {"model.kind": ["cnn"]}),
])
def test_set_params(command, expected):
    assert set_params(command) == expected
