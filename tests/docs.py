"""The shell commands of the README and docs/*.md, for the tests that run them.

A command is a line of a ```bash (or sh, shell, console) block, `\\`-continued lines joined,
its trailing `# comment` dropped; its section is the heading above the block. A test runs the
commands of a section as written with `section_commands(path, heading)`, which leaves out only
the commands listed in NOT_RUN below, each with the reason it cannot run in the suite.
tests/test_docs.py fails on a command that neither is in a section some test runs that way, nor
is listed here - so a command added to a page without a test is caught.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from tests.project import ROOT

SHELL = {"bash", "sh", "shell", "console"}

# command as written (joined, comment dropped) -> why no test runs it
NOT_RUN = {
    "jupyter lab notebooks/tour.ipynb":
        "opens a browser; tests/test_notebook.py starts the same server on the tour without one and reads "
        "the notebook back from it (and executes the notebook)",
    'pip install -c constraints.txt -e ".[gpu]"':
        "needs an NVIDIA GPU and CUDA 12 (cupy-cuda12x); benchmarks/gpu_session.sh runs it on a GPU machine",
    'pip install -c constraints.txt -e ".[s3]"':
        "installs packages; the suite's install has the extra ([dev] includes [s3])",
    ". .venv/bin/activate":
        "the suite already runs with the venv's bin first on PATH (tests/project.py env())",
    # docs/sweeps.md
    "(umask 077 && mkdir -p ~/.ray && scp 10.0.0.5:.ray/auth_token ~/.ray/auth_token)":
        "copies the token from another machine: tests/test_sweep.py copies the head's ~/.ray/auth_token to the "
        "worker's HOME",
    "python -m remote && dvc push":
        "needs an S3 remote; tests/test_remote.py runs docs/team.md's, which sets up the same remote on moto's S3 "
        "server, and both commands",
    "ray up cluster.yaml": "needs a cloud account",
    "ray exec cluster.yaml 'cd mnist && . .venv/bin/activate && RAY_AUTH_MODE=token python -m sweep -S "
    "train.lr=0.001,0.003 --address $(hostname -I | cut -d\" \" -f1):6379'": "needs the cloud cluster of ray up",
    "ray down cluster.yaml": "needs the cloud cluster of ray up",
    "kubectl apply -f raycluster.yaml": "needs a Kubernetes cluster with the KubeRay operator",
    "kubectl exec -it HEAD_POD -- bash -c 'cd mnist && python -m sweep -S train.lr=0.001,0.003 --address "
    "$RAY_IP:6379'": "needs the KubeRay cluster above",
}


@dataclass(frozen=True)
class Command:
    path: str  # relative to the repository, e.g. docs/team.md
    heading: str  # the heading line above the block, e.g. "## Your own data"
    text: str  # as written: continuations joined, the trailing comment dropped
    line: int  # where it starts
    block: int  # the line its fenced block starts on


def pages() -> list[Path]:
    """The README and every page of docs/."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def fenced_blocks(path: Path) -> list[tuple[str, str, str, int]]:
    """(language, heading above, body, first line) of each fenced block of a Markdown page."""
    blocks, heading, fence = [], "", None
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if fence is None:
            if m := re.match(r"^```(\S*)\s*$", line):
                fence = (m[1], heading, [], number + 1)
            elif re.match(r"^#{1,6} ", line):
                heading = line.strip()
        elif line.startswith("```"):
            blocks.append((fence[0], fence[1], "\n".join(fence[2]), fence[3]))
            fence = None
        else:
            fence[2].append(line)
    return blocks


def strip_comment(command: str) -> str:
    """`cmd   # a comment` -> `cmd` (a `#` inside quotes, or without a space before it, stays)."""
    quote = None
    for i, char in enumerate(command):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or command[i - 1] in " \t"):
            return command[:i].rstrip()
    return command.rstrip()


def commands(path: Path) -> list[Command]:
    """Every shell command of a page, in order."""
    found = []
    rel = path.relative_to(ROOT).as_posix()
    for language, heading, body, first in fenced_blocks(path):
        if language not in SHELL:
            continue
        joined, start = "", None
        for number, line in enumerate(body.splitlines(), first):
            if start is None:
                start = number
            if line.rstrip().endswith("\\"):
                joined += line.rstrip()[:-1] + " "
                continue
            text = strip_comment(re.sub(r"\s+", " ", joined + line).strip())
            if text:
                found.append(Command(rel, heading, text, start, first))
            joined, start = "", None
    return found


def all_commands() -> list[Command]:
    return [command for page in pages() for command in commands(page)]


def section_commands(path: str, heading: str) -> list[str]:
    """The commands of one section, in order, as a test runs them: all but those NOT_RUN lists."""
    return [text for block in section_blocks(path, heading) for text in block]


def section_blocks(path: str, heading: str) -> list[list[str]]:
    """The commands of one section block by block (a test that runs each block somewhere else, say
    on another machine of a cluster): all but those NOT_RUN lists."""
    blocks = {}
    for c in commands(ROOT / path):
        if c.heading == heading:
            blocks.setdefault(c.block, []).append(c.text)
    assert blocks, f"{path} has no commands under {heading!r}"
    return [[text for text in block if text not in NOT_RUN] for block in blocks.values()]


def shown_outputs(path: str, heading: str) -> list[str]:
    """The ```text blocks of a section: outputs the page shows."""
    return [body for language, head, body, _ in fenced_blocks(ROOT / path) if language == "text" and head == heading]
