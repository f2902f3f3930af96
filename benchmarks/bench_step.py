"""Per-step training time of every registered method, as ratios to InfoNCE.

One "step" is what :mod:`workbench.train`'s loop does per optimiser step, minus logging:
zero grads → features (heads on cached tower features, or the image tower on pixels) →
L2 normalise → ``method(BatchOutputs, StepState)`` → backward → AdamW step → the method's
``on_step_end`` (EMA teachers).

Hard negatives: a method that needs them (``needs_hard_negatives``, DeGLA) gets ``--negatives``
K per sample as the loop hands them over while the text tower is frozen: tower features looked
up from its cache (here: fixed random (B, K, D_txt) rows, drawn once), then the text head and L2
normalisation inside the timed step.

Captions: a method that scores them (``needs_captions``, ReVision's prefix NLL through its frozen
caption LM) gets :data:`CAPTIONS` cycled to the batch size, as the loop hands a batch's captions.

Modes:
  heads   heads-only training on cached tower features (random, default-encoder widths
          1280/384 → D; linear heads, or ``--head-hidden 1024`` for the shipped default's
          MLP shape, which the DeGLA notebook trains); the fast CPU path.
  towers  the default encoder's image tower runs on (B, 3, 96, 96) pixels with its last
          ``--blocks`` blocks and both heads training (text side on cached features).
  vitb32  on CUDA only: open_clip ViT-B-32 (random init, 224 px, bf16 autocast), both towers
          run, the image tower's last ``--blocks`` blocks and both heads train.
  tokens  token methods (``needs_tokens``: CDDS, VSE) on cached-token batches shaped like the
          CDDS notebook's: (B, 16, 1280) patch tokens and (B, ≤24, 384) word tokens of random
          lengths, read from a float32 table as the token trainer does; ratios to ``vse``, with
          the memory a step holds (tensors saved for backward, plus parameters and AdamW state).
          The methods' configuration is the notebook's (``CDDSStudyConfig``).
  dcr     methods that run a denoiser on pixels (``needs_towers``: DCR and its baselines),
          as ``towers`` at batch ``--dcr-batch`` (16, the code's per-GPU batch) with the tiny
          32-px denoiser, Stage 2 (``enhance``: projector frozen): InfoNCE, reconstruction
          only, the naive method, DCR with ``--dcr-negatives`` sampled negatives and DCR with
          all B−1 (the code's B×B pass). Other modes skip ``needs_towers`` methods.
  segment segmentation methods (Earth-Adapter and its variants) on the default encoder at
          ``--resolution`` px (128, the notebook's): the adapted image tower + head forward,
          per-pixel cross-entropy, backward, AdamW step; ratios to ``earth_adapter/head_only``
          (the frozen tower with a head only), in wall and in thread-CPU time (the CPU time of
          the one compute thread, which a loaded machine inflates far less than wall time).
          ``--seg-notebook``: the notebook's placement (``EarthAdapterConfig``: adapters on
          blocks 10–15, the split on block 10, head on blocks 2/4/10/15); by default the
          method's (blocks 5–15, split on 5–7, head on 4/10/15).

Segmentation methods have no contrastive step: the other modes skip them (``NotContrastive``).

Every registered method is timed (``--methods`` picks some), in the last of its stages
(ProCLIP: ``"tune"``, the EMA teacher's forward and update included). A method whose attach
changes the trainable parts (ProCLIP's adapter as the text head) is also compared with the same
parts under plain InfoNCE: ``proclip[λ=0]`` (ProCLIP's stage 2 without its regulariser is
InfoNCE on the adapter's outputs), printed as its own ratio line. Each method gets its own copy of
the model built from the same seed, and its ``attach`` runs on it (extra modules, adapters,
teachers), with its own trainable parameters added to the optimiser. Methods are timed
round-robin (one step each, order rotated every round) so machine-load drift hits them alike;
the table reports the median ms/step and its ratio to InfoNCE.

    python benchmarks/bench_step.py                       # everything (CPU: heads + towers)
    python benchmarks/bench_step.py --modes heads --batches 256 --dims 256
    python benchmarks/bench_step.py --modes dcr --dims 256 --threads 2   # the DCR CPU target
    python benchmarks/bench_step.py --modes heads --methods infonce degla --flops  # FLOP floor
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import torch
import torch.nn.functional as F

from workbench import methods
from workbench.methods import BatchOutputs, StepState
from workbench.train.params import select

#: Captions cycled over a batch for methods with ``needs_captions`` (lengths 2 to 12 words, as in
#: the training mixture).
CAPTIONS = (
    "a small red circle on the left",
    "two large blue squares at the top",
    "a photo of a sneaker",
    "clip art of a frog",
    "a medium-sized solid orange heart at the top right, with no dot",
    "grinning face",
    "a black and white photo of a bag",
    "three green stars in a row seen from the left side of the scene",
)


class NotContrastive(ValueError):
    """A method without a contrastive step (a segmentation method): time it with ``segment``."""


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _available(names) -> list[str]:
    have = []
    for name in names:
        if name in methods.names():
            have.append(name)
        else:
            print(f"[skip] method {name!r} is not registered")
    return have


HEAD_HIDDEN = 0  # heads mode: 0 = linear heads; N = Linear → GELU → Linear of hidden width N


def _head(width: int, dim: int) -> torch.nn.Module:
    """A heads-mode head: linear (``HEAD_HIDDEN`` = 0) or the shipped default's MLP shape."""
    if not HEAD_HIDDEN:
        return torch.nn.Linear(width, dim, bias=False)
    return torch.nn.Sequential(
        torch.nn.Linear(width, HEAD_HIDDEN), torch.nn.GELU(), torch.nn.Linear(HEAD_HIDDEN, dim)
    )


class _Case:
    """Model pieces + inputs for one (mode, batch, dim) and one method; ``step()`` runs one step.

    The method's ``attach`` runs on this case's encoder before the optimiser is built, so its
    own trainable modules train and its adapters or teachers are in place.
    """

    def __init__(
        self, method, mode: str, batch: int, dim: int, blocks: int, device: torch.device, k: int = 4
    ):
        if getattr(method, "task", "contrastive") != "contrastive":
            raise NotContrastive(
                f"{method.name} is a {method.task} method: bench_step.py --modes segment"
            )
        torch.manual_seed(0)  # every method's copy of the model starts from the same weights
        g = torch.Generator().manual_seed(0)
        self.device, self.amp = device, None
        if mode == "heads":
            self.encoder = torch.nn.Module()
            self.encoder.image_head = _head(1280, dim)
            self.encoder.text_head = _head(384, dim)
            self.encoder.logit_scale = torch.nn.Parameter(torch.tensor(2.6592))
            self.encoder.embed_dim = dim
            select_params = lambda: list(self.encoder.parameters())  # noqa: E731
            self.image_in = torch.randn(batch, 1280, generator=g)
            self.text_in = torch.randn(batch, 384, generator=g)
        elif mode in ("towers", "dcr"):
            import workbench as wb

            self.encoder = wb.load_encoder("default", heads="random", embed_dim=dim)
            select_params = lambda: select(["heads", f"image_blocks:{blocks}"], self.encoder, [])  # noqa: E731
            self.image_in = torch.randn(batch, 3, 96, 96, generator=g)
            self.text_in = torch.randn(batch, 384, generator=g)
        else:  # vitb32
            import workbench as wb

            self.encoder = wb.load_encoder("open_clip:ViT-B-32")
            select_params = lambda: select(["heads", f"image_blocks:{blocks}"], self.encoder, [])  # noqa: E731
            self.image_in = torch.randn(batch, 3, 224, 224, generator=g)
            self.text_in = {"input_ids": torch.randint(1, 49000, (batch, 77), generator=g)}
            self.amp = torch.bfloat16
        self.mode = mode
        self.neg_in = None
        if getattr(method, "needs_hard_negatives", False):
            if isinstance(self.text_in, dict):  # the loop's cache holds the frozen tower's rows
                with torch.no_grad():
                    width = self.encoder.text_tower({"input_ids": self.text_in["input_ids"][:1]})
                width = width.shape[-1]
            else:
                width = self.text_in.shape[-1]
            self.neg_in = torch.randn(batch, k, width, generator=g)
        self.captions = (
            [CAPTIONS[i % len(CAPTIONS)] for i in range(batch)]
            if getattr(method, "needs_captions", False)
            else None
        )
        method.attach(self.encoder)  # may replace a head (ProCLIP's adapter): select after it
        self.params = select_params()
        self.method = method.to(device)
        self.encoder.requires_grad_(False)
        if mode != "dcr":  # Stage 2 of DCR and its baselines: the projector is frozen
            self.params += [p for p in method.parameters() if p.requires_grad]
        for p in self.params:
            p.requires_grad_(True)
        self.encoder.to(device)
        self.image_in = self.image_in.to(device)
        if self.neg_in is not None:
            self.neg_in = self.neg_in.to(device)
        self.text_in = (
            {k: v.to(device) for k, v in self.text_in.items()}
            if isinstance(self.text_in, dict)
            else self.text_in.to(device)
        )
        self.opt = torch.optim.AdamW(self.params, lr=1e-4)

    def _towers(self) -> tuple[torch.Tensor, torch.Tensor]:
        enc = self.encoder
        if self.mode == "heads":
            return self.image_in, self.text_in
        image = enc.image_tower(self.image_in)
        if self.mode in ("towers", "dcr"):
            return image, self.text_in
        with torch.no_grad():
            return image, enc.text_tower(self.text_in)

    def state(self, total: int) -> StepState:
        """A mid-run state in the method's last stage (SDE's α(t), λ(t) are active there)."""
        stage = self.method.stages(total)[-1].name
        return StepState(step=total // 3, total_steps=total, stage=stage)

    def step(self, state: StepState) -> float:
        _sync(self.device)
        t0 = time.perf_counter()
        self.opt.zero_grad(set_to_none=True)
        ctx = (
            torch.autocast("cuda", dtype=self.amp)
            if self.amp
            else torch.autocast("cpu", enabled=False)
        )
        with ctx:
            it, tt = self._towers()
            zi, zt = self.encoder.image_head(it), self.encoder.text_head(tt)
            negs = None
            if self.neg_in is not None:
                negs = F.normalize(self.encoder.text_head(self.neg_in), dim=-1)  # (B, K, D)
            out = BatchOutputs(
                F.normalize(zi, dim=-1),
                F.normalize(zt, dim=-1),
                self.encoder.logit_scale.exp(),
                zi,
                zt,
                hard_negatives=negs,
                hard_negative_tower=self.neg_in,
                image_tower=it,
                text_tower=tt,
                pixels=None if self.mode == "heads" else self.image_in,
                tokens=self.text_in if isinstance(self.text_in, dict) else None,
                encoder=self.encoder,
                captions=self.captions,
            )
            loss = self.method(out, state).loss
        loss.backward()
        self.opt.step()
        self.method.on_step_end(self.encoder, state)  # EMA teachers update here
        _sync(self.device)
        return time.perf_counter() - t0


class _TokenCase:
    """One token method on batches drawn from a float32 token table (as the token trainer)."""

    def __init__(self, name: str, config: dict, batch: int, device: torch.device):
        from workbench.methods.tokens import TokenBatch

        g = torch.Generator().manual_seed(0)
        n = 4 * batch
        self.image = torch.randn(n, 16, 1280, generator=g).to(device)
        self.text = torch.randn(n, 24, 384, generator=g).to(device)
        lengths = torch.randint(6, 25, (n,), generator=g)
        self.mask = (torch.arange(24)[None] < lengths[:, None]).to(device)
        self.rows = torch.randperm(n, generator=g)[:batch].to(device)
        self.TokenBatch, self.device = TokenBatch, device
        torch.manual_seed(0)
        self.method = methods.get(name, image_dim=1280, text_dim=384, **config).to(device).train()
        self.params = [p for p in self.method.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(self.params, lr=1e-4)
        self.saved_bytes = 0

    def _batch(self):
        r = self.rows
        length = int(self.mask[r].sum(1).max())
        return self.TokenBatch(
            self.image.index_select(0, r), torch.ones(len(r), 16, dtype=torch.bool, device=r.device),
            self.text.index_select(0, r)[:, :length], self.mask.index_select(0, r)[:, :length], r,
        )  # fmt: skip

    def state(self, total: int) -> StepState:
        """A mid-run state in the method's last stage, as :meth:`_Case.state`."""
        stage = self.method.stages(total)[-1].name
        return StepState(step=total // 3, total_steps=total, stage=stage)

    def step(self, state: StepState) -> float:
        seen: dict[int, int] = {}

        def pack(t):
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        _sync(self.device)
        t0 = time.perf_counter()
        self.opt.zero_grad(set_to_none=True)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = self.method(self._batch(), state).loss
        loss.backward()
        self.opt.step()
        _sync(self.device)
        self.saved_bytes = max(self.saved_bytes, sum(seen.values()))
        return time.perf_counter() - t0

    @property
    def memory_mb(self) -> float:
        """Saved activations + parameters + AdamW's two moments, in MB."""
        params = sum(p.numel() * p.element_size() for p in self.params)
        return (self.saved_bytes + 3 * params) / 1e6


def token_arms() -> dict[str, tuple[str, dict]]:
    """The CDDS notebook's arms (name → (method, config)) minus its token widths."""
    from workbench.experiments.cdds import CDDSStudyConfig

    cfg = CDDSStudyConfig(datasets=("synthetic-world",))
    return {a.name: (a.method, a.config) for a in cfg.arms()}


def bench_tokens(
    batch: int, repeats: int, warmup: int, device: torch.device, flops: bool = False
) -> None:
    """Print ms/step, the ratio to ``vse`` and the memory of every arm of the CDDS notebook
    (``flops``: and each step's matmul GFLOPs with their ratios to ``vse`` and ``vse/encoder``)."""
    cases = {n: _TokenCase(m, c, batch, device) for n, (m, c) in token_arms().items()}
    res = time_cases(cases, repeats, warmup)
    fl = count_flops(cases) if flops else None
    print(
        f"tokens  batch {batch}: ms/step, × vse, × vse/encoder, memory MB (activations+params+AdamW)"
        + (", GFLOPs, × vse, × vse/encoder" if fl else "")
    )
    for n, ms in res.items():
        cells = (f"  {n:20s} {ms:9.1f} {ms / res['vse']:7.2f} {ms / res['vse/encoder']:7.2f} "
                 f"{cases[n].memory_mb:9.1f}")  # fmt: skip
        if fl:
            cells += (
                f" {fl[n] / 1e9:8.3f} {fl[n] / fl['vse']:7.2f} {fl[n] / fl['vse/encoder']:7.2f}"
            )
        print(cells, flush=True)


def dcr_methods(negatives: int) -> dict[str, tuple[str, dict]]:
    """Column → (registry name, arguments) of the ``dcr`` mode (tiny denoiser: the shipped one,
    or its untrained architecture when the weights are absent — the same cost)."""
    from workbench.methods.dcr.tiny import SHIPPED

    den = {"denoiser": "tiny" if SHIPPED.exists() else "tiny:random"}
    return {
        "infonce": ("infonce", {}),
        "dcr/recon": ("dcr/recon", den),
        "dcr/naive": ("dcr/naive", den),
        f"dcr[K={negatives}]": ("dcr", {**den, "negatives": negatives}),
        "dcr[all]": ("dcr", {**den, "negatives": "all"}),
    }


def method_for(name: str, mode: str, **config):
    """The method as a mode needs it: where tower blocks train (``towers``, ``vitb32``) DeGLA's
    EMA teacher copies the whole encoder (its default copies the heads, exact only while the
    towers are frozen), so the teacher forward includes the training tower."""
    method = methods.get(name, **config)
    if mode != "heads" and method.needs_hard_negatives:
        method = methods.get(name, teacher="encoder", **config)
    return method


#: Same-trainable-parts InfoNCE references of methods that change the parts: name → config.
REFERENCES = {"proclip": ("proclip[λ=0]", {"lambda_reg": 0.0})}


def make_cases(mode, batch, dim, names, blocks, device, k=4) -> dict[str, _Case]:
    """One :class:`_Case` (its own model copy, method attached) per contrastive method name, plus the
    same-parts references of :data:`REFERENCES`."""
    if mode == "dcr":  # Stage 2 (its last stage): the projector is frozen
        return {
            col: _Case(methods.get(n, **kw), mode, batch, dim, blocks, device, k)
            for col, (n, kw) in dcr_methods(k).items()
        }
    names = [n for n in names if not getattr(methods.get(n), "needs_towers", False)
             and getattr(methods.get(n), "task", "contrastive") == "contrastive"]  # fmt: skip
    cases = {n: _Case(method_for(n, mode), mode, batch, dim, blocks, device, k) for n in names}
    for n, (ref, config) in REFERENCES.items():
        if n in names:
            cases[ref] = _Case(method_for(n, mode, **config), mode, batch, dim, blocks, device, k)
    return cases


class _SegCase:
    """One segmentation method attached to its own default encoder; ``step()`` = one training step."""

    def __init__(
        self,
        name: str,
        batch: int,
        resolution: int,
        device: torch.device,
        first: int | None = None,
        extra: dict | None = None,
    ):
        import workbench as wb
        from workbench.train.config import TrainConfig
        from workbench.train.params import prepare_model

        torch.manual_seed(0)
        g = torch.Generator().manual_seed(0)
        self.device = device
        # the shipped heads are for 96 px only; a segmenter never runs the heads
        self.encoder = wb.load_encoder("default", heads="random", resolution=resolution)
        config = {} if first is None else {"adapter_layers": list(range(first, 16))}
        config.update(extra or {})
        if not getattr(methods.get(name), "experts", ()):  # head only: no adapter options
            config.pop("adapter_layers", None)
            config.pop("fft_layers", None)
        self.method = methods.get(name, **config)
        cfg = TrainConfig(method=name, method_config=config, trainable="adapters+method")
        prepare_model(self.encoder, self.method, cfg)
        self.params = select(cfg.trainable_parts(), self.encoder, list(self.method.parameters()))
        self.encoder.requires_grad_(False)
        for p in self.params:
            p.requires_grad_(True)
        self.encoder.to(device)
        self.method.to(device).train()
        self.segmenter = self.method.segmenter(self.encoder)
        self.pixels = torch.randn(batch, 3, resolution, resolution, generator=g).to(device)
        self.labels = torch.randint(
            0, self.method.n_classes, (batch, resolution, resolution), generator=g
        ).to(device)
        self.opt = torch.optim.AdamW(self.params, lr=1e-4)
        self.amp = torch.bfloat16 if device.type == "cuda" else None

    def step(self) -> tuple[float, float]:
        from workbench.methods.earth_adapter import segmentation_loss

        _sync(self.device)
        t0, c0 = time.perf_counter(), time.thread_time()
        self.opt.zero_grad(set_to_none=True)
        ctx = (
            torch.autocast("cuda", dtype=self.amp)
            if self.amp
            else torch.autocast("cpu", enabled=False)
        )
        with ctx:
            logits = self.segmenter(self.pixels)
        segmentation_loss(logits, self.labels).backward()
        self.opt.step()
        _sync(self.device)
        return time.perf_counter() - t0, time.thread_time() - c0


def bench_segment(
    names, batch, resolution, repeats, warmup, device, first=None, extra=None
) -> dict[str, tuple[float, float]]:
    """Median (wall ms, thread-CPU ms) per step of each segmentation method, round-robin;
    ``first``: adapters on image blocks ``first``..15 instead of the stride-16 rule; ``extra``:
    more method arguments (``fft_layers``, ``feature_layers``, ``min_stride``)."""
    cases = {n: _SegCase(n, batch, resolution, device, first, extra) for n in names}
    times: dict[str, list[tuple[float, float]]] = {n: [] for n in cases}
    order = list(cases)
    for i in range(warmup + repeats):
        order = order[1:] + order[:1]
        for n in order:
            t = cases[n].step()
            if i >= warmup:
                times[n].append(t)
    return {
        n: (statistics.median(w for w, _ in v) * 1e3, statistics.median(c for _, c in v) * 1e3)
        for n, v in times.items()
    }


def time_cases(cases: dict[str, _Case], repeats: int, warmup: int) -> dict[str, float]:
    """Median ms per step of each case, timed round-robin after ``warmup`` rounds."""
    times: dict[str, list[float]] = {n: [] for n in cases}
    total = warmup + repeats
    order = list(cases)
    for i in range(total):
        order = order[1:] + order[:1]  # rotate so no method always runs first in a round
        for n in order:
            t = cases[n].step(cases[n].state(total))
            if i >= warmup:
                times[n].append(t)
    return {n: statistics.median(v) * 1e3 for n, v in times.items()}


def count_flops(cases: dict[str, Any]) -> dict[str, float]:
    """Matrix-multiply FLOPs of one step of each case (forward + backward), counted by
    ``torch.utils.flop_counter.FlopCounterMode``: the arithmetic a step cannot avoid, so the
    ratio of two counts is the step-time ratio an ideal implementation of both would reach
    when matmuls dominate (element-wise work, e.g. a softmax's exp, is not counted)."""
    from torch.utils.flop_counter import FlopCounterMode

    flops = {}
    for name, case in cases.items():
        with FlopCounterMode(display=False) as counter:
            case.step(case.state(3))
        flops[name] = float(counter.get_total_flops())
    return flops


def bench(
    mode, batch, dim, names, repeats, warmup, blocks, device, k=4, flops=False
) -> tuple[dict[str, float], dict[str, float] | None]:
    """Median ms per step of each method in ``names`` (one model copy each), round-robin, and
    (``flops``) each step's counted matmul FLOPs."""
    cases = make_cases(mode, batch, dim, names, blocks, device, k)
    times = time_cases(cases, repeats, warmup)
    return times, (count_flops(cases) if flops else None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument(
        "--modes", nargs="+", default=None, help="heads towers dcr vitb32 tokens segment"
    )
    ap.add_argument("--token-batch", type=int, default=64, help="batch of the tokens mode")
    ap.add_argument("--batches", nargs="+", type=int, default=[256, 1024])
    ap.add_argument("--dims", nargs="+", type=int, default=[256, 768])
    ap.add_argument("--methods", nargs="+", default=None, help="default: every registered one")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--blocks", type=int, default=2, help="trainable last image-tower blocks")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    ap.add_argument("--dcr-batch", type=int, default=16, help="batch of the dcr mode")
    ap.add_argument(
        "--dcr-negatives", type=int, default=7, help="sampled DCR negatives (the dcr mode's K)"
    )
    ap.add_argument("--resolution", type=int, default=128, help="segment mode: image side (px)")
    ap.add_argument("--seg-batch", type=int, default=16, help="segment mode: images per step")
    ap.add_argument(
        "--seg-first-block",
        type=int,
        default=None,
        help="segment mode: adapters on image blocks N..15 (default: the stride-16 rule, 5..15)",
    )
    ap.add_argument(
        "--seg-fft-layers", type=int, nargs="+", default=None,
        help="segment mode: the mixture (FFT) blocks, e.g. 10 (default: the first 3 adapted)",
    )  # fmt: skip
    ap.add_argument(
        "--seg-feature-layers", type=int, nargs="+", default=None,
        help="segment mode: the blocks feeding the head (default: 4 10 15)",
    )  # fmt: skip
    ap.add_argument(
        "--seg-min-stride", type=float, default=None,
        help="segment mode: the method's min_stride (adapters on blocks with a token stride ≥ it)",
    )  # fmt: skip
    ap.add_argument(
        "--seg-notebook", action="store_true",
        help="segment mode: the notebook's adapter blocks, mixture blocks, head inputs, resolution",
    )  # fmt: skip
    ap.add_argument("--negatives", type=int, default=4, help="hard negatives K per sample")
    ap.add_argument(
        "--flops",
        action="store_true",
        help="also count each step's matmul FLOPs and print their ratio to InfoNCE's",
    )
    ap.add_argument(
        "--head-hidden",
        type=int,
        default=0,
        help="heads mode: 0 = linear heads; 1024 = the shipped default's MLP heads' shape",
    )
    args = ap.parse_args()
    global HEAD_HIDDEN
    HEAD_HIDDEN = args.head_hidden
    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    modes = args.modes or (
        ["heads", "towers", "dcr", "vitb32", "tokens"]
        if cuda
        else ["heads", "towers", "dcr", "tokens"]
    )
    # token methods (CDDS, VSE) refuse pooled features; the tokens mode times them
    pooled = [n for n in methods.names() if not getattr(methods.get(n), "needs_tokens", False)]
    names = _available(args.methods or pooled)
    seg_names = [
        n for n in names if getattr(methods.get(n), "task", "contrastive") == "segmentation"
    ]
    names = [n for n in names if n not in seg_names]
    if "segment" in modes:
        modes = [m for m in modes if m != "segment"]
        _print_segment(args, device, seg_names)
        if not modes:
            return
    if "infonce" not in names:
        raise SystemExit("infonce must be among --methods (it is the reference)")
    print(
        f"device={device} torch={torch.__version__} threads={torch.get_num_threads()} "
        f"repeats={args.repeats} warmup={args.warmup} blocks={args.blocks} K={args.negatives} "
        f"head_hidden={HEAD_HIDDEN or 'linear'}"
    )
    skipped = [n for n in names if methods.get(n).needs_towers]
    if skipped:
        print(f"[dcr mode only] {skipped} run a denoiser on pixels")
    for mode in modes:
        if mode == "tokens":
            bench_tokens(args.token_batch, args.repeats, args.warmup, device, args.flops)
            continue
        if mode == "vitb32" and not cuda:
            print("[skip] vitb32 needs CUDA")
            continue
        if mode == "vitb32":
            shapes = [(1024, 512)]
        elif mode == "dcr":
            shapes = [(args.dcr_batch, d) for d in args.dims]
        else:
            shapes = [(b, d) for b in args.batches for d in args.dims]
        for batch, dim in shapes:
            res, fl = bench(
                mode, batch, dim, names, args.repeats, args.warmup, args.blocks, device,
                args.dcr_negatives if mode == "dcr" else args.negatives, args.flops,
            )  # fmt: skip
            cols = list(res) if mode == "dcr" else [n for n in names if n in res]
            cells = "  ".join(f"{n} {res[n]:.1f} ms ({res[n] / res['infonce']:.2f}×)" for n in cols)
            print(f"{mode:7} {batch:5d} {dim:4d}  {cells}", flush=True)
            if fl is not None:
                cells = "  ".join(
                    f"{n} {fl[n] / 1e9:.2f} GF ({fl[n] / fl['infonce']:.2f}×)" for n in cols
                )
                print(f"{'':7} {'flops':>10}  {cells}", flush=True)
            for n, (ref, _) in REFERENCES.items():
                if ref in res:
                    print(
                        f"{'':20}{n} / {ref} (same trainable parts): "
                        f"{res[n]:.1f} / {res[ref]:.1f} ms = {res[n] / res[ref]:.2f}×"
                    )


def _print_segment(args, device, seg_names) -> None:
    base = "earth_adapter/head_only"
    if base not in seg_names:
        raise SystemExit(f"{base} must be among --methods (the frozen tower + head reference)")
    first = args.seg_first_block
    if args.seg_notebook:  # the notebook's placement and head inputs (EarthAdapterConfig)
        from workbench.experiments.earth_adapter import EarthAdapterConfig

        nb = EarthAdapterConfig()
        args.resolution = nb.resolution
        if nb.adapter_layers is not None and first is None:
            first = min(nb.adapter_layers)
        for name, value in (("seg_fft_layers", nb.fft_layers),
                            ("seg_feature_layers", nb.feature_layers)):  # fmt: skip
            if getattr(args, name) is None and value is not None:
                setattr(args, name, value if isinstance(value, int) else list(value))
    extra = {
        k: v
        for k, v in (("fft_layers", args.seg_fft_layers),
                     ("feature_layers", args.seg_feature_layers),
                     ("min_stride", args.seg_min_stride))
        if v is not None
    }  # fmt: skip
    print(
        f"segment: device={device} threads={torch.get_num_threads()} batch={args.seg_batch} "
        f"resolution={args.resolution} repeats={args.repeats} warmup={args.warmup} "
        f"adapters on image blocks {'by min_stride' if first is None else f'{first}..15'} {extra}"
    )
    res = bench_segment(
        seg_names, args.seg_batch, args.resolution, args.repeats, args.warmup, device, first, extra
    )
    print(f"{'method':26} {'wall ms':>9} {'×':>5} {'cpu ms':>9} {'×':>5}")
    for n, (wall, cpu) in res.items():
        print(
            f"{n:26} {wall:9.1f} {wall / res[base][0]:5.2f} {cpu:9.1f} {cpu / res[base][1]:5.2f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
