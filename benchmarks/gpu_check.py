"""The GPU check: one prepared script that fits in 8 minutes on one GPU and prints one table.

1. ``pytest -m gpu``: the gpu-marked tests, as passed / failed / skipped / error counts.
2. Per-step training time of every registered method (``workbench.methods.names()``, so the
   table grows as methods land) with open_clip ``ViT-B-32`` (random init, nothing downloaded) at
   batch 1024 in bf16 autocast — ``benchmarks/bench_step.py``'s ``vitb32`` mode: both towers
   run, the image tower's last 2 blocks and both heads train — as ratios to InfoNCE. A method
   that fails is reported with its error and the others still run. Token methods (CDDS, VSE)
   are timed on token batches instead, every arm of the CDDS notebook, as ratios to ``vse``.
3. ``wb.probes.spectrum`` (uncentred) of a 2M × 768 float32 CUDA tensor with a power-law
   spectrum against ``torch.linalg.svdvals`` on the same tensor: wall time of each, and the
   largest relative error of their top-50 singular values against a float64 reference
   (``eigvalsh`` of the float64 Gram matrix on the GPU, exact for the top of the spectrum).

Usage::

    python benchmarks/gpu_check.py             # on a machine with CUDA
    python benchmarks/gpu_check.py --tiny      # any machine: same pieces at toy sizes on CPU

Without CUDA (and without ``--tiny``) it says so and exits 0 having run nothing. Exit status 1
when a gpu test failed or a section raised.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_step, run as a script or not

import bench_step

from workbench import methods

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Sizes:
    """What each section runs at; :data:`FULL` on the GPU, :data:`TINY` for the CPU dry run."""

    device: str
    step_mode: str  # bench_step mode
    step_batch: int
    step_dim: int
    step_repeats: int
    step_warmup: int
    spectrum_rows: int
    spectrum_dim: int
    pytest_timeout: int  # seconds


FULL = Sizes("cuda", "vitb32", 1024, 512, 5, 2, 2_000_000, 768, 240)
TINY = Sizes("cpu", "heads", 32, 16, 1, 1, 4096, 64, 120)
TOP = 50  # singular values compared in section 3


# -- 1. gpu tests ---------------------------------------------------------------------------------
def gpu_tests(paths: list[str], timeout: int) -> tuple[list[tuple[str, str]], bool]:
    """Rows of ``(check, result)`` for ``pytest -m gpu paths`` and whether it passed."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "gpu.xml"
        cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider",
               f"--junitxml={report}", *paths]  # fmt: skip
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return [("pytest -m gpu", f"timed out after {timeout} s")], False
        took = time.perf_counter() - t0
        if proc.returncode == 5:  # pytest: nothing collected
            return [("pytest -m gpu", f"no gpu-marked tests collected ({took:.0f} s)")], True
        if not report.exists():
            tail = (proc.stdout + proc.stderr).strip().splitlines()[-3:]
            return [("pytest -m gpu", f"exit {proc.returncode}: {' | '.join(tail)}")], False
        suite = ET.parse(report).getroot()
        suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
        n = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    passed = n["tests"] - n["failures"] - n["errors"] - n["skipped"]
    result = (
        f"{passed} passed, {n['failures']} failed, {n['errors']} errors, "
        f"{n['skipped']} skipped ({took:.0f} s)"
    )
    return [("pytest -m gpu", result)], proc.returncode == 0


# -- 2. per-step time of every method -------------------------------------------------------------
def step_times(sizes: Sizes) -> tuple[list[tuple[str, str]], bool]:
    """One row per registered method: ms/step and ratio to InfoNCE (or the method's error)."""
    device = torch.device(sizes.device)
    rows, ok, cases = [], True, {}
    plain = [
        n
        for n in methods.names()
        if not methods.get(n).needs_towers and not getattr(methods.get(n), "needs_tokens", False)
    ]
    for name in plain:  # pixel methods (DCR) and token methods (CDDS, VSE) are timed apart
        try:  # build and run one step now, so a broken method cannot stop the others
            case = bench_step._Case(
                bench_step.method_for(name, sizes.step_mode), sizes.step_mode, sizes.step_batch,
                sizes.step_dim, 2, device,
            )  # fmt: skip
            case.step(case.state(3))  # in the method's last stage, as bench_step times it
            cases[name] = case
        except bench_step.NotContrastive as why:  # segmentation methods: their own bench mode
            rows.append((f"step {name}", f"skipped: {why}"[:120]))
        except Exception as err:
            rows.append((f"step {name}", f"error: {type(err).__name__}: {err}"[:120]))
            ok = False
    if "infonce" not in cases:
        return [*rows, ("step", "infonce failed: no reference for the ratios")], False
    ms = bench_step.time_cases(cases, sizes.step_repeats, sizes.step_warmup)
    what = f"{sizes.step_mode}, B={sizes.step_batch}" + (", bf16" if device.type == "cuda" else "")
    for name, value in ms.items():
        rows.append((f"step {name} ({what})", f"{value:9.1f} ms  ×{value / ms['infonce']:.2f}"))
    if len(plain) < len(methods.names()):  # DCR and its baselines: pixels + the tiny denoiser
        try:
            dcr = bench_step.make_cases("dcr", 16, sizes.step_dim, [], 2, device, k=7)
            ms = bench_step.time_cases(dcr, sizes.step_repeats, sizes.step_warmup)
            for name, value in ms.items():
                rows.append(
                    (f"step {name} (dcr, B=16)", f"{value:9.1f} ms  ×{value / ms['infonce']:.2f}")
                )
        except Exception as err:
            rows.append(("step dcr", f"error: {type(err).__name__}: {err}"[:120]))
            ok = False
    return sorted(rows), ok


def token_step_times(sizes: Sizes) -> tuple[list[tuple[str, str]], bool]:
    """One row per arm of the CDDS notebook on token batches (``bench_step``'s tokens mode):
    ms/step, ratio to ``vse``, memory held by a step (bf16 autocast on CUDA)."""
    from contextlib import nullcontext

    device = torch.device(sizes.device)
    batch = min(sizes.step_batch, 256) if device.type == "cpu" else sizes.step_batch
    rows, ok, cases = [], True, {}
    for name, (method, config) in bench_step.token_arms().items():
        try:
            cases[name] = bench_step._TokenCase(method, config, batch, device)
        except Exception as err:
            rows.append((f"tokens {name}", f"error: {type(err).__name__}: {err}"[:120]))
            ok = False
    amp = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda"
           else nullcontext())  # fmt: skip
    with amp:
        ms = bench_step.time_cases(cases, sizes.step_repeats, sizes.step_warmup)
    ref = ms.get("vse")
    for name, value in ms.items():
        ratio = f"×{value / ref:.2f}" if ref else "×?"
        rows.append((f"tokens {name} (B={batch})",
                     f"{value:9.1f} ms  {ratio}  {cases[name].memory_mb:.0f} MB"))  # fmt: skip
    return sorted(rows), ok and ref is not None


# -- 3. spectrum of a large tensor ----------------------------------------------------------------
def _power_law(n: int, d: int, device: torch.device) -> torch.Tensor:
    """(n, d) float32 ``Z · diag(k^-½) · Qᵀ``: covariance eigenvalues ∝ 1/k, built on device."""
    g = torch.Generator(device=device).manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, device=device))
    scale = torch.arange(1, d + 1, device=device, dtype=torch.float32) ** -0.5
    x = torch.randn(n, d, generator=g, device=device)
    return (x * scale) @ q.T  # (n, d)


def _timed(fn, device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return out, time.perf_counter() - t0


def spectrum_check(sizes: Sizes) -> tuple[list[tuple[str, str]], bool]:
    """Time and top-50 accuracy of ``wb.probes.spectrum`` vs ``torch.linalg.svdvals``."""
    import workbench as wb

    device = torch.device(sizes.device)
    x = _power_law(sizes.spectrum_rows, sizes.spectrum_dim, device)
    x64 = x.double()
    ref = torch.linalg.eigvalsh(x64.T @ x64).flip(0).clamp_min(0).sqrt()[:TOP].cpu()
    del x64
    spec, t_spec = _timed(lambda: wb.probes.spectrum(x, center=False), device)
    svd, t_svd = _timed(lambda: torch.linalg.svdvals(x), device)
    ours = torch.as_tensor(spec.singular_values[:TOP].copy(), dtype=torch.float64)
    theirs = svd[:TOP].double().cpu()
    err_ours = float(((ours - ref).abs() / ref).max())
    err_theirs = float(((theirs - ref).abs() / ref).max())
    shape = f"{sizes.spectrum_rows}×{sizes.spectrum_dim} {device.type}"
    rows = [
        (f"spectrum {shape}", f"{t_spec:8.2f} s  top-{TOP} max rel err {err_ours:.1e}"),
        (f"svdvals  {shape}", f"{t_svd:8.2f} s  top-{TOP} max rel err {err_theirs:.1e}"),
    ]
    return rows, math.isfinite(err_ours) and err_ours < 1e-4


# -- driver ---------------------------------------------------------------------------------------
def run(sizes: Sizes, test_paths: list[str]) -> tuple[list[tuple[str, str]], bool]:
    """All three sections; a section that raises is reported as a row, the rest still run."""
    rows, ok = [], True
    sections = [
        ("pytest -m gpu", lambda: gpu_tests(test_paths, sizes.pytest_timeout)),
        ("step", lambda: step_times(sizes)),
        ("tokens", lambda: token_step_times(sizes)),
        ("spectrum", lambda: spectrum_check(sizes)),
    ]
    for label, section in sections:
        t0 = time.perf_counter()
        try:
            got, good = section()
        except Exception as err:
            got, good = [(label, f"error: {type(err).__name__}: {err}"[:160])], False
        rows += got
        ok &= good
        print(f"[{label}] done in {time.perf_counter() - t0:.0f} s", flush=True)
    return rows, ok


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="toy sizes on CPU (a dry run)")
    ap.add_argument("--tests", nargs="*", default=["tests"], help="paths for pytest -m gpu")
    ap.add_argument("--batch", type=int, default=None, help="override the step batch")
    ap.add_argument("--rows", type=int, default=None, help="override the spectrum rows")
    args = ap.parse_args(argv)
    if not args.tiny and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here (torch.cuda.is_available() is False); nothing run.")
        print("Run it on a GPU machine, or `--tiny` for a CPU dry run of every piece.")
        return 0
    sizes = TINY if args.tiny else FULL
    if args.batch or args.rows:
        sizes = dataclasses.replace(
            sizes,
            step_batch=args.batch or sizes.step_batch,
            spectrum_rows=args.rows or sizes.spectrum_rows,
        )
    device = torch.cuda.get_device_name() if sizes.device == "cuda" else "cpu (--tiny)"
    print(f"gpu_check on {device}, torch {torch.__version__}, methods {methods.names()}")
    t0 = time.perf_counter()
    rows, ok = run(sizes, args.tests)
    width = max(len(check) for check, _ in rows)
    print(f"\n{'check':<{width}}  result\n{'-' * (width + 50)}")
    for check, result in rows:
        print(f"{check:<{width}}  {result}")
    print(
        f"{'-' * (width + 50)}\ntotal {time.perf_counter() - t0:.0f} s, {'ok' if ok else 'FAILED'}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
