"""The MMEB-style task suite: Precision@1, disjoint deterministic splits, head-only evaluation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from dp_fakes import TinyEncoder

from workbench.encoders.heads import Heads
from workbench.evals import META_TASKS, TaskSuite, TaskSuiteConfig, build_task_suite
from workbench.probes.retrieval import precision_at_1


def small_loader(name):
    from workbench.data import load_dataset

    if name == "synthetic-world":
        return load_dataset("synthetic-world", size=48, image_size=48)
    if name == "digits":
        return load_dataset("digits", size=60, image_size=16)
    raise FileNotFoundError(f"{name} files not installed (test double)")


CFG = dict(
    datasets=("synthetic-world", "digits", "fashion-mnist"),
    n_per_dataset=40,
    mmvp_pairs_per_category=2,
    cache=False,
    skip_missing=True,  # the test loader has no fashion-mnist: it is skipped and reported
)


@pytest.fixture(scope="module")
def suite():
    return build_task_suite(TinyEncoder(), TaskSuiteConfig(**CFG), loader=small_loader)


def test_precision_at_1_hand_made():
    sim = np.array([[0.9, 0.1, 0.3], [0.2, 0.8, 0.85], [0.5, 0.5, 0.1]])
    assert precision_at_1(sim, np.array([0, 1, 0])) == pytest.approx(1 / 3)  # row 2 ties: wrong
    # per-query candidate lists with padding: row 1 only ranks columns 0 and 1 → right
    cand = np.array([[0, 2], [1, 0], [2, -1]])
    assert precision_at_1(sim, np.array([0, 1, 2]), cand) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="among its candidates"):
        precision_at_1(sim, np.array([1, 1, 2]), cand)


def test_suite_reports_used_and_skipped_datasets(suite):
    assert "fashion-mnist" in suite.datasets_skipped
    assert "FileNotFoundError" in suite.datasets_skipped["fashion-mnist"]
    assert suite.datasets_used == ["synthetic-world", "digits", "synthetic-mmvp"]
    assert set(suite.meta_tasks) == set(META_TASKS)
    names = {t.name for t in suite.tasks}
    assert (
        "digits/classification" in names and "digits/retrieval-i2t" not in names
    )  # repeated captions


def test_splits_disjoint_within_each_dataset(suite):
    by_ds: dict[str, tuple[set, set]] = {}
    for t in suite.tasks:
        train, held = by_ds.setdefault(t.dataset, (set(), set()))
        train.update(t.train.keys)
        held.update(t.held_out_keys)
    for ds, (train, held) in by_ds.items():
        assert train and held, ds
        assert not train & held, f"{ds}: items on both sides of the split"


def test_splits_deterministic_and_encoder_independent(suite):
    again = build_task_suite(TinyEncoder(seed=5), TaskSuiteConfig(**CFG), loader=small_loader)
    for a, b in zip(suite.tasks, again.tasks):
        assert a.name == b.name
        assert a.held_out_keys == b.held_out_keys and a.train.keys == b.train.keys
    other = build_task_suite(
        TinyEncoder(), TaskSuiteConfig(**{**CFG, "seed": 1}), loader=small_loader
    )
    assert (
        suite.task("digits/classification").held_out_keys
        != other.task("digits/classification").held_out_keys
    )


def test_evaluate_table_levels_and_means(suite):
    df = suite.evaluate(TinyEncoder())
    tasks = df[df.level == "task"]
    assert set(tasks.task) == {t.name for t in suite.tasks}
    assert tasks.value.between(0, 1).all() and (tasks.metric == "precision@1").all()
    meta = df[df.level == "meta_task"].set_index("meta_task").value
    for m, v in meta.items():
        assert v == pytest.approx(tasks[tasks.meta_task == m].value.mean())
    assert df[df.level == "overall"].value.item() == pytest.approx(meta.mean())


def test_perception_queries_rank_only_their_pair(suite):
    t = suite.task("synthetic-mmvp/perception")
    assert t.candidates.shape[1] == 2 and (t.target[:, None] == t.candidates).any(axis=1).all()
    # statements 2p and 2p+1 of one held-out pair rank the same two images
    assert np.array_equal(t.candidates[0::2], t.candidates[1::2])


def test_evaluate_uses_heads_only_and_guards_changed_towers(suite):
    enc = TinyEncoder()
    base = suite.evaluate(enc)
    with torch.no_grad():
        enc.image_head.weight.mul_(3.0)  # positive rescale: cosines, hence P@1, unchanged
    assert np.allclose(suite.evaluate(enc).value, base.value)
    heads = Heads(enc.image_head, enc.text_head, logit_scale=0.0)  # towers-free: no check
    assert np.allclose(suite.evaluate(heads).value, base.value)
    with pytest.raises(TypeError, match="image_head"):
        suite.evaluate((enc.image_head, enc.text_head))
    with torch.no_grad():
        enc.word.add_(1.0)  # a tower changed: cached features are stale
    with pytest.raises(ValueError, match="towers differ"):
        suite.evaluate(enc)


def test_train_pairs_come_from_train_split_and_dedupe(suite):
    pairs = suite.train_pairs()
    held = {k for t in suite.tasks for k in t.held_out_keys}
    assert not set(pairs.keys) & held
    assert len(set(zip(pairs.keys, pairs.texts))) == len(pairs)
    cls = suite.train_pairs(meta_task="classification")
    assert set(cls.tasks) == {"synthetic-world/classification", "digits/classification"}
    assert cls.image_tower.shape == (len(cls), 16) and cls.text_tower.shape == (len(cls), 16)
    assert all(t.startswith("a photo of a ") for t in cls.texts)


@pytest.mark.slow
def test_trained_heads_beat_random_heads_on_held_out(suite):
    """A few hundred InfoNCE steps on train pairs must lift held-out classification P@1."""
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: thread hand-offs dominate on a busy machine
    enc = TinyEncoder()
    pairs = suite.train_pairs(meta_task="classification")
    before = suite.evaluate(enc, meta_task="classification")
    opt = torch.optim.Adam([*enc.image_head.parameters(), *enc.text_head.parameters()], lr=0.05)
    I, T = torch.from_numpy(pairs.image_tower), torch.from_numpy(pairs.text_tower)
    same = torch.tensor([[a == b for b in pairs.texts] for a in pairs.texts], dtype=torch.float32)
    for _ in range(100):
        zi = torch.nn.functional.normalize(enc.image_head(I), dim=-1)
        zt = torch.nn.functional.normalize(enc.text_head(T), dim=-1)
        logits = 10 * zi @ zt.T
        loss = -(torch.log_softmax(logits, 1) * same / same.sum(1, keepdim=True)).sum(1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    torch.set_num_threads(threads)
    after = suite.evaluate(enc, meta_task="classification", check_towers=False)
    assert (
        after[after.level == "overall"].value.item()
        > before[before.level == "overall"].value.item()
    )


def test_save_load_round_trip(suite, tmp_path):
    path = suite.save(tmp_path / "suite.npz")
    back = TaskSuite.load(path)
    assert (
        back.datasets_used == suite.datasets_used
        and back.datasets_skipped == suite.datasets_skipped
    )
    enc = TinyEncoder()
    assert np.allclose(back.evaluate(enc).value, suite.evaluate(enc).value)


def test_cache_hit_skips_extraction(monkeypatch):
    cfg = TaskSuiteConfig(
        **{**CFG, "cache": True, "meta_tasks": ("classification",), "datasets": ("digits",)}
    )
    first = build_task_suite(TinyEncoder(), cfg, loader=small_loader)
    import workbench.encoders.embed as embed_mod

    monkeypatch.setattr(embed_mod, "embed", lambda *a, **k: pytest.fail("cache missed"))
    second = build_task_suite(TinyEncoder(), cfg, loader=small_loader)
    assert second.tasks[0].held_out_keys == first.tasks[0].held_out_keys


def test_config_validation():
    with pytest.raises(ValueError, match="held_out_fraction"):
        TaskSuiteConfig(held_out_fraction=1.0)
    with pytest.raises(ValueError, match="meta_tasks"):
        TaskSuiteConfig(meta_tasks=("vqa",))


@pytest.mark.slow
def test_real_datasets_join_when_present():
    from pathlib import Path

    if (
        not Path("/usr/share/datasets/fashion-mnist").exists()
        or not Path("/usr/share/openclipart").exists()
    ):
        pytest.skip("Debian's dataset-fashion-mnist / openclipart packages are not installed")
    cfg = TaskSuiteConfig(
        datasets=("fashion-mnist", "openclipart", "coco-captions"),
        n_per_dataset=40,
        mmvp_pairs_per_category=0,
        cache=False,
        skip_missing=True,
    )
    suite = build_task_suite(TinyEncoder(), cfg)
    assert suite.datasets_used == ["fashion-mnist", "openclipart"]
    assert "coco-captions" in suite.datasets_skipped  # no local copy: skipped, with the reason
    names = {t.name for t in suite.tasks}
    assert {
        "fashion-mnist/classification",
        "openclipart/classification",
        "openclipart/retrieval-i2t",
    } <= names
    assert suite.evaluate(TinyEncoder()).value.between(0, 1).all()
