"""Every random number a run draws: seeding, keeping evaluation out of the training stream, and
capturing/restoring the RNG states a checkpoint carries (what makes resuming exact)."""

from __future__ import annotations

import base64
import contextlib
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch


def seed_all(seed: int) -> None:
    """Seed python's, numpy's global and torch's RNG (all that user code and methods draw from)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - seed the global RNG user code draws from
    torch.manual_seed(seed)


@contextlib.contextmanager
def isolated_rng(device: torch.device) -> Iterator[None]:
    """Run the block on forked RNG states: evaluation must not consume training randomness (or
    a resumed run, which skips evaluations already done, would diverge)."""
    py, npy = random.getstate(), np.random.get_state()  # noqa: NPY002
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        yield
    random.setstate(py)
    np.random.set_state(npy)  # noqa: NPY002


def _b64(t: torch.Tensor) -> str:
    return base64.b64encode(t.cpu().numpy().tobytes()).decode()


def _unb64(s: str) -> torch.Tensor:
    return torch.from_numpy(np.frombuffer(base64.b64decode(s), dtype=np.uint8).copy())


def rng_state() -> dict[str, Any]:
    """This process's python, numpy, torch CPU and CUDA RNG states, JSON-serialisable."""
    version, internal, gauss = random.getstate()
    # The legacy global numpy RNG is what user code and libraries draw from, so it is saved.
    kind, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002
    state: dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],
        "torch": _b64(torch.get_rng_state()),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = [_b64(s) for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`rng_state`."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))  # noqa: NPY002
    torch.set_rng_state(_unb64(state["torch"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([_unb64(s) for s in state["cuda"]])
