"""Ray for the sweep: an existing cluster joined at its address - checked first, in seconds - or,
with no address, a Ray started on this machine for the sweep alone: on a loopback address, with a
token of its own (Ray's token authentication), stopped when the sweep ends. Ray's own messages go
to a log file, not the user's terminal."""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from harness.errors import StageError
from sweep.address import DOCS, check_address

# Ray rewrites 127.0.0.1 (and localhost) to the machine's outward address; it keeps any other
# address of 127.0.0.0/8, which Linux routes to the loopback device
LOOPBACK = "127.0.0.2"
OBJECT_STORE = 128 * 2 ** 20  # bytes: the sweep's objects are git bundles (Ray's default: 30 % of RAM)


@contextlib.contextmanager
def quiet(log: Path):
    """Send everything written to file descriptor 2 - Ray's C++ parts write there directly - to
    `log`, and yield a stream to the terminal for the sweep's own lines (sys.stderr too, meanwhile)."""
    sys.stderr.flush()
    terminal = os.fdopen(os.dup(2), "w", buffering=1)
    log.parent.mkdir(parents=True, exist_ok=True)
    saved_stderr = sys.stderr
    handlers = [h for h in logging.getLogger().handlers if isinstance(h, logging.StreamHandler)]
    streams = [h.stream for h in handlers]
    with open(log, "a") as sink:
        os.dup2(sink.fileno(), 2)
        sys.stderr = terminal
        for handler in handlers:
            handler.setStream(terminal)
        try:
            yield terminal
        finally:
            for handler, stream in zip(handlers, streams):
                handler.setStream(stream)
            sys.stderr = saved_stderr
            terminal.flush()
            os.dup2(terminal.fileno(), 2)
            terminal.close()


def local_bits() -> str:
    """What decides the bits of a stage on this machine, as the stages log it ('' if unknown):
    harness/pins.py applied in a process of its own, as a stage applies it."""
    code = "from harness import pins; pins.apply(); print(pins.describe())"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={k: v for k, v in os.environ.items() if k != "REPRO_NATIVE"})
    return proc.stdout.strip() if proc.returncode == 0 else ""


def check_room(cpus: int, gpus: int, local: bool) -> str:
    """Whether some node of the cluster has room for a trial (`cpus` CPUs, `gpus` GPUs): Ray would
    wait for one for ever. StageError on a local Ray; on a cluster, a warning to show (an
    autoscaling cluster adds such a node when asked)."""
    import ray

    nodes = [n["Resources"] for n in ray.nodes() if n["Alive"]]
    if any(n.get("CPU", 0) >= cpus and n.get("GPU", 0) >= gpus for n in nodes):
        return ""
    need = f"{cpus} CPU{'s' * (cpus != 1)}" + (f" and {gpus} GPU" if gpus else "")
    has = ", ".join(f"{n.get('CPU', 0):g} CPU{'s' * (n.get('CPU', 0) != 1)}, {n.get('GPU', 0):g} GPU" for n in nodes)
    if local:
        raise StageError(f"a trial needs {need} and this machine's Ray has {has}: lower --cpus"
                         + (", or sweep with --device cpu" if gpus else ""))
    return f"warning: no node of the cluster has {need} for a trial now ({has}); the trials wait for one"


def short_temp_dir() -> Path:
    """A fresh folder for Ray's sockets and logs, on a short path: a socket's path must fit in 107 bytes."""
    base = tempfile.gettempdir()
    return Path(tempfile.mkdtemp(prefix="ray-sweep-", dir=base if len(base) <= 20 else "/tmp"))


def local_token() -> None:
    """This process (and the Ray it starts) on token authentication, with a fresh token: the
    sweep's alone, in its environment only - never written to a file (Ray's ~/.ray/auth_token is
    readable by all). Before Ray is imported: Ray reads its settings then."""
    os.environ["RAY_AUTH_MODE"] = "token"
    os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
    os.environ.pop("RAY_AUTH_TOKEN_PATH", None)
    if "ray" in sys.modules:
        from ray._raylet import Config

        Config.initialize("")


@contextlib.contextmanager
def connected(address: str | None):
    """Ray, connected -> a description of where the trials run. With no address: a local Ray
    (loopback, a fresh token, its temp dir removed after); with one: that cluster (checked first)."""
    temp = None
    if address:
        check_address(address, meanwhile=lambda: importlib.import_module("ray"))
    else:
        try:
            socket.create_server((LOOPBACK, 0)).close()
        except OSError:
            raise StageError(f"this machine has no loopback address {LOOPBACK} for a local Ray; give a cluster's "
                             f"--address (see {DOCS})") from None
        local_token()
        os.environ["RAY_USAGE_STATS_ENABLED"] = "0"  # Ray would report the cluster's use to its makers
        temp = short_temp_dir()
    import ray

    logging.getLogger("ray").setLevel(logging.ERROR)
    quiet_init = {"logging_level": logging.ERROR, "log_to_driver": False}
    try:
        if address:
            ray.init(address=address, **quiet_init)
        else:
            # "local": a new Ray, never one this machine already runs (ray.init() alone would join that)
            ray.init(address="local", _node_ip_address=LOOPBACK, include_dashboard=False,
                     object_store_memory=OBJECT_STORE, _temp_dir=str(temp), **quiet_init)
    except (RuntimeError, ConnectionError, ray.exceptions.RayError) as exc:
        ray.shutdown()
        said = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        where = f"the cluster at {address}" if address else "a local Ray"
        raise StageError(f"could not start or join {where}: {said} (Ray's log: .dvc/tmp/sweep/ray.log)") from None
    with contextlib.suppress(OSError):
        os.nice(5)  # this process's bookkeeping yields to the trials where they share its cores (not Ray's)
    try:
        nodes = [n for n in ray.nodes() if n["Alive"]]
        cpus = sum(n["Resources"].get("CPU", 0) for n in nodes)
        where = (f"the cluster at {address}" if address else f"a local Ray on {LOOPBACK}") + \
            f" ({len(nodes)} node{'s' * (len(nodes) != 1)}, {cpus:g} CPU{'s' * (cpus != 1)})"
        yield where
    finally:
        ray.shutdown()
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)
