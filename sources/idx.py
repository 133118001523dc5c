"""fetch.dataset idx: any dataset's four idx files, from a folder or a URL.

Nothing pins them, so they are checked for structure only - images (N, H, W) or (N, H, W, C),
labels (N,), train and test images of one shape - and their sha256 are logged and recorded in
data/raw/dataset.json. The class names come from the source's classes.txt (one a line) or
classes.json (a list), else "0".."C-1" for the C = max label + 1 classes.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

from harness.errors import StageError
from nn.data import IdxError, from_idx, images_problem
from sources import download
from sources.catalog import FILES, Mirror
from sources.origins import SourceError, digest, from_folder, from_mirror, is_url, open_file

log = logging.getLogger(__name__)

CLASS_FILES = ("classes.txt", "classes.json")  # optional, in the source, next to the idx files
MAX_CLASS_FILE = 1 << 20


def _class_file(source: str, timeout: float, retries: int) -> tuple[str, bytes] | None:
    """(where, bytes) of the source's classes.txt or classes.json, None when it has neither."""
    for name in CLASS_FILES:
        if is_url(source):
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
                f = open_file(path)
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
        except RecursionError:  # [[[[... nested past Python's limit (found reviewing the fuzz targets)
            raise StageError(f"{where}: nested too deeply to be a list of class names") from None
        if not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
            raise StageError(f"{where}: must be a JSON list of class names")
        names = [n.strip() for n in names]
    else:
        names = [line.strip() for line in text.splitlines() if line.strip()]
    if not all(n and n.isprintable() for n in names) or len(set(names)) != len(names):
        raise StageError(f"{where}: class names must be distinct, non-empty, printable")
    return names


def dataset(source: str, timeout: float, retries: int) -> tuple[dict[str, bytes], dict]:
    """Any dataset's four idx files from a folder or URL -> (files, dataset.json), checked for
    structure only (nothing pins them): images (N, H, W) or (N, H, W, C), labels (N,), classes from the
    source's classes.txt / classes.json, else "0".."C-1" for the C = max label + 1 classes."""
    if source == "auto":
        raise StageError("params.yaml: fetch.source must be the folder or URL holding the four idx files "
                         "when fetch.dataset is idx (auto knows no mirror for an unnamed dataset)")
    try:
        files = (from_mirror(Mirror(source, source, "md5", {}), timeout, retries) if is_url(source)
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
            raise StageError(f"{named[0]}: names {len(classes)} classes but the labels need {count} (0 to "
                             f"{count - 1}); give one name per class, one per line")
    else:
        classes = [str(c) for c in range(count)]
    if len(classes) < 2:
        raise StageError(f"{source}: every label is 0; a classifier needs two or more classes")
    sha = {name: digest("sha256", files[name]) for name in FILES}
    for name in FILES:
        log.info("%s sha256 %s", name, sha[name])
    meta = {"name": "idx", "classes": classes, "source": source, "sha256": sha,
            "shape": list(arrays[FILES[0]].shape[1:])}
    return files, meta
