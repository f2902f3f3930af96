"""The segmentation trainer: what trains, the run directory's round trip through
``load_encoder("run:...")``, the frozen-prefix cache, domain adaptation; artifacts and mIoU."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from seg_fakes import TinyConvEncoder

import workbench as wb
from workbench.data.artifacts import ARTIFACTS, TARGET_ARTIFACTS, apply_artifact
from workbench.data.segworld import SEG_CLASSES, SegWorld
from workbench.evals.segmentation import confusion_matrix, iou_per_class, mean_iou
from workbench.experiments.segtrain import (
    SegTraining,
    build_prefix_cache,
    evaluate_domains,
    load_segmenter,
    train_segmenter,
)
from workbench.methods.earth_adapter import class_balance_weights, dice_loss, segmentation_loss
from workbench.train.params import select

TINY = {"min_stride": 8, "fft_layers": 2, "bottleneck": 4, "head_width": 8}
TRAINING = SegTraining(steps=3, batch_size=8, warmup=0, lr=1e-2, da_steps=2)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def source():
    return SegWorld(size=16, image_size=64).arrays()


def _train(tmp_path, source, name="earth_adapter", **kw):
    return train_segmenter(name, TINY, source, TRAINING, seed=0, run_root=tmp_path,
                           encoder="test-tiny-conv", **kw)  # fmt: skip


def test_only_adapter_router_scale_and_head_parameters_train(tmp_path, source):
    frozen = TinyConvEncoder()
    run = _train(tmp_path, source)
    before = dict(frozen.state_dict())
    after = run.encoder.state_dict()
    for key, value in before.items():  # every tower weight and BN statistic untouched
        assert torch.equal(after[key], value), key
    adapter_keys = [k for k in after if k.startswith("earth_adapter.")]
    assert any(".router." in k for k in adapter_keys) and any(
        k.endswith(".scale") for k in adapter_keys
    )
    assert set(after) == set(before) | set(adapter_keys)
    trained = {
        id(p) for p in select(["adapters", "method"], run.encoder, list(run.method.parameters()))
    }
    expected = [*run.encoder.earth_adapter.parameters(), *run.method.head.parameters()]
    assert trained == {id(p) for p in expected}
    assert run.n_trainable == sum(p.numel() for p in expected)
    torch.manual_seed(0)  # the same seed's initial adapters: every one moved
    fresh = TinyConvEncoder()
    wb.methods.get("earth_adapter", **TINY).attach(fresh)
    for (k, p0), p1 in zip(
        fresh.earth_adapter.state_dict().items(), run.encoder.earth_adapter.state_dict().values()
    ):
        assert not torch.equal(p0, p1), k


def test_a_run_round_trips_through_load_encoder_run(tmp_path, source):
    run = _train(tmp_path, source)
    reloaded = wb.load_encoder(f"run:{run.run_dir}")
    assert reloaded.name == f"run:{run.run_dir}" and hasattr(reloaded, "earth_adapter")
    pixels = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(reloaded.image_tower(pixels), run.encoder.image_tower(pixels))
    _encoder, method, segmenter = load_segmenter(run.run_dir)
    with torch.no_grad():
        assert torch.equal(segmenter(pixels), run.segmenter(pixels))
    assert method.adapter_layers_ == (1, 2, 3)


def test_the_prefix_cache_gives_the_same_run(tmp_path, source):
    plain = _train(tmp_path, source)
    probe = TinyConvEncoder()
    m = wb.methods.get("earth_adapter", **TINY)
    m.attach(probe)
    cache = build_prefix_cache(m.segmenter(probe), probe, source, 1,
                               encoder_spec=("test-tiny-conv", {}))  # fmt: skip
    cached = _train(tmp_path, source, source_cache=cache)
    np.testing.assert_allclose([r["loss"] for r in cached.log], [r["loss"] for r in plain.log],
                               rtol=1e-5)  # fmt: skip
    res_plain = evaluate_domains(plain.segmenter, plain.encoder, {"clean": source})
    res_cache = evaluate_domains(cached.segmenter, cached.encoder, {"clean": source},
                                 caches={"clean": cache})  # fmt: skip
    assert res_plain["clean"]["miou"] == pytest.approx(res_cache["clean"]["miou"], abs=1e-6)
    with pytest.raises(ValueError, match="encoder"):
        _train(
            tmp_path, source, source_cache=cache.__class__(1, cache.outputs, ("default", {}), "x")
        )


def test_domain_adaptation_continues_a_source_run_with_pseudo_labels(tmp_path, source):
    dg = _train(tmp_path, source)
    target = SegWorld(size=8, image_size=64, artifact="gaussian", offset=16).arrays()
    da = _train(tmp_path, source, target=target, init_from=dg.run_dir)
    assert len(da.log) == TRAINING.da_steps
    assert all({"source_ce", "self_training"} <= set(r["terms"]) for r in da.log)
    assert all(0.0 <= r["logs"]["confident_fraction"] <= 1.0 for r in da.log)
    assert wb.train.RunDir(da.run_dir).meta["mode"] == "da"
    with pytest.raises(ValueError, match="init_from"):
        _train(tmp_path, source, target=target)


def test_contrastive_methods_are_refused(tmp_path, source):
    with pytest.raises(ValueError, match="not a segmentation method"):
        train_segmenter("infonce", {}, source, TRAINING, seed=0, run_root=tmp_path,
                        encoder="test-tiny-conv")  # fmt: skip


# -- data and scores ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", ARTIFACTS.names())
def test_every_artifact_is_seeded_and_changes_the_scene(name):
    image = np.asarray(SegWorld(size=1, image_size=64).arrays().images[0])
    a = apply_artifact(image, name, seed=0, index=0)
    assert a.shape == image.shape and a.dtype == np.uint8
    assert np.array_equal(a, apply_artifact(image, name, seed=0, index=0))
    if name == "clean":
        assert np.array_equal(a, image)
    else:
        assert np.abs(a.astype(int) - image).mean() > 1.0, name
    assert set(TARGET_ARTIFACTS) == set(ARTIFACTS.names()) - {"clean"}


def test_artifact_inputs_are_checked():
    with pytest.raises(ValueError, match="uint8"):
        apply_artifact(np.zeros((4, 4, 3)), "jpeg")
    with pytest.raises(KeyError, match="stripes"):
        apply_artifact(np.zeros((4, 4, 3), np.uint8), "stripe")


def test_labels_are_the_scene_shapes_and_domains_share_them():
    clean, noisy = SegWorld(size=6, image_size=64), SegWorld(size=6, image_size=64, artifact="haze")
    for i in range(6):
        item, labels = clean.item_and_labels(i)
        assert np.array_equal(labels, noisy.label_map(i))
        shape_class = 1 + SEG_CLASSES[1:-1].index(item.attributes["shape"])
        assert set(np.unique(labels)) <= {0, shape_class, len(SEG_CLASSES) - 1}
        assert (labels == shape_class).any() and item.attributes["fill"] == "solid"


def test_miou_sums_over_the_set_and_skips_absent_classes():
    target = np.array([[0, 0, 1, 1], [0, 0, 0, 0]])
    pred = np.array([[0, 1, 1, 1], [0, 0, 0, 0]])
    conf = confusion_matrix(pred, target, 4)
    iou = iou_per_class(conf)
    assert iou[0] == pytest.approx(5 / 6) and iou[1] == pytest.approx(2 / 3)
    assert np.isnan(iou[2]) and np.isnan(iou[3])
    assert mean_iou(conf) == pytest.approx((5 / 6 + 2 / 3) / 2)
    ignored = confusion_matrix(pred, np.where(target == 1, 255, target), 4)
    assert ignored.sum() == 6
    with pytest.raises(ValueError, match="outside"):
        confusion_matrix(pred, target, 1)


# -- source losses -----------------------------------------------------------------------------
def test_the_default_source_loss_is_plain_cross_entropy():
    g = torch.Generator().manual_seed(0)
    logits, labels = (
        torch.randn(2, 10, 8, 8, generator=g),
        torch.randint(0, 10, (2, 8, 8), generator=g),
    )
    plain = torch.nn.functional.cross_entropy(logits, labels)
    assert torch.equal(segmentation_loss(logits, labels), plain)


def test_dice_is_zero_for_a_perfect_prediction_and_skips_absent_classes():
    labels = torch.zeros(1, 8, 8, dtype=torch.long)
    labels[0, :2, :2] = 3
    perfect = 50.0 * torch.nn.functional.one_hot(labels, 10).permute(0, 3, 1, 2).float()
    assert float(dice_loss(perfect, labels)) == pytest.approx(0.0, abs=1e-6)
    wrong = perfect.roll(1, dims=1)  # every pixel scored as the next class
    assert float(dice_loss(wrong, labels)) > 0.8  # ε = 1 keeps a small class off exactly 1
    ignored = labels.clone()
    ignored[0, 4:] = 255  # unlabelled pixels change nothing where the prediction is right
    assert float(dice_loss(perfect, ignored)) == pytest.approx(0.0, abs=1e-6)
    both = segmentation_loss(wrong, labels, dice_weight=0.5)
    ce = segmentation_loss(wrong, labels)
    assert float(both) == pytest.approx(float(ce) + 0.5 * float(dice_loss(wrong, labels)))


def test_balanced_weights_favour_rare_classes_and_weight_the_cross_entropy():
    labels = torch.zeros(1, 10, 10, dtype=torch.long)
    labels[0, 0, 0] = 1  # 1 % of the pixels
    w = class_balance_weights(labels, 3)
    assert w[1] > 10 * w[0]
    assert w[2] == pytest.approx(1 / np.log(1.02), rel=1e-5)  # class 2 never occurs: the bound
    logits = torch.zeros(1, 3, 10, 10)
    logits[:, 0] = 1.0  # predicts background everywhere
    weighted = segmentation_loss(logits, labels, class_weights=w)
    assert float(weighted) > float(
        segmentation_loss(logits, labels)
    )  # the missed pixel weighs more
    with pytest.raises(ValueError, match="class_weights"):
        segmentation_loss(logits, labels, class_weights=w[:2])
    with pytest.raises(ValueError, match="labels must be in"):
        class_balance_weights(labels + 5, 3)


@pytest.mark.parametrize("loss", ["balanced_ce", "ce+dice"])
def test_a_run_trains_with_each_source_loss_and_records_it(tmp_path, source, loss):
    training = SegTraining(steps=2, batch_size=8, warmup=0, lr=1e-2, loss=loss)
    run = train_segmenter("earth_adapter", TINY, source, training, seed=0, run_root=tmp_path,
                          encoder="test-tiny-conv")  # fmt: skip
    assert np.isfinite([r["loss"] for r in run.log]).all()
    assert wb.train.RunDir(run.run_dir).meta["loss"] == loss
    with pytest.raises(ValueError, match="loss must be one of"):
        SegTraining(loss="focal")


def test_frozen_tower_parameters_never_get_weight_gradients(source):
    encoder = TinyConvEncoder()
    method = wb.methods.get("earth_adapter", **TINY)
    method.attach(encoder)
    for p in [*encoder.earth_adapter.parameters(), *method.head.parameters()]:
        p.requires_grad_(True)
    logits = method.segmenter(encoder)(torch.randn(2, 3, 64, 64))
    segmentation_loss(logits, torch.zeros(2, 64, 64, dtype=torch.long)).backward()
    tower = [(n, p) for n, p in encoder.named_parameters() if not n.startswith("earth_adapter.")]
    assert tower and all(p.grad is None for _, p in tower), [
        n for n, p in tower if p.grad is not None
    ]
    assert all(p.grad is not None for p in encoder.earth_adapter.parameters())


def test_the_study_config_hands_its_placement_head_and_loss_to_every_run():
    from workbench.experiments.earth_adapter import EarthAdapterConfig

    cfg = EarthAdapterConfig()
    for row in ("1 spatial", "3 spatial", "Earth-Adapter"):
        mc = cfg.method_config(row)
        assert mc["adapter_layers"] == list(cfg.adapter_layers) and mc["fft_layers"] == [10]
        assert mc["feature_layers"] == [2, 4, 10, 15]
    assert cfg.method_config("head only")["feature_layers"] == [2, 4, 10, 15]  # the same head
    assert cfg.training().loss == "balanced_ce"
    stride_rule = EarthAdapterConfig(adapter_layers=None, fft_layers=3).method_config(
        "Earth-Adapter"
    )
    assert "adapter_layers" not in stride_rule and stride_rule["fft_layers"] == 3
    with pytest.raises(ValueError, match="adapter_layers must be a sequence"):
        EarthAdapterConfig(adapter_layers="10")
    with pytest.raises(ValueError, match="loss must be one of"):
        EarthAdapterConfig(loss="dice")


def test_on_step_logs_eval_records_at_the_steps_it_answers_and_is_off_by_default(tmp_path, source):
    from workbench.train import RunDir

    calls = []

    def on_step(step, encoder):
        calls.append((step, encoder.training, torch.is_grad_enabled()))
        return {"diag/x": float(step)} if step % 2 == 0 else None

    plain = _train(tmp_path / "a", source)
    watched = _train(tmp_path / "b", source, on_step=on_step)
    assert calls == [(s, False, False) for s in range(TRAINING.steps + 1)]
    records = RunDir(watched.run_dir).records()
    evals = [(r["step"], r["metrics"]) for r in records if r.get("kind") == "eval"]
    assert evals == [(0, {"diag/x": 0.0}), (2, {"diag/x": 2.0})]
    order = [(r["kind"], r["step"]) for r in records if r.get("kind") in ("step", "eval")]
    assert order.index(("eval", 2)) == order.index(("step", 2)) + 1, "logged after its step"
    assert not any(r.get("kind") == "eval" for r in RunDir(plain.run_dir).records())
    assert [r["loss"] for r in plain.log] == [r["loss"] for r in watched.log], "run unchanged"
    with pytest.raises(TypeError, match="on_step"):
        _train(tmp_path / "c", source, on_step=3)
