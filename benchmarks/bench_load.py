"""Loading the embedded default: the shipped pretrained heads against the random-head baseline.

Each row loads ``load_encoder("default", heads=...)`` in a *fresh* Python process (import of
workbench and torch included, so "cold" means a new interpreter; the OS page cache may still hold
the weight files — run it twice and after ``sync; echo 3 > /proc/sys/vm/drop_caches`` as root to
see a truly cold disk), then times the encoder's ``identity`` (a hash of every weight, what run
directories and caches key on) and ``tower_fingerprint`` (the tower-feature cache key), median
of ``--repeats``. Targets (issue 21): load ≤ 20 s cold on 2 cores, identity hashing ≤ 0.3 s.

    python benchmarks/bench_load.py
    python benchmarks/bench_load.py --repeats 9 --threads 2
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

_CHILD = r"""
import json, statistics, sys, time
t0 = time.perf_counter()
import torch
torch.set_num_threads(int(sys.argv[2]))
import workbench as wb
from workbench.encoders.heads import tower_fingerprint
t1 = time.perf_counter()
enc = wb.load_encoder("default", heads=sys.argv[1])
t2 = time.perf_counter()
def med(fn):
    times = []
    for _ in range(int(sys.argv[3])):
        s = time.perf_counter(); fn(); times.append(time.perf_counter() - s)
    return statistics.median(times)
print(json.dumps({"import": t1 - t0, "load": t2 - t1, "total": t2 - t0,
                  "identity": med(lambda: enc.identity), "fingerprint": med(lambda: tower_fingerprint(enc))}))
"""


def measure(heads: str, threads: int, repeats: int) -> dict[str, float]:
    """One fresh-process measurement of loading the default with ``heads`` (seconds)."""
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, heads, str(threads), str(repeats)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5, help="identity/fingerprint timings (median)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads in the child process")
    args = ap.parse_args(argv)
    if args.repeats < 1 or args.threads < 1:
        ap.error("--repeats and --threads must be ≥ 1")
    rows = {h: measure(h, args.threads, args.repeats) for h in ("random", "pretrained")}
    base = rows["random"]
    print(f"{'heads':<12}{'import s':>10}{'load s':>9}{'total s':>9}{'identity s':>12}"
          f"{'fingerprint s':>15}{'total ×':>9}")  # fmt: skip
    for h, r in rows.items():
        print(f"{h:<12}{r['import']:>10.2f}{r['load']:>9.2f}{r['total']:>9.2f}"
              f"{r['identity']:>12.3f}{r['fingerprint']:>15.3f}{r['total'] / base['total']:>9.2f}")  # fmt: skip
    p = rows["pretrained"]
    print(f"targets: total ≤ 20 s: {p['total']:.1f} s {'met' if p['total'] <= 20 else 'MISSED'}; "
          f"identity ≤ 0.3 s: {p['identity']:.3f} s {'met' if p['identity'] <= 0.3 else 'MISSED'}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
