"""fetch.dataset folder: your images, one sub-folder per class -> the four idx files.

Layout: <source>/<class>/<image>, split by fetch (stratified, seeded: fetch.test_size,
fetch.seed), or <source>/train/<class>/... + <source>/test/<class>/... (your split, kept).
The classes are the sub-folder names, sorted; a test split may lack a class, not add one.
An image is a file whose suffix Pillow reads (hidden files skipped, others logged); it is
read as fetch.color says - gray (one channel) or rgb (three) - exactly as predict reads one
for a model trained on it (sources/images.py), and brought to fetch.image_size: auto (the
size they all share, else an error naming two files that differ) or [H, W] (resized).
Images are stored (N, H, W, C), in the order class, then file name.

Bounded whatever the folder holds: at most MAX_CLASSES classes (labels are one byte) and
MAX_FILES images; N x H x W x C bytes of pixels at most MAX_IDX_BYTES (1 GiB) all told,
checked from the file count and the first image's size before anything is allocated.
One image is decoded at a time and kept as uint8.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import unicodedata
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from harness.errors import StageError
from nn.data import MAX_IDX_BYTES, to_idx
from sources.catalog import FILES
from sources.images import WORK_SIDE, open_image, read_pixels, resize, upright_size

log = logging.getLogger(__name__)

SOURCE_ROOT = Path("data/source")  # fetch's DVC dependency (dvc.yaml): a changed image reruns fetch
MAX_CLASSES = 256  # idx labels are one byte each
MAX_FILES = 2_000_000  # file names and hashes held: about 300 bytes each
MAX_FILE_BYTES = 256 << 20  # one image file; read once, hashed and decoded from memory
Image.init()
SUFFIXES = frozenset(ext.lower() for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN)  # not
# the formats Pillow only writes (PDF, EPS, ...)
SPLITS = ("train", "test")


def same_name(name: str) -> str:
    """A class name as compared between train/ and test/: Unicode NFC (macOS writes café decomposed)."""
    return unicodedata.normalize("NFC", name)


def _entries(path: Path) -> list[os.DirEntry]:
    """The non-hidden entries of a folder, sorted by name."""
    try:
        with os.scandir(path) as it:
            return sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)
    except OSError as exc:
        raise StageError(f"{path}: cannot be read ({exc.strerror or exc})") from None


def _class_dirs(root: Path) -> list[str]:
    entries = [e for e in _entries(root) if e.is_dir()]
    if link := next((e for e in entries if e.is_symlink()), None):  # DVC hashes the link, not what is inside
        raise StageError(f"{root / link.name}: a link to a folder; DVC does not look inside it, so a change there "
                         "would not rerun fetch; copy the folder in instead")
    names = [e.name for e in entries]
    seen: dict[str, str] = {}
    for name in names:  # Linux keeps café (NFC) and café (NFD) apart; they would read as one class
        if (twin := seen.setdefault(same_name(name), name)) != name:
            raise StageError(f"{root}: {twin}/ and {name}/ are one name written in two Unicode forms; "
                             "rename or merge them")
    if len(names) > MAX_CLASSES:
        raise StageError(f"{root}: {len(names)} class folders, over {MAX_CLASSES}, the most one-byte labels "
                         "can tell apart")
    return names


def _images(folder: Path, budget: int) -> list[str]:
    """The image files directly in a class folder, sorted; others (sub-folders, other files, pipes)
    are logged and skipped."""
    images, others, folders = [], 0, []
    for e in _entries(folder):
        if e.is_dir():
            folders.append(e.name)
        elif Path(e.name).suffix.lower() in SUFFIXES and e.is_file():  # a regular file (a pipe would hang)
            images.append(e.name)
            if len(images) > budget:
                raise StageError(f"{folder}: more than {MAX_FILES} images in all, the cap (MAX_FILES in "
                                 "sources/folder.py)")
        else:
            others += 1
    if others:
        log.warning("%s: skipped %d %s", folder, others,
                    "entry that is not an image file" if others == 1 else "entries that are not image files")
    if folders:
        log.warning("%s: skipped the sub-folder%s %s: a class's images go directly in its folder", folder,
                    "s" * (len(folders) > 1), ", ".join(f"{f}/" for f in folders))
    return images


def scan(root: Path) -> tuple[list[str], dict[str, list[tuple[str, int]]]]:
    """-> (classes, {split: [(file relative to root, label)]}); split is 'all', or 'train' + 'test'."""
    top = _class_dirs(root)
    lower = {name.lower() for name in top}  # Train/ + Test/, or a lone train/: a split misnamed or half made
    if set(top) != set(SPLITS) and (lower == set(SPLITS) or set(top) in ({"train"}, {"test"})):
        raise StageError(f"{root}: holds {', '.join(f'{d}/' for d in top)}; your own split goes in two folders "
                         "named train/ and test/ (lower case), each with the same class folders")
    if "train" in top and "test" in top:
        if set(top) != set(SPLITS):
            extra = next(d for d in top if d not in SPLITS)
            raise StageError(f"{root}: holds train/ and test/ and also {extra}/; put every class folder "
                             "inside train/ and test/, or drop train/ and test/ to let fetch split")
        splits = {"train": _class_dirs(root / "train"), "test": _class_dirs(root / "test")}
        classes = splits["train"]
        if extra := [d for d in splits["test"] if same_name(d) not in map(same_name, classes)]:
            raise StageError(f"{root / 'test' / extra[0]}: a class the train split does not have")
    else:
        splits, classes = {"all": top}, top
    if len(classes) < 2:
        where = root / "train" if "train" in splits else root
        raise StageError(f"{where}: holds {len(classes)} class folder{'s' * (len(classes) != 1)} "
                         f"({', '.join(classes) or 'none'}); a classifier needs two or more, one per class")
    labels = {same_name(c): i for i, c in enumerate(classes)}  # test/'s names may be in another Unicode form
    files, total = {}, 0
    for split, names in splits.items():
        base = root / split if split != "all" else root
        files[split] = []
        for name in names:
            images = _images(base / name, MAX_FILES - total)
            if not images and split != "test":
                raise StageError(f"{base / name}: an empty class folder (no image files); add images or remove it")
            total += len(images)
            rel = (Path(split) / name if split != "all" else Path(name))
            files[split] += [((rel / f).as_posix(), labels[same_name(name)]) for f in images]
    return classes, files


def _split(root: Path, files: list[tuple[str, int]], test_size, seed: int) -> dict[str, list[tuple[str, int]]]:
    from sklearn.model_selection import train_test_split  # where used: 1.7 s to import (stages/evaluate.py)

    labels = [label for _, label in files]
    counts = np.bincount(labels)
    if counts.min() < 2:  # scikit-learn would say "the least populated class has 1 member", by number
        folder = Path(files[labels.index(int(counts.argmin()))][0]).parent
        raise StageError(f"{root / folder}: a class of 1 image; a split that keeps every class in train and "
                         "test needs 2 or more of each: add images, or give your own train/ and test/ folders")
    try:
        train, test = train_test_split(files, test_size=test_size, random_state=seed, stratify=labels)
    except ValueError as exc:
        raise StageError(f"params.yaml: fetch.test_size {test_size} cannot split these {len(files)} images "
                         f"stratified ({exc})") from None
    return {"train": sorted(train, key=lambda f: (f[1], f[0])), "test": sorted(test, key=lambda f: (f[1], f[0]))}


def _read(path: Path) -> bytes:
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise StageError(f"{path}: {size} bytes, over {MAX_FILE_BYTES >> 20} MiB, the cap for one image file")
        return path.read_bytes()
    except OSError as exc:
        raise StageError(f"{path}: cannot be read ({exc.strerror or exc})") from None


def _target_size(root: Path, first: str, image_size) -> tuple[tuple[int, int], tuple[int, int] | None]:
    """(the size every image is brought to, the upright size every file must have or None): fetch.image_size
    and None, or (auto) the first image's as read_pixels reads it (a side over WORK_SIDE shrunk),
    decoded once here, and as its file has it."""
    if image_size != "auto":
        return tuple(image_size), None
    with open_image(root / first) as img:  # its header first: a huge one is refused undecoded
        h, w = upright_size(img)
    if w * h > MAX_IDX_BYTES:
        raise StageError(f"{root / first}: {w}x{h} pixels; set fetch.image_size to a smaller [height, width]")
    size = read_pixels(root / first).shape[:2]
    if size != (h, w):
        log.info("fetch.image_size auto: the images are %dx%d pixels, read at %dx%d (a side over %d pixels "
                 "is shrunk while read); set fetch.image_size: [height, width] for another size", w, h,
                 size[1], size[0], WORK_SIDE)
    return size, (h, w)


def decode(root: Path, splits: dict, image_size, color: str) -> tuple[dict, dict[str, str], tuple[int, int, int]]:
    """-> ({split: (x uint8 (N, H, W, C), y uint8 (N,))}, {file: sha256}, (H, W, C))."""
    n = sum(len(f) for f in splits.values())
    first = next(f for files in splits.values() for f, _ in files)  # train's first
    rgb = color == "rgb"
    size, first_size = _target_size(root, first, image_size)
    shape = (*size, 3 if rgb else 1)
    need = n * math.prod(shape)
    if need > MAX_IDX_BYTES:
        raise StageError(f"{root}: {n} {color} images of {size[0]}x{size[1]} pixels are {need / 2 ** 30:.1f} GiB, "
                         f"over the {MAX_IDX_BYTES >> 30} GiB cap for the images (MAX_IDX_BYTES); set a smaller "
                         "fetch.image_size or use fewer images")
    out, sha = {}, {}
    with tqdm(total=n, unit="img", desc="reading images", disable=None) as bar:
        for split, files in splits.items():
            x = np.empty((len(files), *shape), dtype=np.uint8)
            for i, (rel, _) in enumerate(files):
                data = _read(root / rel)
                sha[rel] = hashlib.sha256(data).hexdigest()
                if first_size:  # auto: every file the first's size, as the files say (not as read:
                    with open_image(root / rel, data) as img:  # a JPEG is shrunk by other steps than a PNG)
                        if (own := upright_size(img)) != first_size:
                            raise StageError(f"{root / rel}: {own[1]}x{own[0]} pixels but {root / first} is "
                                             f"{first_size[1]}x{first_size[0]}; set fetch.image_size: [height, "
                                             "width] in params.yaml to bring every image to one size")
                levels = read_pixels(root / rel, data, rgb)
                x[i] = resize(levels, size).reshape(shape)
                bar.update()
            out[split] = (x, np.array([label for _, label in files], dtype=np.uint8))
    return out, sha, shape


def dataset(source: str, image_size, color: str, test_size, seed: int) -> tuple[dict[str, bytes], dict]:
    """fetch.source's images -> (the four idx files, dataset.json)."""
    root = Path(source)
    inside = SOURCE_ROOT.resolve()
    if not root.is_dir():
        raise StageError(f"params.yaml: fetch.source {source}: no such folder (fetch.dataset folder wants the "
                         f"folder of class sub-folders, {SOURCE_ROOT} or a folder inside it)")
    if root.resolve() != inside and inside not in root.resolve().parents:
        raise StageError(f"params.yaml: fetch.source {source} must be {SOURCE_ROOT} or a folder inside it when "
                         f"fetch.dataset is folder ({SOURCE_ROOT} is fetch's DVC dependency: a changed image "
                         "reruns fetch); move or copy the images there")
    classes, files = scan(root)
    split_by = "the train/ and test/ folders" if "train" in files else f"fetch (test_size {test_size}, seed {seed})"
    splits = files if "train" in files else _split(root, files["all"], test_size, seed)
    arrays, sha, shape = decode(root, splits, image_size, color)
    (x_tr, y_tr), (x_te, y_te) = arrays["train"], arrays["test"]
    if len(y_te) == 0:
        raise StageError(f"{root / 'test'}: holds no images; the test split needs some")
    log.info("%d classes; %d train and %d test %s images of %dx%d, split by %s", len(classes), len(y_tr),
             len(y_te), color, *shape[:2], split_by)
    files_out = dict(zip(FILES, (to_idx(x_tr), to_idx(y_tr), to_idx(x_te), to_idx(y_te))))
    meta = {"name": "folder", "classes": classes, "shape": list(shape), "source": source, "split": split_by,
            "counts": {"train": len(y_tr), "test": len(y_te)}, "sha256": sha}
    return files_out, meta
