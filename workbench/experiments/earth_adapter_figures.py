"""Numbers behind the Earth-Adapter notebook's figures: the low/high-frequency parts of a feature
map, the high-band energy per domain, the router's weights per domain, qualitative masks, and
the paper's numbers beside ours.

Companion of :mod:`workbench.experiments.earth_adapter` (which trains and tabulates); these read
trained or frozen encoders and never train.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "band_energy",
    "frequency_maps",
    "paper_comparison",
    "qualitative_masks",
    "router_weights",
]


def _block_tokens(encoder: Any, arrays: Any, rows: Any, layers: Sequence[int]) -> list:
    """Pre-adapter (tokens (b, H·W, C), grid) of ``layers`` for ``arrays`` at ``rows``."""
    import torch

    from workbench.experiments.segtrain import _pixels
    from workbench.methods.earth_adapter.layers import to_tokens
    from workbench.methods.earth_adapter.segmenter import capture_outputs, hook_target

    blocks = encoder.tower_blocks("image")
    device = next(encoder.parameters()).device
    pixels = _pixels(encoder, arrays, np.asarray(rows), device)
    with torch.no_grad(), capture_outputs([hook_target(blocks[i]) for i in layers],
                                          before_hooks=True) as outs:  # fmt: skip
        encoder.image_tower(pixels)
    result = []
    for out in outs:
        out = out[0] if isinstance(out, tuple) else out
        tokens, grid, _ = to_tokens(out, 1 if out.ndim == 3 else 0)
        result.append((tokens.float(), grid))
    return result


def frequency_maps(
    encoder: Any, tests: dict[str, Any], layer: int, index: int, ratio: float
) -> dict:
    """Per domain, (H, W) maps of the per-token L2 norm of F, F_low and F_high at ``layer``'s
    output (before its adapter) for test scene ``index``: ``{domain: {"F", "low", "high"}}``."""
    from workbench.methods.earth_adapter import frequency_split

    out = {}
    for domain, arrays in tests.items():
        ((tokens, grid),) = _block_tokens(encoder, arrays, [index], [layer])
        low, high = frequency_split(tokens, grid, ratio)
        out[domain] = {k: v[0].norm(dim=-1).reshape(grid).numpy() for k, v in
                       (("F", tokens), ("low", low), ("high", high))}  # fmt: skip
    return out


def band_energy(encoder: Any, tests: dict[str, Any], layer: int, ratio: float, n: int = 32) -> Any:
    """Share of the feature energy in the high band at ``layer`` (before its adapter), mean ± std
    over ``n`` test scenes per domain: DataFrame ``domain, high_share_mean, high_share_std``."""
    import pandas as pd

    from workbench.methods.earth_adapter import frequency_split

    recs = []
    for domain, arrays in tests.items():
        ((tokens, grid),) = _block_tokens(encoder, arrays, np.arange(min(n, len(arrays))), [layer])
        low, high = frequency_split(tokens, grid, ratio)
        e_low, e_high = low.pow(2).sum(dim=(1, 2)), high.pow(2).sum(dim=(1, 2))  # (b,)
        share = (e_high / (e_low + e_high)).numpy()
        recs.append({"domain": domain, "high_share_mean": float(share.mean()),
                     "high_share_std": float(share.std(ddof=1)) if share.size > 1 else 0.0})  # fmt: skip
    return pd.DataFrame(recs)


def router_weights(encoder: Any, tests: dict[str, Any], n: int = 32) -> Any:
    """Mean router weight of each expert at each mixture layer of a trained Earth-Adapter, per
    domain (over every token of ``n`` test scenes): DataFrame ``domain, layer, expert, weight``."""
    import pandas as pd
    import torch

    layers = {int(k): v for k, v in encoder.earth_adapter.items() if v.router is not None}
    if not layers:
        raise ValueError("router_weights: the encoder has no adapter layer with a router")
    recs = []
    for domain, arrays in tests.items():
        rows = np.arange(min(n, len(arrays)))
        for (tokens, _), (i, layer) in zip(_block_tokens(encoder, arrays, rows, list(layers)),
                                           layers.items()):  # fmt: skip
            with torch.no_grad():
                w = layer.router_weights(tokens).mean(dim=(0, 1))  # (K,)
            for name, value in zip(layer.inputs, w.tolist()):
                recs.append({"domain": domain, "layer": i, "expert": name, "weight": value})
    return pd.DataFrame(recs)


def qualitative_masks(segmenters: dict[str, tuple[Any, Any]], tests: dict[str, Any],
                      domains: Sequence[str], index: int) -> dict[str, dict[str, np.ndarray]]:  # fmt: skip
    """``{domain: {"image", "labels", <row>: predicted labels}}`` for test scene ``index``;
    ``segmenters`` maps a row to ``(encoder, segmenter)``."""
    from workbench.experiments.segtrain import predict_classes

    out = {}
    for domain in domains:
        arrays = tests[domain]
        rec = {"image": arrays.images[index], "labels": arrays.labels[index]}
        for row, (encoder, segmenter) in segmenters.items():
            segmenter.eval()
            rec[row] = predict_classes(segmenter, encoder, arrays, [index])[0].numpy()
        out[domain] = rec
    return out


def paper_comparison(
    tables: dict[str, Any], paper: dict[str, dict[str, float]] | None = None
) -> Any:
    """Our mIoU beside the paper's, one row per (setting, table row).

    Args:
        tables: Setting (``"dg"``, ``"da"``, ``"ablation"``: the keys of
            :data:`~workbench.experiments.earth_adapter.EARTH_ADAPTER_PAPER`) → its
            :func:`~workbench.experiments.earth_adapter.domain_table` (``None``: not run).
        paper: Setting → row → the paper's mIoU (%); default
            :data:`~workbench.experiments.earth_adapter.EARTH_ADAPTER_PAPER`.

    Returns:
        DataFrame ``setting, row, ours_clean, ours_clean_std, ours_targets, ours_targets_std,
        diff_targets, exceeds_spread, paper`` in % (``diff_targets``/``exceeds_spread``: against
        the table's baseline, :func:`~workbench.experiments.stats.spread_test`). Rows the paper
        has and we do not run (its Rein) come with our columns NaN; rows we run and the paper
        does not report come with ``paper`` NaN. Ours: synthetic-world under artifacts on a frozen
        EfficientNet-Lite0; the paper's: DINOv2-L + Mask2Former on real remote-sensing
        benchmarks — the comparison is of directions, not of levels.
    """
    import pandas as pd

    from workbench.experiments.earth_adapter import EARTH_ADAPTER_PAPER, TARGETS

    paper = EARTH_ADAPTER_PAPER if paper is None else paper
    nan = float("nan")
    recs = []
    for setting, table in tables.items():
        if table is None:
            continue
        ref = paper.get(setting, {})
        for row in dict.fromkeys(table["row"]):
            sub = table[table["row"] == row].set_index("column")
            rec: dict[str, Any] = {"setting": setting, "row": row}
            for col, key in (("clean", "clean"), (TARGETS, "targets")):
                rec[f"ours_{key}"] = 100 * float(sub.loc[col, "mean"])
                rec[f"ours_{key}_std"] = 100 * float(sub.loc[col, "std"])
            rec["diff_targets"] = 100 * float(sub.loc[TARGETS, "diff"])
            rec["exceeds_spread"] = bool(sub.loc[TARGETS, "exceeds_spread"])
            rec["paper"] = float(ref.get(row, nan))
            recs.append(rec)
        for row, value in ref.items():
            if row not in set(table["row"]):
                recs.append({"setting": setting, "row": row, "paper": float(value)})
    return pd.DataFrame(
        recs,
        columns=["setting", "row", "ours_clean", "ours_clean_std", "ours_targets",
                 "ours_targets_std", "diff_targets", "exceeds_spread", "paper"],
    )  # fmt: skip
