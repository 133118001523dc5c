"""A Ray cluster's address, checked before Ray is handed it - `ray.init` retries an address that
does not answer for minutes, and waits a minute for a local raylet on a machine that is not a
node: one `error:` line in seconds instead, for an address nothing answers at, something that is
not a Ray head, a token the cluster refuses, or a machine that is not one of its nodes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from harness.errors import StageError

DOCS = "docs/sweeps.md"


def split_address(address: str) -> tuple[str, int]:
    host, colon, port = address.rpartition(":")
    if address.startswith("ray://"):
        raise StageError(f"--address {address}: give the head's HOST:PORT (its GCS port, 6379 unless `ray start "
                         "--head --port` set another), without ray://, and run the sweep on a node of the cluster")
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise StageError(f"--address {address!r}: give HOST:PORT, e.g. 10.0.0.5:6379 (what `ray start --head` prints)")
    return host.strip("[]"), int(port)


def check_address(address: str, meanwhile=lambda: None) -> None:
    """StageError, in seconds, unless a Ray head answers at `address` and takes this driver's token.
    `meanwhile()` runs while the probe's process asks (the driver's own import of Ray: ~2 s each)."""
    host, port = split_address(address)
    try:
        socket.create_connection((host, port), timeout=3).close()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__.replace("Error", " error").lower() or "no answer"
        raise StageError(f"--address {address}: nothing answers there ({reason}); start the head with "
                         f"`ray start --head --port={port}` or fix the address (see {DOCS})") from None
    from sweep import probe

    asking = subprocess.Popen([sys.executable, "-m", "sweep.probe", address], env={**os.environ, **probe.FAST},
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        meanwhile()
        out, _ = asking.communicate(timeout=30)
        said = json.loads(out.strip().splitlines()[-1])
    except (subprocess.TimeoutExpired, ValueError, IndexError):
        said = {"answers": False, "said": "no answer in 30 s"}
    finally:
        if asking.poll() is None:
            asking.kill()
            asking.wait()
    if not said["answers"]:
        raise StageError(f"--address {address}: something answers there, but not a Ray cluster's head "
                         f"({said['said'] or 'no answer'}); give the port `ray start --head` prints")
    if said["token"] == "refused" or (said["token"] == "none" and not said["open"]):
        mine = "has no token" if said["token"] == "none" else "has another token"
        raise StageError(f"--address {address}: the cluster refused this driver: it uses token authentication and "
                         f"this driver {mine}; set RAY_AUTH_TOKEN (or RAY_AUTH_TOKEN_PATH) to the cluster's token "
                         f"(see {DOCS})")
    here = local_raylets()
    if here is not None and resolved(address) not in here:
        raise StageError(f"--address {address}: this machine is not a node of that cluster, and Ray runs a sweep "
                         f"on one: run it on a node (the head is simplest), or join this machine first with "
                         f"`ray start --address={address} --num-cpus=0 --block` (see {DOCS})")
    if said["open"]:
        print(f"sweep: warning: the cluster at {address} runs without token authentication: anyone who reaches its "
              f"ports can run code on its nodes (see {DOCS} to turn it on)", file=sys.stderr)


def resolved(address: str) -> str:
    """HOST:PORT with HOST as an IP address (as far as this machine can resolve it)."""
    host, port = split_address(address)
    try:
        host = socket.gethostbyname(host)
    except OSError:
        pass
    return f"{host}:{port}"


def local_raylets() -> set[str] | None:
    """The clusters this machine is a node of: the GCS address (resolved) of each raylet running
    here, from the processes' command lines; None where there is no /proc to tell."""
    proc = Path("/proc")
    if not (proc / "self" / "cmdline").exists():
        return None
    found = set()
    for cmdline in proc.glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if args[0].endswith(b"/raylet"):
            found |= {resolved(a.decode().partition("=")[2]) for a in args if a.startswith(b"--gcs-address=")}
    return found
