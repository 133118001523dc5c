"""Every reader of a file a user hands the project, fed what Hypothesis makes: random bytes and
valid files with bytes changed, cut, inserted. Each input gives a valid result or the reader's
one expected error - never another exception (benchmarks/fuzz_targets.py holds the targets; a
long coverage-guided campaign is benchmarks/fuzz.py). A few hundred examples a target: seconds.

Regressions of what the campaign found are at the end, each with the input that crashed."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.project import ROOT, env

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow's about damaged metadata: not failures


def load_targets():
    spec = importlib.util.spec_from_file_location("fuzz_targets", ROOT / "benchmarks" / "fuzz_targets.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


targets = load_targets()
SEEDS = targets.seeds()
EXAMPLES = {"params": 300, "idx": 300, "idx_gz": 200, "model": 300, "image": 200, "dataset": 300}


@pytest.fixture(scope="module", autouse=True)
def scratch():
    """The targets' scratch folder goes with the module's last test."""
    yield
    targets.cleanup()


@st.composite
def mutated(draw, seeds: list[bytes]) -> bytes:
    """A valid file with a few bytes changed, inserted or deleted, or cut short."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        edit = draw(st.sampled_from(["flip", "insert", "delete", "cut"]))
        if edit == "flip" and at < len(data):
            data[at] = draw(st.integers(0, 255))
        elif edit == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif edit == "delete":
            del data[at:at + draw(st.integers(1, 8))]
        elif edit == "cut":
            del data[at:]
    return bytes(data)


@pytest.mark.parametrize("name", list(targets.TARGETS))
def test_a_reader_gives_a_result_or_its_one_error_for_any_bytes(name):
    @settings(max_examples=EXAMPLES[name], deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(st.one_of(st.binary(max_size=512), mutated(SEEDS[name])))
    def reader(data):
        targets.TARGETS[name](data)

    reader()


def test_the_seeds_are_read_without_an_error(tmp_path):
    """The valid examples the campaign starts from are valid: a target that refused them all would
    only ever test its first check."""
    from harness.errors import StageError
    from nn import serialize
    from params import load

    (tmp_path / "params.yaml").write_bytes(SEEDS["params"][0])
    load("train", path=tmp_path / "params.yaml")
    for data in SEEDS["model"]:
        (tmp_path / "m.npz").write_bytes(data)
        serialize.load(tmp_path / "m.npz")
    from sources.images import read_pixels

    for data in SEEDS["image"]:
        try:
            read_pixels(tmp_path / "x", data)
        except StageError as exc:  # pragma: no cover - the message says which
            raise AssertionError(exc) from None


@pytest.mark.parametrize("name,kind", [("params", "yaml"), ("dataset", "json")])
def test_deep_nesting_gives_the_readers_error(name, kind):
    """Structured inputs random bytes rarely make: brackets nested hundreds to thousands deep."""
    @settings(max_examples=30, deadline=None, database=None, derandomize=True)
    @given(st.integers(1, 5000))
    def reader(depth):
        targets.TARGETS[name](b"[" * depth + b"]" * depth if kind == "json" else b"a:\n" + b" [" * depth)

    reader()


@pytest.mark.parametrize("engine", ["atheris", "hypothesis"])
def test_the_campaign_reports_inputs_crashes_and_time(tmp_path, engine):
    """benchmarks/fuzz.py, briefly: one target, a few hundred inputs, its figures printed."""
    if engine == "atheris" and importlib.util.find_spec("atheris") is None:
        pytest.skip("atheris installs on Linux x86-64 only; the campaign then runs Hypothesis")
    proc = subprocess.run([sys.executable, "benchmarks/fuzz.py", "--target", "dataset", "--inputs", "400",
                           "--jobs", "1", "--engine", engine, "--crashes", str(tmp_path)], cwd=ROOT, env=env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(r"^  dataset +40\d inputs +0 crashes +[\d.]+ s$", proc.stdout, re.M), proc.stdout
    assert re.search(rf"^all: 40\d inputs, 0 crashes, \d+ s \({engine}, 1 at a time\)$", proc.stdout, re.M), proc.stdout


# -- what fuzzing found, one test each (the input that crashed, or one made like it) --------------
def fraction_offset_tiff() -> bytes:
    """A TIFF whose StripOffsets tag is a RATIONAL (a fraction), as the campaign's crashing input:
    Pillow fails while decoding with TypeError ("'IFDRational' object cannot be interpreted as an
    integer"), which read_pixels let through as a traceback."""
    import io
    import struct

    import numpy as np
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.arange(120, dtype=np.float32).reshape(12, 10)).save(buf, "TIFF")
    data = bytearray(buf.getvalue())
    ifd = struct.unpack_from("<I", data, 4)[0]
    for i in range(struct.unpack_from("<H", data, ifd)[0]):
        at = ifd + 2 + 12 * i
        if struct.unpack_from("<H", data, at)[0] == 273:  # StripOffsets
            struct.pack_into("<HII", data, at + 2, 5, 1, len(data))  # type RATIONAL, stored at the end
            return bytes(data + struct.pack("<II", 8, 1))
    raise AssertionError("no StripOffsets tag")


def test_found_a_tiff_with_a_fraction_for_an_offset_is_not_an_image_that_can_be_read(tmp_path):
    from harness.errors import StageError
    from predict.digits import to_input
    from sources.images import read_pixels

    path = tmp_path / "scan.tif"
    path.write_bytes(fraction_offset_tiff())
    for read in (lambda: read_pixels(path), lambda: to_input(path, (28, 28))):
        with pytest.raises(StageError, match=r"scan\.tif: not an image that can be read \(.*IFDRational"):
            read()


def test_found_an_empty_idx_with_sides_numpy_cannot_make_is_an_idx_error():
    """The campaign's input: 00 00 08 04, then sides 0x74000001, 0x01000000, 0, 0x00300100 - no
    bytes of data, as the header says, but NumPy refused the shape ("array is too big") in a line
    that named no file."""
    from nn.data import IdxError, from_idx

    data = bytes.fromhex("00000804" "74000001" "01000000" "00000000" "00300100")
    with pytest.raises(IdxError, match=r"^train-images: header says shape \(1946157057, 16777216, 0, 3145984\)"):
        from_idx(data, "train-images")


def test_found_a_dataset_json_not_in_utf8_is_named(tmp_path):
    """The campaign's input was 14 bytes with 0xec in them: the UnicodeDecodeError reached the
    user as "error: 'utf-8' codec can't decode byte 0xec ...", naming no file."""
    from harness.errors import StageError
    from stages.prepare import read_classes

    path = tmp_path / "dataset.json"
    path.write_bytes(b'{"classes": ["caf\xe9"]}')
    with pytest.raises(StageError, match=r"dataset\.json: not UTF-8 text \(byte 0xe9 at offset 17\)"):
        read_classes(path)


def test_found_json_nested_past_pythons_limit_is_the_readers_error(tmp_path):
    """Found reviewing the targets (the fuzzers did not nest that deep): json.loads raises
    RecursionError for [[[[... thousands deep - in a model's spec, dataset.json, classes.json."""
    import numpy as np

    from harness.errors import StageError
    from nn import serialize
    from nn.atomic import write_npz
    from sources.idx import parse_class_names
    from stages.prepare import read_classes

    deep = b"[" * 100_000 + b"]" * 100_000
    write_npz(tmp_path / "model.npz", {"__spec__": np.frombuffer(deep, np.uint8)})
    with pytest.raises(ValueError, match="'__spec__' is nested too deeply to be a model spec"):
        serialize.load(tmp_path / "model.npz")
    (tmp_path / "dataset.json").write_bytes(deep)
    with pytest.raises(StageError, match=r"dataset\.json: nested too deeply"):
        read_classes(tmp_path / "dataset.json")
    with pytest.raises(StageError, match=r"classes\.json: nested too deeply"):
        parse_class_names("classes.json", deep)
