"""ReVision (scaled down): a projector into a frozen caption LM, trained on text alone.

Modules, one concern each: ``tokenizer`` (MiniLM WordPiece restricted to the corpus) · ``lm`` (the
frozen caption LM, Eq. 2's :func:`prefix_nll`, weights and card) · ``lm_pretrain`` (its one-off
plain-LM training) · ``align`` (none / C3 / ReAlign frames in torch, fitted on unpaired sets) ·
``method`` (the ``"revision"`` loop method: projector, Stage 1 / Stage 2, captioning).
"""

from workbench.methods.revision.align import ALIGNMENTS, aligned, fit_alignment
from workbench.methods.revision.lm import CaptionLM, CaptionLMRecipe, load_caption_lm, prefix_nll
from workbench.methods.revision.method import Projector, ReVision
from workbench.methods.revision.tokenizer import CaptionTokenizer

__all__ = [
    "ALIGNMENTS",
    "CaptionLM",
    "CaptionLMRecipe",
    "CaptionTokenizer",
    "Projector",
    "ReVision",
    "aligned",
    "fit_alignment",
    "load_caption_lm",
    "prefix_nll",
]
