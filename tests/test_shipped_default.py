"""The shipped pretrained default: it loads, it is checked, and it still measures what its card says."""

from __future__ import annotations

import shutil

import pytest
import torch

import workbench as wb
from workbench.encoders.heads import tower_fingerprint
from workbench.encoders.shipped import CARD_JSON, HEADS_FILE, load_card, sha256_of


def test_shipped_weights_match_their_card_and_stay_small():
    card = load_card()
    assert card["sha256"] == sha256_of(HEADS_FILE)
    assert HEADS_FILE.stat().st_size <= 10 * 2**20  # the issue's ≤ 10 MB
    assert card["architecture"]["head"] == "mlp"
    assert set(card["training_rows"]) >= {"openclipart", "fashion-mnist", "synthetic-world"}
    assert "digits" not in card["training_rows"]  # kept out entirely: a true zero-shot figure


def test_default_is_the_pretrained_model_and_random_heads_stay_available():
    enc = wb.load_encoder("default")
    assert enc.config.heads == "pretrained" and enc.card["sha256"] == load_card()["sha256"]
    rnd = wb.load_encoder("default", heads="random")
    assert isinstance(rnd.image_head, torch.nn.Linear)  # today's seeded linear heads
    assert not isinstance(enc.image_head, torch.nn.Linear)
    # the learned temperature is loaded, not CLIP's initial 1/0.07
    assert float(enc.logit_scale.detach().exp()) != pytest.approx(1 / 0.07, rel=1e-3)
    assert tower_fingerprint(enc) == tower_fingerprint(rnd)


def test_a_damaged_weights_file_is_refused_naming_both_hashes(tmp_path):
    bad = tmp_path / "default_heads.safetensors"
    shutil.copyfile(HEADS_FILE, bad)
    data = bytearray(bad.read_bytes())
    data[-1] ^= 0xFF  # one flipped byte in the last tensor
    bad.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="sha256") as err:
        wb.load_encoder("default", weights=str(bad))
    assert sha256_of(bad) in str(err.value) and load_card()["sha256"] in str(err.value)


def test_a_missing_weights_file_names_the_way_out(tmp_path):
    with pytest.raises(FileNotFoundError, match="heads='random'"):
        wb.load_encoder("default", weights=str(tmp_path / "nope.safetensors"))


def test_the_shipped_heads_refuse_a_config_they_were_not_trained_for():
    with pytest.raises(ValueError, match="mlp_hidden"):
        wb.load_encoder("default", mlp_hidden=512)
    with pytest.raises(ValueError, match="pretrained=False"):
        wb.load_encoder("default", heads="pretrained", pretrained=False)
    # random towers get random heads by default: the shipped heads sit on the pretrained towers
    assert wb.load_encoder("default", pretrained=False).config.heads == "random"


@pytest.mark.slow
def test_shipped_weights_still_measure_their_card_on_held_out_data():
    """Re-evaluate the shipped model on the card's small held-out sets (the large ones, openclipart
    and fashion-mnist, take minutes cold and run in the recipe notebook). The evaluation is
    deterministic, so anything beyond BLAS rounding means the weights, the data or a probe
    changed."""
    from workbench.evals.card import CardEvalConfig, heldout_card_metrics

    card = load_card(CARD_JSON)
    cfg = CardEvalConfig(**{**card["eval_config"], "datasets": ("digits", "skimage-photos")})
    got = heldout_card_metrics(wb.load_encoder("default"), cfg)
    for name in ("digits", "skimage-photos"):
        assert got[name]["n"] == card["metrics"][name]["n"]
        assert got[name]["top1"] == pytest.approx(card["metrics"][name]["top1"], abs=1e-3), name
