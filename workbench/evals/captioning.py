"""Captioning scores: CIDEr-D and BLEU (pycocoevalcap) and a retrieval check through an encoder.

Metrics [code: ``pycocoevalcap``, the COCO caption evaluation package]:

* **CIDEr** — pycocoevalcap's ``Cider`` (CIDEr-D: n = 1..4, Gaussian length penalty σ = 6,
  clipped counts, ×10), IDF taken from the references of the scored set, as the COCO server does.
* **BLEU-1..4** — pycocoevalcap's ``Bleu(4)``, corpus level, "closest" reference length.
* **METEOR** — optional (``metrics=(..., "METEOR")``): pycocoevalcap runs ``meteor-1.5.jar`` in a
  Java subprocess with a 2 GB heap, so it is off by default on a shared 2-core machine.
* SPICE is not offered: it needs Stanford CoreNLP models that pycocoevalcap downloads at first use.

Tokenisation: pycocoevalcap's ``PTBTokenizer`` shells out to Java; instead both candidates and
references go through BERT's normaliser and pre-tokeniser from ``tokenizers`` (lower-case, accents
stripped, punctuation split off — the same rules as the MiniLM tokenizer whose pieces the caption LM
emits) and PTB's punctuation tokens are dropped, as ``PTBTokenizer`` drops them.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

import numpy as np

__all__ = ["METRICS", "caption_retrieval", "caption_scores", "caption_words"]

#: Metric names :func:`caption_scores` accepts.
METRICS: tuple[str, ...] = ("CIDEr", "BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR")


@lru_cache(maxsize=1)
def _bert_rules() -> tuple[Any, Any]:
    from tokenizers.normalizers import BertNormalizer
    from tokenizers.pre_tokenizers import BertPreTokenizer

    return BertNormalizer(lowercase=True, strip_accents=True), BertPreTokenizer()


def caption_words(text: str) -> str:
    """``text`` normalised for scoring: lower-case words separated by single spaces, accents and
    PTB punctuation removed.

    >>> caption_words("A button (blood type), café!")
    'a button blood type cafe'
    """
    from pycocoevalcap.tokenizer.ptbtokenizer import PUNCTUATIONS

    norm, pre = _bert_rules()
    words = [w for w, _ in pre.pre_tokenize_str(norm.normalize_str(text))]
    return " ".join(w for w in words if w not in PUNCTUATIONS and any(ch.isalnum() for ch in w))


def _check_inputs(candidates: Sequence[str], references: Sequence[Sequence[str]]) -> None:
    if isinstance(candidates, str) or isinstance(references, str):
        raise TypeError("candidates and references must be sequences (one entry per image)")
    if len(candidates) == 0:
        raise ValueError("no candidates to score")
    if len(candidates) != len(references):
        raise ValueError(f"{len(candidates)} candidates but {len(references)} reference lists")
    for i, refs in enumerate(references):
        if isinstance(refs, str) or len(refs) == 0:
            raise ValueError(f"references[{i}] must be a non-empty list of strings")
        if not any(caption_words(r) for r in refs):
            raise ValueError(f"references[{i}] holds no words: {list(refs)!r}")


def caption_scores(
    candidates: Sequence[str],
    references: Sequence[Sequence[str]],
    metrics: Sequence[str] = ("CIDEr", "BLEU-4"),
) -> dict[str, float]:
    """Corpus-level captioning scores of one candidate per image against its references.

    Args:
        candidates: n generated captions (an empty caption scores 0, it is not an error).
        references: n lists of reference captions (at least one with words each).
        metrics: Names from :data:`METRICS`.

    Returns:
        ``{metric: score}`` (CIDEr on pycocoevalcap's ×10 scale, BLEU in [0, 1]).

    >>> refs = [["a large red circle on the left"], ["two small blue squares at the top"]]
    >>> right = caption_scores(["a large red circle on the left", "two small blue squares at the top"], refs)
    >>> wrong = caption_scores(["two small blue squares at the top", "a large red circle on the left"], refs)
    >>> round(right["BLEU-4"], 3), right["CIDEr"] > wrong["CIDEr"]
    (1.0, True)
    """
    _check_inputs(candidates, references)
    if isinstance(metrics, str):
        raise TypeError("metrics must be a sequence of names, e.g. ('CIDEr', 'BLEU-4')")
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; choose from {METRICS}")
    res = {i: [caption_words(c) if isinstance(c, str) else ""] for i, c in enumerate(candidates)}
    gts = {i: [caption_words(r) for r in refs] for i, refs in enumerate(references)}
    gts = {i: [r for r in refs if r] for i, refs in gts.items()}
    out: dict[str, float] = {}
    if "CIDEr" in metrics:
        from pycocoevalcap.cider.cider import Cider

        out["CIDEr"] = float(Cider().compute_score(gts, res)[0])
    bleu = [m for m in metrics if m.startswith("BLEU-")]
    if bleu:
        from pycocoevalcap.bleu.bleu import Bleu

        with contextlib.redirect_stdout(io.StringIO()):  # the scorer prints its length ratio
            scores = Bleu(4).compute_score(gts, res, verbose=0)[0]
        out.update({m: float(scores[int(m[-1]) - 1]) for m in bleu})
    if "METEOR" in metrics:
        out["METEOR"] = _meteor(gts, res)
    return out


def _meteor(gts: Mapping[int, list[str]], res: Mapping[int, list[str]]) -> float:
    import shutil

    if shutil.which("java") is None:
        raise ValueError("METEOR needs a Java runtime on PATH (pycocoevalcap runs meteor-1.5.jar)")
    from pycocoevalcap.meteor.meteor import Meteor

    scorer = Meteor()
    try:
        return float(scorer.compute_score(dict(gts), dict(res))[0])
    finally:
        with contextlib.suppress(Exception):
            scorer.close()


def caption_retrieval(
    encoder: Any,
    captions: Sequence[str],
    image_emb: Any,
    *,
    gallery: int = 100,
    seed: int = 0,
    batch_size: int = 256,
    cache: dict[str, np.ndarray] | None = None,
) -> dict[str, float]:
    """Is each generated caption's embedding nearest its own image among ``gallery`` images?

    The n images are split by a seeded permutation into galleries of ``gallery`` (the last,
    shorter one is merged into the previous); each caption is embedded by ``encoder``'s text tower
    and head and ranked against its gallery's images by cosine similarity.

    Args:
        encoder: The encoder whose shared space ``image_emb`` lives in.
        captions: n captions, row i describing image i (empty ones are embedded as ``"."``).
        image_emb: (n, D) image embeddings (raw or normalised).
        gallery: N, images per gallery (chance R@1 = 1/N).
        seed: Seeds the gallery split.
        cache: Optional ``{caption: (D,) embedding}`` reused across calls (rows repeat captions).

    Returns:
        ``{"R@1", "R@5", "chance@1", "gallery"}``.
    """
    import torch

    from workbench._validate import as_matrix, l2_normalize

    if isinstance(captions, str):
        raise TypeError("captions must be a sequence of strings")
    X = l2_normalize(as_matrix(image_emb, "image_emb", min_rows=2), "image_emb")
    n = X.shape[0]
    if len(captions) != n:
        raise ValueError(f"{len(captions)} captions but {n} images")
    if not (isinstance(gallery, int) and 2 <= gallery <= n):
        raise ValueError(f"gallery must be an int in [2, n={n}], got {gallery!r}")
    cache = {} if cache is None else cache
    texts = [c if c.strip() else "." for c in captions]
    todo = sorted({t for t in texts if t not in cache})
    with torch.no_grad():
        for s in range(0, len(todo), batch_size):
            chunk = todo[s : s + batch_size]
            z = encoder.encode_texts(chunk, normalize=True).float().cpu().numpy()
            cache.update(zip(chunk, z))
    Y = np.stack([cache[t] for t in texts]).astype(np.float64)  # (n, D)
    order = np.random.default_rng(seed).permutation(n)
    cuts = list(range(0, n - n % gallery if n % gallery else n, gallery))
    groups = [order[c : c + gallery] for c in cuts]
    if n % gallery:
        groups[-1] = np.concatenate([groups[-1], order[cuts[-1] + gallery :]])
    hits1 = hits5 = 0
    for g in groups:
        sim = Y[g] @ X[g].T  # (|g|, |g|): captions × images
        own = np.diag(sim)
        rank = (sim > own[:, None]).sum(1)  # images strictly closer than the caption's own
        hits1 += int((rank < 1).sum())
        hits5 += int((rank < 5).sum())
    return {"R@1": hits1 / n, "R@5": hits5 / n, "chance@1": 1 / gallery, "gallery": float(gallery)}
