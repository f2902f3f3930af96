"""ReVision: the caption LM, its tokenizer, the alignment frames, the loop method and the study's
data plumbing (``workbench.methods.revision``, ``workbench.experiments.revision``)."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from workbench import methods
from workbench.methods import BatchOutputs, StepState
from workbench.methods.revision import (
    ALIGNMENTS,
    CaptionTokenizer,
    aligned,
    fit_alignment,
    load_caption_lm,
    prefix_nll,
)
from workbench.probes.realign import C3, ReAlign

CAPTIONS = [
    "a small red circle on the left",
    "two large blue squares at the top",
    "a photo of a sneaker",
    "clip art of a frog",
    "a medium-sized solid orange heart at the top right, with no dot",
    "grinning face",
    "a black and white photo of a bag",
    "a frog",
]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def lm():
    return load_caption_lm("random")


def attached(lm_spec: str = "random", embed_dim: int = 16, seed: int = 0, **config):
    m = methods.get("revision", lm=lm_spec, **config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        m.attach(SimpleNamespace(embed_dim=embed_dim))
    return m


def batch(n: int = 8, d: int = 16, seed: int = 0) -> BatchOutputs:
    g = torch.Generator().manual_seed(seed)
    x = F.normalize(torch.randn(n, d, generator=g), dim=-1)
    y = F.normalize(torch.randn(n, d, generator=g), dim=-1)
    return BatchOutputs(x, y, torch.tensor(10.0), x, y, captions=CAPTIONS[:n])


# -- tokenizer ------------------------------------------------------------------------------
def test_tokenizer_round_trips_known_words_and_marks_unknown_ones():
    tok = CaptionTokenizer.fit(["a red circle", "a blue square", "a red square"])
    ids, mask = tok.encode(["a red square", "a green circle"], max_length=10)
    assert ids[:, 0].eq(tok.BOS).all() and mask.sum(1).tolist() == [5, 5]
    assert ids[0, 4] == tok.EOS and ids[1, 2] == tok.UNK  # "green" is not in the corpus
    assert tok.decode(ids) == ["a red square", "a circle"]


def test_tokenizer_keeps_eos_when_truncating():
    tok = CaptionTokenizer.fit(["one two three four five"])
    ids, _ = tok.encode(["one two three four five"], max_length=4)
    assert ids.shape == (1, 4) and ids[0, -1] == tok.EOS and tok.decode(ids) == ["one two"]


@pytest.mark.parametrize(
    ("captions", "error", "match"),
    [
        (["a cat", ""], ValueError, r"captions\[1\] is an empty caption"),
        (["a cat", "   "], ValueError, r"captions\[1\] is an empty caption"),
        ([], ValueError, "captions is empty"),
        ("a cat", TypeError, "sequence of strings"),
        (["a cat", 3], TypeError, r"captions\[1\] must be a string"),
    ],
)
def test_tokenizer_refuses_bad_captions(lm, captions, error, match):
    with pytest.raises(error, match=match):
        lm.encode(captions)


# -- the LM and Eq. 2 -----------------------------------------------------------------------
def test_prefix_nll_refuses_an_empty_prefix_and_mismatched_shapes(lm):
    ids, mask = lm.encode(CAPTIONS[:2])
    with pytest.raises(ValueError, match="prefix has length 0"):
        prefix_nll(lm, torch.zeros(2, 0, lm.d_model), ids, mask)
    with pytest.raises(ValueError, match="128"):
        prefix_nll(lm, torch.zeros(2, 3, 7), ids, mask)
    with pytest.raises(ValueError, match="3 rows but there are 2 captions"):
        prefix_nll(lm, torch.zeros(3, 2, lm.d_model), ids, mask)
    with pytest.raises(ValueError, match="NaN"):
        prefix_nll(lm, torch.full((2, 2, lm.d_model), float("nan")), ids, mask)


def test_prefix_nll_is_the_mean_nll_of_words_and_eos_only(lm):
    """Padding and BOS are not targets: appending pad columns leaves the loss unchanged, and the
    loss equals a hand-computed mean of -log p over the real targets."""
    ids, mask = lm.encode(CAPTIONS[:3])
    prefix = torch.randn(3, 2, lm.d_model, generator=torch.Generator().manual_seed(0))
    loss = prefix_nll(lm, prefix, ids, mask)
    pad = torch.full((3, 4), CaptionTokenizer.PAD)
    padded = prefix_nll(lm, prefix, torch.cat([ids, pad], 1), torch.cat([mask, pad != pad], 1))
    torch.testing.assert_close(loss, padded, rtol=1e-5, atol=1e-5)
    logits = lm.logits(torch.cat([prefix, lm.embed(ids)], 1))[:, 2:-1]
    logp = logits.log_softmax(-1).gather(-1, ids[:, 1:, None])[..., 0]
    torch.testing.assert_close(loss, -(logp[mask[:, 1:]]).mean(), rtol=1e-5, atol=1e-5)


def test_a_prefix_steers_the_frozen_lm(lm):
    """Different prefixes give different next-token distributions (the prefix is read)."""
    ids, mask = lm.encode(CAPTIONS[:1] * 2)
    p = torch.randn(2, 3, lm.d_model, generator=torch.Generator().manual_seed(1))
    l0 = prefix_nll(lm, p[:1], ids[:1], mask[:1])
    l1 = prefix_nll(lm, p[1:], ids[1:], mask[1:])
    assert not torch.allclose(l0, l1)


def test_generation_is_deterministic_for_a_seed():
    a, b = attached(seed=3), attached(seed=3)
    x = batch().image_features
    first = a.caption(x, "image", max_new_tokens=6)
    assert (
        first == a.caption(x, "image", max_new_tokens=6) == b.caption(x, "image", max_new_tokens=6)
    )
    assert attached(seed=4).caption(x, "image", max_new_tokens=6) != first
    assert len(a.caption(x, "image", num_beams=2, max_new_tokens=6)) == len(x)


def test_blind_generation_needs_a_count(lm):
    assert (
        lm.generate(None, n=3, max_new_tokens=4)
        == [lm.generate(None, n=1, max_new_tokens=4)[0]] * 3
    )
    with pytest.raises(ValueError, match="n must be >= 1"):
        lm.generate(None, max_new_tokens=4)


def test_unknown_lm_spec_and_corrupted_weights_are_refused(tmp_path):
    from workbench.methods.revision.lm import SHIPPED, read_card

    with pytest.raises(ValueError, match="'default' or 'random'"):
        load_caption_lm("big")
    bad = tmp_path / "caption-lm.safetensors"
    bad.write_bytes(SHIPPED.read_bytes()[:-8] + b"\0" * 8)
    (tmp_path / "caption-lm.json").write_text(SHIPPED.with_suffix(".json").read_text())
    with pytest.raises(ValueError, match="corrupted or was edited"):
        load_caption_lm(weights=bad)
    assert read_card(SHIPPED)["sha256"]
    with pytest.raises(FileNotFoundError, match="build_caption_lm"):
        load_caption_lm(weights=tmp_path / "missing.safetensors")


# -- the method -----------------------------------------------------------------------------
def test_stage1_never_sends_gradients_into_the_decoder():
    m = attached(align="none").train()
    lo = m(batch(), StepState.standalone())
    lo.loss.backward()
    lm_params = list(m.lm.parameters())
    assert lm_params and all(not p.requires_grad and p.grad is None for p in lm_params)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.projector.parameters())
    assert not m.lm.training  # frozen: train() keeps the decoder in eval mode


def test_stage1_in_the_loop_changes_the_projector_and_not_the_decoder(tmp_path):
    from test_train_toy import ToyDataset, ToyEncoder, toy_embeddings

    from workbench.train import TrainConfig, train

    enc, data = ToyEncoder(), ToyDataset(48)
    emb = toy_embeddings(enc, data)
    emb.captions = [CAPTIONS[i % len(CAPTIONS)] for i in range(len(emb))]
    before = {k: v.clone() for k, v in load_caption_lm("random").state_dict().items()}
    cfg = TrainConfig(
        method="revision", method_config={"lm": "random", "prefix_len": 2}, encoder=None,
        dataset=None, steps=3, batch_size=8, holdout=0, warmup=1, lr=1e-2, trainable="method",
        data="cached", snapshot_every=0, run_root=str(tmp_path),
    )  # fmt: skip
    run = train(cfg, embeddings=emb, encoder=copy.deepcopy(enc), progress=False)
    after = run.method.lm.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    fresh = methods.get("revision", lm="random", prefix_len=2)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        fresh.attach(enc)
    assert not all(
        torch.equal(a, b)
        for a, b in zip(
            fresh.projector.state_dict().values(), run.method.projector.state_dict().values()
        )
    )


def test_text_stage_never_reads_image_features():
    m = attached(align="none").eval()
    out = batch()
    other = BatchOutputs(
        -out.image_features, out.text_features, out.logit_scale, captions=out.captions
    )
    torch.testing.assert_close(
        m(out, StepState.standalone()).loss, m(other, StepState.standalone()).loss
    )
    img = attached(source="image").eval()
    assert not torch.allclose(
        img(out, StepState.standalone()).loss, img(other, StepState.standalone()).loss
    )


def test_plain_feature_calls_and_empty_captions_are_refused():
    m = attached()
    x = batch().image_features
    with pytest.raises(ValueError, match="captions"):
        m(x, x, torch.tensor(10.0))
    bad = batch()
    bad.captions = [*CAPTIONS[:7], ""]
    with pytest.raises(ValueError, match=r"captions\[7\] is an empty caption"):
        m(bad, StepState.standalone())
    with pytest.raises(ValueError, match="not attached"):
        methods.get("revision")(batch(), StepState.standalone())


@pytest.mark.parametrize(
    ("config", "match"),
    [
        ({"prefix_len": 0}, "prefix_len must be an int >= 1"),
        ({"source": "audio"}, "source must be"),
        ({"align": "whiten"}, "alignment kind must be one of"),
        ({"align": "full"}, "needs its fitted statistics"),
        ({"align": "none", "alignment": {"kind": "none"}}, "takes no fitted statistics"),
        ({"hidden": 0}, "hidden must be"),
    ],
)
def test_bad_method_configs_name_the_problem(config, match):
    with pytest.raises(ValueError, match=match):
        methods.get("revision", **config)


def test_alignment_of_another_width_is_refused_at_attach():
    rng = np.random.default_rng(0)
    stats = fit_alignment("full", rng.normal(size=(20, 8)), rng.normal(size=(20, 8)))
    m = methods.get("revision", align="full", alignment=stats, lm="random")
    with pytest.raises(ValueError, match="8-d but the encoder embeds in 16-d"):
        m.attach(SimpleNamespace(embed_dim=16))


# -- alignment frames -----------------------------------------------------------------------
def _sets(seed: int = 0, d: int = 16):
    rng = np.random.default_rng(seed)
    return (
        rng.normal(size=(300, d)) + 2.0,
        rng.normal(size=(200, d)) - 1.0,
        rng.normal(size=(50, d)) - 1.0,
    )


@pytest.mark.parametrize("kind", ["anchor", "anchor+trace", "full"])
def test_torch_frames_equal_the_realign_estimator(kind):
    images, texts, held = _sets()
    stats = fit_alignment(kind, images, texts)
    m = methods.get("revision", align=kind, alignment=stats)
    x = F.normalize(torch.tensor(held, dtype=torch.float32), dim=-1)
    ours = aligned(x, "text", kind, m._stats())
    ref = ReAlign(steps=kind).fit(images, texts).transform(held)
    np.testing.assert_allclose(ours.numpy(), ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(aligned(x, "image", kind, m._stats()), x)  # images unchanged


def test_c3_frame_centres_both_sides_and_noises_text_only_when_asked():
    images, texts, held = _sets()
    stats = fit_alignment("c3", images, texts, c3_sigma=0.1)
    m = methods.get("revision", align="c3", alignment=stats)
    c3 = C3(sigma=0.0).fit(images, texts)
    x = F.normalize(torch.tensor(held, dtype=torch.float32), dim=-1)
    np.testing.assert_allclose(
        aligned(x, "text", "c3", m._stats()).numpy(), c3.transform(held), atol=1e-5
    )
    np.testing.assert_allclose(
        aligned(x, "image", "c3", m._stats()).numpy(), c3.transform_image(held), atol=1e-5
    )
    noisy = aligned(x, "text", "c3", m._stats(), noise=True) - aligned(x, "text", "c3", m._stats())
    assert noisy.std().item() == pytest.approx(0.1, rel=0.2)


def test_alignment_statistics_use_no_pairing():
    """The fit forms per-modality moments only: shuffling the image rows and the text rows
    independently (destroying any pairing) leaves every statistic unchanged."""
    images, texts, _ = _sets(1)
    rng = np.random.default_rng(5)
    for kind in ALIGNMENTS[1:]:
        a = fit_alignment(kind, images, texts)
        b = fit_alignment(
            kind, images[rng.permutation(len(images))], texts[rng.permutation(len(texts))]
        )
        assert a["kind"] == b["kind"] == kind
        for key in set(a) - {"kind"}:
            np.testing.assert_allclose(
                a[key], b[key], rtol=1e-10, atol=1e-12, err_msg=f"{kind}: {key}"
            )
    assert fit_alignment("none", images, texts) is None


def test_the_study_fits_statistics_on_disjoint_items(monkeypatch):
    """No pool row gives both its image and its caption to the fit: image row i and text row i
    carry i in their first coordinate, so the arrays handed to the fit reveal which rows they hold."""
    import workbench.methods.revision as rev
    from workbench.experiments import revision as study

    n = 40
    idx = np.arange(n, dtype=np.float64)
    emb = np.column_stack([idx, np.ones((n, 3))])
    seen = {}

    def spy(kind, image_emb, text_emb, c3_sigma=0.02):
        seen["image"], seen["text"] = (
            set(image_emb[:, 0].astype(int)),
            set(text_emb[:, 0].astype(int)),
        )

    monkeypatch.setattr(rev, "fit_alignment", spy)

    class Pool(SimpleNamespace):
        def __len__(self):
            return n

    study.fit_row_alignment(
        study.REVISION_ROWS["ReAlign"], Pool(image=emb, text=emb), seed=0, c3_sigma=0.0
    )
    assert seen["image"].isdisjoint(seen["text"]) and len(seen["image"] | seen["text"]) == n
    a, b = study.unpaired_rows(n, seed=1)
    assert set(a).isdisjoint(b) and not np.array_equal(a, study.unpaired_rows(n, seed=2)[0])
    with pytest.raises(ValueError, match="n >= 4"):
        study.unpaired_rows(3, seed=0)


def test_stage2_subsets_are_nested_per_seed():
    from workbench.experiments.revision import stage2_rows

    s10, s30, s100 = (set(stage2_rows(200, f, 0)) for f in (0.1, 0.3, 1.0))
    assert len(s10) == 20 and s10 <= s30 <= s100 and len(s100) == 200
    c10, c100 = set(stage2_rows(200, 0.1, 0, total=50)), set(stage2_rows(200, 1.0, 0, total=50))
    assert (
        len(c10) == 5 and len(c100) == 50 and c10 <= c100 and max(c100) > 50
    )  # spread over the pool
    with pytest.raises(ValueError, match="fraction"):
        stage2_rows(200, 0.0, 0)


# -- study config ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"rows": "ReAlign"}, "bare string"),
        ({"rows": ("ReAlign", "Whitened")}, "unknown rows"),
        ({"stage2_from": ("Blind",)}, "cannot start from Blind"),
        ({"fractions": (0.0, 1.5)}, r"fractions must lie in \[0, 1\]"),
        ({"prefix_len": 0}, "prefix_len must be an int >= 1"),
        ({"seeds": ()}, "seeds must be distinct"),
        ({"train_mixture": ("openclipart", "train", None)}, "triples"),
        ({"retrieval_gallery": 10_000}, "retrieval_gallery"),
        ({"num_beams": 0}, "num_beams"),
    ],
)
def test_study_config_refuses_bad_parameters(kwargs, match):
    from workbench.experiments.revision import ReVisionConfig

    with pytest.raises(ValueError, match=match):
        ReVisionConfig(**kwargs)


# -- captioning scores ----------------------------------------------------------------------
def test_caption_scores_rank_right_captions_above_shuffled_ones():
    from workbench.evals.captioning import caption_scores

    refs = [[c] for c in CAPTIONS]
    right = caption_scores(CAPTIONS, refs, metrics=("CIDEr", "BLEU-1", "BLEU-4"))
    wrong = caption_scores(CAPTIONS[1:] + CAPTIONS[:1], refs, metrics=("CIDEr", "BLEU-1", "BLEU-4"))
    assert right["BLEU-1"] == pytest.approx(1.0, abs=1e-6) and right["CIDEr"] > 5 * wrong["CIDEr"]
    assert caption_scores([""] * 8, refs)["CIDEr"] == 0.0  # an empty candidate scores, not fails
    with pytest.raises(ValueError, match="8 candidates but 7"):
        caption_scores(CAPTIONS, refs[:7])
    with pytest.raises(ValueError, match="unknown metrics"):
        caption_scores(CAPTIONS, refs, metrics=("SPICE",))
    with pytest.raises(ValueError, match=r"references\[0\] holds no words"):
        caption_scores(CAPTIONS[:1], [["!!"]])


def test_caption_retrieval_finds_own_images_when_captions_match():
    from workbench.evals.captioning import caption_retrieval

    class Echo:  # text embedding = the image embedding of the same index
        def __init__(self, X):
            self.X, self.n = X, 0

        def encode_texts(self, texts, normalize=True):
            self.n += len(texts)
            return torch.tensor(np.stack([self.X[int(t.split()[-1])] for t in texts]))

    X = F.normalize(torch.randn(30, 8, generator=torch.Generator().manual_seed(0)), dim=-1).numpy()
    enc = Echo(X)
    caps = [f"item {i}" for i in range(30)]
    cache: dict = {}
    r = caption_retrieval(enc, caps, X, gallery=10, cache=cache)
    assert r["R@1"] == 1.0 and r["chance@1"] == 0.1
    caption_retrieval(enc, caps, X, gallery=10, cache=cache)
    assert enc.n == 30  # the second call reused the cache
    shuffled = caption_retrieval(enc, caps[1:] + caps[:1], X, gallery=10, cache=cache)
    assert shuffled["R@1"] < 0.5
    with pytest.raises(ValueError, match="gallery"):
        caption_retrieval(enc, caps, X, gallery=1)


def test_auto_start_heads_keep_shipped_heads_and_fit_random_ones():
    """``start_heads="auto"``: heads with a card (the pretrained default) are kept; seeded random
    heads (no card) get the InfoNCE stand-in; the explicit choices override."""
    from workbench.experiments.revision import ReVisionConfig, heads_kept

    shipped, random_heads = (
        SimpleNamespace(card={"name": "default-heads"}),
        SimpleNamespace(card=None),
    )
    auto = ReVisionConfig()
    assert (
        auto.start_heads == "auto"
        and heads_kept(auto, shipped)
        and not heads_kept(auto, random_heads)
    )
    assert heads_kept(ReVisionConfig(start_heads="as-loaded"), random_heads)
    assert not heads_kept(ReVisionConfig(start_heads="infonce"), shipped)
    with pytest.raises(ValueError, match="start_heads must be"):
        ReVisionConfig(start_heads="pretrained")


def test_every_row_label_is_a_valid_run_name():
    """Row labels such as ``Anchor+Trace`` hold characters the loop refuses in run names: the
    study maps them (the first default run crashed on ``+`` at its fifth row)."""
    from workbench.experiments.revision import REVISION_ROWS
    from workbench.experiments.revision_runs import run_name
    from workbench.train import TrainConfig

    for label in REVISION_ROWS:
        for name in (f"{label}-s0", f"{label}-S2-0.3-s2"):
            TrainConfig(method="infonce", encoder=None, dataset=None, run_name=run_name(name))
    with pytest.raises(ValueError, match="run_name"):
        TrainConfig(method="infonce", encoder=None, dataset=None, run_name="Anchor+Trace-s0")
