"""The ReVision study behind ``notebooks/revision.ipynb``: text-only projector pretraining, scored
by captioning held-out *images* (ReAlign/ReVision, arXiv 2602.07026 v3; spec §2.3).

Pipeline (each function is one step the notebook calls, and each is tested):

1. :func:`load_study_data` — the train pool (tower features of the mixture's train splits) and
   the held-out eval images, both under :func:`revision_starting_encoder`'s heads.
2. :func:`unpaired_rows` — the alignment statistics' image set and text set: two *disjoint*
   halves of the pool, so ReAlign/C3 never see an image together with its own caption.
3. :func:`train_row` — one row × seed: Stage 1 on text (or the paired upper bound on images), or
   Stage 2 on a fraction of the pairs, as a run of :func:`workbench.train.train` with the
   ``"revision"`` method (projector only; LM and heads frozen).
4. :func:`~workbench.experiments.revision_runs.score_row` — captions of the eval images (greedy
   unless ``num_beams > 1``), CIDEr-D and BLEU-4 against their reference captions, the retrieval
   check (is the caption's embedding nearest its own image among N), and the centroid gap
   between projected image and text prefixes.

Scoring and the loop over rows: :mod:`workbench.experiments.revision_runs`; tables, the paper's
numbers and figures: :mod:`workbench.experiments.revision_report`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "REVISION_ROWS",
    "SCRATCH",
    "ReVisionConfig",
    "ReVisionData",
    "Row",
    "TrainedRow",
    "fit_row_alignment",
    "heads_kept",
    "load_study_data",
    "revision_starting_encoder",
    "stage2_rows",
    "train_row",
    "unpaired_rows",
]


@dataclass(frozen=True)
class Row:
    """One row of ReVision's Tab. 1 / Tab. 5: what feeds the projector in Stage 1, in which frame.

    Attributes:
        name: Table label.
        source: ``"text"`` (text-only Stage 1), ``"image"`` (the paired upper bound) or ``None``
            (Blind: the LM without any visual prefix).
        align: Alignment kind (:data:`workbench.methods.revision.ALIGNMENTS`).
    """

    name: str
    source: str | None
    align: str


#: Stage-1 rows in table order.
REVISION_ROWS: dict[str, Row] = {
    r.name: r
    for r in (
        Row("Blind", None, "none"),
        Row("No-Align", "text", "none"),
        Row("C3", "text", "c3"),
        Row("Anchor", "text", "anchor"),
        Row("Anchor+Trace", "text", "anchor+trace"),
        Row("ReAlign", "text", "full"),
        Row("Paired", "image", "none"),
    )
}
#: Pseudo-row: Stage 2 from a fresh projector (ReVision Tab. 6, "no Stage 1").
SCRATCH = "scratch"

Mixture = tuple[tuple[str, str, int | None], ...]


@dataclass
class ReVisionConfig:
    """Parameters of ``notebooks/revision.ipynb`` (its ``parameters`` cell repeats these defaults).

    Attributes:
        encoder: The starting encoder (ReVision needs an *aligned* shared space).
        start_heads: ``"as-loaded"`` keeps the encoder's heads; ``"infonce"`` first fits both heads
            (+ temperature) by InfoNCE on the train pool's cached tower features (LiT-style,
            ``heads_steps``): a stand-in for an aligned encoder, since with random heads no
            text-trained projector can transfer to images; ``"auto"`` (default) keeps heads that
            shipped with a card (the pretrained default, issue 21, ``encoder.card``) and fits
            them otherwise (``load_encoder("default")`` while its heads are random).
        heads_steps: Steps of that head fit (batch 256, lr 1e-3; 100: a heads-only step took 2 s
            on the loaded shared machine, and the stand-in goes once the pretrained default lands).
        lm: Caption LM (``"default"``: the shipped frozen decoder).
        train_mixture: ``(dataset, split, size)`` of the train pool: the pretrained default's
            mixture, capped (synthetic-world's long captions dominate the LM's cost per step).
        eval_mixture: ``(dataset, split, size)`` of the held-out images captioned (test splits,
            fixed by an id hash; none of their captions is in the LM's corpus).
        n_train: Rows of the train pool, a seeded subset of the mixture in proportion to its
            parts (4,000: each half of the pool feeds one modality's ReAlign fit, 2,000 rows;
            ReAlign's Fig. 6 statistics settle by ≈ 10⁴, so this is on the small side).
        n_stage2: Pairs Stage 2 may use (its 100 %), a seeded subset of the pool (320: 10 steps
            of 32 at 100 %, so the sweep fits the loaded machine; ``None`` = the whole pool).
        n_eval: Held-out images captioned (300: CIDEr's IDF wants a few hundred references;
            the idle 2-core budget of the default run).
        rows: Stage-1 rows (:data:`REVISION_ROWS`).
        fractions: Stage-2 fractions of the pool's pairs (ReVision Tab. 7; 0 = Stage 1 only).
        stage2_from: Stage-1 rows Stage 2 starts from, or ``"scratch"`` (Tab. 6: no Stage 1;
            not in the default, which the issue's Tab. 7 sweep does not need).
        seeds: Seeds (projector init, data order, C3 noise, the unpaired split, Stage-2 subsets).
        prefix_len: k soft prefix tokens.
        stage1_steps: Optimiser steps of Stage 1 (and of the paired upper bound). 100 of batch 64
            [measured budget]: the default run (18 Stage-1 runs + 9 Stage-2 runs, 3 seeds) then
            fits about half an hour on one core of an idle 2-core machine; 200 steps of 64 took the
            No-Align NLL to 0.89 nats/token, 40 of 32 only to 1.6. The paper trains 1 epoch of 1M
            captions; more steps (``stage1_steps=200, n_stage2=None, n_eval=600``) are closer.
        stage2_epochs: Stage 2 passes over its subset (1 [paper: 1 epoch of each SFT fraction]).
        batch_size: Captions per step (64, see ``stage1_steps``).
        max_caption_tokens: Target tokens per caption in training, ``[BOS]``/``[EOS]`` included
            (16: a step's cost is linear in the padded length, which synthetic-world's 30-piece
            captions set for any batch holding one; 16 keeps every other source's captions
            whole; ``None`` = the LM's 40). 12: cut for time. Generation is not truncated.
        stage1_lr: Stage-1 peak lr (the paper's 5e-4 [App. H] is for 1 epoch of 1M captions;
            3e-3 [our reading] for a 16-step run of a projector alone).
        stage2_lr: Stage-2 peak lr (the paper's 1e-5 is for full fine-tuning of an 8B model;
            1e-3 for a projector alone in ≤ 30 steps [our reading]).
        c3_sigma: C3's noise std (not given by ReAlign [our reading]).
        num_beams: 1 = greedy decoding (stated in every table); > 1 = beam search.
        retrieval_gallery: N of the retrieval check (chance R@1 = 1/N).
        n_examples: Example captions per row shown in the notebook.
        text_check: Also caption the eval *captions'* own text embeddings (in each text row's
            Stage-1 frame, first seed only): the text-side ceiling that tells a projector which
            never learnt from a frame that cannot transfer to images (off by default for time).
        device: ``"cpu"``, ``"cuda"`` or ``"auto"``.
        precision: ``"fp32"`` or ``"bf16"`` (autocast on CUDA only).
        threads: torch CPU threads while the study runs.
        output_dir: Figures and ``summary.json``.
    """

    encoder: str = "default"
    start_heads: str = "auto"
    heads_steps: int = 100
    lm: str = "default"
    train_mixture: Mixture = (
        ("synthetic-world", "train", 4000),
        ("openclipart", "train", None),
        ("emoji", "train", None),
        ("tuxpaint-stamps", "train", None),
        ("fashion-mnist", "train", 3000),
    )
    eval_mixture: Mixture = (
        ("synthetic-world", "test", 1000),
        ("openclipart", "test", None),
        ("emoji", "test", None),
        ("tuxpaint-stamps", "test", None),
        ("fashion-mnist", "test", 1000),
    )
    n_train: int = 4000
    n_stage2: int | None = 320
    n_eval: int = 300
    rows: tuple[str, ...] = tuple(REVISION_ROWS)
    fractions: tuple[float, ...] = (0.0, 0.1, 0.3, 1.0)
    stage2_from: tuple[str, ...] = ("ReAlign",)
    seeds: tuple[int, ...] = (0, 1, 2)
    prefix_len: int = 4
    stage1_steps: int = 100
    stage2_epochs: int = 1
    batch_size: int = 64
    max_caption_tokens: int | None = 12
    stage1_lr: float = 3e-3
    stage2_lr: float = 1e-3
    c3_sigma: float = 0.02
    num_beams: int = 1
    retrieval_gallery: int = 100
    n_examples: int = 6
    text_check: bool = False
    device: str = "cpu"
    precision: str = "fp32"
    threads: int = 2
    output_dir: str = "figures/revision"

    def __post_init__(self) -> None:
        for name in ("train_mixture", "eval_mixture"):
            mix = getattr(self, name)
            if isinstance(mix, str) or not all(
                isinstance(m, Sequence) and len(m) == 3 and isinstance(m[0], str) for m in mix
            ) or not mix:  # fmt: skip
                raise ValueError(f"ReVisionConfig: {name} must be (dataset, split, size) triples")
            setattr(
                self, name, tuple((m[0], m[1], None if m[2] is None else int(m[2])) for m in mix)
            )
        for name in ("rows", "fractions", "stage2_from", "seeds"):
            if isinstance(getattr(self, name), str):
                raise ValueError(f"ReVisionConfig: {name} must be a sequence, not a bare string")
        self.rows = tuple(self.rows)
        self.fractions = tuple(float(f) for f in self.fractions)
        self.stage2_from = tuple(self.stage2_from)
        self.seeds = tuple(int(s) for s in self.seeds)
        unknown = [r for r in self.rows if r not in REVISION_ROWS]
        bad_from = [r for r in self.stage2_from if r != SCRATCH and r not in REVISION_ROWS]
        checks = [
            (not unknown, f"unknown rows {unknown}; choose from {list(REVISION_ROWS)}"),
            (bool(self.rows), "rows must not be empty"),
            (not bad_from, f"stage2_from {bad_from} are not rows or 'scratch'"),
            (
                all(r in self.rows or r == SCRATCH for r in self.stage2_from),
                "stage2_from rows must also be in rows",
            ),
            (
                all(r == SCRATCH or REVISION_ROWS[r].source for r in self.stage2_from),
                "Stage 2 cannot start from Blind",
            ),
            (all(0.0 <= f <= 1.0 for f in self.fractions), "fractions must lie in [0, 1]"),
            (
                len(self.seeds) >= 1 and len(set(self.seeds)) == len(self.seeds),
                "seeds must be distinct, at least one",
            ),
            (
                self.start_heads in ("auto", "as-loaded", "infonce"),
                "start_heads must be 'auto', 'as-loaded' or 'infonce'",
            ),
            (
                isinstance(self.prefix_len, int) and self.prefix_len >= 1,
                "prefix_len must be an int >= 1 (k soft tokens)",
            ),
            (
                self.heads_steps >= 1 and self.stage1_steps >= 1 and self.stage2_epochs >= 1,
                "steps and epochs must be >= 1",
            ),
            (self.batch_size >= 2, "batch_size must be >= 2"),
            (self.stage1_lr > 0 and self.stage2_lr > 0, "learning rates must be > 0"),
            (self.c3_sigma >= 0, "c3_sigma must be >= 0"),
            (self.num_beams >= 1, "num_beams must be >= 1 (1 = greedy)"),
            (self.n_train >= 2 * self.batch_size, "n_train must hold at least two batches"),
            (
                self.n_stage2 is None or (isinstance(self.n_stage2, int) and self.n_stage2 >= 2),
                "n_stage2 must be None or an int >= 2",
            ),
            (
                self.max_caption_tokens is None
                or (isinstance(self.max_caption_tokens, int) and self.max_caption_tokens >= 3),
                "max_caption_tokens must be None or an int >= 3 (BOS, a word, EOS)",
            ),
            (self.n_eval >= 2, "n_eval must be >= 2"),
            (
                2 <= self.retrieval_gallery <= self.n_eval,
                "retrieval_gallery must be in [2, n_eval]",
            ),
            (self.n_examples >= 0, "n_examples must be >= 0"),
            (
                self.device in ("cpu", "cuda", "auto") or self.device.startswith("cuda:"),
                "device must be cpu/cuda/auto",
            ),
            (self.precision in ("fp32", "bf16"), "precision must be 'fp32' or 'bf16'"),
            (self.threads >= 1, "threads must be >= 1"),
            (bool(self.output_dir), "output_dir must be a non-empty path"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ValueError(f"ReVisionConfig: {msg}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- data -------------------------------------------------------------------------------------
@dataclass
class ReVisionData:
    """Embeddings of one study under the starting encoder's heads.

    Attributes:
        encoder: The starting encoder (heads as used by every row).
        pool: Train-pool :class:`~workbench.encoders.embeddings.Embeddings` (tower features
            included; ``attributes[i]["source"]`` names the dataset).
        eval: Held-out eval Embeddings (images captioned, captions as references).
        references: One reference list per eval row (the item's canonical caption).
        seconds: Wall time of embedding + head fit.
        heads: ``"as-loaded"`` (the encoder's own heads) or ``"infonce-fitted"`` (the stand-in).
    """

    encoder: Any
    pool: Any
    eval: Any
    references: list[list[str]]
    seconds: float
    heads: str = "as-loaded"


def _embed_mixture(enc: Any, mixture: Mixture, cap: int, seed: int) -> Any:
    """Tower-cached embeddings of each ``(dataset, split, size)``, concatenated, then a seeded
    subset of at most ``cap`` rows drawn in proportion to each part's size."""
    import workbench as wb
    from workbench.encoders.embeddings import Embeddings

    parts = []
    for name, split, size in mixture:
        if name == "synthetic-world":  # a generated stream: its size is the data set's
            ds, n = wb.load_dataset(name, split=split, size=size or 1000), None
        else:
            ds, n = wb.load_dataset(name, split=split), size
            n = None if n is None or n >= len(ds) else n
        parts.append(wb.embed(enc, ds, size=n, tower_features=True, progress=False))
    emb = Embeddings.concat(
        parts,
        names=[
            m[0] if [x[0] for x in mixture].count(m[0]) == 1 else f"{m[0]}/{m[1]}" for m in mixture
        ],
    )
    if len(emb) > cap:
        emb = emb.subset(np.sort(np.random.default_rng(seed).permutation(len(emb))[:cap]))
    return emb


def heads_kept(cfg: ReVisionConfig, encoder: Any) -> bool:
    """Whether :func:`revision_starting_encoder` keeps ``encoder``'s heads (``"as-loaded"``, or ``"auto"``
    with heads that shipped with a card) rather than fitting the InfoNCE stand-in."""
    return cfg.start_heads == "as-loaded" or (
        cfg.start_heads == "auto" and getattr(encoder, "card", None) is not None
    )


def revision_starting_encoder(
    cfg: ReVisionConfig, pool: Any, run_root: str | Path, encoder: Any
) -> Any:
    """``encoder`` as loaded, or with InfoNCE-fitted heads (``start_heads="infonce"``, or
    ``"auto"`` when the heads shipped without a card: heads and logit scale on ``pool``'s cached
    tower features, batch 256, lr 1e-3, cosine, 10 % warm-up)."""
    from workbench.train import TrainConfig, train

    if heads_kept(cfg, encoder):
        return encoder.eval()
    tc = TrainConfig(
        method="infonce", encoder=None, dataset=None, steps=cfg.heads_steps,
        batch_size=min(256, len(pool) // 2 * 2), lr=1e-3, warmup=max(1, cfg.heads_steps // 10),
        trainable="heads+logit_scale", data="cached", holdout=0, snapshot_every=0,
        log_every=max(1, cfg.heads_steps // 10), seed=0, device=cfg.device,
        run_root=str(run_root), run_name="start-heads",
    )  # fmt: skip
    return train(tc, encoder=encoder, embeddings=pool, progress=False).encoder.eval()


def load_study_data(cfg: ReVisionConfig, run_root: str | Path, encoder: Any = None) -> ReVisionData:
    """Embed the train pool and the eval images (tower features cached on disk) and set the
    starting heads (:func:`revision_starting_encoder`); ``encoder`` replaces ``load_encoder(cfg.encoder)``."""
    import workbench as wb
    from workbench.encoders.heads import apply_heads

    t0 = time.perf_counter()
    base = encoder if encoder is not None else wb.load_encoder(cfg.encoder)
    heads = "as-loaded" if heads_kept(cfg, base) else "infonce-fitted"  # train() may fit in place
    pool = _embed_mixture(base, cfg.train_mixture, cfg.n_train, seed=0)
    held = _embed_mixture(base, cfg.eval_mixture, cfg.n_eval, seed=1)
    enc = revision_starting_encoder(cfg, pool, run_root, base)
    pool, held = apply_heads(enc, pool), apply_heads(enc, held)
    refs = [[c] for c in held.captions]
    return ReVisionData(enc, pool, held, refs, time.perf_counter() - t0, heads)


def unpaired_rows(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint (image rows, text rows) of an n-row pool: a seeded permutation cut in halves.

    The alignment statistics are fitted on ``pool.image[image_rows]`` and
    ``pool.text[text_rows]``: no item contributes both its image and its caption, so the fit
    cannot use a pair, and within each set only per-modality moments are formed.

    >>> img, txt = unpaired_rows(10, seed=0)
    >>> len(img), len(txt), len(set(img) & set(txt))
    (5, 5, 0)
    """
    if not (isinstance(n, int) and n >= 4):
        raise ValueError(f"unpaired_rows needs n >= 4 rows (two per set), got {n!r}")
    perm = np.random.default_rng([seed, 17]).permutation(n)
    return np.sort(perm[: n // 2]), np.sort(perm[n // 2 :])


def fit_row_alignment(row: Row, pool: Any, seed: int, c3_sigma: float) -> dict[str, Any] | None:
    """The row's fitted statistics on the two disjoint halves (:func:`unpaired_rows`)."""
    from workbench.methods.revision import fit_alignment

    img, txt = unpaired_rows(len(pool), seed)
    return fit_alignment(row.align, pool.image[img], pool.text[txt], c3_sigma=c3_sigma)


# -- training ---------------------------------------------------------------------------------
def stage2_rows(n: int, fraction: float, seed: int, total: int | None = None) -> np.ndarray:
    """The Stage-2 pairs of an n-row pool: the first ``ceil(fraction · total)`` rows of a seeded
    permutation (``total`` = Stage 2's 100 %, at most n; nested: 10 % ⊂ 30 % ⊂ 100 % for one
    seed)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction!r}")
    total = n if total is None else min(int(total), n)
    perm = np.random.default_rng([seed, 29]).permutation(n)
    return np.sort(perm[: max(2, math.ceil(fraction * total))])


@dataclass
class TrainedRow:
    """A trained projector: the ``"revision"`` method after its run, and the run's log."""

    method: Any
    log: list[dict[str, Any]]
    steps: int
    seconds: float


def train_row(
    cfg: ReVisionConfig,
    data: ReVisionData,
    source: str,
    align: str,
    alignment: dict[str, Any] | None,
    seed: int,
    run_root: str | Path,
    *,
    rows: np.ndarray | None = None,
    init_projector: str | None = None,
    name: str = "revision",
) -> TrainedRow:
    """One run of the loop: Stage 1 (``rows=None``: every pool row, ``cfg.stage1_steps``) or Stage
    2 (``rows`` = the subset, ``cfg.stage2_epochs`` over it, from ``init_projector``)."""
    from workbench.train import RunDir, TrainConfig, train

    pool = data.pool if rows is None else data.pool.subset(rows)
    batch = min(cfg.batch_size, len(pool) - len(pool) % 2)
    steps = (
        cfg.stage1_steps
        if rows is None
        else max(1, math.ceil(cfg.stage2_epochs * len(pool) / batch))
    )
    lr = cfg.stage1_lr if rows is None else cfg.stage2_lr
    method_config = {
        "source": source, "align": align, "alignment": alignment, "prefix_len": cfg.prefix_len,
        "lm": cfg.lm, "init_projector": init_projector,
        "max_caption_tokens": cfg.max_caption_tokens,
    }  # fmt: skip
    tc = TrainConfig(
        method="revision", method_config=method_config, encoder=None, dataset=None, steps=steps,
        batch_size=batch, lr=lr, weight_decay=0.0, warmup=max(1, steps // 10), seed=seed,
        device=cfg.device, precision=cfg.precision, trainable="method", data="cached", holdout=0,
        eval_every=0, log_every=max(1, steps // 20), snapshot_every=0, run_root=str(run_root),
        run_name=name,
    )  # fmt: skip
    t0 = time.perf_counter()
    run = train(tc, encoder=data.encoder, embeddings=pool, progress=False)
    return TrainedRow(run.method.eval(), RunDir(run.run_dir).log(), steps, time.perf_counter() - t0)
