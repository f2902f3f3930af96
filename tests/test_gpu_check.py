"""``benchmarks/gpu_check.py``: says so and exits 0 without CUDA; every piece runs at toy size."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from workbench import methods

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


def _module():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_without_cuda_it_runs_nothing_and_says_why(monkeypatch, capsys):
    gpu_check = _module()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.main([]) == 0
    said = capsys.readouterr().out
    assert "no CUDA device" in said and "--tiny" in said


def test_full_sizes_are_the_ones_the_issue_asks_for():
    full = _module().FULL
    assert (full.step_mode, full.step_batch, full.device) == ("vitb32", 1024, "cuda")
    assert (full.spectrum_rows, full.spectrum_dim) == (2_000_000, 768)


@pytest.mark.slow
def test_tiny_dry_run_covers_every_section_and_every_method():
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--tiny", "--tests", "tests/test_methods_gpu.py"],
        cwd=SCRIPT.parents[1], capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    table = proc.stdout.split("\ncheck")[1]
    assert "pytest -m gpu" in table and " skipped" in table  # collected, skipped on CPU
    for name in ("infonce", "infonce/vlm2vec", "sde", "fanoise"):
        assert f"step {name} (" in table, name
    assert "×1.00" in table
    assert "spectrum 4096×64 cpu" in table and "svdvals  4096×64 cpu" in table
    assert "error:" not in table and table.rstrip().endswith("ok")
    assert set(methods.names()) >= {"infonce", "sde", "fanoise"}


def test_token_methods_are_timed_on_token_batches_in_their_last_stage():
    # every arm of the CDDS notebook gets a row with a time and a ratio to vse, no error row
    # (bench_step's token cases must answer time_cases' last-stage StepState)
    torch.set_num_threads(1)
    rows, ok = _module().token_step_times(_module().TINY)
    assert ok, rows
    names = {r[0].split(" (")[0] for r in rows}
    assert {"tokens vse", "tokens cdds/full", "tokens vse+ds"} <= names
    assert all("error" not in r[1] and "×" in r[1] for r in rows), rows
