"""Atomic writes: write into a temporary sibling, then rename into place.

A reader (or DVC) sees either the old file or the complete new one, never a
half-written file, even if the process is killed mid-write. Inside
`all_or_none()` the renames are held back until the block succeeds, so a
program that writes several files leaves all of them new or all of them old -
also when a stop signal comes (the stop requests below).
New files get the usual permissions (0666 less the umask), as `open` gives.
"""

from __future__ import annotations

import contextvars
import errno
import io
import os
import shutil
import signal
import sys
import tempfile
import zipfile
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest zip timestamp; fixed for byte-identical files
_STOPS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}

# (commit, discard) pairs of the writes held back by the innermost all_or_none()
_held: contextvars.ContextVar[list | None] = contextvars.ContextVar("held", default=None)


# -- stop requests: a stop signal is written down before anything is raised ------------------
# A signal handler that raises KeyboardInterrupt is not enough on its own: Python discards
# an exception raised inside a weakref callback, a __del__ or another finaliser (printing
# "Exception ignored in ..."), and code may catch it and go on. So the handler (the
# harness's, or whoever installs one) first calls `record_stop(signum)`, and the places that
# must not go ahead after a stop ask `stop_received()` - all_or_none does before it renames
# any output into place - whether or not the exception got through. While `stops_deferred()`
# the handler only records: a block that must not be cut in two (making a temporary file and
# learning its name; the renames of all_or_none) runs to its end, where the stop is raised -
# or, for all_or_none's renames, left for the caller to find in stop_received().
# Process-wide, as signals are; a forked child starts from its parent's record.

_received: int | None = None  # the first stop signal received, by number
_deferred = 0  # > 0: inside stops_deferred(): the handler records and does not raise
_count = 0  # stop signals received, the repeated ones too


class Stopped(KeyboardInterrupt):
    """A stop signal was received; args[0] is its name (SIGINT, SIGTERM, SIGHUP)."""


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name


def record_stop(signum: int) -> bool:
    """Write down a stop (the first one counts). True when the caller may raise it now: not
    deferred, and no stop already on its way up (see handling_stop)."""
    global _received, _count
    _count += 1
    if _received is None:
        _received = signum
    return _deferred == 0 and not handling_stop()


def stop_received() -> int | None:
    """The stop signal received so far (its number), or None."""
    return _received


def check_stop() -> None:
    """Raise Stopped if a stop was received - also one whose exception was swallowed."""
    if _received is not None:
        raise Stopped(signal_name(_received))


def handling_stop() -> bool:
    """Whether a stop's KeyboardInterrupt is being handled right now (an except or finally
    block on its way up): a repeated signal then must not cut that clean-up short."""
    return isinstance(sys.exception(), KeyboardInterrupt)


@contextmanager
def stops_deferred(deliver: bool = True):
    """A block no stop signal cuts short: meanwhile the handler records a stop and raises
    nothing. A stop that arrived meanwhile is raised as the block ends (unless the block
    failed, or a stop is already on its way up); with deliver=False it is left to the
    caller, in stop_received()."""
    global _deferred
    before = _count
    _deferred += 1
    try:
        yield
    finally:
        _deferred -= 1
    if deliver and _deferred == 0 and _count != before and not handling_stop():
        raise Stopped(signal_name(_received))


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _naming(exc: OSError, path: Path) -> OSError:
    """The same error, naming the file being written rather than its temporary sibling."""
    return type(exc)(exc.errno, exc.strerror or str(exc), str(path))


def _finish(commit: Callable[[], None], discard: Callable[[], None], path: Path, is_dir: bool) -> None:
    """Commit now, or hold the commit back for the enclosing all_or_none()."""
    held = _held.get()
    if held is None:
        _check(path, is_dir)
        commit()
    else:
        held.append((commit, discard, path, is_dir))


def _check(path: Path, is_dir: bool) -> None:
    """What makes a rename fail, checked before any rename: a file where a folder goes, or the reverse."""
    if path.exists() and path.is_dir() != is_dir:
        raise (NotADirectoryError if is_dir else IsADirectoryError)(
            errno.ENOTDIR if is_dir else errno.EISDIR, "Not a directory" if is_dir else "Is a directory", str(path))


@contextmanager
def all_or_none():
    """Hold back every atomic write made in the block; on success rename them all into place,
    on failure remove them. Every target is checked before the first rename, so none is renamed
    if one cannot be.

    A stop signal received before the renames keeps every output as it was, also one whose
    KeyboardInterrupt never got here (swallowed in a finaliser, caught by a library): the
    handler recorded it (record_stop, below), and it is checked here, before the first rename. The
    renames themselves run deferred: a stop during them is recorded, for the caller to find in
    stop_received() (SIGINT/SIGTERM/SIGHUP are also blocked in this thread, for a process
    whose handlers do not record)."""
    held: list = []
    done = 0
    token = _held.set(held)
    try:
        try:
            yield
        finally:
            _held.reset(token)
        with stops_deferred(deliver=False):
            for _, _, path, is_dir in held:
                _check(path, is_dir)
            check_stop()
            blocked = signal.pthread_sigmask(signal.SIG_BLOCK, _STOPS)
            try:
                for commit, _, _, _ in held:
                    commit()
                    done += 1
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
    except BaseException:
        with stops_deferred():  # the clean-up is not cut short either
            for _, discard, _, _ in held[done:]:
                discard()
        raise


@contextmanager
def atomic_file(path, mode: str = "wb"):
    """`with atomic_file(p) as f: f.write(...)` - p appears only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = None
    try:
        with stops_deferred():  # no stop between the file's making and its name being known
            try:
                fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            except OSError as exc:
                raise _naming(exc, path) from None
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
    except BaseException as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.filename is None:  # e.g. ENOSPC from a write
            raise _naming(exc, path) from None
        raise
    _finish(lambda: os.replace(tmp, path), lambda: Path(tmp).unlink(missing_ok=True), path, False)


@contextmanager
def atomic_dir(path):
    """`with atomic_dir(d) as tmp: write files into tmp` - d is replaced whole on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = None
    try:
        with stops_deferred():  # no stop between the folder's making and its name being known
            tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
        os.chmod(tmp, 0o777 & ~_umask())
        yield tmp
    except BaseException:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        raise

    def commit() -> None:
        old = None
        if path.exists():
            old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".old"))
            os.replace(path, old / "x")
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old)

    _finish(commit, lambda: shutil.rmtree(tmp, ignore_errors=True), path, True)


def write_text(path, text: str) -> None:
    with atomic_file(path, "w") as f:
        f.write(text)


def write_npz(path, arrays: dict) -> None:
    """Write arrays as an .npz (what np.load reads), atomically and byte-reproducibly:
    entries in the given order, each with the same fixed timestamp, no pickles."""
    import numpy as np  # here, not at the top: nn.atomic is imported before NumPy may load (harness/start.py)

    with atomic_file(path) as f, zipfile.ZipFile(f, "w", zipfile.ZIP_STORED) as zf:
        for name, array in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(array), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_EPOCH)
            info.external_attr = 0o644 << 16
            zf.writestr(info, buf.getvalue())
