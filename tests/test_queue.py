"""An experiment sweep through the DVC queue, on the bundled digits."""

from __future__ import annotations

import hashlib
import re

import yaml

from tests.project import DIGITS, Project


def test_queue_two_experiments_and_read_both(tmp_path):
    project = Project(tmp_path / "q", DIGITS)
    project.repro()
    project.commit("baseline run")
    queued = project.dvc("exp", "run", "--queue", "-S", "train.lr=0.001,0.005").stdout
    names = set(re.findall(r"Queued experiment '([^']+)'", queued))
    assert len(names) == 2, queued
    project.start_queue(2, tmp_path / "queue.log")
    status = project.wait_for_queue(names)
    assert "Failed" not in status, project.dvc("queue", "logs", status.split()[-1], check=False).stdout
    project.dvc("queue", "stop", check=False)
    runs = [{"name": name, "lr": e["params"]["train"]["lr"], "accuracy": e["metrics"].get("accuracy")}
            for name, e in project.experiments().items()]
    by_lr = {r["lr"]: r for r in runs}
    assert {0.001, 0.005} <= set(by_lr), runs
    for lr in (0.001, 0.005):
        assert by_lr[lr]["accuracy"] is not None and by_lr[lr]["accuracy"] > 0.5, runs
    assert by_lr[0.001]["name"] != by_lr[0.005]["name"]
    # a queued run writes the bytes the same params write in the workspace
    queued = {}
    for ref in project.git("for-each-ref", "--format=%(refname)", "refs/exps").split():
        lock = yaml.safe_load(project.git("show", f"{ref}:dvc.lock"))
        train = lock["stages"]["train"]
        model = next(o["md5"] for o in train["outs"] if o["path"] == "models/model.npz")
        queued[train["params"]["params.yaml"]["train"]["lr"]] = model
    project.dvc("exp", "run", "-S", "train.lr=0.001")
    assert hashlib.md5(project.read("models/model.npz")).hexdigest() == queued[0.001]
