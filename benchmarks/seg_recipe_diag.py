"""Small diagnostic runs of the Earth-Adapter study's recipe: which loss / LR / steps / head inputs
leave the all-background solution (clean and one artifact domain, one seed per arm).

Each arm is ``row:loss:lr:steps[:feature_layers[:first:fft_layers]]``, e.g.
``"head only:ce:1e-2:60"``, ``"Earth-Adapter:ce+dice:1e-2:120:2,4,10,15"`` or
``"Earth-Adapter:balanced_ce:1e-2:200:2,4,10,15:5:5,6,7"`` (adapters on blocks 5..15, FFT on
5–7); an empty feature-layers field is the method's default head (blocks 4, 10, 15), a missing
placement the study's (blocks 10–15, FFT on 10); the data are the study's (``EarthAdapterConfig``
defaults unless overridden), rendered and prefix-cached once.

    OMP_NUM_THREADS=1 python benchmarks/seg_recipe_diag.py --arms "head only:ce:1e-2:60" \\
        "head only:ce+dice:1e-2:60"
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--arms", nargs="+", required=True)
    ap.add_argument("--n-train", type=int, default=200)
    ap.add_argument("--n-test", type=int, default=30)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--domain", default="gaussian")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--feature-layers",
        default=None,
        help="blocks the data's prefix cache keeps, e.g. 2,4,10,15",
    )
    args = ap.parse_args()
    torch.set_num_threads(1)
    from workbench import experiments as E
    from workbench.experiments.segtrain import evaluate_domains, train_segmenter
    from workbench.experiments.segtrain_config import SegTraining

    fl = None if args.feature_layers is None else [int(v) for v in args.feature_layers.split(",")]
    cfg = E.EarthAdapterConfig(n_train=args.n_train, n_test=args.n_test, domains=(args.domain,),
                               da=False, batch_size=args.batch, rho_sweep=(0.3,))  # fmt: skip
    if fl is not None:
        cfg = dataclasses.replace(cfg, feature_layers=tuple(fl))
    firsts = [int(a.split(":")[5]) for a in args.arms if len(a.split(":")) > 5]
    if firsts and min(firsts) < min(cfg.adapter_layers):  # the prefix cache must start earlier
        first = min(firsts)
        cfg = dataclasses.replace(cfg, adapter_layers=tuple(range(first, 16)), fft_layers=(first,))
    t0 = time.process_time()
    data = E.prepare_data(cfg)
    print(f"data: {time.process_time() - t0:.1f} s CPU, start block {data.start}", flush=True)
    root = tempfile.mkdtemp(prefix="wb-seg-diag-")
    caches = {d: data.caches[d] for d in data.tests}
    for arm in args.arms:
        row, loss, lr, steps, *rest = arm.split(":")
        mc = cfg.method_config(row)
        mc.pop("feature_layers", None)  # the method's default (4, 10, 15) unless the arm says
        if rest and rest[0]:
            mc["feature_layers"] = [int(v) for v in rest[0].split(",")]
        if len(rest) > 1 and row != "head only":  # adapters on blocks first..15, FFT on fft
            mc["adapter_layers"] = list(range(int(rest[1]), 16))
            mc["fft_layers"] = [int(v) for v in rest[2].split(",")]
        training = SegTraining(steps=int(steps), batch_size=args.batch, lr=float(lr),
                               warmup=min(10, int(steps) // 10), loss=loss)  # fmt: skip
        c0, w0 = time.process_time(), time.perf_counter()
        run = train_segmenter(E.EARTH_ADAPTER_ROWS[row], mc, data.source, training,
                              seed=args.seed, run_root=root, encoder=cfg.encoder,
                              encoder_kwargs=cfg.encoder_kwargs,
                              source_cache=data.caches["source"])  # fmt: skip
        cpu, wall = time.process_time() - c0, time.perf_counter() - w0
        res = evaluate_domains(run.segmenter, run.encoder, data.tests, caches=caches)
        cells = "  ".join(
            f"{d} mIoU {100 * r['miou']:5.1f} px-acc {100 * r['pixel_accuracy']:5.1f}"
            for d, r in res.items()
        )
        iou = np.round(100 * np.nan_to_num(res["clean"]["iou"]), 0).astype(int).tolist()
        first, last = run.log[0]["loss"], run.log[-1]["loss"]
        print(f"{arm:42} {cells}  loss {first:.3f}→{last:.3f}  clean IoU/class {iou}  "
              f"train {cpu:.0f} s CPU / {wall:.0f} s wall", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
