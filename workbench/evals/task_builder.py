"""Building the MMEB-style :class:`~workbench.evals.task_suite.TaskSuite` from datasets.

Each dataset's embedded items are split once, deterministically (``seed`` and the dataset's name),
into train and held-out halves shared by all of that dataset's tasks; MMVP pairs are split by pair
within each category. Tower features are extracted once and cached on disk with the suite, keyed
by the config and the towers' fingerprint (:func:`~workbench.encoders.heads.tower_fingerprint`).

A dataset named in the config is built or the build fails: a dataset that is not registered is
always an error, one whose files are missing (or that poses no task) is an error unless
``TaskSuiteConfig.skip_missing``, and the always-present synthetic MMVP task never stands in for
a suite whose datasets all failed. The cache never remembers a dataset as missing: a cached
suite that skipped one is rebuilt as soon as that dataset loads.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from workbench.encoders.heads import tower_fingerprint
from workbench.evals.task_suite import SYNTHETIC_MMVP, PairSet, Task, TaskSuite, TaskSuiteConfig

__all__ = ["build_task_suite"]


def _split(n: int, held_out_fraction: float, seed: int, salt: str) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic (train, held_out) row indices of ``range(n)``, seeded by ``seed`` and ``salt``."""
    salt_int = int(hashlib.sha256(salt.encode()).hexdigest()[:8], 16)
    perm = np.random.default_rng([seed, salt_int]).permutation(n)
    n_held = int(np.clip(round(held_out_fraction * n), 1, n - 1))
    return np.sort(perm[n_held:]), np.sort(perm[:n_held])


class _Towers:
    """Batched tower-feature extraction with the encoder in inference mode."""

    def __init__(self, encoder: Any, batch_size: int) -> None:
        self.encoder = encoder
        self.bs = batch_size

    def texts(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        with torch.no_grad():
            parts = [
                self.encoder.text_features(list(texts[i : i + self.bs]))
                for i in range(0, len(texts), self.bs)
            ]
        return torch.cat(parts).float().cpu().numpy()

    def images(self, images: Sequence[Any]) -> np.ndarray:
        import torch

        with torch.no_grad():
            parts = [
                self.encoder.image_features(list(images[i : i + self.bs]))
                for i in range(0, len(images), self.bs)
            ]
        return torch.cat(parts).float().cpu().numpy()


def _pairs(
    image: np.ndarray, text: np.ndarray, texts: list[str], keys: list[str], task: str
) -> PairSet:
    return PairSet(
        np.asarray(image, np.float32),
        np.asarray(text, np.float32),
        texts,
        keys,
        [task] * len(texts),
    )


def _dataset_tasks(name: str, emb: Any, towers: _Towers, cfg: TaskSuiteConfig) -> list[Task]:
    tr, te = _split(len(emb), cfg.held_out_fraction, cfg.seed, name)
    keys = [f"{name}:{i}" for i in emb.ids]
    I, T = emb.image_tower.astype(np.float32), emb.text_tower.astype(np.float32)
    tasks: list[Task] = []
    labelled = emb.labels >= 0
    if (
        "classification" in cfg.meta_tasks
        and emb.class_names
        and np.unique(emb.labels[labelled]).size >= 2
    ):
        K, nt = len(emb.class_names), len(cfg.templates)
        prompts = [tpl.format(c) for c in emb.class_names for tpl in cfg.templates]
        P = towers.texts(prompts)  # (K*T, D_txt), class-major
        te_l, tr_l = te[labelled[te]], tr[labelled[tr]]
        first = np.arange(K) * nt  # the first template's row per class
        tname = f"{name}/classification"
        tasks.append(
            Task(
                name=tname,
                meta_task="classification",
                dataset=name,
                query_modality="image",
                queries=I[te_l],
                pool=P,
                target=emb.labels[te_l].astype(np.int64),
                candidates=None,
                pool_groups=np.repeat(np.arange(K), nt),
                # train targets: the first template's prompt of the class (MMEB: label text)
                train=_pairs(
                    I[tr_l],
                    P[first[emb.labels[tr_l]]],
                    [prompts[first[y]] for y in emb.labels[tr_l]],
                    [keys[i] for i in tr_l],
                    tname,
                ),
                held_out_keys=[keys[i] for i in te_l],
            )
        )
    if not (len(emb.captions) > 1 and len(set(emb.captions)) >= 0.9 * len(emb.captions)):
        return tasks
    te_r = te[: cfg.max_candidates]
    caps_tr = [emb.captions[i] for i in tr]
    tr_keys = [keys[i] for i in tr]
    if "retrieval" in cfg.meta_tasks:
        local = np.arange(len(te_r))
        for direction, q, pool in (("i2t", I, T), ("t2i", T, I)):
            tname = f"{name}/retrieval-{direction}"
            tasks.append(
                Task(
                    name=tname,
                    meta_task="retrieval",
                    dataset=name,
                    query_modality="image" if direction == "i2t" else "text",
                    queries=q[te_r],
                    pool=pool[te_r],
                    target=local,
                    candidates=None,
                    pool_groups=None,
                    train=_pairs(I[tr], T[tr], caps_tr, tr_keys, tname),
                    held_out_keys=[keys[i] for i in te_r],
                )
            )
    if "compositional" in cfg.meta_tasks:
        from workbench.probes.compositional import build_negatives

        caps_te = [emb.captions[i] for i in te_r]
        attrs = [emb.attributes[i] for i in te_r] if emb.attributes else None
        negs = build_negatives(caps_te, attrs, kinds=cfg.negative_kinds, seed=cfg.seed)
        if len(negs):
            pool = np.concatenate([T[te_r], towers.texts(negs.texts)])  # captions, then negatives
            per_item: list[list[int]] = [[i] for i in range(len(te_r))]
            for m, owner in enumerate(negs.owner):
                per_item[owner].append(len(te_r) + m)
            width = max(map(len, per_item))
            cand = np.full((len(te_r), width), -1, dtype=np.int64)
            for i, row in enumerate(per_item):
                cand[i, : len(row)] = row
            has_neg = np.array([len(r) > 1 for r in per_item])
            tname = f"{name}/compositional"
            tasks.append(
                Task(
                    name=tname,
                    meta_task="compositional",
                    dataset=name,
                    query_modality="image",
                    queries=I[te_r][has_neg],
                    pool=pool,
                    target=np.flatnonzero(has_neg),  # item i's caption is pool row i
                    candidates=cand[has_neg],
                    pool_groups=None,
                    train=_pairs(I[tr], T[tr], caps_tr, tr_keys, tname),
                    held_out_keys=[keys[i] for i in te_r[has_neg]],
                )
            )
    return tasks


def _mmvp_task(towers: _Towers, cfg: TaskSuiteConfig) -> Task:
    from workbench.data.synthetic import mmvp_pairs
    from workbench.probes.perception import MMVP_PREFIX

    pairs = mmvp_pairs(cfg.mmvp_pairs_per_category, seed=cfg.seed)
    cats = [p.category for p in pairs]
    tr_p, te_p = [], []
    for c in dict.fromkeys(cats):  # split per category so every category is held out
        idx = np.flatnonzero(np.asarray(cats, dtype=object) == c)
        if idx.size == 1:
            te_p.append(idx)
            continue
        a, b = _split(idx.size, cfg.held_out_fraction, cfg.seed, f"{SYNTHETIC_MMVP}/{c}")
        tr_p.append(idx[a])
        te_p.append(idx[b])
    tr_idx = np.concatenate(tr_p) if tr_p else np.array([], dtype=np.int64)
    te_idx = np.concatenate(te_p)
    images = [im for p in pairs for im in p.images]  # pair p: rows 2p, 2p+1
    texts = [MMVP_PREFIX + s for p in pairs for s in p.statements]
    Iall, Tall = towers.images(images), towers.texts(texts)
    q_rows = np.stack([2 * te_idx, 2 * te_idx + 1], axis=1).ravel()  # statements of held-out pairs
    cand = np.repeat(np.stack([2 * te_idx, 2 * te_idx + 1], axis=1), 2, axis=0)  # (2 n_te, 2)
    key = lambda r: f"{SYNTHETIC_MMVP}:{r // 2}:{r % 2}"  # noqa: E731
    tr_rows = (
        np.stack([2 * tr_idx, 2 * tr_idx + 1], axis=1).ravel()
        if tr_idx.size
        else np.array([], np.int64)
    )
    tname = f"{SYNTHETIC_MMVP}/perception"
    return Task(
        name=tname,
        meta_task="perception",
        dataset=SYNTHETIC_MMVP,
        query_modality="text",
        queries=Tall[q_rows],
        pool=Iall,
        target=q_rows,  # statement k of pair p is true of image row 2p + k
        candidates=cand,
        pool_groups=None,
        train=_pairs(
            Iall[tr_rows],
            Tall[tr_rows],
            [texts[r] for r in tr_rows],
            [key(r) for r in tr_rows],
            tname,
        ),
        held_out_keys=[key(r) for r in q_rows],
    )


def _load(
    loader: Callable[[str], Any], name: str, cfg: TaskSuiteConfig, skipped: dict[str, str]
) -> Any:
    """``loader(name)``; a missing dataset is recorded in ``skipped`` (``skip_missing``) or raised."""
    try:
        return loader(name)
    except KeyError as exc:  # not registered (a custom loader, or a registry that changed)
        msg = exc.args[0] if exc.args else repr(exc)
        raise ValueError(f"dataset {name!r} is not registered: {msg}") from None
    except FileNotFoundError as exc:
        if not cfg.skip_missing:
            raise FileNotFoundError(
                f"dataset {name!r} cannot be built: {exc} — install its files, drop it from "
                f"datasets, or pass skip_missing=True to skip it (it is then listed as skipped)"
            ) from exc
        skipped[name] = f"{type(exc).__name__}: {exc}"
        return None


def _skipped_now_available(suite: TaskSuite, loader: Callable[[str], Any]) -> bool:
    """True when a dataset the cached ``suite`` skipped for missing files loads now."""
    for name, why in suite.datasets_skipped.items():
        if not why.startswith("FileNotFoundError"):
            continue
        try:
            loader(name)
        except (FileNotFoundError, KeyError):
            continue
        return True
    return False


def _cache_path(cfg: TaskSuiteConfig, fingerprint: str, loader: Any) -> Path:
    from workbench import __version__

    # a custom loader may serve different data under the same names: it joins the key
    source = None if loader is None else f"{loader.__module__}.{loader.__qualname__}"
    blob = json.dumps(
        {"config": cfg.to_dict(), "towers": fingerprint, "loader": source, "v": __version__},
        sort_keys=True,
    )
    from workbench.encoders.cache import default_cache_dir

    root = default_cache_dir() / "tasks"
    return root / f"suite-{hashlib.sha256(blob.encode()).hexdigest()[:20]}.npz"


def build_task_suite(
    encoder: Any,
    config: TaskSuiteConfig | None = None,
    *,
    loader: Callable[[str], Any] | None = None,
) -> TaskSuite:
    """Build (or load from cache) the MMEB-style suite for ``encoder``'s towers.

    Args:
        encoder: an :class:`~workbench.encoders.base.Encoder` or a registry name / ``"run:<dir>"``.
        config: :class:`TaskSuiteConfig` (defaults if ``None``).
        loader: ``name -> Dataset`` (default :func:`workbench.load_dataset`). A ``KeyError`` from
            it (name not registered) is always an error; a ``FileNotFoundError`` (files absent)
            or a dataset that poses no task is an error unless ``config.skip_missing``, which
            records it in ``datasets_skipped`` instead.

    Returns:
        A :class:`TaskSuite`. Splits depend only on ``config`` (not on the encoder), so suites
        built for different encoders pose the same queries.

    Raises:
        FileNotFoundError: a dataset's files are missing (the message says how to install them
            or to pass ``skip_missing=True``).
        ValueError: a dataset is not registered, poses no task, or (with ``skip_missing``)
            every dataset was skipped.
    """
    from workbench.encoders.registry import resolve_encoder

    cfg = config or TaskSuiteConfig()
    if not isinstance(cfg, TaskSuiteConfig):
        raise TypeError(f"config must be a TaskSuiteConfig, got {type(cfg).__name__}")
    enc, _ = resolve_encoder(encoder)
    fingerprint = tower_fingerprint(enc)
    path = _cache_path(cfg, fingerprint, loader)
    if loader is None:
        from workbench.data import load_dataset as loader
    if cfg.cache and path.exists():
        cached = TaskSuite.load(path)
        if not _skipped_now_available(cached, loader):
            return cached
    from workbench.encoders.embed import embed

    towers = _Towers(enc, cfg.batch_size)
    tasks: list[Task] = []
    used: list[str] = []
    skipped: dict[str, str] = {}
    for name in cfg.datasets:
        ds = _load(loader, name, cfg, skipped)
        if ds is None:
            continue
        size = min(cfg.n_per_dataset, len(ds))  # n_per_dataset is a cap: small sets join whole
        emb = embed(enc, ds, size=size, seed=cfg.seed, tower_features=True)
        new = _dataset_tasks(name, emb, towers, cfg)
        if new:
            tasks += new
            used.append(name)
            continue
        why = "no task applies (no labels, and its captions are not ≥ 90 % distinct)"
        if not cfg.skip_missing:
            raise ValueError(
                f"dataset {name!r} poses no task for meta_tasks {cfg.meta_tasks}: {why}; drop it "
                f"from datasets or pass skip_missing=True"
            )
        skipped[name] = why
    if cfg.datasets and not used:
        raise ValueError(
            f"none of the datasets {cfg.datasets} could be built (skipped: {skipped}); the "
            f"synthetic MMVP task alone is not a suite — install the data or name others"
        )
    if "perception" in cfg.meta_tasks and cfg.mmvp_pairs_per_category > 0:
        tasks.append(_mmvp_task(towers, cfg))
        used.append(SYNTHETIC_MMVP)
    if not tasks:
        raise ValueError(
            "no task could be built: datasets is empty and the perception meta-task is off "
            "(mmvp_pairs_per_category=0 or 'perception' not in meta_tasks)"
        )
    suite = TaskSuite(tasks, cfg, used, skipped, fingerprint)
    if cfg.cache:
        suite.save(path)
    return suite
