"""The method registry and the Method calling conventions."""

from __future__ import annotations

import pytest
import torch

from workbench import methods
from workbench.methods import BatchOutputs, LossOutput, Method, StepState


def test_names_lists_infonce_and_its_vlm2vec_variant():
    names = methods.names()
    assert "infonce" in names and "infonce/vlm2vec" in names
    assert names == sorted(names)


def test_get_records_full_config_with_defaults():
    m = methods.get("infonce", temperature=0.05)
    assert isinstance(m, Method)
    assert m.config == {
        "temperature": 0.05,
        "symmetric": True,
        "query": "image",
        "caption_positives": False,
    }
    assert m.registry_name == "infonce"


def test_aliases_resolve_to_the_canonical_entry():
    assert methods.get("vlm2vec").registry_name == "infonce/vlm2vec"
    assert methods.get("clip").registry_name == "infonce"


def test_unknown_name_suggests_close_matches():
    with pytest.raises(KeyError, match="infonce"):
        methods.get("infonse")


def test_unknown_argument_lists_accepted_ones():
    with pytest.raises(ValueError, match="Accepted arguments: temperature, symmetric, query"):
        methods.get("infonce", tau=0.1)


def test_every_registered_method_is_callable_both_ways():
    g = torch.Generator().manual_seed(0)
    x = torch.nn.functional.normalize(torch.randn(8, 6, generator=g), dim=-1)
    y = torch.nn.functional.normalize(torch.randn(8, 6, generator=g), dim=-1)
    scale = torch.tensor(10.0)
    for name in methods.names():
        if name.startswith("test-"):  # test doubles other modules register (loop, parts, teachers)
            continue
        m = methods.get(name)
        if getattr(m, "needs_tokens", False):
            # token methods (CDDS, VSE) train on patch/word tokens: pooled features are refused
            # with the missing input named, never silently scored
            with pytest.raises(ValueError, match="token features"):
                m(x, y, scale)
            with pytest.raises(ValueError, match="token features"):
                m(BatchOutputs(x, y, scale, x, y), StepState.standalone())
            continue
        if getattr(
            m, "needs_captions", False
        ):  # ReVision scores captions: it says they are missing
            with pytest.raises(ValueError, match="captions"):
                m(x, y, scale)
            continue
        if getattr(m, "task", "contrastive") != "contrastive":  # Earth-Adapter: pixels + labels
            with pytest.raises(ValueError, match="segmentation"):
                m(x, y, scale)
            continue
        if not getattr(m, "standalone", True):  # needs the loop's stage (ProCLIP): it says so
            with pytest.raises(ValueError, match="stage"):
                m(x, y, scale)
            continue
        if m.needs_towers:  # runs towers/denoisers on pixels: plain features must be refused
            with pytest.raises(ValueError, match="pixels"):
                m(x, y, scale)
            continue
        negatives = None
        if m.needs_hard_negatives:  # DeGLA: the plain call must say what it lacks
            with pytest.raises(ValueError, match="hard negatives"):
                m(x, y, scale)
            negatives = torch.nn.functional.normalize(torch.randn(8, 4, 6, generator=g), dim=-1)
        else:
            direct = m(x, y, scale)
            assert direct.ndim == 0 and torch.isfinite(direct), name
        out = m(BatchOutputs(x, y, scale, x, y, hard_negatives=negatives), StepState.standalone())
        assert isinstance(out, LossOutput), name
        assert torch.isfinite(out.loss), name


def test_base_hooks_default_to_no_ops():
    class Minimal(Method):
        def compute(self, out, state):
            return LossOutput(out.image_features.sum() * 0)

    m = Minimal()
    assert [s.name for s in m.stages(10)] == ["train"] and m.stages(10)[0].steps == 10
    assert m.hard_negative_texts(["a"], [{}]) is None
    assert m.schedule_values(StepState(0, 1)) == {} and m.grad_probe is None
    with pytest.raises(ValueError, match="logit bias"):
        m(torch.zeros(2, 2), torch.zeros(2, 2), 1.0, torch.zeros(()))


def test_step_state_progress():
    s = StepState(step=5, total_steps=20, stage="b", stage_step=1, stage_steps=4)
    assert s.progress == 0.25 and s.stage_progress == 0.25
    assert StepState.standalone().progress == 0.0
