"""The expected failure, and how any failure reads: one line that names the file or key and says
what to do."""

from __future__ import annotations

import errno


class StageError(Exception):
    """An expected failure: printed as one line, exit status 1."""


def one_line(text: str) -> str:
    """`text` on one line, nothing dropped: a file name with a newline in it shows as \\n."""
    return text.replace("\r", "\\r").replace("\n", "\\n")


def describe_os_error(exc: OSError) -> str:
    """An OSError as '<file>: <reason>; <what to do>'."""
    reason = exc.strerror or str(exc)
    hint = {errno.ENOSPC: "free some disk space and rerun", errno.EDQUOT: "free some disk space and rerun",
            errno.EACCES: "check the file's permissions", errno.EPERM: "check the file's permissions",
            errno.EROFS: "the file system is read-only; run from a writable copy"}.get(exc.errno, "")
    where = exc.filename if exc.filename is not None else "a file"
    return f"{where}: {reason}" + (f"; {hint}" if hint else "")
