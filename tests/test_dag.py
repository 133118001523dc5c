"""The DAG is params-precise: each key reruns exactly the stages that read it, no stage reads an
undeclared key, each stage's deps cover its imports by room, and a change in a room reruns
exactly the stages that use it."""

from __future__ import annotations

import ast
import json
import os
import shutil
from pathlib import Path

import pytest
import yaml

import params as P
from tests.project import DIGITS, ROOMS, ROOT, Project

STAGES = ("fetch", "prepare", "train", "evaluate", "plots")
# the rooms from the top floor down: a module imports only rooms of lower floors (and its own)
FLOORS = (("stages", "predict", "remote", "sweep"), ("sources", "figures"), ("harness", "params"), ("nn",))
DVC_YAML = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def declared_sections(stage: str) -> list[str]:
    return DVC_YAML[stage].get("params", [])


def declared_params(stage: str) -> set[str]:
    """The keys a stage depends on: every key of each params.yaml section it declares."""
    return {f"{s}.{k}" for s in declared_sections(stage) for k in P.SCHEMA[s]}


def test_every_section_and_key_is_declared_by_exactly_one_stage():
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert sorted(s for stage in STAGES for s in declared_sections(stage)) == sorted(params) == sorted(P.SCHEMA)
    keys = {f"{s}.{k}" for s, section in params.items() for k in section}
    owners = {key: [s for s in STAGES if key in declared_params(s)] for key in keys}
    assert {k: v for k, v in owners.items() if len(v) != 1} == {}
    assert keys == {f"{s}.{k}" for s, rules in P.SCHEMA.items() for k in rules}


def module_file(name: str) -> Path | None:
    """The file of a module of this project ('params' -> params/__init__.py), or None."""
    for path in (ROOT / (name.replace(".", "/") + ".py"), ROOT / name.replace(".", "/") / "__init__.py"):
        if path.is_file():
            return path
    return None


def imports_of(path: Path) -> set[str]:
    """The project's modules a file imports ('from sources import folder' -> sources, sources.folder)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
        elif isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
    return {n for n in names if n.split(".")[0] in ROOMS}


def local_imports(module: str) -> set[str]:
    """The project's files a module runs, transitively - a package's __init__.py included, since
    importing any module of it runs that first (as repo-relative paths)."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        parts = name.split(".")
        files = [module_file(".".join(parts[:i])) for i in range(1, len(parts) + 1)]
        for path in filter(None, files):
            rel = path.relative_to(ROOT).as_posix()
            if rel not in seen:
                seen.add(rel)
                todo += imports_of(path)
    return seen


def docstring_only(rel: str) -> bool:
    """A module that is only its docstring (nn/__init__.py): nothing in it runs."""
    body = ast.parse((ROOT / rel).read_text()).body
    return len(body) == 1 and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)


def code_deps(stage: str) -> list[str]:
    return [d for d in DVC_YAML[stage]["deps"] if d.endswith(".py") or (ROOT / d / "__init__.py").is_file()]


def covered_by(rel: str, deps: list[str]) -> list[str]:
    """The deps that hold the file `rel`: itself, or a room (folder) it is in."""
    return [d for d in deps if rel == d or rel.startswith(d.rstrip("/") + "/")]


@pytest.mark.parametrize("stage", STAGES)
def test_stage_deps_cover_exactly_its_imports(stage):
    """Every file the stage runs is in a dep (its script, a room, or a file of nn/), and every code
    dep holds a file it runs: a change to any code the stage runs reruns it, and no other does.
    The stages package itself is never a dep: one stage's script does not rerun another."""
    ran = {rel for rel in local_imports(f"stages.{stage}") - {"stages/__init__.py"} if not docstring_only(rel)}
    deps = code_deps(stage)
    assert {rel for rel in ran if not covered_by(rel, deps)} == set()
    assert {d for d in deps if not any(covered_by(rel, [d]) for rel in ran)} == set()
    assert [d for d in deps if d.startswith("stages/")] == [f"stages/{stage}.py"]


def test_the_stages_package_runs_nothing_of_its_own():
    """stages/__init__.py is in no stage's deps: all it may do is import harness.start (the bit
    pins, in the harness room every stage depends on) - a pin set there would change every
    stage's bits without DVC noticing."""
    body = ast.parse((ROOT / "stages" / "__init__.py").read_text()).body
    assert isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)  # the docstring
    assert [ast.dump(node) for node in body[1:]] == [ast.dump(ast.parse("import harness.start").body[0])]


def test_each_stage_has_at_most_ten_deps():
    assert {stage: len(DVC_YAML[stage]["deps"]) for stage in STAGES if len(DVC_YAML[stage]["deps"]) > 10} == {}


def test_imports_flow_one_way():
    """Commands and stages on top, the rooms of the pipeline under them, nn/ at the bottom: no
    module imports one of a higher floor, nor of a room on its own floor, and nothing in nn/ imports
    the pipeline. (A room's own modules import each other freely.)"""
    floor = {room: level for level, rooms in enumerate(FLOORS) for room in rooms}
    assert set(floor) == set(ROOMS), "every room has its floor"
    wrong = []
    for room in ROOMS:
        for path in sorted((ROOT / room).rglob("*.py")):
            for name in imports_of(path):
                other = name.split(".")[0]
                if other != room and floor[other] <= floor[room]:  # FLOORS go down: a higher index is lower
                    wrong.append(f"{path.relative_to(ROOT)} imports {name}")
    assert wrong == []


def test_each_stage_reads_exactly_the_keys_dvc_yaml_declares(tmp_path, monkeypatch):
    """Run every stage in-process on digits and record which params keys it reads."""
    import importlib

    project = Project(tmp_path, DIGITS)
    monkeypatch.chdir(project.path)
    for stage in STAGES:
        P.ACCESSED.clear()
        importlib.import_module(f"stages.{stage}").main()
        assert P.ACCESSED == declared_params(stage), stage


# a different valid value for every key (dvc status only compares, nothing runs)
CHANGES = {
    "fetch.dataset": "fashion-mnist", "fetch.source": "/some/folder", "fetch.timeout": 31, "fetch.retries": 1,
    "fetch.image_size": [8, 8], "fetch.color": "rgb", "fetch.test_size": 0.3, "fetch.seed": 1,
    "prepare.val_size": 150, "prepare.seed": 7,
    "model.kind": "cnn", "model.channels": [4], "model.hidden": [16], "model.activation": "tanh", "model.dropout": 0.3,
    "train.epochs": 3, "train.batch_size": 16, "train.optimizer": "sgd", "train.lr": 0.01, "train.momentum": 0.5,
    "train.weight_decay": 0.01, "train.schedule": "step", "train.warmup_epochs": 1, "train.step_epochs": 2,
    "train.gamma": 0.5, "train.label_smoothing": 0.1, "train.shift": 1, "train.patience": 2, "train.seed": 5,
    "train.device": "cpu",
    "evaluate.batch_size": 100, "evaluate.device": "cpu",
    "plots.samples": 4, "plots.misclassified": 2, "plots.seed": 3, "plots.dpi": 60,
}


@pytest.fixture(scope="module")
def ran_project(tmp_path_factory):
    """The digits pipeline, run once through `dvc repro` in a git copy."""
    project = Project(tmp_path_factory.mktemp("dag"), DIGITS)
    assert project.repro() == list(STAGES)
    project.commit("run")
    return project


def test_second_repro_runs_nothing(ran_project):
    assert ran_project.repro() == []
    assert ran_project.status() == {}


def test_changing_each_key_invalidates_only_its_stage(ran_project):
    assert set(CHANGES) == {f"{s}.{k}" for s, rules in P.SCHEMA.items() for k in rules}
    original = (ran_project.path / "params.yaml").read_text()
    try:
        for key, value in CHANGES.items():
            ran_project.set(key, value)
            changed = ran_project.status()
            owner = [s for s in STAGES if key in declared_params(s)]
            assert sorted(changed) == owner, key
            (ran_project.path / "params.yaml").write_text(original)
    finally:
        (ran_project.path / "params.yaml").write_text(original)


def test_a_mistyped_key_reruns_its_stage_which_stops_on_it(ran_project):
    """dvc.yaml tracks whole sections: a key added by mistake changes its stage alone, and
    `dvc repro` runs it - into the one-line refusal - instead of saying all is up to date."""
    original = (ran_project.path / "params.yaml").read_text()
    try:
        (ran_project.path / "params.yaml").write_text(original.replace("\ntrain:\n", "\ntrain:\n  epoch: 50\n", 1))
        assert sorted(ran_project.status()) == ["train"]
        proc = ran_project.dvc("repro", check=False)
        assert proc.returncode != 0
        assert "error: params.yaml: unknown key train.epoch (did you mean train.epochs?)" in proc.stdout + proc.stderr
    finally:
        (ran_project.path / "params.yaml").write_text(original)
        ran_project.git("checkout", "--", "dvc.lock")
    assert ran_project.status() == {}


def data_deps(stage: str) -> list[str]:
    return [d for d in DVC_YAML[stage]["deps"] if d not in code_deps(stage)]


# a file of each room, and the stages a change to it reruns by itself (`dvc status`: before any
# stage runs; a later stage may rerun too where the new code writes other bytes)
ROOM_CHANGES = {
    "figures/training.py": ["plots"],
    "sources/folder.py": ["fetch"],
    "nn/layers.py": ["train", "evaluate", "plots"],
    "nn/data.py": list(STAGES),  # the idx format: fetch and prepare read it too
    "harness/files.py": list(STAGES),
    "params/schema.py": list(STAGES),
    "stages/evaluate.py": ["evaluate"],
}


def test_python_s_bytecode_beside_the_code_changes_no_room(ran_project):
    """Python writes __pycache__/ into every room it imports (where PYTHONDONTWRITEBYTECODE is not
    set, as on a user's machine): .dvcignore keeps it out of the rooms' hashes."""
    made = []
    try:
        for room in ROOMS:
            cache = ran_project.path / room / "__pycache__"
            cache.mkdir(exist_ok=True)
            (cache / "x.cpython-311.pyc").write_bytes(b"bytecode")
            made.append(cache)
        assert ran_project.status() == {}
    finally:
        for cache in made:
            (cache / "x.cpython-311.pyc").unlink()


def test_a_change_in_a_room_reruns_exactly_the_stages_that_use_it(ran_project):
    no_stage_runs = {"predict", "remote", "sweep"}
    assert {rel.split("/")[0] for rel in ROOM_CHANGES} >= set(ROOMS) - no_stage_runs
    for rel, stages in ROOM_CHANGES.items():
        path = ran_project.path / rel
        original = path.read_bytes()
        try:
            path.write_bytes(original + b"\n# a change\n")
            assert sorted(ran_project.status()) == sorted(stages), rel
        finally:
            path.write_bytes(original)
    assert ran_project.status() == {}


def test_a_change_in_the_figures_room_reruns_plots_alone(ran_project):
    """Really run: the figures' code changed, so plots redraws, and nothing before it runs."""
    path = ran_project.path / "figures" / "report.py"
    original = path.read_bytes()
    try:
        path.write_bytes(original + b"\n# a change\n")
        assert ran_project.repro() == ["plots"]
    finally:
        path.write_bytes(original)
        back_to_the_commit(ran_project)


def digest(project, rel: str) -> bytes:
    """The bytes of a file, or of every file under a folder."""
    path = project.path / rel
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return b"".join(p.relative_to(project.path).as_posix().encode() + p.read_bytes() for p in files)


def back_to_the_commit(project) -> None:
    """The committed run again: params.yaml, dvc.lock and reports/ from git, the rest from DVC's cache
    (one `dvc checkout`, not a repro of the stages that ran)."""
    project.git("checkout", "HEAD", "--", ".")  # HEAD: autostage has staged the new dvc.lock
    project.dvc("checkout")
    assert project.status() == {}


@pytest.mark.parametrize("key,value,must_run", [
    ("plots.seed", 11, ["plots"]),
    ("evaluate.batch_size", 50, ["evaluate"]),
    ("train.lr", 0.003, ["train", "evaluate", "plots"]),
    ("prepare.seed", 43, ["prepare", "train", "evaluate", "plots"]),
])
def test_repro_reruns_exactly_the_dependent_stages(ran_project, key, value, must_run):
    """The stage that reads the key reruns, and a later stage reruns exactly when one of
    its inputs changed: evaluating at another batch size may write the same bytes (the
    same predictions, on some CPUs' rounding), and then `plots` is rightly skipped."""
    inputs = sorted({d for stage in STAGES for d in data_deps(stage)})
    try:
        before = {rel: digest(ran_project, rel) for rel in inputs}
        ran_project.set(key, value)
        ran = ran_project.repro()
        changed = {rel for rel in inputs if digest(ran_project, rel) != before[rel]}
        owner = must_run[0]
        later = STAGES[STAGES.index(owner) + 1:]
        assert ran == [owner] + [s for s in later if changed & set(data_deps(s))], changed
        assert set(must_run) <= set(ran)
    finally:
        back_to_the_commit(ran_project)


def test_switching_the_source_reruns_fetch_only(ran_project, tmp_path):
    """Same data from a local folder of re-compressed files: fetch reruns, nothing after it."""
    import gzip

    raw = ran_project.path / "data" / "raw"
    folder = tmp_path / "copy"
    folder.mkdir()
    before = {p.name: p.read_bytes() for p in raw.iterdir()}
    for name, data in before.items():
        if name != "dataset.json":
            (folder / f"{name}.gz").write_bytes(gzip.compress(data, compresslevel=1, mtime=12345))
    try:
        ran_project.set("fetch.source", str(folder))
        assert ran_project.repro() == ["fetch"]
        assert {p.name: p.read_bytes() for p in raw.iterdir()} == before
    finally:
        back_to_the_commit(ran_project)


def test_dvc_commands_work(ran_project):
    metrics = json.loads(ran_project.dvc("metrics", "show", "--json").stdout)
    assert json.dumps(metrics).count("accuracy") >= 1
    assert "accuracy" in ran_project.dvc("metrics", "show").stdout
    ran_project.dvc("metrics", "diff")
    ran_project.set("train.lr", 0.004)
    try:
        diff = ran_project.dvc("params", "diff").stdout
        assert "train.lr" in diff and "0.004" in diff
    finally:
        ran_project.git("checkout", "params.yaml")
    out = ran_project.dvc("plots", "show", "-o", "plots_html").stdout
    assert (ran_project.path / "plots_html" / "index.html").exists(), out
    shutil.rmtree(ran_project.path / "plots_html")  # the page is the user's: git status stays as it was


def test_a_forced_rerun_changes_nothing(ran_project):
    """Every stage run again writes the same bytes - metrics and dvc.lock included - and git has
    nothing to say: the training time goes to reports/train/timing.json, which git ignores and no
    stage reads or outputs. `dvc metrics diff` is empty; `dvc exp show --csv` has at most 70
    columns, at most 20 of them dependencies, and one train.device column (the param's)."""
    before = {rel: ran_project.read(rel) for rel in ("reports/metrics.json", "dvc.lock")}
    assert ran_project.dvc("repro", "--force").stdout.count("Running stage") == len(STAGES)
    assert {rel: ran_project.read(rel) for rel in before} == before
    assert ran_project.git("status", "--porcelain") == ""
    timing = json.loads(ran_project.read("reports/train/timing.json"))
    assert timing["seconds"] > 0 and timing["epochs_run"] == 6
    assert json.loads(ran_project.dvc("metrics", "diff", "--json").stdout or "{}") == {}
    assert ran_project.status() == {}
    header = ran_project.dvc("exp", "show", "--csv").stdout.splitlines()[0].split(",")
    assert header.count("train.device") == 1, header
    assert len(header) <= 70, (len(header), header)
    deps = [c for c in header if c in {d for stage in STAGES for d in DVC_YAML[stage]["deps"]}]
    assert len(deps) <= 20, deps


def test_outputs_are_where_the_readme_says(ran_project):
    for rel in ["data/raw/train-images-idx3-ubyte", "data/prepared/train.npz", "models/model.npz",
                "reports/metrics.json", "reports/train/history.json", "reports/confusion.json",
                "reports/report.md", *(f"reports/figures/{n}.png" for n in
                                       ("predictions", "misclassified", "confusion_matrix", "training_curves",
                                        "per_class_accuracy", "confidence", "first_layer"))]:
        assert (ran_project.path / rel).is_file(), rel
    metrics = json.loads(ran_project.read("reports/metrics.json"))
    assert set(metrics) == {"accuracy", "loss", "macro_f1", "top3", "parameters"}
    assert metrics["accuracy"] > 0.8
    scores = json.loads(ran_project.read("reports/scores.json"))
    assert len(scores["per_class"]) == 10 and scores["samples"] == 360
    history = json.loads(ran_project.read("reports/train/history.json"))
    assert [r["epoch"] for r in history] == [1, 2, 3, 4, 5, 6]
    confusion = json.loads(ran_project.read("reports/confusion.json"))
    assert sum(r["count"] for r in confusion) == 360 and set(confusion[0]) == {"actual", "predicted", "count",
                                                                           "actual_index", "predicted_index"}
    assert os.path.getsize(ran_project.path / "reports/figures/predictions.png") > 1000
