"""Benchmark the sharded ``embed``: rows/s with 1 and 2 processes, and the spectrum of the result.

For each process count P (``--procs``, default 1 2) the script starts P processes the way
``torchrun --nproc_per_node P`` does (``torch.multiprocessing`` with torchrun's environment;
gloo on CPU, NCCL on CUDA), each loading the encoder and the dataset (not timed), then times
``embed(..., group="auto")`` into a fresh cache between two barriers, and the all-reduced
``spectrum`` of the result (each rank streaming its ``Embeddings.shard``). Threads are split
evenly (``--threads`` in all, default the machine's cores), so 1 process × 2 threads is compared
with 2 processes × 1 thread on the same cores.

The spectra run single-threaded (``image_normed`` applies the heads chunk by chunk, and torch's
CPU GEMM rounds differently with other thread counts); the reference is one process streaming
the first run's cache.

Printed: a table of extraction seconds (the slowest rank, barrier to barrier), rows/s and the
ratio to the first process count, and the spectrum's seconds; then whether the P-process cache holds the one-process cache's
rows bit for bit, and the largest relative difference between the P-rank spectrum and the
single-process one (singular values above the resolution floor). On a CPU machine with fewer
cores than processes a second process cannot make extraction faster: the figure shows what the
sharding costs there (model loads are outside the timing, so what remains is the split itself
plus contention). On a GPU machine, run with ``--device cuda --procs 1 <GPUs>``.

Usage: ``python benchmarks/bench_embed.py [--rows 512] [--chunk-rows 64] [--procs 1 2]
[--threads T | --threads-per-proc T] [--encoder default] [--dataset synthetic-world] [--device cpu] [--json OUT]``
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import socket
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.multiprocessing as mp


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(
    rank: int, world: int, port: int, args: argparse.Namespace, cache: str, out: str
) -> None:
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        GLOO_SOCKET_IFNAME="lo",
    )
    threads = args.threads_per_proc or max(1, args.threads // world)
    torch.set_num_threads(threads)
    import workbench as wb
    from workbench import distributed as D
    from workbench.probes import spectrum

    device = torch.device("cuda", rank) if args.device == "cuda" else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    info = D.setup(device)
    encoder = wb.load_encoder(args.encoder)
    data = wb.load_dataset(args.dataset, **({"size": args.rows} if args.dataset_sized else {}))
    D.barrier(info)
    t0 = time.perf_counter()
    emb = wb.embed(
        encoder,
        data,
        size=None if args.dataset_sized else args.rows,
        chunk_rows=args.chunk_rows,
        batch_size=args.batch_size,
        cache_dir=cache,
        device=str(device),
        progress=False,
        group="auto",
        mmap=True,
    )
    D.barrier(info)
    extract = time.perf_counter() - t0
    local = emb.shard(info.rank, info.world_size)
    torch.set_num_threads(1)  # the lazy heads' GEMM rounds differently with other thread counts
    t1 = time.perf_counter()
    spec = spectrum(local.image_normed, center=True, group="auto")
    D.barrier(info)
    seconds_spectrum = time.perf_counter() - t1
    result = {
        "rank": rank,
        "threads": threads,
        "extract": extract,
        "spectrum_seconds": seconds_spectrum,
        "singular_values": spec.singular_values,
        "resolution": spec.resolution,
        "entry": str(wb.encoders.EmbeddingCache(cache).path_for(emb.provenance["cache_key"])),
        "rows": len(emb),
    }
    with open(f"{out}.{rank}", "wb") as f:
        pickle.dump(result, f)
    if info.enabled:
        torch.distributed.destroy_process_group()


def run(args: argparse.Namespace) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="bench-embed-"))
    runs = {}
    for procs in args.procs:
        cache, out = str(tmp / f"cache-{procs}"), str(tmp / f"result-{procs}")
        mp.spawn(_worker, args=(procs, _free_port(), args, cache, out), nprocs=procs, join=True)
        ranks = []
        for r in range(procs):
            with open(f"{out}.{r}", "rb") as f:
                ranks.append(pickle.load(f))
        runs[procs] = ranks
    import workbench as wb
    from workbench.encoders.embed import open_embeddings
    from workbench.probes import spectrum

    torch.set_num_threads(1)
    encoder = wb.load_encoder(args.encoder)
    base = runs[args.procs[0]][0]
    ref = open_embeddings(base["entry"], encoder, tower_features=True)
    single = spectrum(ref.image_normed, center=True)  # one process streaming the first cache
    rows = base["rows"]
    report: dict = {"rows": rows, "chunk_rows": args.chunk_rows, "load": os.getloadavg()[0]}
    threads = (
        f"{args.threads_per_proc} thread(s) per process"
        if args.threads_per_proc
        else f"{args.threads} thread(s) in all"
    )
    print(
        f"{args.encoder} on {args.dataset}: {rows} rows, chunks of {args.chunk_rows}, "
        f"batch {args.batch_size}, {args.device}, {threads}; "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )
    print("| processes | threads/proc | extraction s | rows/s | vs first | spectrum s |")
    print("|---|---|---|---|---|---|")
    one = None
    for procs, ranks in runs.items():
        extract = max(r["extract"] for r in ranks)
        rate = rows / extract
        one = one or rate
        spec_s = max(r["spectrum_seconds"] for r in ranks)
        print(
            f"| {procs} | {ranks[0]['threads']} | {extract:.1f} | {rate:.1f} | {rate / one:.2f}× "
            f"| {spec_s:.2f} |"
        )
        entry = ranks[0]["entry"]
        other = open_embeddings(entry, encoder, tower_features=True)
        same = (
            all(
                np.array_equal(np.asarray(getattr(other, k)), np.asarray(getattr(ref, k)))
                for k in ("image", "text", "image_tower", "text_tower")
            )
            and other.ids == ref.ids
        )
        sv, sv0 = ranks[0]["singular_values"], single.singular_values
        floor = max(ranks[0]["resolution"], single.resolution)
        keep = (sv0 > floor) & (sv > floor)
        rel = float(np.max(np.abs(sv[keep] / sv0[keep] - 1))) if keep.any() else float("nan")
        ranks_agree = all(np.array_equal(r["singular_values"], sv) for r in ranks)
        report[str(procs)] = {
            "extraction_seconds": extract,
            "rows_per_second": rate,
            "ratio_to_first": rate / one,
            "spectrum_seconds": spec_s,
            "rows_bit_identical_to_first": bool(same),
            "spectrum_max_rel_diff_to_first": rel,
            "ranks_agree_bitwise": bool(ranks_agree),
        }
    for procs in runs:
        r = report[str(procs)]
        print(
            f"{procs} process(es): cache rows bit-identical to the {args.procs[0]}-process cache: "
            f"{r['rows_bit_identical_to_first']}; its spectrum (σ above the floor) vs one "
            f"process streaming the {args.procs[0]}-process cache: max relative difference "
            f"{r['spectrum_max_rel_diff_to_first']:.1e}; every rank the same bits: "
            f"{r['ranks_agree_bitwise']}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return report


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", type=int, default=512)
    p.add_argument("--chunk-rows", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="split over procs")
    p.add_argument("--threads-per-proc", type=int, help="instead: this many in every process")
    p.add_argument("--encoder", default="default")
    p.add_argument("--dataset", default="synthetic-world")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--json", help="also write the figures here")
    args = p.parse_args()
    args.dataset_sized = args.dataset == "synthetic-world"  # generated: built at --rows
    run(args)


if __name__ == "__main__":
    main()
