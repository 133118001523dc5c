"""A command run as in a user's terminal: a pseudo-terminal of WIDTH columns, so that what it
prints - DVC's tables - is laid out as the user sees it. DVC pipes a table into `less -S` in a
terminal; here the pager is `cat`, so every line it would show comes back."""

from __future__ import annotations

import fcntl
import os
import re
import struct
import subprocess
import termios

WIDTH = 120  # the terminal the docs' table commands are meant to fit
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def in_terminal(command: str, cwd, env: dict, columns: int = WIDTH, rows: int = 50) -> tuple[int, str]:
    """Run `command` with bash in a pseudo-terminal of `columns` x `rows` -> (exit status, what it
    printed, colours removed)."""
    leader, follower = os.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    proc = subprocess.Popen(["bash", "-c", command], cwd=cwd, stdin=follower, stdout=follower, stderr=follower,
                            env={**env, "COLUMNS": str(columns), "LINES": str(rows), "DVC_PAGER": "cat",
                                 "TERM": "xterm"}, start_new_session=True)
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 1 << 16)
        except OSError:  # EIO: every writer has closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    status = proc.wait()
    return status, ANSI.sub("", b"".join(chunks).decode("utf-8", "replace").replace("\r\n", "\n"))


def too_wide(output: str, columns: int = WIDTH) -> list[str]:
    """The lines of a table that do not fit, or that had a cell cut short (rich's `…`)."""
    return [line for line in output.splitlines() if len(line.rstrip()) > columns or "…" in line]
