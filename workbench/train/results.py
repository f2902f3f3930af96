"""What :func:`workbench.train.train` returns (:class:`Run`) and raises on a NaN loss."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from workbench.methods.base import Method
from workbench.train.config import TrainConfig


class NonFiniteLossError(FloatingPointError):
    """A loss (or gradient norm) became NaN/Inf. The run directory keeps its last good checkpoint.

    Attributes:
        step: 1-based step whose loss was not finite.
        terms: The method's loss terms at that step (floats, possibly nan/inf).
        run_dir: The run directory (resume from it after fixing the cause).
    """

    def __init__(self, step: int, what: str, terms: dict[str, float], run_dir: Path | None):
        self.step, self.terms, self.run_dir = step, terms, run_dir
        shown = ", ".join(f"{k}={v:.6g}" for k, v in terms.items()) or "none"
        super().__init__(
            f"{what} is not finite at step {step} (loss terms: {shown}); the run stopped and "
            f"{run_dir} keeps its last good checkpoint. Lower lr, enable grad_clip, or use fp32."
        )


@dataclass
class Run:
    """Result of :func:`train`.

    Attributes:
        run_dir: The run directory (``RunDir(run.run_dir)`` reads it).
        log_path: Its ``log.jsonl``.
        metrics: Final evaluation metrics plus ``final_loss``.
        encoder: The trained encoder (in eval mode).
        method: The method module (with its trained extra modules / teachers).
        config: The run's configuration.
    """

    run_dir: Path
    log_path: Path
    metrics: dict[str, float]
    encoder: nn.Module
    method: Method
    config: TrainConfig = field(repr=False)
