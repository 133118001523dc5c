"""The machine a stage computes on: the backend its `device` key asks for (train.device,
evaluate.device) - NumPy or CuPy - and the memory it may use."""

from __future__ import annotations

import os
import resource
from pathlib import Path

from harness.errors import StageError
from nn.backend import Backend, BackendError, select


def backend_for(section: dict, name: str) -> Backend:
    """select(section["device"]), or a StageError naming params.yaml's `name.device` key."""
    try:
        return select(section["device"])
    except BackendError as exc:
        raise StageError(f"params.yaml: {name}.device: {exc}; set {name}.device to auto or cpu") from None


def machine_memory() -> int:
    """Bytes this process may still use: the physical memory, or less under an address-space limit."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY:
        try:  # what the process already maps counts against the limit
            used = int(Path("/proc/self/statm").read_text().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            used = 0
        total = min(total, soft - used)
    return total
