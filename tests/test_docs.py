"""The docs cannot rot: every shell command of the README and docs/*.md is run by a test or
listed with the reason it cannot run (tests/docs.py NOT_RUN); a shown output is the real one;
the README is a front page whose links lead somewhere; and the README's tour runs as written.

A test runs a page's commands through `section_commands(page, heading)`; the check below finds
those calls in the tests themselves, so a claim of coverage is the code that runs them."""

from __future__ import annotations

import ast
import hashlib
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from tests.docs import NOT_RUN, Command, all_commands, commands, fenced_blocks, section_commands, shown_outputs
from tests.project import DIGITS, ROOT, Project, env
from tests.terminal import WIDTH, in_terminal, too_wide

README = ROOT / "README.md"
FIRST = "# MNIST from scratch, reproduced by DVC"  # the README's heading above its two commands
TOUR = "## A five-minute tour"
ANSWER = r"docs/images/three\.png: (\d \(\d\.\d{3}\), ){2}\d \(\d\.\d{3}\)"  # predict's line: the top 3


def string_constants(tree: ast.Module) -> dict[str, str]:
    """A test module's top-level string constants: `PAGE = "..."` and `PAGE, SECTION = "...", "..."`."""
    found = {}
    for node in tree.body:
        if isinstance(node, ast.Assign):
            for target in node.targets:
                pairs = (zip(target.elts, node.value.elts) if isinstance(target, ast.Tuple)
                         and isinstance(node.value, ast.Tuple) else [(target, node.value)])
                found |= {t.id: v.value for t, v in pairs
                          if isinstance(t, ast.Name) and isinstance(v, ast.Constant) and isinstance(v.value, str)}
    return found


RUNNERS = ("section_commands", "section_blocks")  # the functions of tests/docs.py a test runs a section with


def sections_run_by_tests() -> set[tuple[str, str]]:
    """(page, heading) of every `section_commands(page, heading)` (or `section_blocks`) call in tests/, its arguments
    written out or as the module's string constants."""
    found = set()
    for path in sorted((ROOT / "tests").glob("test_*.py")):
        tree = ast.parse(path.read_text())
        names = string_constants(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) in RUNNERS:
                values = [a.value if isinstance(a, ast.Constant) else names.get(getattr(a, "id", None))
                          for a in node.args]
                if len(values) == 2 and all(isinstance(v, str) for v in values):
                    found.add(tuple(values))
    return found


def uncovered(every: list[Command], run: set[tuple[str, str]]) -> list[Command]:
    """The commands neither in a section a test runs (the same text run anywhere counts) nor in NOT_RUN."""
    ran = {c.text for c in every if (c.path, c.heading) in run}
    return [c for c in every if c.text not in ran and c.text not in NOT_RUN]


def test_every_command_of_the_docs_is_run_by_a_test_or_listed_with_its_reason():
    every, run = all_commands(), sections_run_by_tests()
    assert len(every) > 30 and len(run) >= 5, (len(every), run)
    missing = [f"{c.path}:{c.line} [{c.heading}] {c.text}" for c in uncovered(every, run)]
    assert missing == [], "commands no test runs; run them in a test, or list them in tests/docs.py NOT_RUN:\n" + \
        "\n".join(missing)
    written = {c.text for c in every}
    assert [text for text in NOT_RUN if text not in written] == [], "NOT_RUN lists commands no page has any more"
    headings = {(c.path, c.heading) for c in every}
    assert run <= headings, f"tests run sections that have no commands: {run - headings}"


def test_the_check_fails_for_a_command_added_without_a_test(tmp_path, monkeypatch):
    """A page gains a command that no test runs: the check names it (and only it)."""
    page = ROOT / "docs" / "experiments.md"
    copy = tmp_path / "docs" / "experiments.md"
    copy.parent.mkdir()
    copy.write_text(page.read_text() + "\n## Something new\n\n```bash\ndvc exp gc --workspace   # tidy up\n```\n")
    monkeypatch.setattr("tests.docs.ROOT", tmp_path)
    added = commands(copy)
    monkeypatch.undo()
    every = [c for c in all_commands() if c.path != "docs/experiments.md"] + added
    missing = uncovered(every, sections_run_by_tests())
    assert [(c.heading, c.text) for c in missing] == [("## Something new", "dvc exp gc --workspace")]


def test_commands_are_read_as_written():
    """Continuations joined, trailing comments dropped, a `#` inside quotes kept."""
    own = [c.text for c in commands(ROOT / "docs" / "own-data.md")]
    colours = next(c for c in own if "data/source/colours" in c)
    assert "\\" not in colours and colours.endswith("-S train.shift=0 -S train.warmup_epochs=0"), colours
    assert "dvc exp show --only-changed --drop 'Created|State|Executor|.*/'" in section_commands("README.md", TOUR)
    from tests.docs import strip_comment

    assert strip_comment("echo '# not a comment'   # a comment") == "echo '# not a comment'"


def test_ci_runs_exactly_the_readme_s_two_commands():
    """.ci/run is the README's first block: the install with the pipeline, then the tests."""
    first = section_commands("README.md", FIRST)
    assert len(first) == 2 and first[0].endswith("&& dvc repro") and first[1].endswith("pytest"), first
    ci = [line for line in (ROOT / ".ci" / "run").read_text().splitlines()
          if line and not line.startswith(("#", "set ", "cd ", "export "))]
    assert ci == first


def test_the_readme_is_a_front_page():
    """At most 250 lines; the headline accuracy (reports/metrics.json's) in its first 60; links to
    at least five docs/ pages, each of which exists."""
    lines = README.read_text().splitlines()
    assert len(lines) <= 250, len(lines)
    import json

    accuracy = json.loads((ROOT / "reports" / "metrics.json").read_text())["accuracy"]
    headline = f"**{100 * accuracy:.2f} %**"
    assert headline in "\n".join(lines[:60]), f"{headline} is not in the first 60 lines"
    pages = set(re.findall(r"\]\((docs/[\w-]+\.md)\)", README.read_text()))
    assert len(pages) >= 5, pages
    assert {(ROOT / page).is_file() for page in pages} == {True}


def test_every_relative_link_of_the_docs_leads_to_a_file_and_heading_that_exist():
    broken = []
    for page in [README, *sorted((ROOT / "docs").glob("*.md"))]:
        text = re.sub(r"(?ms)^```.*?^```", "", page.read_text())  # not inside code blocks
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if target.startswith(("http://", "https://", "mailto:")):
                continue
            file, _, anchor = target.partition("#")
            dest = (page.parent / file).resolve() if file else page
            if not dest.exists():
                broken.append(f"{page.name}: {target}")
            elif anchor and dest.suffix == ".md" and anchor not in slugs(dest):
                broken.append(f"{page.name}: {target} (no such heading)")
    assert broken == []


def slugs(page: Path) -> set[str]:
    """GitHub's anchors of a page's headings: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"(?ms)^```.*?^```", "", page.read_text())
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in re.findall(r"(?m)^#+ (.*)$", text)}


def test_the_metrics_the_docs_show_are_dvc_s_real_output(tmp_path):
    """`dvc metrics show` on the committed reports/metrics.json prints what the README and the
    pipeline page show, byte for byte."""
    project = Project(tmp_path / "p")
    shutil.copytree(ROOT / "reports", project.path / "reports", dirs_exist_ok=True)
    real = project.dvc("metrics", "show").stdout.strip()
    shown = [body for page in [README, *sorted((ROOT / "docs").glob("*.md"))]
             for language, _, body, _ in fenced_blocks(page) if language == "text" and body.startswith("Path ")]
    assert len(shown) == 2 and {out.strip() for out in shown} == {real}, (shown, real)


def test_what_predict_prints_in_the_readme_is_the_committed_model_s_answer():
    """The README shows predict's answer for docs/images/three.png: the model dvc.lock records
    (the README's first command makes it) answers exactly that."""
    lock = yaml.safe_load((ROOT / "dvc.lock").read_text())["stages"]["train"]["outs"][0]
    model = ROOT / lock["path"]
    assert model.is_file() and hashlib.md5(model.read_bytes()).hexdigest() == lock["md5"], \
        f"{model} is not the model dvc.lock records: run the README's first command (or dvc checkout) first"
    proc = subprocess.run([sys.executable, "-m", "predict", "docs/images/three.png"], cwd=ROOT, env=env(),
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    shown = [out for out in shown_outputs("README.md", TOUR) if out.startswith("docs/images/three.png")]
    assert shown == [proc.stdout.strip()]


def test_the_readme_tour_as_written(tmp_path):
    """The README's tour, command by command, in a committed digits project (the same commands on
    the 8x8 digits: seconds, not minutes). Each exits 0; `dvc exp show` fits a 120-column terminal
    with no cell cut short; the experiments it names exist; and the workspace ends as committed."""
    project = Project(tmp_path / "p", DIGITS)
    shutil.copytree(ROOT / "docs" / "images", project.path / "docs" / "images")
    assert project.repro() == ["fetch", "prepare", "train", "evaluate", "plots"]
    project.commit("the committed run")
    committed = {rel: project.read(rel) for rel in ("params.yaml", "dvc.lock", "reports/metrics.json")}
    for command in section_commands("README.md", TOUR):
        status, output = in_terminal(command, project.path, env())
        assert status == 0, f"{command!r} exited {status}:\n{output}"
        if command.startswith(("dvc exp show", "dvc metrics")):
            assert too_wide(output) == [], f"{command!r} does not fit {WIDTH} columns:\n{output}"
        if command.startswith("dvc exp show"):
            assert all(word in output for word in ("lr", "small", "train.lr", "model.hidden")), output
        if command.startswith("python -m predict"):
            assert re.fullmatch(ANSWER, output.strip()), output
    assert {rel: project.read(rel) for rel in committed} == committed
    assert project.git("status", "--porcelain") == ""
    assert project.exp_refs() >= {"lr", "small"}
