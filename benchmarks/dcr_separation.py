"""How far DCR's logits separate the positive view from the negatives, at the start of Stage 1 and
after ``--steps`` projector steps (batch 16: 8 synthetic-world + 8 fashion-mnist test images, K = 7,
AdamW lr 1e-3, the study's Stage-1 LR), on the shipped pretrained default and ``--denoiser``.

Prints the method's logs at both ends (``sim_aug``, ``sim_gt``, ``sim_neg``: mean cosines of the
anchor's prediction with the x⁺-conditioned one, the target and the negatives; ``rec_mse``).
Usage: ``PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/dcr_separation.py --steps 20``
(``--stage1-loss mse``: Stage 1 on reconstruction; the logs then come from an extra DCR pass).
"""

from __future__ import annotations

import argparse
import json

import torch

import workbench as wb
from workbench import methods
from workbench.data import load_dataset
from workbench.methods import StepState
from workbench.methods.base import BatchOutputs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--denoiser", default="tiny")
    ap.add_argument(
        "--stage1-loss", default="dcr", choices=("dcr", "mse"), help="DCR's Stage-1 loss"
    )
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    enc = wb.load_encoder("default").eval()
    items = [load_dataset(n, split="test", size=8)[i]
             for n in ("synthetic-world", "fashion-mnist") for i in range(8)]  # fmt: skip
    px = enc.preprocess([it.image for it in items])
    m = methods.get("dcr", negatives=7, denoiser=args.denoiser, stage1_loss=args.stage1_loss)
    m.attach(enc)
    opt = torch.optim.AdamW(m.projector.parameters(), lr=1e-3)
    with torch.no_grad():
        z = enc.image_head(enc.image_tower(px))  # (16, D)
    out = {}
    for step in range(args.steps + 1):
        batch = BatchOutputs(image_features=z, text_features=z, logit_scale=torch.tensor(1.0),
                             image_raw=z, text_raw=z, pixels=px, encoder=enc)  # fmt: skip
        lo = m.compute(batch, StepState(step, 2 * args.steps, "align"))
        if step in (0, args.steps) and args.stage1_loss == "mse":  # the logs need the DCR pass
            with torch.no_grad():
                m.stage1_loss = "dcr"
                logs = m.compute(batch, StepState(step, 2 * args.steps, "align")).logs
                m.stage1_loss = "mse"
            out[step] = {
                **{k: round(float(v), 6) for k, v in logs.items()},
                "mse": float(lo.loss.detach()),
            }
            out[step]["aug_minus_neg"] = out[step]["sim_aug"] - out[step]["sim_neg"]
        elif step in (0, args.steps):
            logs = {k: round(float(v), 6) for k, v in lo.logs.items()}
            out[step] = {**logs, "loss": float(lo.loss.detach()),
                         "aug_minus_neg": logs["sim_aug"] - logs["sim_neg"]}  # fmt: skip
        opt.zero_grad()
        lo.loss.backward()
        opt.step()
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
