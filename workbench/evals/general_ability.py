"""General ability of fine-tuned heads on data kept out of fine-tuning: zero-shot and linear probe.

A fine-tuning study (DeGLA's Table 5 / Fig. 5 "zero-shot average" and "linear probe") scores
many pairs of heads on the same frozen towers, so :class:`GeneralAbilitySet` holds one labelled
data set's image-tower features and the text-tower features of its class prompts (CLIP's
prompt ensemble, :data:`~workbench.probes.separability.PROMPT_TEMPLATES`) once, and scores any
:class:`~workbench.encoders.heads.Heads` by projection only (no tower runs).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from workbench.probes.separability import PROMPT_TEMPLATES, linear_probe, zero_shot_accuracy

__all__ = ["GeneralAbilitySet"]


@dataclass
class GeneralAbilitySet:
    """One labelled data set for zero-shot top-1 and linear-probe accuracy of heads.

    Attributes:
        name: Data set label.
        image_tower: (n, D_img) image-tower features.
        labels: (n,) int class labels in ``[0, K)``.
        prompt_tower: (K, T, D_txt) text-tower features of T prompts per class.
        class_names: The K class names.
    """

    name: str
    image_tower: np.ndarray
    labels: np.ndarray
    prompt_tower: np.ndarray
    class_names: list[str]

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int64)
        if len(self.image_tower) != len(self.labels):
            raise ValueError(
                f"{self.name}: {len(self.labels)} labels for {len(self.image_tower)} images"
            )
        if self.prompt_tower.ndim != 3 or self.prompt_tower.shape[0] != len(self.class_names):
            raise ValueError(f"{self.name}: prompt_tower must be (K={len(self.class_names)}, T, D)")
        if self.labels.min() < 0 or self.labels.max() >= len(self.class_names):
            raise ValueError(f"{self.name}: labels must index the {len(self.class_names)} classes")

    @classmethod
    def build(
        cls,
        name: str,
        encoder: Any,
        emb: Any,
        templates: Sequence[str] = PROMPT_TEMPLATES,
        text_cache: Any = None,
    ) -> GeneralAbilitySet:
        """From labelled :class:`~workbench.encoders.embeddings.Embeddings` with tower features;
        prompts ``template.format(class_name)`` go through ``text_cache``
        (a :class:`~workbench.encoders.text_cache.TextTowerCache`; made if ``None``)."""
        from workbench.encoders.text_cache import TextTowerCache

        if isinstance(templates, str) or not templates or any("{}" not in t for t in templates):
            raise ValueError("templates must be a non-empty sequence of strings containing '{}'")
        if emb.image_tower is None:
            raise ValueError(f"{name}: embed the data set with tower_features=True")
        if not emb.class_names:
            raise ValueError(f"{name}: zero-shot needs class names (a labelled data set)")
        keep = np.flatnonzero(np.asarray(emb.labels) >= 0)
        cache = text_cache or TextTowerCache(encoder)
        prompts = [t.format(c) for c in emb.class_names for t in templates]
        tower = cache(prompts).numpy().reshape(len(emb.class_names), len(templates), -1)
        return cls(
            name, np.asarray(emb.image_tower)[keep], np.asarray(emb.labels)[keep], tower,
            list(emb.class_names),
        )  # fmt: skip

    def score(
        self,
        heads: Any,
        rows: Sequence[int] | None = None,
        *,
        seed: int = 0,
        probe_test_fraction: float = 0.3,
    ) -> dict[str, float]:
        """``{"zero_shot": top-1, "linear_probe": accuracy}`` of ``heads`` on ``rows`` (all by
        default); the probe's stratified split is seeded by ``seed``."""
        from workbench.encoders.heads import as_heads

        h = as_heads(heads)
        keep = np.arange(len(self.labels)) if rows is None else np.asarray(rows, dtype=np.int64)
        image = h.project("image", self.image_tower[keep])  # (n, D)
        k, t, d = self.prompt_tower.shape
        prompts = h.project("text", self.prompt_tower.reshape(k * t, d)).reshape(k, t, -1)
        y = self.labels[keep]
        return {
            "zero_shot": zero_shot_accuracy(image, prompts, y),
            "linear_probe": linear_probe(
                image, y, test_fraction=probe_test_fraction, seed=seed
            ).accuracy,
        }
