"""Where the shards of a CPU training step run beside the calling process (nn/shards.py):
worker processes on Linux, threads elsewhere.

Why processes: threads share Python's lock (the GIL). NumPy lets go of it inside a
product or a pass, but a step is dozens of such calls, and two threads trading the
lock ran each half-batch step of the 784-256-128-10 MLP in 2.5-2.8 ms where two
processes took 2.0-2.1 (on a 2-core VM). A worker is forked once, when training
starts, so it sees every array allocated before - those it reads or writes must lie
in shared memory (Backend.shared_zeros; `in_shared_memory` tells) - and it is told
what to do one byte at a time down a pipe of its own, answering down another. A
side that waits polls its pipe for up to SPIN_SECONDS before it sleeps: a sleeping
core of that VM took ~0.1 ms to wake, against a step of 2-3 ms (a pipe's round trip,
polled: ~21 us; a thread pool's hand-over: ~61 us).

A worker does not stop on a stop signal: it passes it on to the trainer (a Ctrl-C
reaches the whole process group, the trainer too; a `kill` of the worker alone then
stops the trainer all the same), which decides, and a worker leaves when its pipe
closes - when the trainer closes it, or when the kernel does for a trainer that was
killed. The signals are blocked while a worker is forked, so it never runs the
trainer's handler. A worker that fails answers so, and the trainer raises.
"""

from __future__ import annotations

import mmap
import os
import select
import signal
import sys
import time
import traceback
from concurrent.futures import ThreadPoolExecutor

# Where shard workers run: forked processes on Linux; threads elsewhere (fork is missing on
# Windows, and unsafe on macOS once Accelerate has started).
WORKERS = "processes" if sys.platform.startswith("linux") else "threads"
SPIN_SECONDS = 0.002  # how long a waiting side polls its pipe before it sleeps
STOPS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}


def _receive(fd: int) -> bytes:
    """One byte from the non-blocking pipe `fd` (b"" once its other end is closed): polled,
    yielding the core to anything else that wants it, for up to SPIN_SECONDS, then waited for."""
    deadline = time.perf_counter() + SPIN_SECONDS
    while True:
        try:
            return os.read(fd, 1)
        except BlockingIOError:
            if time.perf_counter() < deadline:
                os.sched_yield()
            else:
                select.select([fd], [], [])


def _pass_on(trainer: int):
    """A worker's handler of stop signals: the trainer gets them (if it is still this worker's parent)."""
    def handler(signum, frame):
        if os.getppid() == trainer:
            os.kill(trainer, signum)
    return handler


def _work(serve, worker: int, go: int, done: int, trainer: int) -> None:
    """A forked worker's whole life: on each task byte, serve(worker, task) and answer b"d" (b"m":
    out of memory, b"x": any other failure, its traceback on stderr); leave when the pipe closes.
    Stop signals are passed on to the trainer, which closes the pipe when it stops. They were
    blocked while it was forked: unblocked once its own handler is in place."""
    status = 1
    try:
        for signum in STOPS:
            signal.signal(signum, _pass_on(trainer))
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOPS)
        os.set_blocking(go, False)
        while task := _receive(go):
            try:
                serve(worker, task)
                answer = b"d"
            except MemoryError:
                answer = b"m"
            except BaseException:
                traceback.print_exc()
                answer = b"x"
            os.write(done, answer)
        status = 0
    finally:
        os._exit(status)  # never back into the parent's code: no atexit, no buffers flushed twice


class Processes:
    """`count` forked workers, each told to go and heard from through a pipe of its own."""

    def __init__(self, count: int, serve) -> None:
        self.workers: list[tuple[int, int, int]] = []  # (pid, go: write end, done: read end)
        try:
            for worker in range(count):
                go_r, go_w = os.pipe()
                done_r, done_w = os.pipe()
                trainer = os.getpid()
                blocked = signal.pthread_sigmask(signal.SIG_BLOCK, STOPS)  # the child starts with them blocked
                try:
                    pid = os.fork()
                    if pid == 0:
                        for fd in (go_w, done_r, *(fd for _, *ends in self.workers for fd in ends)):
                            os.close(fd)  # a worker holds no other pipe open: each sees its end close
                        _work(serve, worker, go_r, done_w, trainer)
                finally:
                    signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
                os.close(go_r)
                os.close(done_w)
                os.set_blocking(done_r, False)
                self.workers.append((pid, go_w, done_r))
        except BaseException:
            self.close()
            raise

    def start(self, task: bytes) -> None:
        for _, go, _ in self.workers:
            os.write(go, task)

    def wait(self) -> None:
        answers = [(worker, _receive(worker[2])) for worker in self.workers]  # every answer, then any failure
        for worker, answer in answers:
            if answer != b"d":
                raise self._failure(worker, answer)

    def _failure(self, worker: tuple[int, int, int], answer: bytes) -> BaseException:
        pid = worker[0]
        if answer == b"m":
            return MemoryError("a shard worker of the training step ran out of memory")
        if answer == b"":  # it died: how?
            _, status = os.waitpid(pid, 0)
            self.workers.remove(worker)
            os.close(worker[1])
            os.close(worker[2])
            if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL:
                return MemoryError(f"a shard worker of the training step (pid {pid}) was killed (SIGKILL; "
                                   f"the system's out-of-memory killer?)")
            return RuntimeError(f"a shard worker of the training step (pid {pid}) stopped (wait status {status})")
        return RuntimeError(f"a shard worker of the training step (pid {pid}) failed; its traceback is above")

    def close(self) -> None:
        """Close every pipe (each worker then leaves) and wait for the workers to end."""
        workers, self.workers = self.workers, []
        for _, go, _ in workers:
            os.close(go)
        for pid, _, done in workers:
            os.waitpid(pid, 0)
            os.close(done)


class Threads:
    """`count` worker threads (where processes are not used): NumPy releases the GIL in its
    products and passes, so they run at once, if slower than processes."""

    def __init__(self, count: int, serve) -> None:
        self.count, self.serve = count, serve
        self.executor = ThreadPoolExecutor(count, thread_name_prefix="shard")
        self.pending: list = []

    def start(self, task: bytes) -> None:
        self.pending = [self.executor.submit(self.serve, worker, task) for worker in range(self.count)]

    def wait(self) -> None:
        pending, self.pending = self.pending, []
        for future in pending:
            future.result()

    def close(self) -> None:
        self.executor.shutdown()


def start_workers(count: int, serve):
    """`count` workers, each running serve(worker index, task byte) when told to: processes
    or threads, as WORKERS says. Each has start(task), wait() and close()."""
    return (Processes if WORKERS == "processes" else Threads)(count, serve)


def in_shared_memory(array) -> bool:
    """Whether `array` lies in shared memory (Backend.shared_zeros: an mmap under its bases)."""
    while array is not None and not isinstance(array, mmap.mmap):
        array = array.obj if isinstance(array, memoryview) else getattr(array, "base", None)
    return array is not None
