"""Benchmark ``workbench.probes.spectrum`` against LAPACK/sklearn/torch and a bare ``X.T @ X``.

Case 1 (in memory): N × D float32 with a power-law spectrum (λ_k ∝ k^-1, random rotation,
non-zero mean). Prints the time of ``spectrum``, sklearn ``PCA(svd_solver="full")``,
``numpy.linalg.svd``, ``torch.linalg.svdvals`` and a bare float32 ``X.T @ X``, with ratios; the
peak extra memory of ``spectrum``; and the largest relative error of its top-50 singular values
against a float64 SVD of the centred data.

Case 2 (streaming): a memory-mapped N₂ × D₂ float32 ``.npy`` written chunk-wise into a temporary
directory (seeded power-law generator), streamed by ``spectrum`` without loading it whole;
prints time, throughput and peak resident memory against the file size; the file is deleted.

Memory is measured two ways:
- tracemalloc: peak of numpy's own allocations during the call (numpy reports its buffers to
  tracemalloc; BLAS-internal workspaces are not included);
- RSS: the kernel's peak resident set (VmHWM, reset through /proc/self/clear_refs before the
  call) minus the resident set before it — counts everything, including mapped file pages.

Timings on a shared machine are noisy: every timed call records wall-clock *and* process CPU
time (``time.process_time``, all threads; unaffected by waiting for a core), the pair
(spectrum, X.T @ X) is interleaved, and min and median are printed with the load average. On an
oversubscribed machine run with ``--threads 1``: multi-threaded BLAS that spin-waits for
descheduled sibling threads is several times slower there, for every method alike.

Usage: ``python benchmarks/bench_spectrum.py [--quick] [--no-memmap] [--repeats R] [--threads T]``
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np

from workbench.probes.spectra import spectrum


# -- data ----------------------------------------------------------------------------------------
def power_law_matrix(n: int, d: int, alpha: float = 1.0, seed: int = 0) -> np.ndarray:
    """(n, d) float32 rows ``z · diag(k^-α/2) · Qᵀ + μ``: covariance eigenvalues ∝ k^-α."""
    rng = np.random.default_rng(seed)
    scale = np.arange(1, d + 1, dtype=np.float64) ** (-alpha / 2)
    Q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    B = (scale[:, None] * Q.T).astype(np.float32)  # (d, d)
    mu = (0.5 * rng.standard_normal(d)).astype(np.float32)
    X = np.empty((n, d), dtype=np.float32)
    for a in range(0, n, 16384):
        Z = rng.standard_normal((min(16384, n - a), d), dtype=np.float32)
        np.matmul(Z, B, out=X[a : a + len(Z)])
        X[a : a + len(Z)] += mu
    return X


def write_power_law_npy(path: Path, n: int, d: int, alpha: float = 1.0, seed: int = 1) -> None:
    """Write an (n, d) float32 ``.npy`` chunk by chunk (never holding it in memory).

    Axis-aligned power law (λ_k ∝ k^-α) plus a mean offset: a rotation would cost an n·d² matmul
    and does not change the spectrum.
    """
    rng = np.random.default_rng(seed)
    scale = (np.arange(1, d + 1, dtype=np.float64) ** (-alpha / 2)).astype(np.float32)
    mu = (0.5 * rng.standard_normal(d)).astype(np.float32)
    header = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, d))
    offset = header.offset
    del header
    with open(path, "r+b") as f:
        f.seek(offset)
        for a in range(0, n, 65536):
            Z = rng.standard_normal((min(65536, n - a), d), dtype=np.float32)
            Z *= scale
            Z += mu
            f.write(Z.tobytes())


# -- measurement helpers -------------------------------------------------------------------------
def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def measure_memory(fn: Callable[[], object]) -> dict[str, float]:
    """Peak extra memory of ``fn()``: tracemalloc (numpy allocations) and RSS (MB)."""
    gc.collect()
    reset_ok = _reset_peak_rss()
    rss0 = _status_kb("VmRSS")
    tracemalloc.start()
    fn()
    _, tm_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    hwm = _status_kb("VmHWM")
    return {
        "tracemalloc_mb": tm_peak / 2**20,
        "rss_extra_mb": (hwm - rss0) / 1024 if reset_ok else float("nan"),
        "rss_peak_mb": hwm / 1024,
        "rss_reset_ok": reset_ok,
    }


class Timer:
    """Wall and CPU seconds of repeated calls."""

    def __init__(self) -> None:
        self.wall: list[float] = []
        self.cpu: list[float] = []

    def __call__(self, fn: Callable[[], object]) -> object:
        w, c = time.perf_counter(), time.process_time()
        out = fn()
        self.cpu.append(time.process_time() - c)
        self.wall.append(time.perf_counter() - w)
        return out

    def best(self, kind: str = "cpu") -> float:
        return min(getattr(self, kind))

    def median(self, kind: str = "cpu") -> float:
        return statistics.median(getattr(self, kind))

    def __str__(self) -> str:
        return (
            f"wall min {min(self.wall):7.3f} s  med {statistics.median(self.wall):7.3f} s | "
            f"cpu min {min(self.cpu):7.3f} s  med {statistics.median(self.cpu):7.3f} s  "
            f"(n={len(self.wall)})"
        )


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


# -- cases ---------------------------------------------------------------------------------------
def case_in_memory(n: int, d: int, repeats: int) -> None:
    import torch
    from sklearn.decomposition import PCA
    from threadpoolctl import threadpool_info

    print(f"\n== case 1: in-memory {n:,} x {d} float32, power-law spectrum (λ_k ∝ k^-1) ==")
    blas = ", ".join(f"{i['internal_api']}×{i['num_threads']}" for i in threadpool_info())
    print(
        f"threads: numpy/scipy BLAS {blas}; torch {torch.get_num_threads()}; cpus {os.cpu_count()}"
    )
    X = power_law_matrix(n, d)
    print(f"input: {X.nbytes / 2**20:.0f} MB")

    spectrum(X[: min(n, 50_000)])  # warm BLAS threads and imports
    t_spec, t_mm = Timer(), Timer()
    for _ in range(repeats):  # interleaved so contention hits both alike
        t_spec(lambda: spectrum(X))
        t_mm(lambda: X.T @ X)
    print(f"workbench spectrum          {t_spec}")
    print(f"bare X.T @ X (float32)      {t_mm}")

    Xt = torch.from_numpy(X)
    once = 1 if repeats < 3 else 2
    t_np, t_torch, t_pca = Timer(), Timer(), Timer()
    for _ in range(once):
        t_np(lambda: np.linalg.svd(X, compute_uv=False))
        t_torch(lambda: torch.linalg.svdvals(Xt))
        t_pca(lambda: PCA(svd_solver="full").fit(X))
    print(f"numpy.linalg.svd (f32, σ)   {t_np}")
    print(f"torch.linalg.svdvals (f32)  {t_torch}")
    print(f"sklearn PCA(full) fit (f32) {t_pca}")

    print("\nratios, CPU time (wall time), min over runs:")
    for label, other, target in (
        ("spectrum / X.T@X         ", t_mm, "target ≤ 1.25x"),
        ("sklearn PCA / spectrum   ", t_pca, "target ≥ 8x"),
        ("numpy svd / spectrum     ", t_np, ""),
        ("torch svdvals / spectrum ", t_torch, ""),
    ):
        if other is t_mm:
            r_cpu, r_wall = t_spec.best() / other.best(), t_spec.best("wall") / other.best("wall")
        else:
            r_cpu, r_wall = other.best() / t_spec.best(), other.best("wall") / t_spec.best("wall")
        print(f"  {label}{r_cpu:6.2f}x ({r_wall:6.2f}x)   {target}")
    med = t_spec.median() / t_mm.median()
    print(
        f"  spectrum / X.T@X, medians {med:6.2f}x (wall {t_spec.median('wall') / t_mm.median('wall'):.2f}x)"
    )

    mem = measure_memory(lambda: spectrum(X))
    print(
        f"\npeak extra memory of spectrum: tracemalloc {mem['tracemalloc_mb']:.1f} MB (numpy "
        f"buffers), RSS {mem['rss_extra_mb']:.1f} MB (all; reset ok={mem['rss_reset_ok']})"
        f"   target ≤ 64 MB"
    )

    s = spectrum(X)
    ref, t_ref = reference_svd(X)
    k = min(50, len(ref))
    err = np.abs(s.singular_values[:k] - ref[:k]) / ref[:k]
    err_all = np.abs(s.singular_values - ref) / ref
    print(
        f"top-{k} singular values vs float64 SVD ({t_ref:.1f} s wall): max rel error "
        f"{err.max():.2e}   target ≤ 1e-6   (all {len(ref)}: {err_all.max():.2e}, "
        f"σ_min/σ_1 = {ref[-1] / ref[0]:.1e})"
    )


def reference_svd(X: np.ndarray) -> tuple[np.ndarray, float]:
    """Singular values of the centred float64 copy of ``X`` by LAPACK, and the seconds taken."""
    X64 = X.astype(np.float64)
    X64 -= X64.mean(axis=0)
    t0 = time.perf_counter()
    ref = np.linalg.svd(X64, compute_uv=False)
    return ref, time.perf_counter() - t0


def case_memmap(n: int, d: int) -> None:
    print(f"\n== case 2: memory-mapped {n:,} x {d} float32 .npy, streamed ==")
    with tempfile.TemporaryDirectory(prefix="bench_spectrum_") as tmp:
        path = Path(tmp) / "x.npy"
        t0 = time.perf_counter()
        write_power_law_npy(path, n, d)
        t_write = time.perf_counter() - t0
        size_mb = path.stat().st_size / 2**20
        print(f"wrote {size_mb:,.0f} MB in {t_write:.1f} s ({path})")
        X = np.load(path, mmap_mode="r")
        timer, box = Timer(), {}
        mem = measure_memory(lambda: box.setdefault("s", timer(lambda: spectrum(X))))
        s = box["s"]
        wall = timer.best("wall")
        print(
            f"spectrum: wall {wall:.1f} s, cpu {timer.best():.1f} s "
            f"({size_mb / 1024 / wall:.2f} GB/s wall), method {s.method}"
        )
        print(
            f"memory: peak RSS of the process {mem['rss_peak_mb']:.0f} MB, extra during the call "
            f"{mem['rss_extra_mb']:.0f} MB, numpy buffers {mem['tracemalloc_mb']:.0f} MB; file "
            f"{size_mb:,.0f} MB (extra RSS / file = {mem['rss_extra_mb'] / size_mb:.4f})"
        )
        # population eigenvalues are k^-1 (axis-aligned); sampling error ~ sqrt(2/n)
        lam = s.eigenvalues[:5]
        pop = np.arange(1, 6, dtype=np.float64) ** -1.0
        print(f"sanity: top-5 λ / population λ = {np.array2string(lam / pop, precision=4)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small smoke run (seconds)")
    ap.add_argument("--no-memmap", action="store_true", help="skip the streaming case")
    ap.add_argument("--repeats", type=int, default=None, help="interleaved timing rounds")
    ap.add_argument("--threads", type=int, default=None, help="BLAS/torch threads (default: all)")
    args = ap.parse_args()
    if args.threads:  # after every BLAS-carrying import, so each library gets the limit
        import scipy.linalg  # noqa: F401
        import sklearn.decomposition  # noqa: F401
        import torch
        from threadpoolctl import threadpool_limits

        threadpool_limits(args.threads)
        torch.set_num_threads(args.threads)
    n, d, n2, d2 = (20_000, 256, 200_000, 128) if args.quick else (200_000, 512, 2_000_000, 768)
    repeats = args.repeats or (2 if args.quick else 5)
    print(f"load average before: {load()}")
    case_in_memory(n, d, repeats)
    if not args.no_memmap:
        case_memmap(n2, d2)
    print(f"\nload average after: {load()}")


if __name__ == "__main__":
    main()
