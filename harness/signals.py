"""Stop signals: SIGINT, SIGTERM and SIGHUP stop a command cleanly, and a stage stops when the
`dvc repro` running it dies.

None is lost, wherever it lands. The handler records the stop (nn.atomic.record_stop) before it raises
KeyboardInterrupt, so a stop whose exception Python discards (raised in a weakref callback, a
__del__ or a finaliser), or code catches, still keeps every output as it was: all_or_none
checks the record before the first rename. A discarded one is also raised again at once (see
_unraisable). From a command's first import (early) to its end, a stop ends it with the status
128 + the signal's number: 130 for SIGINT (Ctrl-C), 143 for SIGTERM (`kill`), 129 for SIGHUP -
or, once every output is in place (settle), is ignored: the command has nothing left to stop.
"""

from __future__ import annotations

import _thread
import ctypes
import os
import select
import signal
import sys
import threading
import time
from pathlib import Path

from nn import atomic

STOPS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
AGAIN_AFTER = 0.002  # s: a discarded stop is raised again this long after


def _stop(signum, frame):
    """Record the stop, then raise it - unless a stop's exception is already on its way up, or a
    block that must not be cut short is running (nn.atomic.stops_deferred)."""
    if atomic.record_stop(signum):
        raise atomic.Stopped(atomic.signal_name(atomic.stop_received()))


def _record(signum, frame):
    atomic.record_stop(signum)


def _unraisable(unraisable) -> None:
    """A stop whose KeyboardInterrupt Python discarded (raised in a finaliser, a weakref callback,
    a __del__) is raised again in the main thread, by a thread of its own (_again) once this hook
    and the finaliser have returned; Python's "Exception ignored in ..." is not printed for it.
    Anything else goes to the usual hook."""
    if not (isinstance(unraisable.exc_value, KeyboardInterrupt) and atomic.stop_received() is not None):
        _previous_hook(unraisable)
        return
    while True:
        try:
            threading.Thread(target=_again, name="stop-again", daemon=True).start()
            return
        except KeyboardInterrupt:  # it came round while this hook still ran: once more
            continue


def _again() -> None:
    """Trip the recorded stop in the main thread (its handler runs there at its next step), after a
    moment for the hook that started this thread to return: does nothing once stops are ignored."""
    time.sleep(AGAIN_AFTER)
    _thread.interrupt_main(atomic.stop_received())


_previous_hook = sys.unraisablehook


def _dvc_pid() -> int | None:
    """The pid of the `dvc` process running this stage (read from /proc: Linux), or None.

    dvc runs a stage's command as `$SHELL -c cmd`, or `/bin/sh -c cmd` where SHELL is unset.
    bash and zsh then replace themselves with the command, so dvc is our parent; dash (Debian's
    and Ubuntu's /bin/sh) stays in between. So dvc is the nearest ancestor whose environment
    lacks the DVC_STAGE that dvc set for the command (every process in between inherits it)."""
    mark = f"DVC_STAGE={os.environ.get('DVC_STAGE', '')}".encode()
    pid = os.getppid()
    while pid > 1:
        try:
            if mark not in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                return pid
            pid = int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1])  # its parent
        except (OSError, ValueError, IndexError):
            return None
    return None


def _wait_then_stop(pid: int) -> None:
    """Block until process `pid` exits, then send this process SIGTERM (the main thread stops
    cleanly on it). Needs pidfd (Linux 5.3+); without it, returns at once and does nothing."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:  # already gone
        fd = None
    except (AttributeError, OSError):
        return
    if fd is not None:
        select.select([fd], [], [])  # readable once the process has exited
    os.kill(os.getpid(), signal.SIGTERM)


def stop_with_dvc() -> None:
    """Stop (as on SIGTERM) when the `dvc repro` running this stage dies - `kill <its pid>`, say -
    rather than train on unseen and write outputs dvc.lock will never record. Linux only;
    elsewhere a no-op. Where dvc is the parent, the kernel signals us (PR_SET_PDEATHSIG); where
    a shell sits in between, a thread waits on dvc's pid."""
    if not sys.platform.startswith("linux"):
        return
    pid = _dvc_pid()
    if pid is None:
        return
    if pid == os.getppid():
        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
        if os.getppid() == pid:  # dvc did not die before the call (it would have been too late)
            return
    threading.Thread(target=_wait_then_stop, args=(pid,), name="stop-with-dvc", daemon=True).start()


def early() -> None:
    """Record stop signals from a command's first import on, when the package is run with
    `python -m` (sys.argv[0] is '-m' while Python locates the module): a stop during the imports
    is then honoured as soon as install() runs, instead of killing the process before the
    command could keep its outputs. Elsewhere (a test importing the package) nothing changes."""
    if sys.argv[:1] == ["-m"]:
        for signum in STOPS:
            signal.signal(signum, _record)


def install() -> None:
    """A stop signal raises nn.atomic.Stopped('SIGTERM'), a KeyboardInterrupt, in the main thread,
    after recording it; one discarded by Python is raised again (_unraisable)."""
    global _previous_hook
    if sys.unraisablehook is not _unraisable:
        _previous_hook, sys.unraisablehook = sys.unraisablehook, _unraisable
    for signum in STOPS:
        signal.signal(signum, _stop)


def ignore() -> None:
    """From here on stop signals are ignored: a second Ctrl-C or kill must not cut a clean-up short."""
    for signum in STOPS:
        signal.signal(signum, signal.SIG_IGN)


def settle() -> int | None:
    """The point of no return, once every output is in place: stop signals are ignored from here
    on; returns the stop received before (during the renames), if any, for the caller to honour."""
    ignore()
    return atomic.stop_received()


def status(signum: int | None) -> int:
    """The exit status of a command stopped by `signum`: 128 + its number, as a shell reports a
    process the signal ended (SIGINT 130, SIGTERM 143, SIGHUP 129); 130 where none was recorded."""
    return 128 + (signum or signal.SIGINT)
