"""A real Ray cluster on loopback for tests: each node a `ray start --block` of its own, on its own
address of 127.0.0.0/8 (Ray rewrites 127.0.0.1 alone), its own ports, its own HOME and TMPDIR (so
the nodes share no cache or scratch folder), one short --temp-dir, token authentication on - and
stopped by its process ids, never `ray stop` (which stops every Ray of the machine's user).

Also the watcher that records every inet connection of this test process's descendants (the nodes,
the sweep, a local Ray the sweep starts)."""

from __future__ import annotations

import ipaddress
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import psutil

from tests.project import env, free_port

HEAD, WORKER = "127.0.0.2", "127.0.0.3"
STARTED = "Ray runtime started."


class Cluster:
    """Nodes started by `start`; `home(ip)` is each node's HOME (its ~/.ray/auth_token, its DVC
    cache), `tmp(ip)` its TMPDIR (its trials' clones)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.temp = Path(tempfile.mkdtemp(prefix="r", dir="/tmp"))  # sockets' paths must stay short
        self.port = free_port("")  # free on every address: Ray's servers listen on all of them
        self.address = f"{HEAD}:{self.port}"
        self.nodes: dict[str, subprocess.Popen] = {}

    def home(self, ip: str) -> Path:
        return self.root / f"home-{ip}"

    def tmp(self, ip: str) -> Path:
        return self.root / f"tmp-{ip}"

    def env(self, ip: str = HEAD, **extra) -> dict:
        """The environment of a process on the node at `ip`: its HOME and TMPDIR, token auth on."""
        for folder in (self.home(ip), self.tmp(ip)):
            folder.mkdir(parents=True, exist_ok=True)
        return {**env(), "RAY_AUTH_MODE": "token", "HOME": str(self.home(ip)), "TMPDIR": str(self.tmp(ip)), **extra}

    def node_env(self, ip: str) -> dict:
        """A node's environment: the head checks its nodes' health every 0.5 s and calls a node dead
        after 3 missed checks (Ray's defaults, 3 s and 5, take about 15 s to notice a lost node)."""
        quick = {"RAY_health_check_period_ms": "500", "RAY_health_check_timeout_ms": "1000",
                 "RAY_health_check_failure_threshold": "3", "RAY_health_check_initial_delay_ms": "1000"}
        return self.env(ip, **(quick if ip == HEAD else {}))

    def test_flags(self, head: bool) -> list[str]:
        """What the test adds to a `ray start`: one CPU, no GPU, a small object store, the short
        temp dir, and every port of its own (Ray's defaults would clash with another Ray here)."""
        ports = ["--node-manager-port", "--object-manager-port", "--runtime-env-agent-port",
                 "--metrics-export-port", "--dashboard-agent-listen-port", "--dashboard-agent-grpc-port"]
        flags = ["--num-cpus=1", "--num-gpus=0", "--object-store-memory=80000000", f"--temp-dir={self.temp}",
                 *(f"{flag}={free_port('')}" for flag in ports)]
        return flags + (["--include-dashboard=false"] if head else [])

    def start(self, commands: dict[str, list[str]], envs: dict[str, dict]) -> None:
        """Run each node's `ray start --block` command (args) in its environment, all at once (a
        worker waits for its head); `wait()` waits until Ray says each runs."""
        for ip, args in commands.items():
            with open(self.root / f"node-{ip}.log", "w") as out:
                self.nodes[ip] = subprocess.Popen(args, env=envs[ip], stdout=out, stderr=subprocess.STDOUT,
                                                  stdin=subprocess.DEVNULL, start_new_session=True)

    def wait(self) -> None:
        deadline = time.time() + 90
        for ip, node in self.nodes.items():
            log = self.root / f"node-{ip}.log"
            while STARTED not in log.read_text():
                assert node.poll() is None and time.time() < deadline, log.read_text()[-3000:]
                time.sleep(0.3)

    def processes(self, ip: str) -> list[psutil.Process]:
        """The node's processes: its `ray start` and everything under it."""
        try:
            top = psutil.Process(self.nodes[ip].pid)
            return [top, *top.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def kill(self, ip: str) -> None:
        """SIGKILL every process of the node at once, as when its machine dies."""
        doomed = self.processes(ip)
        for process in doomed:
            with _gone():
                process.kill()
        with _gone():
            os.killpg(self.nodes[ip].pid, signal.SIGKILL)
        psutil.wait_procs(doomed, timeout=10)
        self.nodes[ip].wait()

    def stop(self) -> None:
        """Every node: SIGKILL to its processes and its process group; the temp dir removed."""
        for ip in self.nodes:  # at once: a --block node takes over 5 s to end on SIGTERM
            for process in self.processes(ip):
                with _gone():
                    process.kill()
        for node in self.nodes.values():
            with _gone():
                os.killpg(node.pid, signal.SIGKILL)
            node.wait()
        shutil.rmtree(self.temp, ignore_errors=True)


class _gone:
    """Ignore a process that is already gone."""

    def __enter__(self):
        return self

    def __exit__(self, kind, value, tb):
        return kind is not None and issubclass(kind, (ProcessLookupError, psutil.NoSuchProcess))


def loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return address.is_loopback


class Watcher(threading.Thread):
    """Every `every` seconds, the inet sockets of this process's descendants: `connections` holds
    (process name, local ip, remote ip) of each connected one (TCP or UDP with a peer), `listening`
    the addresses they listen on."""

    def __init__(self, every: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.every, self.stopped = every, threading.Event()
        self.connections: set[tuple[str, str, str]] = set()
        self.listening: set[str] = set()
        self.polls = 0

    def run(self) -> None:
        me = psutil.Process()
        while not self.stopped.wait(self.every):
            pids = {p.pid: p for p in me.children(recursive=True)}
            try:
                sockets = psutil.net_connections(kind="inet")
            except psutil.Error:
                continue
            for s in sockets:
                if s.pid not in pids:
                    continue
                try:
                    name = pids[s.pid].name()
                except psutil.Error:
                    name = str(s.pid)
                if s.raddr:
                    self.connections.add((name, s.laddr.ip, s.raddr.ip))
                elif s.status == psutil.CONN_LISTEN:
                    self.listening.add(s.laddr.ip)
            self.polls += 1

    def stop(self) -> None:
        self.stopped.set()
        self.join()

    def outside(self) -> set[tuple[str, str, str]]:
        return {c for c in self.connections if not (loopback(c[1]) and loopback(c[2]))}
