"""Stop signals: SIGINT, SIGTERM and SIGHUP stop a command cleanly, and a stage stops when the
`dvc repro` running it dies."""

from __future__ import annotations

import ctypes
import os
import select
import signal
import sys
import threading
from pathlib import Path

STOPS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _stop(signum, frame):
    raise KeyboardInterrupt(signal.Signals(signum).name)


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


def install() -> None:
    """A stop signal raises KeyboardInterrupt('SIGTERM', ...) in the main thread."""
    for signum in STOPS:
        signal.signal(signum, _stop)


def ignore() -> None:
    """From here on stop signals are ignored: a second Ctrl-C or kill must not cut a clean-up short."""
    for signum in STOPS:
        signal.signal(signum, signal.SIG_IGN)
