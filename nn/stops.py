"""Stop requests that cannot be lost: a stop signal is written down here before anything is raised.

A signal handler that raises KeyboardInterrupt is not enough on its own: Python discards
an exception raised inside a weakref callback, a __del__ or another finaliser (printing
"Exception ignored in ..."), and code may catch it and go on. So the handler (the
harness's, or whoever installs one) first calls `record(signum)`, and the places that
must not go ahead after a stop ask `received()` - nn.atomic.all_or_none does before it
renames any output into place - whether or not the exception got through.

While `deferred()` the handler only records: a block that must not be cut in two (making
a temporary file and learning its name; the renames of all_or_none) runs to its end, where
the stop is raised - or, for all_or_none's renames, left for the caller to find in
received().
Process-wide, as signals are; a forked child starts from its parent's record.
"""

from __future__ import annotations

import signal
import sys
from contextlib import contextmanager

_received: int | None = None  # the first stop signal received, by number
_deferred = 0  # > 0: inside deferred(): the handler records and does not raise
_count = 0  # stop signals received, the repeated ones too


class Stopped(KeyboardInterrupt):
    """A stop signal was received; args[0] is its name (SIGINT, SIGTERM, SIGHUP)."""


def name(signum: int) -> str:
    return signal.Signals(signum).name


def record(signum: int) -> bool:
    """Write down a stop (the first one counts). True when the caller may raise it now: not
    deferred, and no stop already on its way up (see handling)."""
    global _received, _count
    _count += 1
    if _received is None:
        _received = signum
    return _deferred == 0 and not handling()


def received() -> int | None:
    """The stop signal received so far (its number), or None."""
    return _received


def check() -> None:
    """Raise Stopped if a stop was received - also one whose exception was swallowed."""
    if _received is not None:
        raise Stopped(name(_received))


def handling() -> bool:
    """Whether a stop's KeyboardInterrupt is being handled right now (an except or finally
    block on its way up): a repeated signal then must not cut that clean-up short."""
    return isinstance(sys.exception(), KeyboardInterrupt)


@contextmanager
def deferred(deliver: bool = True):
    """A block no stop signal cuts short: meanwhile the handler records a stop and raises
    nothing. A stop that arrived meanwhile is raised as the block ends (unless the block
    failed, or a stop is already on its way up); with deliver=False it is left to the
    caller, in received()."""
    global _deferred
    before = _count
    _deferred += 1
    try:
        yield
    finally:
        _deferred -= 1
    if deliver and _deferred == 0 and _count != before and not handling():
        raise Stopped(name(_received))
