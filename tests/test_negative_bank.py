"""DeGLA's hard negatives (data.negative_bank, data.pos_negatives), the held-out benchmarks that
must not grade them (evals.compositional_sets) and the text-tower cache they are embedded with."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from test_train_toy import ToyEncoder

from workbench.data import synthetic as sw
from workbench.data.negative_bank import (
    DEGLA_KINDS,
    NegativeBank,
    NegativeConfig,
    build_negative_bank,
    vocabulary_half,
)
from workbench.data.pos_negatives import (
    PosVocabulary,
    add_negatives,
    order_perturbations,
    parse_captions,
    pos_negatives,
)
from workbench.encoders.text_cache import TextTowerCache
from workbench.evals.compositional_sets import HeldOutConfig, aro_order, sugarcrepe_style

REAL = [
    "A man riding a brown horse next to a small red car.",
    "Happy cartoon dog with a blue ball",
    "two old women and a young girl on a wooden bench",
    "Bullet Hole",
]


def _world(n: int = 24, seed: int = 0, split: str = "train"):
    ds = sw.SyntheticWorld(size=n, seed=seed, split=split)
    attrs = [ds.attributes(i) for i in range(n)]
    return (
        [sw.caption(a) for a in attrs],
        attrs,
        [[sw.caption(a), sw.short_caption(a)] for a in attrs],
    )


def _words(text: str) -> list[str]:
    return text.replace(",", " ").replace(".", " ").lower().split()


def _single_edits(attrs: dict, half: str) -> set[str]:
    """Captions of every one-factor change of ``attrs`` to a value in vocabulary ``half``."""
    out = set()
    for factor, values in sw.FACTORS.items():
        for v in values:
            if v != attrs[factor] and attrs[factor] is not None and vocabulary_half(str(v)) == half:
                out.add(sw.caption({**attrs, factor: v}))
    return out


def test_bank_gives_k_negatives_from_two_merged_kinds_never_a_positive():
    captions, attrs, positives = _world()
    bank, skipped = build_negative_bank(captions, positives=positives, attributes=attrs)
    assert skipped == [] and len(bank) == len(set(captions))
    for cap, pos in zip(captions, positives):
        negs, kinds = bank.negatives[cap], bank.kinds[cap]
        assert len(negs) == 4 and set(kinds) <= set(DEGLA_KINDS)
        assert len(set(kinds)) == 2  # "two subtypes merged" where both have ≥ 2 candidates
        folded = {p.casefold() for p in pos}
        assert not any(n.casefold() in folded for n in negs)


def test_a_negative_equal_to_another_positive_of_the_image_is_never_emitted():
    caption = "a red car and a blue bus"
    swapped = "a blue car and a red bus"  # what swap_attributes makes: here a true caption too
    cfg = NegativeConfig(text_rules="words", kinds=("swap_attributes", "replace_noun"))
    free, _ = build_negative_bank([caption], config=cfg)
    assert swapped in free.negatives[caption]
    bank, _ = build_negative_bank([caption, caption], positives=[[], [swapped]], config=cfg)
    assert swapped not in bank.negatives[caption]  # another row of the same caption names it


def test_bank_is_deterministic_for_a_seed_and_independent_of_order():
    captions, attrs, positives = _world()
    a, _ = build_negative_bank(captions, positives=positives, attributes=attrs)
    b, _ = build_negative_bank(captions[::-1], positives=positives[::-1], attributes=attrs[::-1])
    assert a.negatives == b.negatives  # per-caption seeding: batch order does not matter
    c, _ = build_negative_bank(
        captions, positives=positives, attributes=attrs, config=NegativeConfig(seed=5)
    )
    assert c.negatives != a.negatives


def test_bank_is_cached_on_disk_and_loads_frozen(tmp_path, monkeypatch):
    captions, attrs, positives = _world(8)
    kw = {"positives": positives, "attributes": attrs, "cache_dir": tmp_path}
    first, _ = build_negative_bank(captions, **kw)
    assert first.path is not None and first.path.parent == tmp_path

    def boom(*a, **k):
        raise AssertionError("regenerated instead of reading the cache")

    monkeypatch.setattr(NegativeBank, "add", boom)
    again, _ = build_negative_bank(captions, **kw)
    assert again.negatives == first.negatives and again.path == first.path
    loaded = NegativeBank.load(first.path)
    assert loaded.lookup(captions[:2], attrs[:2]) == [first.negatives[c] for c in captions[:2]]
    with pytest.raises(ValueError, match="not in the bank"):
        loaded.lookup(["a caption it never saw"])
    with pytest.raises(FileNotFoundError, match="build_negative_bank"):
        NegativeBank.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text(json.dumps({"format": 99}))
    with pytest.raises(ValueError, match="not a negative bank"):
        NegativeBank.load(tmp_path / "bad.json")


def test_replacements_come_only_from_the_generators_vocabulary_half():
    captions, attrs, positives = _world(40)
    for half in ("train", "eval"):
        bank, _ = build_negative_bank(
            captions, positives=positives, attributes=attrs, config=NegativeConfig(vocabulary=half)
        )
        replaced = 0
        for cap, a in zip(captions, attrs):
            allowed = _single_edits(a, half)
            for kind, neg in zip(bank.kinds[cap], bank.negatives[cap]):
                if kind.startswith("replace"):
                    assert neg in allowed, (half, neg)
                    replaced += 1
        assert replaced > len(captions)


def test_config_and_inputs_are_validated():
    with pytest.raises(TypeError, match="kinds must be a sequence"):
        NegativeConfig(kinds="reorder")
    with pytest.raises(ValueError, match="kinds_per_caption"):
        NegativeConfig(k=2, kinds_per_caption=3)
    with pytest.raises(ValueError, match="vocabulary"):
        NegativeConfig(vocabulary="test")
    with pytest.raises(ValueError, match="no captions"):
        build_negative_bank([])
    with pytest.raises(ValueError, match="no hard negative can be made"):
        build_negative_bank(["!!!"], config=NegativeConfig(text_rules="words"))
    bank, skipped = build_negative_bank(
        ["!!!", "a red car"], config=NegativeConfig(text_rules="words"), skip_empty=True
    )
    assert skipped == [0] and "a red car" in bank


def test_part_of_speech_rules_on_real_captions():
    parsed = parse_captions(REAL)
    vocab = PosVocabulary.from_parsed(parsed)
    assert {"horse", "dog", "bench"} <= set(vocab.nouns) and "brown" in vocab.adjectives
    found = pos_negatives(parsed[0], vocab, DEGLA_KINDS, np.random.default_rng(0))
    assert "A horse riding a brown man next to a small red car." in found["swap_nouns"]
    assert "A man riding a small horse next to a brown red car." in found["swap_attributes"]
    assert any(n.startswith("A small red car riding") for n in found["reorder"])
    corpus_words = set(vocab.adjectives) | {f for forms in vocab.nouns.values() for f in forms}
    for kind in ("replace_attribute", "replace_noun"):
        assert found[kind]
        for neg in found[kind]:  # one word replaced, by a word of the corpus
            old, new = _words(REAL[0]), _words(neg)
            changed = [b for a, b in zip(old, new) if a != b]
            assert len(old) == len(new) and len(changed) == 1 and changed[0] in corpus_words
    women = pos_negatives(parsed[2], vocab, ("swap_nouns",), np.random.default_rng(0))
    assert "two old girls and a young woman on a wooden bench" in women["swap_nouns"]  # number kept
    title = pos_negatives(parsed[3], vocab, ("reorder",), np.random.default_rng(0))
    assert title["reorder"] == ["Hole bullet"]  # case follows the sentence, not the word


def test_add_and_word_order_perturbations():
    parsed = parse_captions(REAL[:1])[0]
    vocab = PosVocabulary.from_parsed(parse_captions(REAL))
    adds = add_negatives(parsed, vocab, np.random.default_rng(0))
    (added,) = adds["add_object"]  # "A man and a <noun> riding ...": an object not in the image
    assert added.startswith("A man and a") and added.endswith(
        "riding a brown horse next to a small red car."
    )
    (adjective,) = adds["add_attribute"]
    assert len(_words(adjective)) == len(_words(REAL[0])) + 1
    orders = order_perturbations(parsed, np.random.default_rng(0), ("within_trigrams", "nouns_adj"))
    for kind, negs in orders.items():
        assert len(negs) == 2, kind
        for neg in negs:
            assert sorted(_words(neg)) == sorted(_words(REAL[0])) and neg != REAL[0]
            assert neg.endswith(".")  # punctuation stays where it was


def test_held_out_sets_differ_from_the_training_generator():
    captions, attrs, positives = _world(60, seed=1, split="test")
    sugar = sugarcrepe_style(captions, attrs, positives=positives)
    assert {"replace-att", "replace-obj", "add-att", "add-obj"} <= set(sugar.kinds)
    for owner, kind, text in zip(sugar.owner, sugar.kinds, sugar.texts):
        cap = captions[owner]
        assert text.casefold() not in {p.casefold() for p in positives[owner]}
        if kind.startswith("replace"):  # held-out half: never a training replacement word
            assert text in _single_edits(attrs[owner], "eval"), (kind, text, cap)
    per_item = np.bincount(sugar.owner, minlength=len(captions))
    assert per_item.max() <= 6  # one negative per sub-kind
    order = aro_order(captions, positives=positives, config=HeldOutConfig())
    assert np.all(np.bincount(order.owner) == 4) and set(order.kinds) == {"order"}
    real = sugarcrepe_style(REAL, corpus=[*REAL, "a green apple and a purple cat"])
    assert {"swap-obj", "add-obj"} <= set(real.kinds)


def test_text_tower_cache_memoises_and_persists(tmp_path):
    enc = ToyEncoder()
    cache = TextTowerCache(enc, root=tmp_path)
    a = cache(["a red cube", "a blue ball", "a red cube"])
    torch.testing.assert_close(a, enc.text_features(["a red cube", "a blue ball", "a red cube"]))
    assert (cache.misses, cache.hits) == (2, 1)
    again = TextTowerCache(enc, root=tmp_path)
    assert torch.equal(again(["a blue ball"]), a[1:2]) and again.misses == 0  # read from disk
    other = ToyEncoder(seed=1)  # another tower: its own rows
    fresh = TextTowerCache(other, root=tmp_path)
    fresh(["a blue ball"])
    assert fresh.misses == 1
    with pytest.raises(ValueError, match="list of strings"):
        cache("a red cube")
    with pytest.raises(ValueError, match="empty"):
        cache([])
