"""Golden outputs of every method on one fixed batch, as open_clip's ``tests/test_inference.py``.

For each case in :data:`CASES` — every name in ``methods.names()``, every SDE ablation row of
``workbench.methods.sde.ABLATIONS``, FANoise's scalings and sides, learnable vs fixed
temperature, either query side — the stored tensors are the :class:`LossOutput`'s loss, every
term, every log value, and the gradient of the loss with respect to the image features, text
features and logit scale, on the seeded (16, 32) L2-normalised batch :func:`golden_batch`.
A second file holds the per-step loss and terms of a short heads-only ``train()`` run per method
on the toy encoder (:data:`TRACES`).

Tolerance: ``rtol = atol = 4 · torch.finfo(torch.float32).resolution`` (4e-6) for losses, terms
and logs; gradients use the same ``rtol`` with ``atol`` scaled by the tensor's largest entry
(up to 12 here: float32 rounding of a gradient is relative to its scale, not to each entry). A
refactor that keeps the arithmetic reproduces the goldens bit for bit on the machine that wrote
them; the margin is for float32 reductions re-ordered by another BLAS blocking or thread count.
Measured: evaluating the same formulas in float64 moves the values by at most 17 % and the
gradients by at most 75 % of these tolerances, while changing a constant (SDE's β by 0.001),
a side or a mean moves them by orders of magnitude more. The training traces compound six AdamW
steps of such differences, so they use ``rtol = atol = 1e-5``.

Regenerate, only when a change of numbers is intended (say why in the commit message)::

    WORKBENCH_REGEN_GOLDENS=1 pytest tests/test_method_goldens.py

which rewrites ``tests/data/goldens/methods.safetensors``, ``methods_tokens.safetensors``
(token methods: CDDS, VSE, on :func:`golden_token_batch`) and ``method_traces.safetensors``
from the current code and then checks against them. A new method or variant must add a case
here (``test_every_registered_method_has_a_golden`` fails until it does).
"""

from __future__ import annotations

import copy
import os
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from test_earth_adapter_goldens import SEGMENTATION_CASES
from test_train_toy import ToyDataset, ToyEncoder, toy_embeddings

from workbench import methods
from workbench.methods import BatchOutputs, StepState
from workbench.methods.cdds import ABLATIONS as CDDS_ABLATIONS
from workbench.methods.degla import ABLATIONS as DEGLA_ROWS
from workbench.methods.sde import ABLATIONS
from workbench.methods.tokens import TokenBatch
from workbench.train import RunDir, TrainConfig, train

GOLDENS = Path(__file__).parent / "data" / "goldens"
LOSS_FILE = GOLDENS / "methods.safetensors"
TOKEN_FILE = GOLDENS / "methods_tokens.safetensors"
TRACE_FILE = GOLDENS / "method_traces.safetensors"
REGEN = os.environ.get("WORKBENCH_REGEN_GOLDENS") == "1"

TOL = 4 * torch.finfo(torch.float32).resolution
TRACE_TOL = 1e-5

#: Mid-run clock: SDE's α(t) ≠ α₀ and λ(t) is still on its warm-up ramp (0 < λ < λ_max).
STATE = StepState(step=3, total_steps=40)
#: Global torch seed set right before each method call (FANoise draws its noise from it).
NOISE_SEED = 1234

#: ProCLIP's per-caption distillation targets (written by :func:`_proclip_setup`).
PROCLIP_TARGETS = Path(tempfile.gettempdir()) / "workbench-golden-proclip-targets.safetensors"


def _revision_alignment(kind: str) -> dict[str, Any]:
    """Fixed (32-d) alignment statistics for the ReVision cases: fitted on seeded unpaired sets."""
    from workbench.methods.revision import fit_alignment

    g = torch.Generator().manual_seed(7)
    images, texts = torch.randn(64, 32, generator=g) + 1.0, torch.randn(48, 32, generator=g) - 1.0
    return fit_alignment(kind, images.double().numpy(), texts.double().numpy(), c3_sigma=0.05)


#: Captions of the golden batch for methods that score captions (``needs_captions``, ReVision).
#: Their LM is ``lm="random"``: the shipped architecture and vocabulary at its seeded init.
GOLDEN_CAPTIONS = [
    "a small red circle on the left", "two large blue squares", "a photo of a sneaker",
    "clip art of a frog", "grinning face", "a black and white photo of a bag", "a frog",
    "a medium-sized solid orange heart at the top right", "a pink cross", "red apple",
    "a photo of a t-shirt", "two purple diamonds in a column", "joker", "a penguin",
    "a greyscale photo of a dress", "three green stars seen from the left",
]  # fmt: skip

#: case name → (registry name, constructor overrides, training mode).
CASES: dict[str, tuple[str, dict[str, Any], bool]] = {
    "infonce": ("infonce", {}, True),
    "infonce/vlm2vec": ("infonce/vlm2vec", {}, True),
    "infonce/fixed_tau": ("infonce", {"temperature": 0.05}, True),
    "infonce/one_way_text_query": ("infonce", {"symmetric": False, "query": "text"}, True),
    **{f"sde/{row}": ("sde", dict(kw), True) for row, kw in ABLATIONS.items()},
    "sde/learnable_symmetric": ("sde", {"temperature": None, "symmetric": True}, True),
    "sde/text_query": ("sde", {"query": "text"}, True),
    "sde/renormalize_svd": ("sde", {"renormalize": True, "svd_route": "svd"}, True),
    "sde/lambda_full": ("sde", {"lambda_warmup": 0.0}, True),
    "fanoise": ("fanoise", {}, True),
    "fanoise/eval": ("fanoise", {}, False),
    "fanoise/uniform": ("fanoise", {"scaling": "uniform", "alpha": 0.5}, True),
    "fanoise/linear": ("fanoise", {"scaling": "linear"}, True),
    "fanoise/query_side": ("fanoise", {"side": "query"}, True),
    "fanoise/target_side": ("fanoise", {"side": "target", "renormalize": True}, True),
    "fanoise/learnable_symmetric": ("fanoise", {"temperature": None, "symmetric": True}, True),
    "fanoise/text_query": ("fanoise", {"query": "text"}, True),
    **{f"degla/{row}": ("degla", dict(kw), True) for row, kw in DEGLA_ROWS.items()},
    "degla/tgc_code_layout": ("degla", {"tgc_negatives": "code"}, True),
    "degla/lambdas": (
        "degla",
        {"lambda_igc": 0.3, "lambda_tgc": 0.2, "lambda_distill": 0.05},
        True,
    ),
    "proclip/distill": ("proclip", {"targets": str(PROCLIP_TARGETS)}, True),
    "proclip/distill_squared": (
        "proclip",
        {"targets": str(PROCLIP_TARGETS), "struct_form": "squared"},
        True,
    ),
    "proclip/tune": ("proclip", {"targets": str(PROCLIP_TARGETS)}, True),
    "proclip/tune_frozen_short": (
        "proclip",
        {"targets": str(PROCLIP_TARGETS), "teacher": "frozen", "long_captions": False},
        True,
    ),
    "proclip/direct": ("proclip/direct", {"targets": str(PROCLIP_TARGETS)}, True),
    "revision": ("revision", {"lm": "random"}, True),
    "revision/image": ("revision", {"lm": "random", "source": "image"}, True),
    "revision/c3": (
        "revision",
        {"lm": "random", "align": "c3", "alignment": _revision_alignment("c3")},
        True,
    ),
    "revision/realign": (
        "revision",
        {"lm": "random", "align": "full", "alignment": _revision_alignment("full")},
        True,
    ),
}
#: Cases stored outside ``methods.safetensors`` (by registry name), so adding a method never
#: rewrites another method's goldens.
CASE_FILES: dict[str, Path] = {
    "degla": GOLDENS / "methods_degla.safetensors",
    "revision": GOLDENS / "methods_revision.safetensors",
}

#: Token methods (CDDS, VSE) on :func:`golden_token_batch`: case → (registry name, overrides).
_TOKEN_SMALL = {"image_dim": 12, "text_dim": 10, "dim": 16, "heads": 2}
TOKEN_CASES: dict[str, tuple[str, dict[str, Any]]] = {
    **{
        f"cdds/{row}": ("cdds", {**_TOKEN_SMALL, "perturbations": 2, **kw})
        for row, kw in CDDS_ABLATIONS.items()
    },
    "cdds/precomputed": ("cdds", {**_TOKEN_SMALL, "identification": "precomputed"}),
    "cdds/random": ("cdds", {**_TOKEN_SMALL, "identification": "random"}),
    "cdds/hinge_detached": ("cdds", {**_TOKEN_SMALL, "loss": "hinge", "detach_statistics": True}),
    "vse": ("vse", dict(_TOKEN_SMALL)),
    "vse/encoder_hinge": ("vse", {**_TOKEN_SMALL, "encoder_layers": 2, "loss": "hinge"}),
    "vse/sampling": ("vse", {**_TOKEN_SMALL, "sampling": True}),
}

#: Methods whose inputs the plain golden batch lacks (pixels, an encoder, a denoiser): their
#: golden ``LossOutput`` lives in the named test module (``tests/goldens.check_golden``).
OWN_GOLDENS: dict[str, str] = {
    "dcr": "test_dcr_goldens",
    "dcr/naive": "test_dcr_goldens",
    "dcr/recon": "test_dcr_goldens",
}

#: Methods whose short training run is stored as a loss trace.
TRACES = ("infonce", "sde", "fanoise")


pytestmark = pytest.mark.usefixtures("one_thread")


def golden_batch() -> BatchOutputs:
    """Seeded (16, 32) pairs sharing a rank-4 signal, anisotropic spectrum (decade over D), so
    SDE's partition has non-empty strong, weak and noise bands; logit scale 1/0.07 (CLIP's init),
    a leaf with gradient."""
    g = torch.Generator().manual_seed(0)
    b, d, k = 16, 32, 4
    base = torch.randn(b, k, generator=g) @ torch.randn(k, d, generator=g)  # (B, D)
    spectrum = torch.logspace(0, -1, d)  # (D,)
    image_raw = (base + torch.randn(b, d, generator=g)) * spectrum
    text_raw = (base + torch.randn(b, d, generator=g)) * spectrum
    image = F.normalize(image_raw, dim=-1).requires_grad_(True)
    text = F.normalize(text_raw, dim=-1).requires_grad_(True)
    scale = torch.tensor(1 / 0.07).requires_grad_(True)
    return BatchOutputs(image, text, scale, image_raw, text_raw)


def degla_batch(method, out: BatchOutputs) -> BatchOutputs:
    """The golden batch plus what DeGLA needs: K = 4 seeded hard negatives per row (a leaf with
    gradient) and an attached EMA teacher of two linear heads that has drifted from the student,
    with seeded tower features for it to project."""
    g = torch.Generator().manual_seed(1)
    b, d, k, d_img, d_txt = 16, 32, 4, 24, 20
    student = torch.nn.Module()
    student.image_head = torch.nn.Linear(d_img, d, bias=False)
    student.text_head = torch.nn.Linear(d_txt, d, bias=False)
    with torch.no_grad():
        for p in student.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    method.attach(student)
    drift = torch.Generator().manual_seed(2)  # its own stream: every row sees the same batch
    with torch.no_grad():  # a teacher some EMA steps behind: not the student itself
        for p in method.teacher.parameters() if method.teacher is not None else ():
            p.add_(torch.randn(p.shape, generator=drift) * 0.05)
    neg_raw = out.text_features.detach()[:, None] + 0.3 * torch.randn(b, k, d, generator=g)
    out.hard_negatives = F.normalize(neg_raw, dim=-1).requires_grad_(True)  # (B, K, D)
    out.image_tower = torch.randn(b, d_img, generator=g)
    out.text_tower = torch.randn(b, d_txt, generator=g)
    out.hard_negative_tower = torch.randn(b, k, d_txt, generator=g)
    return out


def revision_batch(method, out: BatchOutputs) -> BatchOutputs:
    """The golden batch plus what ReVision needs: its captions, and its LM and projector
    attached for the batch's 32-d features under a fixed seed."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        method.attach(SimpleNamespace(embed_dim=out.image_features.shape[1]))
    out.captions = GOLDEN_CAPTIONS
    return out


#: Registry name → builder adding what that method needs beyond :func:`golden_batch`.
BATCHES = {"degla": degla_batch, "revision": revision_batch}


def _proclip_setup(method: Any, out: BatchOutputs, stage: str) -> StepState:
    """ProCLIP needs more than features: captions with distillation targets (half with a long
    caption), pre-projection image features for its teacher, and an encoder to attach its
    adapter (20 → 32) and image-head teacher (24 → 32) to — all seeded."""
    from workbench.methods.proclip import write_distill_targets

    g = torch.Generator().manual_seed(7)
    b, d = out.image_features.shape
    out.captions = [f"caption {i}" for i in range(b)]
    long_in = torch.randn(b, 20, generator=g)
    long_in[1::2] = float("nan")
    write_distill_targets(
        PROCLIP_TARGETS, out.captions, torch.randn(b, d, generator=g), long_in,
        torch.randn(b, d, generator=g),
    )  # fmt: skip
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        encoder = torch.nn.Module()
        encoder.image_head = torch.nn.Linear(24, d, bias=False)
        encoder.text_head = torch.nn.Linear(20, d, bias=False)
        encoder.embed_dim = d
        method.attach(encoder)
    out.encoder = encoder
    out.image_tower = torch.randn(b, 24, generator=g)
    return StepState(step=3, total_steps=40, stage=stage, stage_step=3, stage_steps=20)


#: The stage each ProCLIP case runs in (the cases need more than :func:`golden_batch`).
PROCLIP_STAGE = {
    "proclip/distill": "distill",
    "proclip/distill_squared": "distill",
    "proclip/tune": "tune",
    "proclip/tune_frozen_short": "tune",
    "proclip/direct": "tune",
}


def case_outputs(name: str) -> dict[str, torch.Tensor]:
    """``{"<name>|loss", "<name>|terms.<t>", "<name>|logs.<l>", "<name>|grad.<x>"}`` of one case."""
    registry_name, config, training = CASES[name]
    method = methods.get(registry_name, **config).train(training)
    out = golden_batch()
    if registry_name in BATCHES:
        out = BATCHES[registry_name](method, out)
    state = STATE
    if name in PROCLIP_STAGE:
        state = _proclip_setup(method, out, PROCLIP_STAGE[name])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(NOISE_SEED)
        lo = method(out, state)
    inputs = {"image": out.image_features, "text": out.text_features, "scale": out.logit_scale}
    if out.hard_negatives is not None:
        inputs["negatives"] = out.hard_negatives
    grads = torch.autograd.grad(lo.loss, list(inputs.values()), allow_unused=True)
    result = {f"{name}|loss": lo.loss.detach()}
    result.update({f"{name}|terms.{k}": v.detach() for k, v in lo.terms.items()})
    result.update(
        {
            f"{name}|logs.{k}": torch.tensor(float(v), dtype=torch.float64)
            for k, v in lo.logs.items()
        }
    )
    for (key, x), g in zip(inputs.items(), grads):
        result[f"{name}|grad.{key}"] = torch.zeros_like(x) if g is None else g.contiguous()
    return result


def golden_token_batch() -> TokenBatch:
    """Seeded 8 pairs: 4 patch tokens of width 12 per image, captions of 1–6 word tokens of
    width 10 (padding holds NaN: it must never be read), rows 0 and 1 captions of one image."""
    g = torch.Generator().manual_seed(0)
    b = 8
    image = torch.randn(b, 4, 12, generator=g).requires_grad_(True)
    lengths = torch.tensor([1, 6, 3, 5, 2, 6, 4, 3])
    mask = torch.arange(6)[None, :] < lengths[:, None]
    text = torch.randn(b, 6, 10, generator=g)
    text = torch.where(mask[..., None], text, torch.nan).requires_grad_(True)
    ids = torch.tensor([0, 0, 1, 2, 3, 4, 5, 6])
    return TokenBatch(image, torch.ones(b, 4, dtype=torch.bool), text, mask, ids)


def token_case_outputs(name: str) -> dict[str, torch.Tensor]:
    """As :func:`case_outputs` for a token method: seeded weights, the loss, every term and
    log, and the gradient with respect to the image and text tokens (zero at padding)."""
    registry_name, config = TOKEN_CASES[name]
    torch.manual_seed(0)
    method = methods.get(registry_name, **config).train()
    if getattr(method, "identification", None) == "precomputed":
        d = config["dim"]
        ramp = torch.linspace(-1, 1, d)
        method.set_statistics((ramp, 1 + 0.5 * ramp.abs()), (ramp.flip(0), 1 + 0.25 * ramp**2))
    batch = golden_token_batch()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(NOISE_SEED)
        lo = method(batch, STATE)
    inputs = {"image_tokens": batch.image_tokens, "text_tokens": batch.text_tokens}
    grads = torch.autograd.grad(lo.loss, list(inputs.values()), allow_unused=True)
    result = {f"{name}|loss": lo.loss.detach()}
    result.update({f"{name}|terms.{k}": v.detach() for k, v in lo.terms.items()})
    result.update(
        {
            f"{name}|logs.{k}": torch.tensor(float(v), dtype=torch.float64)
            for k, v in lo.logs.items()
        }
    )
    for (key, x), g in zip(inputs.items(), grads):
        result[f"{name}|grad.{key}"] = torch.zeros_like(x) if g is None else g
    return result


def trace_outputs(method: str, root: Path) -> dict[str, torch.Tensor]:
    """Per-step ``loss`` and terms of a 6-step heads-only toy run (cached features, fp32)."""
    enc, data = ToyEncoder(), ToyDataset(80)
    config = TrainConfig(
        method=method, encoder=None, dataset=None, steps=6, batch_size=16, holdout=16,
        warmup=2, lr=1e-2, snapshot_every=0, run_root=str(root),
    )  # fmt: skip
    run = train(
        config, embeddings=toy_embeddings(enc, data), encoder=copy.deepcopy(enc), progress=False
    )
    log = RunDir(run.run_dir).log()
    result = {f"{method}|loss": torch.tensor([r["loss"] for r in log], dtype=torch.float64)}
    for term in log[0]["terms"]:
        result[f"{method}|terms.{term}"] = torch.tensor(
            [r["terms"][term] for r in log], dtype=torch.float64
        )
    return result


def _stored(path: Path, compute) -> dict[str, torch.Tensor]:
    if REGEN:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().clone() for k, v in compute().items()}, str(path))
    if not path.exists():
        pytest.fail(
            f"{path} is missing; create it with WORKBENCH_REGEN_GOLDENS=1 pytest {__file__}"
        )
    return load_file(str(path))


def _case_file(case: str) -> Path:
    return CASE_FILES.get(CASES[case][0], LOSS_FILE)


@pytest.fixture(scope="module")
def loss_goldens() -> dict[str, torch.Tensor]:
    stored: dict[str, torch.Tensor] = {}
    for path in dict.fromkeys(_case_file(c) for c in CASES):
        cases = [c for c in CASES if _case_file(c) == path]
        stored.update(
            _stored(
                path, lambda cases=cases: {k: v for c in cases for k, v in case_outputs(c).items()}
            )
        )
    return stored


@pytest.fixture(scope="module")
def token_goldens() -> dict[str, torch.Tensor]:
    return _stored(
        TOKEN_FILE, lambda: {k: v for c in TOKEN_CASES for k, v in token_case_outputs(c).items()}
    )


@pytest.fixture(scope="module")
def trace_goldens(tmp_path_factory) -> dict[str, torch.Tensor]:
    root = tmp_path_factory.mktemp("golden-runs")
    return _stored(
        TRACE_FILE, lambda: {k: v for m in TRACES for k, v in trace_outputs(m, root).items()}
    )


def _assert_matches(actual: dict, stored: dict, prefix: str, tol: float) -> None:
    mine = {k for k in stored if k.startswith(prefix)}
    assert set(actual) == mine, f"terms/logs changed: now {sorted(actual)}, stored {sorted(mine)}"
    for key, value in actual.items():
        expected = stored[key]
        # a gradient's float32 rounding is relative to its largest entry, not to each entry
        atol = tol * max(1.0, float(expected.abs().max())) if "|grad." in key else tol
        torch.testing.assert_close(
            value, expected, rtol=tol, atol=atol, msg=lambda m, key=key: f"{key}: {m}"
        )


def library_methods() -> list[str]:
    """Registered names whose factory lives in ``workbench.methods`` (other test modules
    register toy methods in the same session)."""
    names = []
    for name in methods.names():
        factory = methods.METHODS.get(name)
        module = getattr(factory, "func", factory).__module__
        if module.startswith("workbench.methods."):
            names.append(name)
    return names


def test_every_registered_method_has_a_golden():
    covered = {registry_name for registry_name, _, _ in CASES.values()} | set(OWN_GOLDENS)
    covered |= {registry_name for registry_name, _ in TOKEN_CASES.values()}
    for module in set(OWN_GOLDENS.values()):
        assert (Path(__file__).parent / f"{module}.py").is_file(), module
    # segmentation methods (Earth-Adapter) have no feature-loss form: goldens in their own file
    covered |= {registry_name for registry_name, _ in SEGMENTATION_CASES.values()}
    assert {"infonce", "infonce/vlm2vec", "sde", "fanoise"} <= set(library_methods())
    assert set(library_methods()) <= covered, sorted(set(library_methods()) - covered)
    assert {f"sde/{row}" for row in ABLATIONS} <= set(CASES)
    assert {f"cdds/{row}" for row in CDDS_ABLATIONS} <= set(TOKEN_CASES)


@pytest.mark.parametrize("case", list(CASES))
def test_loss_output_matches_golden(case, loss_goldens):
    _assert_matches(case_outputs(case), loss_goldens, f"{case}|", TOL)


@pytest.mark.parametrize("case", list(TOKEN_CASES))
def test_token_loss_output_matches_golden(case, token_goldens):
    actual = token_case_outputs(case)
    for key in actual:  # padding (NaN in the batch) never reaches a gradient
        assert torch.isfinite(actual[key]).all(), key
    _assert_matches(actual, token_goldens, f"{case}|", TOL)


@pytest.mark.parametrize("method", TRACES)
def test_training_trace_matches_golden(method, trace_goldens, tmp_path):
    _assert_matches(trace_outputs(method, tmp_path), trace_goldens, f"{method}|", TRACE_TOL)
