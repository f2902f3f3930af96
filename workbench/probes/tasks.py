"""An MMEB-style task suite built from the embedded data, scored by Precision@1.

Modelled on MMEB's meta-tasks (``methods-spectral.md`` §0), with what our data can pose:

============== ======================================== =========================================
meta-task      query → candidates                        from
============== ======================================== =========================================
classification image → one prompt per class name         every labelled dataset
retrieval      image → held-out captions (``…/i2t``),    datasets whose captions are ≥ 90 %
               caption → held-out images (``…/t2i``)     distinct (synthetic-world, openclipart)
perception     ``"a photo of " + statement`` → the       synthetic-world MMVP-style pairs
               pair's two images                         (9 categories)
compositional  image → its caption + hard negatives      the retrieval datasets (rule-based
                                                         negatives; attribute-exact on synthetic)
============== ======================================== =========================================

Precision@1 = fraction of held-out queries whose top-1 candidate is the right one (ties count
against the query). Reported per task, per meta-task (mean over its tasks) and overall (mean
over meta-tasks) — MMEB averages over datasets; with 4 meta-tasks of unequal size we average
meta-task means so no meta-task dominates **[our reading]**.

Splits: each dataset's embedded items are split once, deterministically (``seed``), into train
and held-out halves shared by all of that dataset's tasks, so a held-out image of one task is
never a training image of another; MMVP pairs are split by pair. Real datasets
(fashion-mnist, openclipart) join when their files exist; :attr:`TaskSuite.datasets_used` and
:attr:`TaskSuite.datasets_skipped` say which did.

Everything is stored as *tower* features (pre-projection), so :meth:`TaskSuite.evaluate` only
runs the two projection heads — cheap enough to call inside a training loop — and
:meth:`TaskSuite.train_pairs` hands a heads-only trainer its (image, text) tower features.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "META_TASKS",
    "PairSet",
    "Task",
    "TaskSuite",
    "TaskSuiteConfig",
    "build_task_suite",
    "precision_at_1",
]

META_TASKS: tuple[str, ...] = ("classification", "retrieval", "perception", "compositional")
SYNTHETIC_MMVP = "synthetic-mmvp"
_HEAD_PREFIXES = ("image_head.", "text_head.", "logit_scale")


@dataclass
class TaskSuiteConfig:
    """How :func:`build_task_suite` builds the suite; every field is validated.

    Attributes:
        datasets: Candidate datasets (registry names). Ones whose files are missing are skipped
            and listed in ``TaskSuite.datasets_skipped``.
        n_per_dataset: Items drawn per dataset (seeded subset) before the train/held-out split
            (400: 200 held-out queries per task keeps P@1's standard error ≈ 3 points).
        held_out_fraction: Fraction of each dataset's items (and of MMVP pairs, per category)
            held out for evaluation.
        seed: Seeds the subsets, the splits, the MMVP pairs and the negatives.
        mmvp_pairs_per_category: Synthetic MMVP pairs per category (9 categories); 0 drops the
            perception meta-task.
        templates: Class-prompt templates (``{}`` = class name), ensembled per class.
        negative_kinds: Hard-negative kinds (``None`` = the generator's default set).
        max_candidates: Cap on a retrieval task's held-out candidate pool (MMEB ranks ~1000).
        meta_tasks: Which meta-tasks to build.
        batch_size: Encoder batch size while extracting tower features.
        cache: Cache the extracted tower features on disk (``$WORKBENCH_CACHE/tasks``), keyed
            by this config and the towers' weights.
    """

    datasets: tuple[str, ...] = ("synthetic-world", "digits", "fashion-mnist", "openclipart")
    n_per_dataset: int = 400
    held_out_fraction: float = 0.5
    seed: int = 0
    mmvp_pairs_per_category: int = 8
    templates: tuple[str, ...] = ("a photo of a {}.",)
    negative_kinds: tuple[str, ...] | None = None
    max_candidates: int = 1000
    meta_tasks: tuple[str, ...] = META_TASKS
    batch_size: int = 64
    cache: bool = True

    def __post_init__(self) -> None:
        self.datasets = tuple(self.datasets)
        self.templates = tuple(self.templates)
        self.meta_tasks = tuple(self.meta_tasks)
        if self.negative_kinds is not None:
            self.negative_kinds = tuple(self.negative_kinds)
        if self.n_per_dataset < 4:
            raise ValueError(f"n_per_dataset must be ≥ 4, got {self.n_per_dataset}")
        if not 0.0 < self.held_out_fraction < 1.0:
            raise ValueError(f"held_out_fraction must be in (0, 1), got {self.held_out_fraction}")
        if self.mmvp_pairs_per_category < 0:
            raise ValueError("mmvp_pairs_per_category must be ≥ 0")
        if not self.templates or any("{}" not in t for t in self.templates):
            raise ValueError("templates must be non-empty format strings each containing '{}'")
        unknown = set(self.meta_tasks) - set(META_TASKS)
        if unknown or not self.meta_tasks:
            raise ValueError(
                f"meta_tasks must be a non-empty subset of {META_TASKS}, got {self.meta_tasks}"
            )
        if self.max_candidates < 2:
            raise ValueError(f"max_candidates must be ≥ 2, got {self.max_candidates}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be ≥ 1, got {self.batch_size}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class PairSet:
    """(image, text) training pairs as tower features.

    Attributes:
        image_tower: (n, D_img) float32 pre-projection image features.
        text_tower: (n, D_txt) float32 pre-projection text features.
        texts: the n texts (captions, class prompts, statements).
        keys: n source-item keys (``"<dataset>:<item id>"``), for checking disjointness.
        tasks: the task each pair was drawn from (first one when tasks share a pair).
    """

    image_tower: np.ndarray
    text_tower: np.ndarray
    texts: list[str]
    keys: list[str]
    tasks: list[str]

    def __len__(self) -> int:
        return len(self.texts)

    def to_embeddings(self, encoder: Any) -> Any:
        """As :class:`~workbench.encoders.embeddings.Embeddings` (heads of ``encoder`` applied), for
        ``workbench.train.train(embeddings=...)``'s cached-feature path."""
        from workbench.encoders.embeddings import Embeddings

        return Embeddings(
            image=_apply(encoder.image_head, self.image_tower),
            text=_apply(encoder.text_head, self.text_tower),
            ids=[f"{k}|{t}" for k, t in zip(self.keys, self.texts)],
            labels=np.full(len(self), -1, dtype=np.int64),
            captions=list(self.texts),
            image_tower=self.image_tower,
            text_tower=self.text_tower,
            provenance={"source": "TaskSuite.train_pairs", "tasks": sorted(set(self.tasks))},
        )


@dataclass
class Task:
    """One ranking task over tower features.

    Attributes:
        name: ``"<dataset>/<kind>"``, e.g. ``"digits/classification"``.
        meta_task: one of :data:`META_TASKS`.
        dataset: source dataset.
        query_modality: ``"image"`` or ``"text"`` (candidates are the other modality).
        queries: (n_q, D_q) tower features of the held-out queries.
        pool: (n_p, D_c) tower features of every candidate row.
        target: (n_q,) the right candidate's id (a row of ``pool``, or a group id, see below).
        candidates: (n_q, C) candidate ids per query, ``-1`` = padding; ``None`` = all ids.
        pool_groups: (n_p,) candidate id of each pool row when several rows make one
            candidate (prompt templates, averaged after the head); ``None`` = one row each.
        train: the task's training pairs (from the train split only).
        held_out_keys: source-item keys of the held-out queries and candidates.
    """

    name: str
    meta_task: str
    dataset: str
    query_modality: str
    queries: np.ndarray
    pool: np.ndarray
    target: np.ndarray
    candidates: np.ndarray | None
    pool_groups: np.ndarray | None
    train: PairSet
    held_out_keys: list[str] = field(default_factory=list)

    @property
    def n_candidates(self) -> int:
        if self.candidates is not None:
            return int((self.candidates >= 0).sum(axis=1).max())
        return int(self.pool_groups.max() + 1) if self.pool_groups is not None else len(self.pool)


def precision_at_1(
    sim: np.ndarray, target: np.ndarray, candidates: np.ndarray | None = None
) -> float:
    """Fraction of queries whose right candidate strictly beats every other candidate.

    Args:
        sim: (n_q, n_c) query × candidate similarity.
        target: (n_q,) column of the right candidate.
        candidates: (n_q, C) columns each query ranks (``-1`` = padding); ``None`` = all columns.
    """
    sim = np.asarray(sim)
    n_q, n_c = sim.shape
    target = np.asarray(target, dtype=np.int64)
    if target.shape != (n_q,):
        raise ValueError(f"target must have one entry per query ({n_q}), got {target.shape}")
    cand = (
        np.broadcast_to(np.arange(n_c), (n_q, n_c))
        if candidates is None
        else np.asarray(candidates)
    )
    valid = cand >= 0
    is_target = valid & (cand == target[:, None])
    if not is_target.any(axis=1).all():
        raise ValueError("every query's target must be among its candidates")
    scores = np.take_along_axis(sim, np.where(valid, cand, 0), axis=1)
    best_other = np.where(valid & ~is_target, scores, -np.inf).max(axis=1)
    return float(np.mean(sim[np.arange(n_q), target] > best_other))


def _apply(head: Any, X: np.ndarray) -> np.ndarray:
    """Run a projection head (nn.Module or callable on tensors) on (n, D) features → (n, E) float32."""
    import torch

    if head is None:
        return np.asarray(X, dtype=np.float32)
    was_training = getattr(head, "training", None)
    params = list(head.parameters()) if hasattr(head, "parameters") else []
    device = params[0].device if params else torch.device("cpu")
    dtype = params[0].dtype if params else torch.float32
    if was_training:
        head.eval()
    try:
        with torch.no_grad():
            out = head(torch.as_tensor(np.asarray(X), dtype=dtype, device=device))
    finally:
        if was_training:
            head.train()
    return out.float().cpu().numpy()


def _normed(Z: np.ndarray) -> np.ndarray:
    return Z / np.maximum(np.linalg.norm(Z, axis=1, keepdims=True), 1e-12)


def _tower_fingerprint(encoder: Any) -> str:
    """sha256 over every tensor of ``encoder`` except the heads and logit scale (the towers)."""
    import torch

    h = hashlib.sha256()
    for name, t in encoder.state_dict().items():
        if name.startswith(_HEAD_PREFIXES):
            continue
        t = t.detach().cpu().contiguous()
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(str(t.dtype).encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    ident = getattr(encoder, "preprocess_config", {})
    h.update(json.dumps(ident, sort_keys=True, default=str).encode())
    return h.hexdigest()


def _heads(model: Any) -> tuple[Any, Any]:
    if isinstance(model, tuple) and len(model) == 2:
        return model
    if hasattr(model, "image_head") and hasattr(model, "text_head"):
        return model.image_head, model.text_head
    raise TypeError(
        "evaluate() takes an Encoder, an object with image_head/text_head, or a tuple "
        f"(image_head, text_head); got {type(model).__name__}"
    )


class TaskSuite:
    """The built suite: tasks over cached tower features, their splits and which data was used.

    Attributes:
        tasks: every :class:`Task`, in build order.
        config: the :class:`TaskSuiteConfig` it was built from.
        datasets_used: datasets that contributed tasks (``"synthetic-mmvp"`` for the pairs).
        datasets_skipped: dataset → reason (files missing, no labels, ...).
        tower_fingerprint: hash of the towers the features came from.
    """

    def __init__(
        self,
        tasks: list[Task],
        config: TaskSuiteConfig,
        datasets_used: list[str],
        datasets_skipped: dict[str, str],
        tower_fingerprint: str,
    ) -> None:
        self.tasks = tasks
        self.config = config
        self.datasets_used = datasets_used
        self.datasets_skipped = datasets_skipped
        self.tower_fingerprint = tower_fingerprint

    def __repr__(self) -> str:
        return (
            f"<TaskSuite {len(self.tasks)} tasks over {self.meta_tasks}; "
            f"used {self.datasets_used}, skipped {sorted(self.datasets_skipped)}>"
        )

    @property
    def meta_tasks(self) -> list[str]:
        return list(dict.fromkeys(t.meta_task for t in self.tasks))

    def task(self, name: str) -> Task:
        for t in self.tasks:
            if t.name == name:
                return t
        raise KeyError(f"no task {name!r}; have {[t.name for t in self.tasks]}")

    def _select(
        self, meta_task: str | None = None, task: str | Sequence[str] | None = None
    ) -> list[Task]:
        if meta_task is not None and meta_task not in META_TASKS:
            raise ValueError(f"meta_task must be one of {META_TASKS}, got {meta_task!r}")
        names = [task] if isinstance(task, str) else task
        chosen = [
            t
            for t in self.tasks
            if (meta_task is None or t.meta_task == meta_task)
            and (names is None or t.name in names)
        ]
        if not chosen:
            raise ValueError(f"no task matches meta_task={meta_task!r}, task={task!r}")
        return chosen

    def describe(self) -> Any:
        """DataFrame: task, meta_task, dataset, n_train, n_held_out, n_candidates."""
        import pandas as pd

        return pd.DataFrame(
            [
                {
                    "task": t.name,
                    "meta_task": t.meta_task,
                    "dataset": t.dataset,
                    "n_train": len(t.train),
                    "n_held_out": len(t.queries),
                    "n_candidates": t.n_candidates,
                }
                for t in self.tasks
            ]
        )

    def train_pairs(
        self, meta_task: str | None = None, task: str | Sequence[str] | None = None
    ) -> PairSet:
        """Training (image, text) tower-feature pairs of the selected tasks' train splits.

        Pairs shared by several tasks (a dataset's retrieval and compositional tasks train on the
        same captions) appear once.
        """
        seen: set[tuple[str, str]] = set()
        img, txt, texts, keys, tasks = [], [], [], [], []
        for t in self._select(meta_task, task):
            for i, (k, s) in enumerate(zip(t.train.keys, t.train.texts)):
                if (k, s) in seen:
                    continue
                seen.add((k, s))
                img.append(t.train.image_tower[i])
                txt.append(t.train.text_tower[i])
                texts.append(s)
                keys.append(k)
                tasks.append(t.name)
        return PairSet(np.stack(img), np.stack(txt), texts, keys, tasks)

    def evaluate(
        self,
        model: Any,
        *,
        meta_task: str | None = None,
        task: str | Sequence[str] | None = None,
        check_towers: bool = True,
    ) -> Any:
        """Precision@1 on the held-out split, per task, per meta-task and overall.

        Args:
            model: an :class:`~workbench.encoders.base.Encoder` (its heads are applied to the
                cached tower features; with ``check_towers`` its towers must be the ones the suite
                was built from — rebuild with :func:`build_task_suite` after tuning towers), an
                object with ``image_head``/``text_head``, or a tuple ``(image_head, text_head)``
                of modules/callables mapping (n, D_tower) tensors to (n, E).
            meta_task, task: restrict to some tasks.

        Returns:
            DataFrame ``level, meta_task, task, metric, value, n_queries`` with ``level`` ∈
            {``"task"``, ``"meta_task"``, ``"overall"``}; ``metric`` is ``"precision@1"``.
        """
        import pandas as pd

        if check_towers and hasattr(model, "state_dict") and hasattr(model, "image_tower"):
            if _tower_fingerprint(model) != self.tower_fingerprint:
                raise ValueError(
                    "this encoder's towers differ from the ones the suite's features were extracted "
                    "with (fine-tuned towers / LoRA?); rebuild with build_task_suite(encoder, "
                    "suite.config) — the splits are deterministic — or pass check_towers=False"
                )
        image_head, text_head = _heads(model)
        rows = []
        for t in self._select(meta_task, task):
            q_head, c_head = (
                (image_head, text_head) if t.query_modality == "image" else (text_head, image_head)
            )
            Q = _normed(_apply(q_head, t.queries))
            C = _normed(_apply(c_head, t.pool))
            if t.pool_groups is not None:
                n_groups = int(t.pool_groups.max()) + 1
                G = np.zeros((n_groups, C.shape[1]))
                np.add.at(G, t.pool_groups, C)
                C = _normed(G)
            rows.append(
                {
                    "level": "task",
                    "meta_task": t.meta_task,
                    "task": t.name,
                    "metric": "precision@1",
                    "value": precision_at_1(Q @ C.T, t.target, t.candidates),
                    "n_queries": len(Q),
                }
            )
        df = pd.DataFrame(rows)
        meta = df.groupby("meta_task", sort=False).agg(
            value=("value", "mean"), n_queries=("n_queries", "sum")
        )
        meta = meta.loc[[m for m in META_TASKS if m in meta.index]]  # MMEB order
        extra = [
            {
                "level": "meta_task",
                "meta_task": m,
                "task": "",
                "metric": "precision@1",
                "value": r.value,
                "n_queries": int(r.n_queries),
            }
            for m, r in meta.iterrows()
        ]
        extra.append(
            {
                "level": "overall",
                "meta_task": "",
                "task": "",
                "metric": "precision@1",
                "value": float(meta["value"].mean()),
                "n_queries": int(df["n_queries"].sum()),
            }
        )
        return pd.concat([df, pd.DataFrame(extra)], ignore_index=True)

    # -- persistence -------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write the suite to ``path`` (a ``.npz`` with the arrays and a JSON header)."""
        path = Path(path)
        arrays: dict[str, np.ndarray] = {}
        header: dict[str, Any] = {
            "config": self.config.to_dict(),
            "datasets_used": self.datasets_used,
            "datasets_skipped": self.datasets_skipped,
            "tower_fingerprint": self.tower_fingerprint,
            "tasks": [],
        }
        for i, t in enumerate(self.tasks):
            for a in ("queries", "pool", "target", "candidates", "pool_groups"):
                if getattr(t, a) is not None:
                    arrays[f"{i}.{a}"] = getattr(t, a)
            arrays[f"{i}.train_image"] = t.train.image_tower
            arrays[f"{i}.train_text"] = t.train.text_tower
            header["tasks"].append(
                {
                    "name": t.name,
                    "meta_task": t.meta_task,
                    "dataset": t.dataset,
                    "query_modality": t.query_modality,
                    "train_texts": t.train.texts,
                    "train_keys": t.train.keys,
                    "held_out_keys": t.held_out_keys,
                }
            )
        arrays["header"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npz")
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> TaskSuite:
        """Read a suite written by :meth:`save`."""
        with np.load(Path(path)) as z:
            header = json.loads(z["header"].tobytes().decode())
            tasks = []
            for i, h in enumerate(header["tasks"]):
                get = lambda a, i=i: z[f"{i}.{a}"] if f"{i}.{a}" in z.files else None  # noqa: E731
                train = PairSet(
                    get("train_image"),
                    get("train_text"),
                    h["train_texts"],
                    h["train_keys"],
                    [h["name"]] * len(h["train_texts"]),
                )
                tasks.append(
                    Task(
                        h["name"],
                        h["meta_task"],
                        h["dataset"],
                        h["query_modality"],
                        get("queries"),
                        get("pool"),
                        get("target"),
                        get("candidates"),
                        get("pool_groups"),
                        train,
                        h["held_out_keys"],
                    )
                )
        cfg = header["config"]
        for k in ("datasets", "templates", "meta_tasks", "negative_kinds"):
            if cfg.get(k) is not None:
                cfg[k] = tuple(cfg[k])
        return cls(
            tasks,
            TaskSuiteConfig(**cfg),
            header["datasets_used"],
            header["datasets_skipped"],
            header["tower_fingerprint"],
        )


# -- building -----------------------------------------------------------------------------------


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
        loader: ``name -> Dataset`` (default :func:`workbench.load_dataset`); a dataset whose
            loader raises ``FileNotFoundError`` (files absent) or ``KeyError`` (not registered)
            is skipped and recorded in ``datasets_skipped``.

    Returns:
        A :class:`TaskSuite`. Splits depend only on ``config`` (not on the encoder), so suites
        built for different encoders pose the same queries.
    """
    from workbench.probes.suite import resolve_encoder

    cfg = config or TaskSuiteConfig()
    enc, _ = resolve_encoder(encoder)
    fingerprint = _tower_fingerprint(enc)
    path = _cache_path(cfg, fingerprint, loader)
    if cfg.cache and path.exists():
        return TaskSuite.load(path)
    if loader is None:
        from workbench.data import load_dataset as loader
    from workbench.encoders.embed import embed

    towers = _Towers(enc, cfg.batch_size)
    tasks: list[Task] = []
    used: list[str] = []
    skipped: dict[str, str] = {}
    for name in cfg.datasets:
        try:
            ds = loader(name)
        except (FileNotFoundError, KeyError) as exc:
            skipped[name] = f"{type(exc).__name__}: {exc}"
            continue
        emb = embed(enc, ds, size=cfg.n_per_dataset, seed=cfg.seed, tower_features=True)
        new = _dataset_tasks(name, emb, towers, cfg)
        if new:
            tasks += new
            used.append(name)
        else:
            skipped[name] = "no task applies (no labels and captions not distinct)"
    if "perception" in cfg.meta_tasks and cfg.mmvp_pairs_per_category > 0:
        tasks.append(_mmvp_task(towers, cfg))
        used.append(SYNTHETIC_MMVP)
    if not tasks:
        raise ValueError(f"no task could be built; skipped datasets: {skipped}")
    suite = TaskSuite(tasks, cfg, used, skipped, fingerprint)
    if cfg.cache:
        suite.save(path)
    return suite
