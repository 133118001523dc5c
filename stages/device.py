"""The backend a stage's `device` key asks for (train.device, evaluate.device): NumPy or CuPy."""

from __future__ import annotations

from nn.backend import Backend, BackendError, select
from stages.common import StageError


def backend_for(section: dict, name: str) -> Backend:
    """select(section["device"]), or a StageError naming params.yaml's `name.device` key."""
    try:
        return select(section["device"])
    except BackendError as exc:
        raise StageError(f"params.yaml: {name}.device: {exc}; set {name}.device to auto or cpu") from None
