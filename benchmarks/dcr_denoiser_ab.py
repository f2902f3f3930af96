"""A/B of tiny-denoiser recipes at equal (short) step counts: held-out ε-MSE under the own vs a
shuffled condition, per t, and the cosine between the two predictions (what DCR's logits see).

Each variant changes one field of the shipped :class:`TinyDenoiserRecipe` (at ``--steps`` and
``--batch``); results go to ``--out`` (JSON, one entry per variant, appended). Usage::

    PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/dcr_denoiser_ab.py --steps 300 --batch 32 \\
        --variants w32-eps w32-eps-text-tower w32-eps-no-global w32 w48 default --out /tmp/ab.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time

import torch

from workbench.methods.dcr.tiny import TinyDenoiserRecipe
from workbench.methods.dcr.tiny_pretrain import prepare_mixture, pretrain_tiny_denoiser


def variants(base: TinyDenoiserRecipe) -> dict[str, TinyDenoiserRecipe]:
    """Name → recipe: the shipped recipe's fields, one changed per variant."""
    r = dataclasses.replace
    out = {
        "default": base,
        "text-tower": r(base, condition="text-tower", image_condition=0.0),
        "no-global": r(base, global_condition=False, scale_shift=False),
        "eps-loss": r(base, loss="eps"),
        "eps-out": r(base, unet_output="eps", loss="eps"),
        "w48": r(base, patch=4, block_out_channels=(48, 64, 64)),
        "w32": r(base, patch=4, block_out_channels=(32, 64, 64)),
        "no-drop": r(base, cond_dropout=0.0),
    }
    # the first A/B of issue 14's report ran on a 4× grid, widths (32, 64, 64), ε-loss:
    w32 = r(base, patch=4, block_out_channels=(32, 64, 64), loss="eps")
    out.update({
        "w32-eps": w32,
        "w32-eps-text-tower": r(w32, condition="text-tower", image_condition=0.0),
        "w32-eps-no-global": r(w32, global_condition=False, scale_shift=False),
    })  # fmt: skip
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--variants", nargs="+", default=["default", "text-tower", "no-global"])
    ap.add_argument("--out", required=True, help="JSON file the results are added to")
    args = ap.parse_args()
    torch.set_num_threads(1)
    base = TinyDenoiserRecipe(
        steps=args.steps, batch_size=args.batch, warmup=min(100, args.steps // 8)
    )
    table = variants(base)
    unknown = [v for v in args.variants if v not in table]
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; choose from {list(table)}")
    res = json.loads(open(args.out).read()) if os.path.exists(args.out) else {}
    t0 = time.perf_counter()
    data = {c: prepare_mixture(dataclasses.replace(base, condition=c, image_condition=0.5 if c == "joint" else 0.0))
            for c in {table[v].condition for v in args.variants}}  # fmt: skip
    print(f"data {time.perf_counter() - t0:.0f} s, load {os.getloadavg()[0]:.1f}", flush=True)
    for name in args.variants:
        recipe = table[name]
        card = pretrain_tiny_denoiser(recipe, data=data[recipe.condition], log_every=100).card
        keep = {k: v for k, v in card.items() if k.startswith("heldout")
                or k in ("final_train_loss", "wall_seconds", "cpu_seconds", "loadavg_1min", "n_params")}  # fmt: skip
        res[name] = keep
        true, shuf = keep["heldout_mse/true"], keep["heldout_mse/shuffled"]
        print(f"{name:12s} ε-MSE own {true:.4f} shuffled {shuf:.4f} gap {1 - true / shuf:.3%} "
              f"cos {keep['heldout_cos/true_vs_shuffled']:.5f} cpu {keep['cpu_seconds']['train']:.0f} s",
              flush=True)  # fmt: skip
        with open(args.out, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
