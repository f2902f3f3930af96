"""Seeded golden outputs: stored tensors, a stated tolerance, one way to regenerate them.

As open_clip's ``tests/test_inference.py`` does: a test computes tensors from seeded inputs and
:func:`check_golden` compares them with ``tests/data/goldens/<name>.safetensors``, so a change in
any number shows as a tensor diff rather than as a moved table.

Regenerate after an *intended* change (and say why in the commit)::

    WORKBENCH_REGEN_GOLDENS=1 .venv/bin/pytest tests/ -m "" -k golden

With the variable set, :func:`check_golden` rewrites the file from the current code, then
compares (trivially equal); without it, a missing file is a failure naming this command.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

GOLDEN_DIR = Path(__file__).resolve().parent / "data" / "goldens"
REGEN_ENV = "WORKBENCH_REGEN_GOLDENS"
REGEN_COMMAND = f'{REGEN_ENV}=1 .venv/bin/pytest tests/ -m "" -k golden'


def check_golden(
    name: str,
    tensors: dict[str, torch.Tensor],
    *,
    atol: dict[str, float] | float,
    rtol: float = 0.0,
) -> None:
    """Compare ``tensors`` with the stored golden ``name`` (keys and shapes exactly, values to tolerance).

    Args:
        name: File stem under ``tests/data/goldens/``.
        tensors: What the code computes now (moved to CPU float32 before storing/comparing).
        atol: Absolute tolerance, one for all tensors or one per key.
        rtol: Relative tolerance (``torch.testing.assert_close`` semantics).
    """
    current = {k: v.detach().cpu().float().contiguous() for k, v in tensors.items()}
    path = GOLDEN_DIR / f"{name}.safetensors"
    if os.environ.get(REGEN_ENV) == "1":
        GOLDEN_DIR.mkdir(parents=True, exist_ok=True)
        save_file(current, str(path))
    if not path.exists():
        raise AssertionError(f"golden {path} is missing; create it with: {REGEN_COMMAND}")
    stored = load_file(str(path))
    assert sorted(stored) == sorted(current), (
        f"golden {name}: keys {sorted(current)} differ from the stored {sorted(stored)}"
    )
    for key, want in stored.items():
        tol = atol[key] if isinstance(atol, dict) else atol
        torch.testing.assert_close(
            current[key], want, atol=tol, rtol=rtol, msg=lambda m, k=key: f"golden {name}[{k}]: {m}"
        )
