"""params.yaml as input: read as DVC reads it (UTF-8, YAML 1.2), strictly (no duplicate keys,
anchors, aliases or tags), with bounds on every value that could never make sense. Every
refusal is one line naming params.yaml and the key (or the line) - never a traceback."""

from __future__ import annotations

import random
import re
import subprocess
import sys

import pytest
import yaml

import params as P
from tests.project import DIGITS, GIB, ROOT, Project, address_space_cap, assert_clean_failure, env

SECTIONS = tuple(P.SCHEMA)
# the repo's params.yaml (flow lists, comments), on the offline digits data
BASE = (ROOT / "params.yaml").read_text().replace("dataset: mnist ", "dataset: digits")


def edit(text: str, dotted: str, raw: str) -> str:
    """`text` with the line of `dotted` (section.key) set to `key: raw`, raw YAML as written."""
    section, key = dotted.split(".")
    body = re.search(rf"(?ms)^{section}:\n(.*?)(?=^\S|\Z)", text)
    line = re.search(rf"(?m)^  {key}:.*$", body.group(1))
    start = body.start(1) + line.start()
    return text[:start] + f"  {key}: {raw}" + text[body.start(1) + line.end():]


def line_of(text: str, needle: str, nth: int = 0) -> int:
    """1-based line of the nth occurrence of needle."""
    at = -1
    for _ in range(nth + 1):
        at = text.index(needle, at + 1)
    return text.count("\n", 0, at) + 1


def load(tmp_path, content):
    path = tmp_path / "params.yaml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return P.load(*SECTIONS, path=path)


def refused(tmp_path, content, *patterns) -> str:
    """P.load raises ParamsError: one short line naming the file and each pattern."""
    with pytest.raises(P.ParamsError) as info:
        load(tmp_path, content)
    message = str(info.value)
    prefix = str(tmp_path / "params.yaml") + ": "
    assert "\n" not in message and message.startswith(prefix), message
    assert len(message) - len(prefix) < 260, message
    for pattern in patterns:
        assert pattern in message, message
    return message


@pytest.fixture(scope="module")
def bare(tmp_path_factory):
    """A project without data: the stages must stop at params.yaml before reading any."""
    return Project(tmp_path_factory.mktemp("params"), DIGITS)


@pytest.fixture
def project(bare):
    original = (bare.path / "params.yaml").read_bytes()
    yield bare
    (bare.path / "params.yaml").write_bytes(original)


def stage(project, name: str, content, memory: int = 2 * GIB, timeout: float = 60):
    """Run a stage on `content` as params.yaml under an address-space cap and a timeout;
    it must fail cleanly and write nothing."""
    (project.path / "params.yaml").write_bytes(content if isinstance(content, bytes) else content.encode())
    proc = subprocess.run([sys.executable, "-m", f"stages.{name}"], cwd=project.path, env=env(),
                          capture_output=True, text=True, timeout=timeout, preexec_fn=address_space_cap(memory))
    outputs = ("data/raw", "data/prepared", "data/predictions", "models")  # data/source is an input
    assert not any((project.path / out).exists() for out in outputs)
    return proc


def test_the_repo_params_and_the_test_base_are_valid(tmp_path):
    assert load(tmp_path, (ROOT / "params.yaml").read_text())["train"]["lr"] == 0.002
    assert load(tmp_path, BASE)["fetch"]["dataset"] == "digits"


def test_an_unknown_section_stops_every_stage(tmp_path, project):
    """A section no stage reads is a typo or a leftover: every stage refuses it, even one that reads
    other sections, and names the section it most likely meant."""
    refused(tmp_path, BASE + "trian:\n  lr: 0.1\n", "unknown section trian (did you mean train?)")
    refused(tmp_path, BASE + "notes: hello\n", "unknown section notes; the sections are fetch, prepare, model")
    assert_clean_failure(stage(project, "fetch", BASE + "trian:\n  lr: 0.1\n"), "params.yaml: unknown section trian")


# -- 1. not UTF-8 text ------------------------------------------------------------
@pytest.mark.parametrize("content,patterns", [
    (BASE.replace("# Every", "# Every café").encode("latin-1"), ["byte 0xe9 at offset 11, line 1"]),
    (edit(BASE, "fetch.source", "/données # x").encode("latin-1"), ["byte 0xe9", f"line {line_of(BASE, 'source:')}"]),
    (BASE.encode("utf-16"), ["UTF-16 byte-order mark"]),
    (BASE.encode("utf-32"), ["UTF-32 byte-order mark"]),
    (random.Random(0).randbytes(4096), ["byte 0x"]),
], ids=["latin-1 comment", "latin-1 value", "utf-16", "utf-32", "binary"])
def test_not_utf8_is_refused_with_the_offset(tmp_path, content, patterns):
    refused(tmp_path, content, "not UTF-8 text", "save it as UTF-8", *patterns)


def test_control_characters_and_a_utf8_bom(tmp_path):
    refused(tmp_path, BASE.replace("prepare:", "prepare:\x00"), "not valid YAML",
            f"line {line_of(BASE, 'prepare:')}", "#x0000")
    assert load(tmp_path, "\ufeff" + BASE)["train"]["lr"] == 0.002  # a UTF-8 BOM is fine (DVC reads it too)


def test_not_utf8_in_a_stage(project):
    line = assert_clean_failure(stage(project, "fetch", BASE.encode("utf-16")), "params.yaml", "not UTF-8 text")
    assert "codec" not in line


# -- 2. duplicate keys ------------------------------------------------------------
def test_a_repeated_key_names_both_lines(tmp_path):
    text = BASE.replace("  lr: 0.002", "  lr: 0.002\n  lr: 0.1")
    refused(tmp_path, text, "duplicate key train.lr",
            f"lines {line_of(text, '  lr:')} and {line_of(text, '  lr:', 1)}", "keep one")


@pytest.mark.parametrize("text,patterns", [
    (BASE + "train:\n  lr: 0.1\n", ["duplicate section train", f"lines {line_of(BASE, 'train:')} and"]),
    (BASE.replace("  seed: 42", '  seed: 42\n  "seed": 7'), ["duplicate key prepare.seed"]),  # quoted: same key
    (BASE.replace("prepare:\n", "prepare:\n  val_size: 10\n"), ["duplicate key prepare.val_size"]),
    (edit(BASE, "model.hidden", "[32]") + "evaluate: {batch_size: 1, batch_size: 2}\n",
     ["duplicate section evaluate"]),
    (edit(BASE, "model.hidden", "{a: 1, a: 2}"), ["duplicate key model.hidden.a", "twice on line"]),
], ids=["section", "quoted key", "first and later", "flow section", "nested flow"])
def test_duplicates_are_refused(tmp_path, text, patterns):
    refused(tmp_path, text, *patterns)


def test_dvc_refuses_duplicates_too():
    from dvc.utils.serialize._yaml import YAMLError, parse_yaml

    with pytest.raises(YAMLError):
        parse_yaml(BASE.replace("  lr: 0.002", "  lr: 0.002\n  lr: 0.1"), "params.yaml")


def test_a_merge_key_may_repeat_what_it_merges(tmp_path):
    assert load(tmp_path, edit(BASE, "train.lr", "0.1\n  <<: {lr: 0.5}"))["train"]["lr"] == 0.1


def test_duplicate_in_a_stage(project):
    text = BASE.replace("  epochs: 15", "  epochs: 15\n  epochs: 3")
    assert_clean_failure(stage(project, "train", text), "params.yaml", "duplicate key train.epochs",
                         f"lines {line_of(text, 'epochs:')} and {line_of(text, 'epochs:', 1)}")


# -- 3. numbers as YAML 1.2 reads them: what DVC records is what the stage uses ---------
SPELLINGS = [  # key, as written, the value both read
    ("train.lr", "1e-3", 0.001),          # YAML 1.1: the string '1e-3'
    ("train.lr", "1E-3", 0.001),
    ("train.lr", "2e+1", 20.0),           # 1.1: a string (no dot)
    ("train.weight_decay", "1e-4", 0.0001),
    ("train.momentum", ".5", 0.5),
    ("train.momentum", "+.5", 0.5),       # 1.1: a string
    ("fetch.timeout", "1.e1", 10.0),      # 1.1: a string
    ("fetch.timeout", "30", 30),
    ("prepare.seed", "010", 10),          # 1.1: octal, 8
    ("prepare.seed", "08", 8),            # 1.1: a string
    ("prepare.seed", "0o17", 15),         # 1.1: a string
    ("prepare.seed", "0x1F", 31),
    ("prepare.seed", "1_000", 1000),
    ("fetch.source", "on", "on"),         # 1.1: True
    ("fetch.source", "no", "no"),         # 1.1: False
    ("fetch.source", "Off", "Off"),
    ("fetch.source", "y", "y"),
]


@pytest.mark.parametrize("key,raw,value", SPELLINGS, ids=[f"{k}={r}" for k, r, _ in SPELLINGS])
def test_the_stage_reads_what_dvc_reads(tmp_path, key, raw, value):
    from dvc.utils.serialize._yaml import parse_yaml

    text = edit(BASE, key, raw)
    section, name = key.split(".")
    ours = load(tmp_path, text)[section][name]
    dvc = parse_yaml(text, "params.yaml")[section][name]
    assert (ours, type(ours)) == (dvc, type(dvc)) == (value, type(value))


@pytest.mark.parametrize("key,raw,dvc_reads,pattern", [
    ("fetch.timeout", "1:30", "1:30", "fetch.timeout must be a number"),  # 1.1: 90 (sexagesimal)
    ("train.lr", "yes", "yes", "train.lr must be a number > 0 (got 'yes')"),  # 1.1: True
    ("train.lr", ".5e3", ".5e3", "train.lr must be a number > 0 (got '.5e3')"),  # a string in both
])
def test_spellings_dvc_reads_as_strings_are_refused(tmp_path, key, raw, dvc_reads, pattern):
    from dvc.utils.serialize._yaml import parse_yaml

    text = edit(BASE, key, raw)
    section, name = key.split(".")
    assert parse_yaml(text, "params.yaml")[section][name] == dvc_reads
    refused(tmp_path, text, pattern)


@pytest.mark.parametrize("raw,pattern", [
    ("2024-13-45", "'2024-13-45' looks like a date but is not one; quote it"),  # DVC: ValueError
    ("._", "'._' looks like a number"),
    ("-_", "'-_' looks like an integer"),
    ("!!float 1", "tag !!float: tags are not allowed"),
    ('!!python/name:os.system ""', "tags are not allowed"),
])
def test_what_cannot_be_read_names_the_line(tmp_path, raw, pattern):
    refused(tmp_path, edit(BASE, "fetch.source", raw), f"line {line_of(BASE, 'source:')}", pattern)


def test_a_yaml_1_1_directive_is_refused(tmp_path):
    refused(tmp_path, "%YAML 1.1\n---\n" + BASE, "line 1: %YAML 1.1", "remove the directive")
    assert load(tmp_path, "%YAML 1.2\n---\n" + BASE)["train"]["lr"] == 0.002


def test_the_loader_leaves_pyyaml_alone(tmp_path):
    load(tmp_path, edit(BASE, "train.lr", "1e-3"))
    assert yaml.safe_load("a: 1e-3\nb: 010\nc: on") == {"a": "1e-3", "b": 8, "c": True}


def test_dvc_params_diff_shows_what_the_stage_uses(project):
    text = (project.path / "params.yaml").read_text()  # the committed params (block style)
    for key, raw in (("train.lr", "1e-3"), ("prepare.seed", "010"), ("fetch.source", "on")):
        text = edit(text, key, raw)
    (project.path / "params.yaml").write_text(text)
    import json

    diff = json.loads(project.dvc("params", "diff", "--json").stdout)["params.yaml"]
    used = P.load(*SECTIONS, path=project.path / "params.yaml")
    assert {k: v["new"] for k, v in diff.items()} == {"train.lr": 0.001, "prepare.seed": 10, "fetch.source": "on"}
    assert (used["train"]["lr"], used["prepare"]["seed"], used["fetch"]["source"]) == (0.001, 10, "on")


def test_1e_minus_3_in_a_stage_gets_past_params(project):
    """The README writes 1e-4: the stage takes it (and then stops at the missing data)."""
    proc = stage(project, "train", edit(BASE, "train.lr", "1e-3"))
    line = assert_clean_failure(proc, "train.npz")
    assert "params.yaml" not in line


# -- 4. anchors, aliases and size bombs -------------------------------------------------
def billion_laughs(levels: int = 9) -> str:
    lines = ['lol0: &l0 "lol"']
    lines += [f"lol{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]" for i in range(1, levels + 1)]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("content,patterns", [
    (BASE + billion_laughs(), ["anchor &l0", "anchors and aliases are not allowed"]),
    ("x:\n  " + billion_laughs().replace("\n", "\n  ") + "\n" + edit(BASE, "model.hidden", "*l9"),  # 10**9 'lol's
     ["line 2: anchor &l0", "anchors and aliases are not allowed"]),
    (edit(BASE, "model.hidden", "[" * 30_000 + "]" * 30_000), ["nested more than 16 levels deep"]),
    (edit(BASE, "model.hidden", "[" + ", ".join(["1"] * 10_000) + "]"), ["model.hidden must be a list", "..."]),
    (edit(BASE, "model.kind", "x" * 60_000), ["model.kind must be one of mlp, cnn", "..."]),
    (edit(BASE, "train.seed", "9" * 60_000), ["train.seed", "a number 60000 characters long"]),
], ids=["billion laughs", "alias into a key", "deep nesting", "long list", "long string", "long int"])
def test_bombs_fail_fast_in_little_memory(project, content, patterns):
    proc = stage(project, "train", content, memory=2 * GIB, timeout=60)
    assert_clean_failure(proc, "params.yaml", *patterns)
    assert len(proc.stderr.splitlines()[-1]) < 300


def test_a_huge_file_is_not_read(project):
    """A 4 GiB params.yaml (sparse: no disk used), twice the memory cap: refused by its size."""
    path = project.path / "params.yaml"
    stage(project, "train", BASE)
    with path.open("r+b") as f:
        f.truncate(4 * GIB)
    proc = subprocess.run([sys.executable, "-m", "stages.train"], cwd=project.path, env=env(), capture_output=True,
                          text=True, timeout=60, preexec_fn=address_space_cap(2 * GIB))
    assert_clean_failure(proc, "params.yaml", "larger than 64 KiB", "is it the right file?")


def test_an_anchor_or_alias_names_its_line(tmp_path):
    text = edit(edit(BASE, "train.lr", "&rate 0.01"), "train.momentum", "*rate")
    refused(tmp_path, text, f"line {line_of(text, 'lr:')}: anchor &rate", "write each value out")
    text = edit(BASE, "train.momentum", "*rate")
    refused(tmp_path, text, f"line {line_of(text, 'momentum:')}: alias *rate", "not allowed")


def test_printed_values_are_short_and_on_one_line(tmp_path):
    refused(tmp_path, edit(BASE, "fetch.source", '"a\\nb"'), "fetch.source must be a non-empty line", "'a\\nb'")
    refused(tmp_path, edit(BASE, "model.hidden", "[[[[[[1]]]]]]"), "model.hidden", "[[[...]]]")
    refused(tmp_path, BASE.replace("  lr: 0.002", '  "l\\nr": 0.1'), "unknown key train.'l\\nr'")
    refused(tmp_path, BASE.replace("  lr: 0.002", "  " + "l" * 1000 + ": 0.1"), "unknown key train.'llll")


# -- 5. bounds: a value that can never make sense names its key -----------------------
TOO_BIG = [
    ("prepare.seed", str(2 ** 32), "prepare.seed must be an integer >= 0 and <= 4294967295"),
    ("train.seed", str(2 ** 32), "train.seed must be an integer >= 0 and <= 4294967295"),
    ("plots.seed", "-1", "plots.seed must be an integer >= 0"),
    ("train.batch_size", str(10 ** 12), "train.batch_size must be an integer >= 1 and <= 1048576"),
    ("evaluate.batch_size", str(10 ** 15), "evaluate.batch_size must be an integer >= 1 and <= 1048576"),
    ("model.hidden", f"[{10 ** 9}]", "model.hidden must be a list of positive integers (each <= 65536"),
    ("model.hidden", "[" + ", ".join(["8"] * 65) + "]", "at most 64 of them"),
    ("model.channels", "[8, 100000]", "model.channels must be a list of positive integers (each <= 4096"),
    ("model.channels", "[" + ", ".join(["8"] * 17) + "]", "1 to 16 of them"),
    ("model.channels", "[]", "model.channels"),
    ("train.epochs", str(10 ** 9), "train.epochs must be an integer >= 1 and <= 10000"),
    ("train.warmup_epochs", str(10 ** 9), "train.warmup_epochs must be an integer >= 0 and <= 10000"),
    ("train.step_epochs", str(10 ** 9), "train.step_epochs must be an integer >= 1 and <= 10000"),
    ("train.patience", str(10 ** 9), "train.patience must be an integer >= 0 and <= 10000"),
    ("prepare.val_size", str(10 ** 12), "prepare.val_size must be a count >= 1 or a fraction in (0, 1)"),
    ("fetch.timeout", "1e300", "fetch.timeout must be a number of seconds > 0 and <= 86400"),
    ("fetch.timeout", ".inf", "fetch.timeout"),
    ("fetch.timeout", ".nan", "fetch.timeout"),
    ("fetch.timeout", "1" + "0" * 400, "fetch.timeout"),  # no OverflowError from float()
    ("fetch.source", "x" * 5000, "fetch.source must be a non-empty line of text (at most 4096"),
    ("train.lr", ".inf", "train.lr must be a number > 0"),
    ("train.lr", "-.nan", "train.lr"),
    ("train.weight_decay", "10", "train.weight_decay must be a number in [0, 1]"),
    ("prepare.seed", "0x" + "f" * 200, "prepare.seed must be an integer"),
]


@pytest.mark.parametrize("key,raw,pattern", TOO_BIG, ids=[f"{k}={r[:12]}" for k, r, _ in TOO_BIG])
def test_out_of_range_names_the_key(tmp_path, key, raw, pattern):
    refused(tmp_path, edit(BASE, key, raw), pattern, "(got ")


@pytest.mark.parametrize("key,raw", [
    ("prepare.seed", str(2 ** 32 - 1)), ("train.seed", "0"), ("train.batch_size", str(2 ** 20)),
    ("evaluate.batch_size", str(2 ** 20)), ("model.hidden", "[65536]"), ("model.hidden", "[]"),
    ("model.channels", "[4096]"), ("train.epochs", "10000"), ("train.warmup_epochs", "10000"),
    ("fetch.timeout", "86400"), ("fetch.timeout", "0.5"), ("train.weight_decay", "1"), ("prepare.val_size", "0.1"),
])
def test_the_bounds_themselves_are_allowed(tmp_path, key, raw):
    load(tmp_path, edit(BASE, key, raw))


@pytest.mark.parametrize("name,key,raw,pattern", [
    ("prepare", "prepare.seed", str(2 ** 32), "prepare.seed must be an integer >= 0 and <= 4294967295"),
    ("fetch", "fetch.timeout", "1e300", "fetch.timeout must be a number of seconds"),
    ("train", "train.batch_size", str(10 ** 12), "train.batch_size"),
])
def test_out_of_range_in_a_stage(project, name, key, raw, pattern):
    line = assert_clean_failure(stage(project, name, edit(BASE, key, raw)), "params.yaml", pattern)
    assert "val_size" not in line


def test_values_and_keys_are_printed_as_yaml_writes_them(tmp_path):
    """The value YAML read, in YAML's words (null, not None); a key with a space at its end quoted,
    with what to do; a section indented under another: named as a section."""
    refused(tmp_path, edit(BASE, "train.lr", "null"), "train.lr must be a number > 0 (got null)")
    refused(tmp_path, edit(BASE, "train.lr", "~"), "(got null)")
    refused(tmp_path, edit(BASE, "train.epochs", "true"), "train.epochs must be an integer", "(got true)")
    refused(tmp_path, edit(BASE, "train.lr", "2024-01-01"), "(got 2024-01-01)")
    refused(tmp_path, edit(BASE, "model.hidden", "[1, null]"), "(got [1, null])")
    refused(tmp_path, edit(BASE, "model.hidden", "[.inf, -.inf, .nan]"), "(got [.inf, -.inf, .nan])")
    refused(tmp_path, BASE.replace("  shift: 2", '  "shift ": 2'), "unknown key train.'shift '",
            "(a space around train.shift: remove it)")
    indented = BASE.replace("\ntrain:\n", "\n  train:\n", 1)
    message = refused(tmp_path, indented, "unknown key model.train", "(train is a section of its own: un-indent it")
    assert "did you mean" not in message
