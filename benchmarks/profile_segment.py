"""Where the time of an Earth-Adapter training step goes, block by block (CPU).

For the default encoder's 16 image blocks at ``--resolution`` px and batch ``--batch``, each block
is timed on its own input (the frozen tower's activations): its forward without autograd (what
the frozen tower with a head only runs), its forward while recording the graph, and the backward
of its output's gradient to its input (what any adapter before it makes the step run; no weight
gradients — the tower is frozen). Also timed: one adapter layer (forward + backward) per block
kind, and a ``torch.profiler`` table of the ops of one whole step per variant.

Times are the median thread-CPU time (``time.thread_time``) of ``--repeats`` runs, which a
loaded machine inflates far less than wall time.

    OMP_NUM_THREADS=1 python benchmarks/profile_segment.py --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn


def _cpu(fn, repeats: int) -> float:
    fn()  # warm-up
    ts = []
    for _ in range(repeats):
        c0 = time.thread_time()
        fn()
        ts.append(time.thread_time() - c0)
    return statistics.median(ts) * 1e3


def _run(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    for member in list(block) if isinstance(block, nn.ModuleList) else [block]:
        x = member(x)
    return x


def _block_times(block: nn.Module, x_in: torch.Tensor, repeats: int) -> tuple[dict, torch.Tensor]:
    with torch.no_grad():
        fwd = _cpu(lambda: _run(block, x_in), repeats)
        y = _run(block, x_in)
    g = torch.randn_like(y)
    leaf = x_in.clone().requires_grad_(True)
    fwd_graph = _cpu(lambda: _run(block, leaf), repeats)
    both = _cpu(lambda: torch.autograd.grad(_run(block, leaf), leaf, g), repeats)
    row = {"shape": tuple(y.shape[1:]), "fwd": fwd, "fwd_graph": fwd_graph, "bwd": both - fwd_graph}
    return row, y


def per_block(encoder, pixels: torch.Tensor, repeats: int) -> list[dict]:
    """Per block: forward (no grad), forward (graph) and input-gradient backward, CPU ms."""
    net = encoder.image_net
    with torch.no_grad():
        x = net.bn1(net.conv_stem(pixels.contiguous(memory_format=torch.channels_last)))
    rows = []
    for i, block in enumerate(encoder.tower_blocks("image")):
        row, x = _block_times(block, x.detach(), repeats)
        rows.append({"block": i, **row})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--resolution", type=int, default=128)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--ops", action="store_true", help="also a torch.profiler op table per variant")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import workbench as wb

    torch.manual_seed(0)
    enc = wb.load_encoder("default", heads="random", resolution=args.resolution)
    enc.requires_grad_(False)
    pixels = torch.randn(args.batch, 3, args.resolution, args.resolution)
    rows = per_block(enc, pixels, args.repeats)
    tot = sum(r["fwd"] for r in rows)
    print(f"threads={torch.get_num_threads()} batch={args.batch} resolution={args.resolution}")
    print(f"{'block':>5} {'output (C,H,W)':>16} {'fwd ms':>8} {'fwd+graph':>9} {'bwd(in)':>8} "
          f"{'bwd/fwd':>7} {'cum fwd %':>9}")  # fmt: skip
    cum = 0.0
    for r in rows:
        cum += r["fwd"]
        print(f"{r['block']:5d} {r['shape']!s:>16} {r['fwd']:8.1f} {r['fwd_graph']:9.1f} "
              f"{r['bwd']:8.1f} {r['bwd'] / max(r['fwd'], 1e-9):7.2f} {100 * cum / tot:9.1f}")  # fmt: skip
    print(f"tower forward {tot:.1f} ms")
    for first in (5, 8, 11):
        extra = sum(r["fwd_graph"] - r["fwd"] + r["bwd"] for r in rows[first:])
        print(
            f"adapters from block {first}: backward through blocks {first}-15 adds "
            f"{extra:.1f} ms = {extra / tot:.2f} × the tower forward"
        )
    if args.ops:
        _ops(args)


def _ops(args) -> None:
    from torch.profiler import ProfilerActivity, profile

    import workbench as wb
    from workbench.methods.earth_adapter import segmentation_loss
    from workbench.train.config import TrainConfig
    from workbench.train.params import prepare_model, select

    for name in ("earth_adapter/head_only", "earth_adapter"):
        torch.manual_seed(0)
        enc = wb.load_encoder("default", heads="random", resolution=args.resolution)
        m = wb.methods.get(name)
        cfg = TrainConfig(method=name, trainable="adapters+method")
        prepare_model(enc, m, cfg)
        params = select(cfg.trainable_parts(), enc, list(m.parameters()))
        enc.requires_grad_(False)
        for p in params:
            p.requires_grad_(True)
        seg = m.segmenter(enc)
        m.train()
        px = torch.randn(args.batch, 3, args.resolution, args.resolution)
        lab = torch.randint(0, m.n_classes, (args.batch, args.resolution, args.resolution))
        segmentation_loss(seg(px), lab).backward()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(3):
                segmentation_loss(seg(px), lab).backward()
        print(f"\n== {name}: top ops by self CPU time (3 steps)")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=18))
        frozen_grads = [n for n, p in enc.named_parameters() if p.grad is not None
                        and not n.startswith("earth_adapter.")]  # fmt: skip
        print(f"frozen tower parameters holding a .grad after backward: {len(frozen_grads)}")


if __name__ == "__main__":
    main()
