"""An MMEB-style task suite over cached tower features, scored by Precision@1.

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

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from workbench._validate import as_bool, as_float, as_int, as_names
from workbench.encoders.heads import apply_head, as_heads, tower_fingerprint
from workbench.probes.retrieval import precision_at_1

__all__ = [
    "META_TASKS",
    "PairSet",
    "Task",
    "TaskSuite",
    "TaskSuiteConfig",
]

META_TASKS: tuple[str, ...] = ("classification", "retrieval", "perception", "compositional")
SYNTHETIC_MMVP = "synthetic-mmvp"


@dataclass
class TaskSuiteConfig:
    """How :func:`build_task_suite` builds the suite; every field is validated.

    Attributes:
        datasets: Datasets to build tasks from (registry names; a bare string is refused, an
            unknown name raises with suggestions). One whose files are missing, or that poses no
            task, is an error unless ``skip_missing``.
        n_per_dataset: Items drawn per dataset at most (seeded subset; a smaller data set joins
            whole) before the train/held-out split
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
            by this config and the towers' weights. Availability is never cached: a suite that
            skipped a dataset is rebuilt once that dataset can be loaded.
        skip_missing: Skip (and list in ``TaskSuite.datasets_skipped`` and
            :meth:`TaskSuite.describe`) datasets whose files are missing or that pose no task,
            instead of raising (False: a dataset you asked for is never silently dropped).
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
    skip_missing: bool = False

    def __post_init__(self) -> None:
        from workbench.data import dataset_names
        from workbench.data.negatives import KINDS

        own = "TaskSuiteConfig"
        self.datasets = dataset_names(self.datasets, "datasets", owner=own)
        self.templates = as_names(self.templates, "templates", owner=own)
        self.meta_tasks = as_names(self.meta_tasks, "meta_tasks", owner=own, unique=True)
        self.negative_kinds = as_names(
            self.negative_kinds, "negative_kinds", owner=own, none_ok=True
        )
        self.n_per_dataset = as_int(self.n_per_dataset, f"{own}: n_per_dataset", lo=4)
        self.held_out_fraction = as_float(
            self.held_out_fraction,
            f"{own}: held_out_fraction",
            lo=0.0,
            hi=1.0,
            lo_open=True,
            hi_open=True,
        )
        self.seed = as_int(self.seed, f"{own}: seed", lo=0)
        self.mmvp_pairs_per_category = as_int(
            self.mmvp_pairs_per_category, f"{own}: mmvp_pairs_per_category", lo=0
        )
        if any("{}" not in t for t in self.templates):
            raise ValueError(f"{own}: templates must be format strings each containing '{{}}'")
        unknown = set(self.meta_tasks) - set(META_TASKS)
        if unknown:
            raise ValueError(
                f"{own}: meta_tasks must be a non-empty subset of {META_TASKS}, got "
                f"{self.meta_tasks}"
            )
        bad_kinds = set(self.negative_kinds or ()) - set(KINDS)
        if bad_kinds:
            raise ValueError(
                f"{own}: negative_kinds holds unknown kinds {sorted(bad_kinds)}; choose from {KINDS}"
            )
        self.max_candidates = as_int(self.max_candidates, f"{own}: max_candidates", lo=2)
        self.batch_size = as_int(self.batch_size, f"{own}: batch_size", lo=1)
        self.cache = as_bool(self.cache, f"{own}: cache")
        self.skip_missing = as_bool(self.skip_missing, f"{own}: skip_missing")

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
            image=apply_head(encoder.image_head, self.image_tower),
            text=apply_head(encoder.text_head, self.text_tower),
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


def _normed(Z: np.ndarray) -> np.ndarray:
    return Z / np.maximum(np.linalg.norm(Z, axis=1, keepdims=True), 1e-12)


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
        """DataFrame: task, meta_task, dataset, n_train, n_held_out, n_candidates, skipped.

        A dataset skipped under ``skip_missing`` gets a row of its own (``task`` empty, counts
        0) with the reason in ``skipped``, so the table never hides what is missing.
        """
        import pandas as pd

        rows = [
            {
                "task": t.name,
                "meta_task": t.meta_task,
                "dataset": t.dataset,
                "n_train": len(t.train),
                "n_held_out": len(t.queries),
                "n_candidates": t.n_candidates,
                "skipped": "",
            }
            for t in self.tasks
        ]
        rows += [
            {
                "task": "",
                "meta_task": "",
                "dataset": name,
                "n_train": 0,
                "n_held_out": 0,
                "n_candidates": 0,
                "skipped": why,
            }
            for name, why in self.datasets_skipped.items()
        ]
        return pd.DataFrame(rows)

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
                was built from — rebuild with :func:`build_task_suite` after tuning towers), or
                :class:`~workbench.encoders.heads.Heads` (e.g. ``Heads.of(encoder)`` after a
                heads-only run), whose heads map (n, D_tower) tensors to (n, E).
            meta_task, task: restrict to some tasks.

        Returns:
            DataFrame ``level, meta_task, task, metric, value, n_queries`` with ``level`` ∈
            {``"task"``, ``"meta_task"``, ``"overall"``}; ``metric`` is ``"precision@1"``.
        """
        import pandas as pd

        if check_towers and hasattr(model, "state_dict") and hasattr(model, "image_tower"):
            if tower_fingerprint(model) != self.tower_fingerprint:
                raise ValueError(
                    "this encoder's towers differ from the ones the suite's features were extracted "
                    "with (fine-tuned towers / LoRA?); rebuild with build_task_suite(encoder, "
                    "suite.config) — the splits are deterministic — or pass check_towers=False"
                )
        heads = as_heads(model)
        image_head, text_head = heads.image_head, heads.text_head
        rows = []
        for t in self._select(meta_task, task):
            q_head, c_head = (
                (image_head, text_head) if t.query_modality == "image" else (text_head, image_head)
            )
            Q = _normed(apply_head(q_head, t.queries))
            C = _normed(apply_head(c_head, t.pool))
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
