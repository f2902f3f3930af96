"""Run directories: create one (never reusing a name), append to its log, and read it back.

The format is documented in :mod:`workbench.train`. ``log.jsonl`` is append-only, one flushed
line per record, so a crash (power cut, full disk) can leave at most its *last* line torn: the
readers here skip such a line with a warning, and :func:`truncate_log` (run on resume) drops and
reports it. Any other unreadable line is corruption and raises naming the file and line.
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from pathlib import Path
from typing import Any

CONFIG = "config.json"
LOG = "log.jsonl"
SUMMARY = "summary.json"
CHECKPOINTS = "checkpoints"
LATEST = "latest"


def create_run_dir(run_root: str | os.PathLike, name: str) -> Path:
    """Make ``<run_root>/<name>-<YYYYmmdd-HHMMSS>-<n>`` with the smallest free ``n``.

    ``mkdir`` without ``exist_ok`` is the atomic claim, so two runs started in the same second
    (or concurrently) get different directories; nothing is ever overwritten.
    """
    root = Path(run_root)
    root.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    for n in range(10_000):
        path = root / f"{name}-{stamp}-{n}"
        try:
            path.mkdir()
        except FileExistsError:
            continue
        return path
    raise RuntimeError(f"could not find a free run directory name under {root}")


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write JSON to ``path`` via a temporary file and ``os.replace`` (never half-written).

    Always valid JSON: NaN/Inf (which JSON cannot hold) are written as ``null``.
    """
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    text = json.dumps(
        _finite(_plain(obj)), indent=2, sort_keys=True, default=_json_default, allow_nan=False
    )
    tmp.write_text(text)
    os.replace(tmp, path)


def _plain(x: Any) -> Any:
    """Numpy / torch scalars and arrays as Python values (so ``_finite`` sees every float)."""
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if not isinstance(x, (str, bytes, int, float, bool, type(None))) and hasattr(x, "tolist"):
        return _plain(x.tolist())
    return x


def identity_record(encoder: Any) -> dict[str, Any] | None:
    """``meta.encoder_identity`` of ``config.json``: the encoder's identity before training."""
    ident = getattr(encoder, "identity", None)
    if ident is None:
        return None
    return {"name": ident.name, "weights_hash": ident.weights_hash, "key": ident.key()}


def _json_default(o: Any) -> Any:
    if hasattr(o, "item"):
        return o.item()
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON-serialisable: {type(o).__name__}")


def _finite(x: Any) -> Any:
    # JSON has no NaN/Inf; a non-finite number is logged as null (the error event names it).
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_finite(v) for v in x]
    return x


class LogWriter:
    """Appends one JSON record per line to ``log.jsonl``, flushing each line."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh = path.open("a", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        line = json.dumps(_finite(_plain(record)), default=_json_default, allow_nan=False)
        self._fh.write(line + "\n")
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()


def truncate_log(path: Path, step: int) -> str | None:
    """Keep only records with ``step <= step`` (resume: the log continues from the checkpoint).

    A trailing ``end`` event at ``step`` is dropped too (the resumed run writes its own), and so
    is a torn last line, which is reported with a warning.

    Returns:
        The start of the torn line that was dropped, or ``None``.
    """
    if not path.exists():
        return None
    records, torn = _read_log(path)
    keep = [r for r in records if r.get("step", 0) <= step]
    while keep and keep[-1].get("kind") == "event" and keep[-1].get("event") == "end":
        keep.pop()
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in keep), encoding="utf-8")
    os.replace(tmp, path)
    return torn


def _read_log(path: Path) -> tuple[list[dict[str, Any]], str | None]:
    """``(records, torn)``: every record of ``log.jsonl`` and the torn last line, if any.

    Raises:
        ValueError: a line other than the last is not a JSON object (corruption, not a torn
            write), naming the file and the line number.
    """
    with path.open(encoding="utf-8", errors="replace") as fh:
        lines = [(i + 1, line.strip()) for i, line in enumerate(fh)]
    lines = [(n, line) for n, line in lines if line]
    records: list[dict[str, Any]] = []
    torn = None
    for k, (n, line) in enumerate(lines):
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            rec = None
        if isinstance(rec, dict):
            records.append(rec)
            continue
        if k == len(lines) - 1:
            torn = line[:80]
            warnings.warn(
                f"{path}: the last line ({n}) is torn (an interrupted write: {torn!r}); it is "
                f"skipped, and dropped when the run is resumed",
                stacklevel=3,
            )
            continue
        raise ValueError(
            f"{path}: line {n} is not a JSON record ({line[:80]!r}); the log is corrupted "
            f"beyond an interrupted last write — restore it or start a new run"
        )
    return records, torn


class RunDir:
    """Read-only view of a run directory.

    ``RunDir("runs/infonce-20260101-120000-0").log()`` gives the step records (``r["loss"]``),
    ``.snapshots()[-1]["image"]["partition"]`` the last band shares
    (``{"strong": .., "weak": .., "noise": ..}``), ``.evals()`` the evaluation records.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        if not (self.path / CONFIG).exists():
            raise FileNotFoundError(
                f"{self.path} is not a run directory (no {CONFIG}); runs live under run_root"
            )

    @property
    def raw_config(self) -> dict[str, Any]:
        """``config.json`` as a dict: ``{"config": ..., "meta": ...}``."""
        return json.loads((self.path / CONFIG).read_text())

    @property
    def config(self):  # -> TrainConfig
        """The run's :class:`~workbench.train.config.TrainConfig`."""
        from workbench.train.config import TrainConfig

        return TrainConfig.from_dict(self.raw_config["config"])

    @property
    def meta(self) -> dict[str, Any]:
        """Run metadata: versions, device, method hyper-parameters, stages, encoder identity."""
        return self.raw_config["meta"]

    def records(self, kind: str | None = None) -> list[dict[str, Any]]:
        """All log records, or those of one ``kind`` (step, snapshot, eval, event).

        A torn last line (an interrupted write) is skipped with a warning.
        """
        path = self.path / LOG
        if not path.exists():
            return []
        recs, _ = _read_log(path)
        return [r for r in recs if kind is None or r.get("kind") == kind]

    def log(self) -> list[dict[str, Any]]:
        """Per-step records (step, stage, loss, lr, terms, logs, schedule, grad_norm, ...)."""
        return self.records("step")

    def snapshots(self) -> list[dict[str, Any]]:
        """Spectral snapshots (singular values + partition proportions per side)."""
        return self.records("snapshot")

    def evals(self) -> list[dict[str, Any]]:
        """Evaluation records (held-out InfoNCE / retrieval and hook metrics)."""
        return self.records("eval")

    @property
    def summary(self) -> dict[str, Any] | None:
        """``summary.json`` (present once the run ended), else ``None``."""
        p = self.path / SUMMARY
        return json.loads(p.read_text()) if p.exists() else None

    def finished(self, steps: int) -> bool:
        """``summary.json`` says the run finished all ``steps`` steps (resuming it does nothing)."""
        s = self.summary
        return s is not None and s.get("status") == "finished" and s.get("step") == steps

    def final_record(self, step: int) -> tuple[dict[str, float] | None, float]:
        """``(metrics of the last eval at step, last logged loss)``; JSON nulls back to NaN,
        ``None`` metrics when no eval was logged at ``step``."""
        evals = [r for r in self.evals() if r.get("step") == step]
        metrics = None
        if evals:
            metrics = {k: math.nan if v is None else v for k, v in evals[-1]["metrics"].items()}
        steps = self.log()
        loss = steps[-1].get("loss") if steps else None
        return metrics, math.nan if loss is None else float(loss)

    def checkpoint_steps(self) -> list[int]:
        """Steps with a complete checkpoint, ascending."""
        d = self.path / CHECKPOINTS
        if not d.is_dir():
            return []
        return sorted(
            int(p.name.split("_")[1])
            for p in d.iterdir()
            if p.is_dir() and p.name.startswith("step_") and (p / "state.json").exists()
        )

    def checkpoint_path(self, step: int | None = None) -> Path:
        """Directory of the checkpoint at ``step`` (``None`` = the one ``latest`` names)."""
        d = self.path / CHECKPOINTS
        if step is None:
            pointer = d / LATEST
            if not pointer.exists():
                raise FileNotFoundError(f"{self.path} has no checkpoint yet")
            return d / pointer.read_text().strip()
        path = d / checkpoint_name(step)
        if not (path / "state.json").exists():
            raise FileNotFoundError(
                f"no checkpoint at step {step} in {self.path}; have {self.checkpoint_steps()}"
            )
        return path

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"


def checkpoint_name(step: int) -> str:
    """``step_0000100`` for step 100."""
    return f"step_{step:07d}"
