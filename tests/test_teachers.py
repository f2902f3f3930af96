"""EMATeacher: exact decay arithmetic, no gradients, frozen mode, and exact resume in the loop."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from test_train_toy import ToyDataset, ToyEncoder
from torch import nn

from workbench.methods import METHODS, LossOutput, Method
from workbench.methods.feature_loss import info_nce
from workbench.methods.teachers import EMATeacher
from workbench.train import RunDir, TrainConfig, train


class _Crash(Exception):
    pass


def _tiny(weight: float, mean: float) -> nn.Module:
    m = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    with torch.no_grad():
        m[0].weight.fill_(weight)
        m[0].bias.fill_(weight)
        m[1].running_mean.fill_(mean)
    return m


# -- the helper ----------------------------------------------------------------------------------
def test_decay_arithmetic_is_exact_and_buffers_are_copied():
    student = _tiny(1.0, 0.0)
    teacher = EMATeacher(student, decay=0.75)
    with torch.no_grad():
        student[0].weight.fill_(3.0)
        student[0].bias.fill_(3.0)
        student[1].running_mean.fill_(5.0)
    teacher.update(student)  # 0.75·1 + 0.25·3 (dyadic: exact in float32)
    assert torch.equal(teacher.module[0].weight, torch.full((2, 2), 1.5))
    assert torch.equal(teacher.module[0].bias, torch.full((2,), 1.5))
    assert torch.equal(teacher.module[1].running_mean, torch.full((2,), 5.0))
    teacher.update(student)  # 0.75·1.5 + 0.25·3
    assert torch.equal(teacher.module[0].weight, torch.full((2, 2), 1.875))
    teacher.update(student, decay=0.5)  # a scheduled α for this step: 0.5·1.875 + 0.5·3
    assert torch.equal(teacher.module[0].weight, torch.full((2, 2), 2.4375))
    assert int(teacher.updates) == 3


def test_unchanged_parameters_stay_bit_identical():
    g = torch.Generator().manual_seed(0)
    student = nn.Linear(64, 64)
    with torch.no_grad():
        student.weight.copy_(torch.randn(64, 64, generator=g))
    teacher = EMATeacher(student, decay=0.999)
    for _ in range(50):
        teacher.update(student)  # α·θ + (1-α)·θ would drift by rounding; lerp does not
    assert torch.equal(teacher.module.weight, student.weight)


def test_frozen_mode_never_moves():
    student = _tiny(1.0, 0.0)
    teacher = EMATeacher(student, mode="frozen")
    with torch.no_grad():
        student[0].weight.fill_(3.0)
    teacher.update(student)
    assert torch.equal(teacher.module[0].weight, torch.ones(2, 2)) and int(teacher.updates) == 0


def test_teacher_gets_no_gradient_and_stays_in_eval_mode():
    student = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5))
    student[0].weight.grad = torch.ones(4, 4)  # a stale gradient must not be copied along
    holder = nn.Module()
    holder.teacher = EMATeacher(student)
    holder.train()
    assert not holder.teacher.module.training and not holder.teacher.module[1].training
    x = torch.randn(3, 4, requires_grad=True)
    holder.teacher(x).sum().backward()
    assert all(p.grad is None and not p.requires_grad for p in holder.teacher.parameters())
    assert x.grad is not None  # gradients still flow *through* the teacher to its input
    assert torch.equal(holder.teacher(x), holder.teacher(x))  # no dropout


def test_update_refuses_a_student_of_another_shape_and_bad_decay():
    teacher = EMATeacher(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="differ from the teacher"):
        teacher.update(nn.Sequential(nn.Linear(2, 2)))
    with pytest.raises(ValueError, match="decay must be in"):
        EMATeacher(nn.Linear(2, 2), decay=1.5)
    with pytest.raises(ValueError, match="mode must be"):
        EMATeacher(nn.Linear(2, 2), mode="swa")


# -- inside a method, inside the loop ------------------------------------------------------------
class _Distill(Method):
    """InfoNCE plus the distance of the student's image embeddings to an EMA (or frozen)
    teacher of the whole encoder — a toy ProCLIP/DeGLA. The teacher is called with grad
    enabled on purpose: its parameters must still get none."""

    name = "test-ema-distill"

    def __init__(self, decay: float = 0.5, teacher: str = "ema") -> None:
        super().__init__()
        self.decay, self.teacher_mode = decay, teacher

    def attach(self, encoder):
        self.teacher = EMATeacher(encoder, decay=self.decay, mode=self.teacher_mode)

    def compute(self, out, state):
        nce = info_nce(out.image_features, out.text_features, out.logit_scale)
        t = self.teacher.module
        tower = t.image_tower(out.pixels) if out.pixels is not None else out.image_tower
        target = F.normalize(t.image_head(tower), dim=-1)
        distill = (out.image_features - target).square().sum(-1).mean()
        return LossOutput(nce + distill, {"infonce": nce, "distill": distill})

    def on_step_end(self, encoder, state):
        self.teacher.update(encoder)


@pytest.fixture(scope="module", autouse=True)
def _register():
    if "test-ema-distill" not in METHODS:
        METHODS.register("test-ema-distill")(_Distill)


def _config(root, **kw) -> TrainConfig:
    base = dict(
        method="test-ema-distill", encoder=None, dataset=None, steps=6, batch_size=16,
        holdout=16, warmup=2, lr=1e-2, snapshot_every=0, eval_every=2, checkpoint_every=2,
        trainable="image_blocks:1+heads", data="items", run_root=str(root),
    )  # fmt: skip
    base.update(kw)
    return TrainConfig(**base)


def _crash_at(step_to_crash: int | None):
    def hook(encoder, step):
        if step == step_to_crash:
            raise _Crash(step)
        return {}

    return hook


def test_resume_with_an_ema_teacher_is_bit_identical(tmp_path):
    enc, data = ToyEncoder(), ToyDataset(80)
    config = _config(tmp_path)
    full = train(config, dataset=data, encoder=copy.deepcopy(enc), progress=False)
    with pytest.raises(_Crash):
        train(
            config,
            dataset=data,
            encoder=copy.deepcopy(enc),
            eval_hooks=[_crash_at(4)],
            progress=False,
        )
    (crashed,) = [p for p in tmp_path.iterdir() if p != full.run_dir]
    resumed = train(resume=crashed, dataset=data, encoder=copy.deepcopy(enc), progress=False)
    teacher_full, teacher_res = full.method.state_dict(), resumed.method.state_dict()
    assert teacher_full.keys() == teacher_res.keys() and "teacher.updates" in teacher_full
    for name, value in teacher_full.items():
        assert torch.equal(value, teacher_res[name]), name
    assert int(resumed.method.teacher.updates) == config.steps
    for (name, a), (_, b) in zip(
        full.encoder.state_dict().items(), resumed.encoder.state_dict().items()
    ):
        assert torch.equal(a, b), name
    log_full, log_res = RunDir(full.run_dir).log(), RunDir(crashed).log()
    assert [r["terms"] for r in log_full] == [r["terms"] for r in log_res]
    # the teacher moved towards the student, but lags behind it
    block = "image_blocks.2.fc.weight"
    start, student = dict(enc.named_parameters())[block], dict(full.encoder.named_parameters())
    teacher = dict(full.method.teacher.module.named_parameters())[block]
    assert not torch.equal(teacher, start) and not torch.equal(teacher, student[block])


def test_frozen_teacher_of_an_encoder_with_lora_is_copied_but_never_trained(tmp_path):
    enc, data = ToyEncoder(), ToyDataset(80)
    config = _config(
        tmp_path, trainable="heads+lora:r=2,alpha=4,targets=fc", method_config={"teacher": "frozen"}
    )
    run = train(config, dataset=data, encoder=copy.deepcopy(enc), progress=False)
    teacher = run.method.teacher.module
    lora = {n: p for n, p in teacher.named_parameters() if "lora_" in n}
    assert lora, "the deep copy carries the LoRA adapters injected before attach"
    assert all(not p.requires_grad for p in teacher.parameters())
    assert all(torch.equal(p, torch.zeros_like(p)) for n, p in lora.items() if "lora_B" in n)
    student_b = [p for n, p in run.encoder.named_parameters() if "lora_B" in n]
    assert any(p.abs().sum() > 0 for p in student_b)  # the student's adapters did train
    trained = [p for n, p in run.encoder.named_parameters() if "lora_" in n or "_head" in n]
    assert RunDir(run.run_dir).meta["n_trainable"] == sum(p.numel() for p in trained)
    ckpt = load_file(str(RunDir(run.run_dir).checkpoint_path() / "model.safetensors"))
    assert any(k.startswith("method.teacher.module.") for k in ckpt)  # checkpointed with the run
    assert not any(k.startswith("encoder.") and "teacher" in k for k in ckpt)
