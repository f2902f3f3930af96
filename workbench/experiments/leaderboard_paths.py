"""Leaderboard rows that need more than cached tower features: DCR, CDDS, Earth-Adapter (issue 18).

Each gets its own data path to the *same* start (the starting encoder's weights), the *same*
training mixture (the items of ``suite.train_pairs()``: the pairs every heads-only row trains
on), the same seeds and the same number of optimiser steps, and is scored by the leaderboard's
one scorer (:mod:`~workbench.experiments.leaderboard_scoring`):

- **DCR** (``"dcr"``, denoiser from its registry): the loop on *pixels* of the mixture's items
  (``TrainConfig(data="items")``; :class:`PairItems`), Stage 1 the projector h_ω, Stage 2 the
  leaderboard's image-side part (``dcr_trainable``, ``"image_head"``: DCR's loss reaches the
  image side only, and frozen towers keep it scored on the same cached tower features, with the
  same eval hook at every ``eval_every``, as every heads-only row);
- **CDDS** (``"cdds"``): :func:`~workbench.experiments.token_training.train_token_method` on
  cached token features of those items and pair texts, scored through its semantic components
  as it exposes them for evals (:class:`~workbench.methods.tokens.TokenMethodEncoder`) on the
  suites rebuilt over them; its embedding space is not the heads', so no β/γ (no frame);
- **Earth-Adapter** (``"earth_adapter"``): :func:`~workbench.experiments.segtrain.
  train_segmenter`, with the Earth-Adapter study's recipe, on the mixture's synthetic-world training scenes as synthetic-world-seg
  scenes (:func:`seg_scenes`), then the adapted image tower (adapters kept) scored through the
  start's pretrained heads on the suites rebuilt over it.

CDDS and Earth-Adapter train outside the loop: their trainers' ``on_step`` callback logs the
geometry diagnostics (``diag/...``, :mod:`workbench.evals.diagnostics`) at the loop's cadence
(step 0, every ``eval_every``), on the probe pairs alone, re-embedded through the current model
(:func:`prepare_path_inputs`' ``"probe"``: CDDS's semantic components on the pairs' token
features, Earth-Adapter's adapted image tower on their images with the text side's cached tower
features, both through the start's heads); their task columns are scored once, at the last step,
on the suites rebuilt over the trained model. Both land in the run directories as ``eval``
records (the segmentation trainer writes its own, the CDDS path writes the token trainer's;
:func:`~workbench.experiments.leaderboard_scoring.append_evals`), so trajectories and
``workbench leaderboard RUN_DIR...`` read them like any other row.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections import defaultdict
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import numpy as np

from workbench.data.base import Dataset, Item
from workbench.experiments.leaderboard_runs import RunResult, results_from_runs
from workbench.experiments.leaderboard_scoring import (
    LeaderboardData,
    append_evals,
    leaderboard_hook,
    probe_snapshot,
    rebuilt_data,
    score_model,
)

__all__ = ["PATHS", "PairItems", "prepare_path_inputs", "seg_scenes"]

#: ``synthetic-world`` item ids: ``synthetic-<split>-<seed>-<index>``.
_WORLD_ID = re.compile(r"synthetic-(train|test)-(\d+)-(\d+)$")


class PairItems(Dataset):
    """The mixture's training items: one per image of the training pairs, its captions the
    pairs' texts in order, images pre-resized (shorter side ``side`` px).

    Items are looked up by the pairs' keys (``"<dataset>:<item id>"``) in the same seeded
    subsets :func:`~workbench.evals.task_builder.build_task_suite` embedded.

    Args:
        pairs: :class:`~workbench.evals.task_suite.PairSet` (``suite.train_pairs()``), or
            anything with ``keys`` and ``texts``; ``texts=None``: each item's own canonical
            caption (``captions[0]``, the one the suite embedded: the probe pairs).
        suite_config: The :class:`~workbench.evals.task_suite.TaskSuiteConfig` it came from.
        side: Shorter side in px (96: the default encoder's input, so preprocessing is cheap);
            ``None``: images as the suite embedded them (not resized).
    """

    name = "leaderboard-pairs"
    split = "train"
    class_names = None

    def __init__(self, pairs: Any, suite_config: Any, side: int | None = 96) -> None:
        from workbench.experiments.dcr import resize_short_side

        texts: dict[str, list[str]] = defaultdict(list)
        for k, t in zip(pairs.keys, pairs.texts or [None] * len(pairs.keys)):
            texts[k] += [] if t is None else [t]
        by_dataset: dict[str, set[str]] = defaultdict(set)
        for k in texts:
            by_dataset[k.split(":", 1)[0]].add(k)
        found: dict[str, Any] = {}
        for name, keys in by_dataset.items():
            found |= _images(name, keys, suite_config)
        missing = [k for k in texts if k not in found]
        if missing:
            raise ValueError(
                f"PairItems: {len(missing)} pair keys not in the data, e.g. {missing[0]}"
            )
        self.keys = list(texts)
        size = (lambda im: im) if side is None else (lambda im: resize_short_side(im, side))
        self._items = [Item(k, size(found[k][0]), texts[k] or [found[k][1]], None, {})
                       for k in self.keys]  # fmt: skip
        digest = hashlib.sha256(json.dumps([[k, texts[k]] for k in self.keys]).encode())
        self._config = {"name": self.name, "suite": suite_config.to_dict(), "side": side,
                        "n": len(self.keys), "pairs_sha256": digest.hexdigest()[:16]}  # fmt: skip

    @property
    def config(self) -> dict[str, Any]:
        return dict(self._config)

    def __len__(self) -> int:
        return len(self._items)

    def _get(self, i: int) -> Item:
        return self._items[i]


def _images(name: str, keys: set[str], suite_config: Any) -> dict[str, Any]:
    """``{key: (PIL image, canonical caption)}`` of one source's pair keys: a data set's seeded
    subset, or the synthetic MMVP pairs (``"synthetic-mmvp:<pair>:<image>"``: its statement),
    as the suite built them."""
    from workbench.data import load_dataset
    from workbench.data.base import subset_indices
    from workbench.data.synthetic import mmvp_pairs
    from workbench.evals.task_suite import SYNTHETIC_MMVP

    if name == SYNTHETIC_MMVP:
        pairs = mmvp_pairs(suite_config.mmvp_pairs_per_category, seed=suite_config.seed)
        split = (k.split(":") for k in keys)
        return {f"{name}:{p}:{i}": (pairs[int(p)].images[int(i)], pairs[int(p)].statements[int(i)])
                for _, p, i in split}  # fmt: skip
    ds = load_dataset(name)
    out = {}
    for i in subset_indices(len(ds), min(suite_config.n_per_dataset, len(ds)), suite_config.seed):
        it = ds[i]
        if f"{name}:{it.id}" in keys:
            out[f"{name}:{it.id}"] = (it.image, it.captions[0])
    return out


def seg_scenes(pairs: Any, image_size: int = 96) -> Any:
    """The synthetic-world training scenes of ``pairs`` as synthetic-world-seg scenes
    (:class:`~workbench.data.segworld.SegWorld`: same scene index, seed and split, objects drawn
    solid, per-pixel labels), as :class:`~workbench.data.segworld.SegArrays`."""
    from workbench.data.segworld import SEG_CLASSES, SegArrays, SegWorld

    found = sorted({m.groups() for k in pairs.keys
                    if k.startswith("synthetic-world:") and (m := _WORLD_ID.search(k))})  # fmt: skip
    if not found:
        raise ValueError("seg_scenes: the mixture has no synthetic-world training items")
    images, labels, index = [], [], []
    for split, seed, i in found:
        world = SegWorld(size=1, seed=int(seed), split=split, image_size=image_size, offset=int(i))
        item, lab = world.item_and_labels(0)
        images.append(np.asarray(item.image, dtype=np.uint8))
        labels.append(lab)
        index.append([split, int(seed), int(i)])
    config = {"name": "leaderboard-seg-scenes", "scenes": index, "image_size": image_size}
    return SegArrays(np.stack(images), np.stack(labels), SEG_CLASSES, "clean", config)


def prepare_path_inputs(data: LeaderboardData, wanted: set[str]) -> dict[str, Any]:
    """The inputs of the rows with a data path: ``"items"`` (:class:`PairItems`), ``"tokens"``
    (their token features, cached on disk) and ``"scenes"`` (:func:`seg_scenes`), images at the
    starting encoder's input resolution (segmentation labels must match it)."""
    from PIL import Image

    from workbench.encoders.tokens import embed_tokens

    out: dict[str, Any] = {}
    if not wanted:
        return out
    side = int(data.encoder.preprocess([Image.new("RGB", (64, 64))]).shape[-1])  # input px
    if wanted & {"items", "tokens"}:
        out["items"] = PairItems(data.pairs, data.suite.config, side)
    if "tokens" in wanted:
        out["tokens"] = embed_tokens(data.encoder, out["items"], progress=False)
    if "scenes" in wanted:
        out["scenes"] = seg_scenes(data.pairs, side)
    if wanted & {"tokens", "scenes"}:
        out["probe"] = _probe_inputs(data, wanted)
    return out


def _probe_inputs(data: LeaderboardData, wanted: set[str]) -> dict[str, Any] | None:
    """The probe pairs' own inputs, to re-embed them through a model in training: ``"pixels"``
    (n, 3, H, W) of their images (``"scenes"``), ``"tokens"`` their token features
    (``"tokens"``); ``None`` when the probe rows are not one item each (no retrieval task:
    training pairs), then only the final step is logged."""
    from workbench.encoders.tokens import embed_tokens
    from workbench.experiments.leaderboard_data import probe_keys

    keys = probe_keys(data.suite, len(data.probe[0]))
    if not keys or len(set(keys)) != len(keys):
        return None
    items = PairItems(SimpleNamespace(keys=keys, texts=None), data.suite.config, side=None)
    out: dict[str, Any] = {}
    if "scenes" in wanted:
        out["pixels"] = data.encoder.preprocess([it.image for it in items])  # (n, 3, H, W)
    if "tokens" in wanted:
        out["tokens"] = embed_tokens(data.encoder, items, progress=False)
    return out


def _every(c: Any, snapshot: Callable[[Any], dict[str, float]]) -> Any:
    """``on_step`` of a trainer: ``diag/...`` of ``snapshot(model)`` at step 0 and every
    ``c.eval_every`` before the last (the last step's come with the task columns)."""
    from workbench.evals.diagnostics import DIAG_PREFIX

    def on_step(step: int, model: Any) -> dict[str, float] | None:
        if step % c.eval_every or step >= c.steps:
            return None
        return {DIAG_PREFIX + k: v for k, v in snapshot(model).items()}

    return on_step


def _token_snapshot(tokens: Any) -> Callable[[Any], dict[str, float]]:
    """Diagnostics of a token method's retrieval embeddings of the probe pairs (no β/γ)."""
    from workbench.evals.diagnostics import geometry_snapshot
    from workbench.experiments.token_training import encode_token_features

    def snapshot(method: Any) -> dict[str, float]:
        image, text = encode_token_features(method, tokens)  # (n, E) each, row i ↔ caption i
        return geometry_snapshot(image.astype(np.float64), text.astype(np.float64))

    return snapshot


def _tower_snapshot(pixels: Any, data: LeaderboardData) -> Callable[[Any], dict[str, float]]:
    """Diagnostics of the probe pairs: the encoder's (adapted) image tower on their pixels, the
    text side's cached tower features, both through the encoder's heads; β/γ in ``data.frame``."""
    import torch

    from workbench.encoders.heads import Heads

    def snapshot(enc: Any) -> dict[str, float]:
        dev = next(enc.parameters()).device
        feats = torch.cat(
            [
                enc.image_tower(pixels[i : i + 64].to(dev)).float().cpu()
                for i in range(0, len(pixels), 64)
            ]
        ).numpy()  # (n, D_img) fmt: skip
        return probe_snapshot(Heads.of(enc), feats, data.probe[1], data.frame)

    return snapshot


def _run_dcr(c: Any, data: LeaderboardData, row: Any, seed: int) -> RunResult:
    """DCR on pixels through the loop (Stage 1 projector, Stage 2 ``c.dcr_trainable``)."""
    from workbench import methods
    from workbench.train import TrainConfig, train

    items = data.extras["items"]
    batch = min(c.dcr_batch_size, len(items))
    mc = {**row.adapter.config, "encoder_trainable": c.dcr_trainable, "stage2_lr": c.lr,
          "negatives": min(c.dcr_negatives, batch - 1)}  # fmt: skip
    m = methods.get(row.adapter.method, **mc)
    cfg = TrainConfig(
        method=row.adapter.method, method_config=mc, encoder=None, dataset=None, steps=c.steps,
        batch_size=batch, lr=mc.get("stage1_lr", c.lr),
        warmup=max(1, c.steps // 10), weight_decay=0.1, seed=seed, device=c.device,
        precision=c.precision, trainable=m.trainable_spec(), data="items", holdout=0,
        eval_every=c.eval_every, log_every=1, snapshot_every=0,
        run_root=str(c.runs_dir()), run_name=row.name.replace("/", "-"),
    )  # fmt: skip
    run = train(cfg, dataset=items, encoder=copy.deepcopy(data.encoder),
                eval_hooks=[leaderboard_hook(data)], progress=False)  # fmt: skip
    return results_from_runs([run.run_dir])[0]


def _run_cdds(c: Any, data: LeaderboardData, row: Any, seed: int) -> RunResult:
    """CDDS on the items' token features; scored as a :class:`TokenMethodEncoder`."""
    from workbench.encoders.heads import Heads
    from workbench.experiments.token_training import TokenTraining, train_token_method
    from workbench.methods.tokens import TokenMethodEncoder
    from workbench.train import TrainConfig
    from workbench.train.rundir import CONFIG, LOG, LogWriter, create_run_dir, write_json_atomic

    feats = data.extras["tokens"]
    training = TokenTraining(steps=c.steps, batch_size=min(c.token_batch_size, feats.n_captions),
                             lr=c.token_lr, device=c.device, precision=c.precision)  # fmt: skip
    mc = dict(row.adapter.config)
    probe = data.extras.get("probe")
    on_step = _every(c, _token_snapshot(probe["tokens"])) if probe else None
    trained = train_token_method(row.adapter.method, feats, seed, training, method_config=mc,
                                 on_step=on_step)  # fmt: skip
    tc = TrainConfig(method=row.adapter.method, method_config=mc, encoder=None, dataset=None,
                     steps=c.steps, batch_size=training.batch_size, lr=c.token_lr, seed=seed,
                     device=c.device, precision=c.precision, trainable="method", data="cached",
                     holdout=0, snapshot_every=0, run_root=str(c.runs_dir()),
                     run_name=row.name)  # fmt: skip
    run_dir = create_run_dir(c.runs_dir(), row.name.replace("/", "-"))
    write_json_atomic(run_dir / CONFIG, {"config": tc.to_dict(), "meta": {
        "task": "tokens", "trainer": "experiments.token_training.train_token_method",
        "tokens": {"n_images": feats.n_images, "n_captions": feats.n_captions}}})  # fmt: skip
    writer, t = LogWriter(run_dir / LOG), 0.0
    evals = {e["step"]: e for e in trained.evals}  # the loop's order: eval after its step
    for r in [{"step": 0}, *trained.log]:
        if r["step"]:
            t += r["ms"] / 1e3
            writer.write({"kind": "step", "step": r["step"], "loss": r["loss"], "lr": r["lr"],
                          "terms": r["terms"], "time": t})  # fmt: skip
        if (e := evals.get(r["step"])) is not None:
            t += e["seconds"]
            writer.write({"kind": "eval", "step": e["step"], "metrics": e["metrics"]})
    writer.close()
    enc = TokenMethodEncoder(data.encoder, trained.method)
    metrics = score_model(Heads.of(enc), rebuilt_data(enc, data, c.probe_pairs))
    append_evals(run_dir, [{"step": c.steps, **metrics}])
    return results_from_runs([run_dir])[0]


def _run_earth_adapter(c: Any, data: LeaderboardData, row: Any, seed: int) -> RunResult:
    """Earth-Adapter by its segmentation trainer with the Earth-Adapter study's recipe (its
    placement, head inputs and source loss, :class:`~workbench.experiments.earth_adapter.
    EarthAdapterConfig`; ``row.adapter.config`` overrides, e.g. ρ); the adapted tower scored
    through the start's heads."""
    from workbench.encoders.heads import Heads
    from workbench.experiments.earth_adapter import EarthAdapterConfig
    from workbench.experiments.segtrain import SegTraining, train_segmenter

    scenes = data.extras["scenes"]
    study = EarthAdapterConfig(**row.adapter.config)
    training = SegTraining(steps=c.steps, batch_size=min(c.seg_batch_size, len(scenes)), lr=c.seg_lr,
                           warmup=max(1, c.steps // 10), device=c.device, precision=c.precision,
                           loss=study.loss)  # fmt: skip
    probe = data.extras.get("probe")
    on_step = _every(c, _tower_snapshot(probe["pixels"], data)) if probe else None
    run = train_segmenter(row.adapter.method, study.method_config("Earth-Adapter"), scenes,
                          training, seed=seed, run_root=c.runs_dir(),
                          run_name=row.name.replace("/", "-"), encoder=c.encoder,
                          on_step=on_step)  # fmt: skip
    enc = run.encoder.eval()
    metrics = score_model(Heads.of(enc), rebuilt_data(enc, data, c.probe_pairs))
    append_evals(run.run_dir, [{"step": c.steps, **metrics}])
    return results_from_runs([run.run_dir])[0]


#: Data path name (``Adapter.path``) → ``(config, data, row, seed) -> RunResult``.
PATHS: dict[str, Callable[[Any, LeaderboardData, Any, int], RunResult]] = {
    "items": _run_dcr,
    "tokens": _run_cdds,
    "scenes": _run_earth_adapter,
}
