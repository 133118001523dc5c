"""remote: check that a DVC remote can be used, in one line (not a DVC stage).

    python -m remote            # the default remote (.dvc/config, or config.local)
    python -m remote team       # a remote by name

It lists the remote's storage through DVC itself (the same client `dvc push`
uses), then proves it can write there as `dvc push` does: it writes one small
probe object under a prefix of its own, files/md5/.remote-check/<random> beside
DVC's objects, and removes it (and, in a local folder, the folders it made) at
once. It says, naming the remote, what stands in the way: an endpoint that does
not answer, a bucket that does not exist, credentials the store refuses, access
denied, a remote that can be read but not written. `dvc push` and `dvc pull` say
the same things in DVC's words, naming the bucket but not the remote.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import re
import secrets
from pathlib import Path

from harness.command import Parser, run
from harness.errors import StageError

# (words in the error DVC's file system raises, the cause in plain words, what to do)
CAUSES = [
    (("could not connect", "connection refused", "name or service not known", "timed out"),
     "the endpoint does not answer", "check endpointurl (dvc remote modify --local NAME endpointurl URL)"),
    (("nosuchbucket", "bucket does not exist"),
     "the bucket does not exist", "create it, or fix the url (dvc remote modify --local NAME url s3://BUCKET/PATH)"),
    (("invalidaccesskeyid", "signaturedoesnotmatch", "unable to locate credentials", "invalid credentials",
      "expiredtoken", "access key id you provided does not exist", "signature we calculated does not match",
      "security token included in the request is invalid"),
     "the store refuses the credentials", "set AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or the remote's "
     "access_key_id / secret_access_key (--local)"),
    (("accessdenied", "access denied", "forbidden", "permission denied"),
     "access is denied", "ask for read and write access to the bucket, or fix the credentials"),
]
# the schemes of DVC's remote kinds: a local "folder" named like one is a URL with a slash missing
SCHEMES = ("s3", "gs", "gcs", "azure", "az", "ssh", "sftp", "http", "https", "hdfs", "webhdfs", "webdav",
           "webdavs", "oss", "gdrive")


def local_folder_problem(folder: str, project: str) -> str | None:
    """What is wrong with a local remote at the absolute path `folder` for the project at
    `project`, in words and what to do; None if nothing. DVC takes `s3:/bucket` (a slash short)
    for a folder, and a folder inside the project fills the workspace with pushed files."""
    scheme = re.search(rf"(?:^|/)({'|'.join(SCHEMES)}):(?:/+(.*))?$", folder)  # a folder named "s3:", not "s3:x"
    if scheme:
        return (f"a local folder, not a {scheme[1]} remote: a URL is {scheme[1]}://..., with two slashes; "
                f"fix the url (dvc remote modify --local NAME url {scheme[1]}://{scheme[2] or 'BUCKET/PATH'})")
    if Path(folder).resolve().is_relative_to(Path(project).resolve()):
        return ("a folder inside this project: dvc push would write the data into the workspace (git status "
                "lists them); use a folder outside it (dvc remote modify --local NAME url /path/to/folder)")
    return None


def describe(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    first = (str(exc).splitlines() or [""])[0]  # some errors have no message at all
    for words, cause, todo in CAUSES:
        if any(w in text.lower() for w in words):
            return f"{cause} ({first[:160]}); {todo}"
    return first[:200] or type(exc).__name__


def http_answer(name: str, url: str) -> str:
    """Whether an http(s) remote's server answers at all (its files cannot be listed over http)."""
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=15).close()
    except urllib.error.HTTPError:
        pass  # an answer, if not a welcome one: whether it holds the data only dvc pull can tell
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise StageError(f"remote '{name}' ({url}): the server does not answer ({getattr(exc, 'reason', exc)}); "
                         "check the url (dvc remote modify --local NAME url URL)") from None
    return f"remote '{name}' ({url}): the server answers (an http remote cannot be listed: dvc pull says " \
           "whether it holds the data)"


PROBE_PREFIX = ".remote-check"  # under the remote's files/md5/: no DVC object is named so (they are 2 hex digits)
PROBE = b"python -m remote: a probe of write access, removed at once\n"


def probe(name: str, url: str, odb) -> str | None:
    """Write a probe object where `dvc push` writes (the remote's files/md5/), under PROBE_PREFIX,
    and remove it; StageError if it cannot be written. -> a warning when it could not be removed."""
    fs, local = odb.fs, odb.fs.protocol == "local"
    folder = fs.join(odb.path, PROBE_PREFIX)
    path = fs.join(folder, secrets.token_hex(8))
    made = []  # the folders the probe makes, deepest last: a local remote is left as it was
    if local:
        missing = folder
        while not fs.exists(missing) and fs.parent(missing) != missing:
            made.insert(0, missing)
            missing = fs.parent(missing)
    try:
        return _write_and_remove(name, url, odb, folder, path, made)
    except KeyboardInterrupt:  # a stop (Ctrl-C, kill): the probe is not left behind either
        with contextlib.suppress(Exception):
            fs.rm_file(path)
        _remove_folders(fs, made)
        raise


def _write_and_remove(name: str, url: str, odb, folder: str, path: str, made: list) -> str | None:
    """probe()'s work: write the probe (making the folders `made`), then remove it all."""
    fs, local = odb.fs, odb.fs.protocol == "local"
    try:
        if made:
            fs.makedirs(folder, exist_ok=True)
        fs.pipe_file(path, PROBE)
    except Exception as exc:  # botocore's AccessDenied, PermissionError, a read-only file system
        _remove_folders(fs, made)
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:160]
        said = f"remote '{name}' ({url}): can be read but not written, so dvc push would fail"
        if local:
            root = fs.parent(fs.parent(odb.path))
            where = next(p for p in [folder, *fs.parents(folder)] if fs.exists(p))
            raise StageError(f"{said}: {where} refused a probe file ({first}); make the folder writable (chmod -R "
                             f"u+w {root}), or use another (dvc remote modify --local NAME url /path/to/folder)"
                             ) from None
        raise StageError(f"{said}: a probe object under {odb.path} was refused ({first}); ask for write access "
                         "(s3:PutObject and s3:DeleteObject there, or the store's like), or fix the credentials"
                         ) from None
    try:
        fs.rm_file(path)
    except Exception as exc:
        return f"the probe object {path} could not be removed ({str(exc)[:160]}); remove it by hand"
    finally:
        _remove_folders(fs, made)
    return None


def _remove_folders(fs, folders) -> None:
    for folder in reversed(folders):
        try:
            fs.rmdir(folder)
        except Exception:  # not empty (someone else's), or gone
            break


def check(name: str | None) -> str:
    """List the remote `name` (or the default one) -> a one-line description, or StageError."""
    from dvc.config import NoRemoteError, RemoteNotFoundError
    from dvc.repo import Repo

    try:
        repo = Repo(".")
    except Exception as exc:  # not a DVC repository, a broken config
        raise StageError(f"not a usable DVC project here ({describe(exc)}); run from the project root") from None
    with repo:
        name = name or repo.config["core"].get("remote")
        if not name:
            raise StageError(".dvc/config: no default remote; add one with dvc remote add -d NAME URL")
        try:
            odb = repo.cloud.get_remote_odb(name)
        except (NoRemoteError, RemoteNotFoundError) as exc:
            known = ", ".join(repo.config["remote"]) or "none"
            raise StageError(f"remote '{name}': {exc}; the remotes are: {known} (dvc remote list)") from None
        except ImportError as exc:  # "gs is supported, but requires 'dvc-gs' to be installed"
            raise StageError(f"remote '{name}': {describe(exc)}") from None
        url = repo.config["remote"][name]["url"]
        if odb.fs.protocol in ("http", "https"):  # no listing over http: ask whether the server answers
            return http_answer(name, url)
        bucket = odb.path.split("/")[0] if odb.fs.protocol != "local" else None
        try:
            if bucket:
                try:
                    odb.fs.ls(bucket)  # raises what stands in the way (exists() would just say False)
                except FileNotFoundError:
                    raise StageError(f"remote '{name}' ({url}): the bucket '{bucket}' does not exist; create it, "
                                     "or fix the url (dvc remote modify --local NAME url s3://BUCKET/PATH)") from None
            if odb.fs.protocol == "local":
                root = odb.fs.parent(odb.fs.parent(odb.path))  # the remote's own folder: objects are in files/md5/
                if odb.fs.exists(root) and not odb.fs.isdir(root):
                    raise StageError(f"remote '{name}' ({url}): a file, not a folder; a local remote is a folder "
                                     "(dvc remote modify --local NAME url /path/to/folder)")
                if problem := local_folder_problem(root, repo.root_dir):
                    raise StageError(f"remote '{name}' ({url}): {problem}")
            exists = odb.fs.exists(odb.path)
            if exists:
                odb.fs.ls(odb.path)
            leftover = probe(name, url, odb)
        except StageError:
            raise
        except Exception as exc:  # the file system's own errors: botocore, aiohttp, OSError
            raise StageError(f"remote '{name}' ({url}): {describe(exc)}") from None
    if leftover:
        logging.getLogger(__name__).warning("remote '%s': %s", name, leftover)
    return f"remote '{name}' ({url}): reachable and writable" + ("" if exists else
                                                                 " (empty: the first dvc push fills it)")


def parser() -> Parser:
    p = Parser(prog="python -m remote", description=__doc__.strip(),
               formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", nargs="?", help="the remote's name (default: the default remote)")
    return p


def main(args) -> None:
    for name in ("botocore", "aiobotocore"):  # not their "Found credentials in ..."
        logging.getLogger(name).setLevel(logging.WARNING)
    print(check(args.name))


if __name__ == "__main__":
    run(main, parser=parser())
