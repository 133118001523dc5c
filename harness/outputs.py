"""A stage's outputs survive a failed or interrupted `dvc repro`.

`dvc repro` deletes a stage's outputs before it runs the stage's command (all but
those dvc.yaml marks `persist: true`: fetch's, evaluate's and plots', see dvc.yaml). If the
command then fails or is stopped (Ctrl-C, `kill`), the workspace would be left
without them - including the git-tracked reports, which DVC keeps no copy of.
So each stage, when it fails under DVC, puts back every output that dvc.lock
records and the workspace lacks - or holds in another version: a folder the
stage had begun to fill, a file of the failed run - taking the bytes from

  - the copy it kept of its own outputs after its last success
    (`.dvc/tmp/outputs/<stage>/`: hard links, so no extra disk),
  - DVC's cache (where cached outputs, and run-cache copies of the others, live), or
  - git's last commit, for the git-tracked reports of a workspace that never ran the
    stage (a fresh clone: DVC keeps no copy of them, and there is no kept copy yet),

and only bytes whose md5 is the one dvc.lock records: the workspace ends up as
dvc.lock describes it, as before the run. (DVC's `persist: true` keeps the outputs
in place instead, but it also turns the run cache off for the stage: prepare and
train keep it; evaluate and plots never had it - DVC skips a stage with a `cache:
false` output.)

`unwritable` names the folder a stage could not put an output into, so that the stage
says so before any work.
"""

from __future__ import annotations

import configparser
import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import yaml

from nn.atomic import atomic_file

KEPT = Path(".dvc/tmp/outputs")


def spec(stage: str) -> dict:
    """dvc.yaml's entry for `stage` (cmd, deps, params, outs, ...), or {} where there is none."""
    try:
        entry = yaml.safe_load(Path("dvc.yaml").read_text())["stages"][stage]
    except (OSError, KeyError, TypeError, yaml.YAMLError):
        return {}
    return entry if isinstance(entry, dict) else {}


def declared(stage: str) -> list[Path]:
    """The outputs dvc.yaml declares for `stage` (outs, metrics, plots)."""
    entries = spec(stage)
    paths = []
    for kind in ("outs", "metrics", "plots"):
        for entry in entries.get(kind) or []:
            paths.append(Path(next(iter(entry)) if isinstance(entry, dict) else entry))
    return paths


def options(stage: str) -> dict[Path, dict]:
    """{output of `stage`: its options in dvc.yaml (persist, cache, ...)}."""
    entries, found = spec(stage), {}
    for kind in ("outs", "metrics", "plots"):
        for entry in entries.get(kind) or []:
            path, opts = next(iter(entry.items())) if isinstance(entry, dict) else (entry, {})
            found[Path(path)] = opts if isinstance(opts, dict) else {}
    return found


def _writable(folder: Path) -> bool:
    return os.access(folder, os.W_OK | os.X_OK)


def unwritable(stage: str) -> tuple[Path, Path] | None:
    """(a folder, the output of `stage` that needs it) where the stage could not put its outputs,
    or None: the folder each output is renamed into (the nearest one that exists: the rest is
    made), and an output folder's own folders, which its old version is removed from."""
    for out in declared(stage):
        folder = out.parent
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        if not _writable(folder):
            return folder, out
        if out.is_dir() and not out.is_symlink():
            for sub in [out, *(p for p in out.rglob("*") if p.is_dir() and not p.is_symlink())]:
                if not _writable(sub):
                    return sub, out
    return None


def locked(stage: str) -> dict[Path, str]:
    """dvc.lock's record of `stage`'s outputs: path -> md5 (a directory's ends in '.dir')."""
    try:
        outs = yaml.safe_load(Path("dvc.lock").read_text())["stages"][stage]["outs"]
        return {Path(o["path"]): o["md5"] for o in outs if "md5" in o}
    except (OSError, KeyError, TypeError, yaml.YAMLError):
        return {}


def _files(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]


def _link(src: Path, dst: Path, copy: bool = False) -> None:
    """dst becomes a hard link to src (or a copy: where asked, or where links are not possible)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.unlink(missing_ok=True)
    if not copy:
        try:
            os.link(src, dst)
            return
        except OSError:
            pass
    shutil.copyfile(src, dst)


def keep(stage: str) -> None:
    """After a success: remember this run's outputs (hard links; the stages always
    replace files, never rewrite them in place, so the links keep these bytes) - but
    a persist output DVC caches: DVC's cache holds it, and DVC would copy a linked one
    before each run to unlink it (which a read-only folder refuses)."""
    if not Path(".dvc").is_dir():
        return
    home = KEPT / stage
    shutil.rmtree(home, ignore_errors=True)
    for out, opts in options(stage).items():
        if opts.get("persist") and opts.get("cache", True):
            continue
        for f in _files(out) if out.exists() else []:
            _link(f, home / f)


def md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def tree_md5(entries: dict[str, str]) -> str:
    """DVC's hash of a directory from {relative path: md5} (dvc_data's Tree.digest)."""
    listing = [{"md5": h, "relpath": p} for p, h in sorted(entries.items())]
    return hashlib.md5(json.dumps(listing, sort_keys=True).encode()).hexdigest() + ".dir"


def _cache_dirs() -> list[Path]:
    """DVC's local cache: `cache.dir` of the repo's config (local file first), else .dvc/cache."""
    for name in ("config.local", "config"):
        config = configparser.ConfigParser(strict=False, interpolation=None)
        try:
            config.read(Path(".dvc") / name)
        except configparser.Error:
            continue
        if config.has_option("cache", "dir"):
            return [(Path(".dvc") / config.get("cache", "dir")).resolve()]
    return [Path(".dvc/cache")]


def _object(caches: list[Path], digest: str) -> Path | None:
    for cache in caches:
        path = cache / "files" / "md5" / digest[:2] / digest[2:]
        if path.is_file():
            return path
    return None


def _sources(out: Path, digest: str, kept: Path, caches: list[Path]) -> dict[Path, Path] | None:
    """{workspace file: a file holding the bytes dvc.lock records for it}, or None.
    `kept` is where keep() put this output's last version."""
    if digest.endswith(".dir"):
        if kept.is_dir():
            files = {f.relative_to(kept).as_posix(): f for f in _files(kept)}
            if tree_md5({rel: md5(f) for rel, f in files.items()}) == digest:
                return {out / rel: f for rel, f in files.items()}
        manifest = _object(caches, digest)
        if manifest is None:
            return None
        entries = {e["relpath"]: _object(caches, e["md5"]) for e in json.loads(manifest.read_text())}
        return None if None in entries.values() else {out / rel: f for rel, f in entries.items()}
    for candidate in (kept, _object(caches, digest)):
        if candidate is not None and candidate.is_file() and md5(candidate) == digest:
            return {out: candidate}
    return None


def last_version(stage: str, out: Path) -> dict[Path, Path] | None:
    """Files that hold the version of `out` dvc.lock records for `stage` - the copy keep() made,
    or DVC's cache: {workspace path: file to read}, or None where there is none."""
    digest = locked(stage).get(out)
    return None if digest is None else _sources(out, digest, KEPT / stage / out, _cache_dirs())


def _git(*args: str) -> bytes:
    return subprocess.run(["git", *args], capture_output=True, check=True).stdout


def _committed(out: Path, digest: str) -> dict[Path, bytes] | None:
    """{workspace file: its bytes in git's HEAD} when they are the version dvc.lock records
    (md5, or DVC's tree hash for a directory), else None - also where there is no git."""
    try:
        listing = _git("ls-tree", "-r", "-z", "HEAD", "--", str(out))  # paths relative to here
        blobs = {}
        for entry in filter(None, listing.split(b"\0")):
            meta, _, path = entry.partition(b"\t")
            mode, kind, oid = meta.split()
            if kind != b"blob" or mode == b"120000":  # a submodule or a link: not a stage's output
                return None
            blobs[Path(os.fsdecode(path))] = _git("cat-file", "blob", oid.decode())
    except (OSError, ValueError, subprocess.CalledProcessError):
        return None
    hashes = {p: hashlib.md5(data).hexdigest() for p, data in blobs.items()}
    if digest.endswith(".dir"):
        ok = bool(blobs) and tree_md5({p.relative_to(out).as_posix(): h for p, h in hashes.items()}) == digest
    else:
        ok = hashes == {out: digest}
    return blobs if ok else None


def matches(out: Path, digest: str) -> bool:
    """Whether `out` holds the version dvc.lock records (md5, or DVC's tree hash for a directory)."""
    if digest.endswith(".dir"):
        return out.is_dir() and tree_md5({f.relative_to(out).as_posix(): md5(f) for f in _files(out)}) == digest
    return out.is_file() and md5(out) == digest


def restore(stage: str, log) -> None:
    """After a failure under DVC: put back each output dvc.lock records that is missing or
    not that version (a folder the stage had begun to fill, a file of the failed run);
    one line names those no copy of is to be found."""
    caches, lost = _cache_dirs(), []
    for out, digest in locked(stage).items():
        if matches(out, digest):
            continue
        try:
            sources = _sources(out, digest, KEPT / stage / out, caches)
            committed = None if sources is not None else _committed(out, digest)
            if (sources is not None or committed is not None) and out.is_dir() and not out.is_symlink():
                shutil.rmtree(out)  # what the failed run left in it goes: the folder is put back whole
            for dst, src in (sources or {}).items():  # never a link into DVC's cache: an edit would damage it
                _link(src, dst, copy=not src.is_relative_to(KEPT))
            for dst, data in (committed or {}).items():
                with atomic_file(dst) as f:
                    f.write(data)
        except (OSError, ValueError) as exc:
            log.warning("%s: could not be put back (%s)", out, exc)
            continue
        if sources is None and committed is None:
            lost.append(str(out))
            continue
        log.info("%s: put back as dvc.lock records it%s", out, " (from git's last commit)" if committed else "")
    if lost:
        log.warning("%s: no copy of the version dvc.lock records is here; `dvc pull %s` may bring %s back from "
                    "a DVC remote, and the next `dvc repro` that succeeds makes %s again", ", ".join(lost), stage,
                    *(("it", "it") if len(lost) == 1 else ("them", "them")))
