"""Configs cannot silently degrade: bare strings, unknown names and missing data fail loudly.

Issue 19's main-job reproducer: ``-p datasets '["nope"]'`` used to split the string into
characters, skip every "dataset" as a missing optional file and report a full table measured on
the synthetic MMVP task alone. The decision here: a bare string where a sequence is meant is
**refused** (``TypeError`` naming the field, with the papermill hint when it looks like a list),
never taken as a one-element sequence — a typo'd list would otherwise still run.
"""

from __future__ import annotations

import numpy as np
import pytest
from dp_fakes import TinyEncoder

from workbench.evals import TaskSuiteConfig, build_task_suite
from workbench.evals.dp_suite import SuiteConfig
from workbench.experiments.dp_ability import DPStudyConfig
from workbench.experiments.fanoise import FANoiseFiguresConfig
from workbench.experiments.grid import SuiteRunConfig
from workbench.experiments.modality_gap import ModalityGapConfig
from workbench.experiments.sde import SDEAblationConfig, SDEFiguresConfig
from workbench.viz.explorers import ExploreConfig

SEQUENCE_FIELDS = [
    (SuiteRunConfig, "datasets"),
    (SuiteRunConfig, "seeds"),
    (SDEAblationConfig, "datasets"),
    (SDEAblationConfig, "rows"),
    (SDEFiguresConfig, "cross_task_seeds"),
    (FANoiseFiguresConfig, "alphas"),
    (FANoiseFiguresConfig, "scalings"),
    (ModalityGapConfig, "stability_sizes"),
    (DPStudyConfig, "encoders"),
    (DPStudyConfig, "datasets"),
    (DPStudyConfig, "extra_x_metrics"),
    (TaskSuiteConfig, "datasets"),
    (TaskSuiteConfig, "templates"),
    (TaskSuiteConfig, "meta_tasks"),
    (TaskSuiteConfig, "negative_kinds"),
    (SuiteConfig, "datasets"),
    (SuiteConfig, "seeds"),
    (SuiteConfig, "templates"),
    (SuiteConfig, "negative_kinds"),
]


@pytest.mark.parametrize(("cls", "field"), SEQUENCE_FIELDS, ids=lambda x: getattr(x, "__name__", x))
def test_a_bare_string_is_refused_where_a_sequence_is_meant(cls, field):
    with pytest.raises(TypeError, match=field):
        cls(**{field: "digits"})


def test_the_main_job_reproducer_is_refused_with_the_papermill_hint():
    with pytest.raises(TypeError, match=r"datasets must be a sequence.*papermill.*-y"):
        SDEAblationConfig(datasets='["nope"]')


UNKNOWN_DATASET = [
    (SuiteRunConfig, {"datasets": ("synthetic-world", "digts")}),
    (SDEAblationConfig, {"datasets": ("digts",)}),
    (FANoiseFiguresConfig, {"datasets": ("digts",)}),
    (ModalityGapConfig, {"dataset": "digts"}),
    (DPStudyConfig, {"datasets": ("digts",), "map_dataset": "digts"}),
    (TaskSuiteConfig, {"datasets": ("digts",)}),
    (SuiteConfig, {"datasets": ("digts",)}),
    (ExploreConfig, {"dataset": "digts"}),
]


@pytest.mark.parametrize(
    ("cls", "kwargs"), UNKNOWN_DATASET, ids=lambda x: getattr(x, "__name__", "")
)
def test_an_unknown_dataset_name_raises_with_the_registry_suggestion(cls, kwargs):
    with pytest.raises(ValueError, match=r"unknown dataset 'digts'\. Did you mean 'digits'"):
        cls(**kwargs)


@pytest.mark.parametrize(
    ("cls", "kwargs"),
    [
        (SuiteRunConfig, {"encoder": "defualt"}),
        (ModalityGapConfig, {"encoder": "defualt"}),
        (DPStudyConfig, {"encoders": ("defualt",)}),
        (ExploreConfig, {"encoder": "defualt"}),
    ],
    ids=lambda x: getattr(x, "__name__", ""),
)
def test_an_unknown_encoder_name_raises_with_the_registry_suggestion(cls, kwargs):
    with pytest.raises(ValueError, match=r"unknown encoder 'defualt'\. Did you mean 'default'"):
        cls(**kwargs)


@pytest.mark.parametrize(
    ("cls", "kwargs", "match"),
    [
        (SuiteRunConfig, {"seeds": (0, 0)}, "seeds must be distinct"),
        (SuiteRunConfig, {"seeds": (0, 1.5)}, r"seeds\[1\]"),
        (SuiteRunConfig, {"symmetric": "False"}, "symmetric must be True or False"),
        (SuiteRunConfig, {"lr": float("nan")}, "lr must be"),
        (TaskSuiteConfig, {"n_per_dataset": 2.5}, "n_per_dataset"),
        (TaskSuiteConfig, {"negative_kinds": ("swap",)}, "negative_kinds"),
        (SuiteConfig, {"retrieval": "yes"}, "retrieval must be True or False"),
        (ModalityGapConfig, {"k": True}, "k must be an int"),
        (FANoiseFiguresConfig, {"alphas": (0.1, float("nan"))}, r"alphas\[1\]"),
    ],
)
def test_bad_scalar_fields_are_named(cls, kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        cls(**kwargs)


def test_train_config_checks_its_dataset_and_encoder_names():
    from workbench.train import TrainConfig

    with pytest.raises(ValueError, match=r"TrainConfig: dataset: unknown dataset 'digts'"):
        TrainConfig(dataset="digts")
    with pytest.raises(ValueError, match=r"TrainConfig: encoder: unknown encoder 'defualt'"):
        TrainConfig(encoder="defualt")


def test_defaults_still_validate():
    for cls in (SuiteRunConfig, SDEAblationConfig, SDEFiguresConfig, FANoiseFiguresConfig):
        cls()
    for cls in (ModalityGapConfig, DPStudyConfig, TaskSuiteConfig, SuiteConfig, ExploreConfig):
        cls()


def test_class_names_and_categories_refuse_a_bare_string():
    from workbench.probes.perception import mmvp_scores
    from workbench.probes.separability import zero_shot_classifier

    with pytest.raises(TypeError, match="class_names must be a sequence"):
        zero_shot_classifier(TinyEncoder(), "cat")
    logits = np.tile(np.array([[2.0, 0.0], [0.0, 2.0]]), (3, 1, 1))
    with pytest.raises(TypeError, match="categories must be a sequence"):
        mmvp_scores(logits, "abc")


def test_dp_study_check_data_names_a_dataset_whose_files_are_missing():
    cfg = DPStudyConfig(datasets=("digits", "coco-captions"))
    with pytest.raises(FileNotFoundError, match="dataset 'coco-captions' cannot be built"):
        cfg.check_data()


# -- the task suite: missing data is an error unless skip_missing ------------------------------
def _loader(present: set[str]):
    def load(name):
        from workbench.data import load_dataset

        if name not in present:
            raise FileNotFoundError(f"{name} files not installed (test double)")
        if name == "synthetic-world":
            return load_dataset("synthetic-world", size=40, image_size=48)
        return load_dataset("digits", size=40, image_size=16)

    load.__qualname__ = f"loader_{'_'.join(sorted(present))}"
    return load


def _cfg(**kw):
    base = dict(
        datasets=("synthetic-world", "digits"),
        n_per_dataset=24,
        mmvp_pairs_per_category=1,
        meta_tasks=("classification", "perception"),
        cache=False,
    )
    return TaskSuiteConfig(**{**base, **kw})


def test_a_missing_dataset_is_an_error_by_default_with_the_fix():
    with pytest.raises(FileNotFoundError, match=r"dataset 'digits' cannot be built.*skip_missing"):
        build_task_suite(TinyEncoder(), _cfg(), loader=_loader({"synthetic-world"}))


def test_skip_missing_skips_and_the_table_says_which():
    suite = build_task_suite(
        TinyEncoder(), _cfg(skip_missing=True), loader=_loader({"synthetic-world"})
    )
    assert "digits" in suite.datasets_skipped and "digits" not in suite.datasets_used
    table = suite.describe()
    row = table[table.dataset == "digits"]
    assert len(row) == 1 and "FileNotFoundError" in row.skipped.item()
    assert (table[table.dataset == "synthetic-world"].skipped == "").all()


def test_an_unregistered_name_from_a_loader_is_never_a_skip():
    def loader(name):
        raise KeyError(f"unknown dataset {name!r}")

    with pytest.raises(ValueError, match="is not registered"):
        build_task_suite(TinyEncoder(), _cfg(skip_missing=True), loader=loader)


def test_the_synthetic_mmvp_task_never_hides_an_empty_suite():
    with pytest.raises(ValueError, match="synthetic MMVP task alone is not a suite"):
        build_task_suite(TinyEncoder(), _cfg(skip_missing=True), loader=_loader(set()))


def test_the_cache_never_remembers_a_dataset_as_missing(monkeypatch, tmp_path):
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path))
    cfg = _cfg(skip_missing=True, cache=True)
    loader = _loader({"synthetic-world"})
    first = build_task_suite(TinyEncoder(), cfg, loader=loader)
    assert "digits" in first.datasets_skipped
    # same loader (same cache key), and now the files are there: the suite is rebuilt with them
    present = {"synthetic-world"}
    real = loader

    def now(name):
        return _loader(present | {"digits"})(name) if name == "digits" else real(name)

    now.__qualname__ = loader.__qualname__
    now.__module__ = loader.__module__
    second = build_task_suite(TinyEncoder(), cfg, loader=now)
    assert "digits" in second.datasets_used and not second.datasets_skipped
    # a complete suite is served from the cache without loading anything
    import workbench.encoders.embed as embed_mod

    monkeypatch.setattr(embed_mod, "embed", lambda *a, **k: pytest.fail("cache missed"))
    third = build_task_suite(TinyEncoder(), cfg, loader=now)
    assert third.datasets_used == second.datasets_used
