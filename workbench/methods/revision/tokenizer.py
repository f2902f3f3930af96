"""The caption language model's tokenizer: MiniLM's WordPiece, restricted to the corpus's pieces.

Why this one [our reading]: the default encoder's text tower already ships an uncased WordPiece
tokenizer (all-MiniLM-L6-v2, 30,522 pieces). Its splitting rules are kept exactly; only the
vocabulary is cut down to the pieces that occur in the caption LM's training corpus (≈ 3.5k for
the default mixture), so the decoder's embedding and output layers are ~9× smaller than with the
full vocabulary — the output softmax dominates a small decoder's step on CPU. Pieces outside the
kept set (words of held-out captions the corpus never had) become ``[UNK]``.

Sequence layout: ``[BOS] w_1 … w_n [EOS]`` then ``[PAD]``; ``BOS``/``EOS`` are MiniLM's
``[CLS]``/``[SEP]`` and decoding goes back through MiniLM's own ``decode`` (``##`` pieces joined).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import torch

__all__ = ["CaptionTokenizer", "minilm_tokenizer"]


@lru_cache(maxsize=1)
def minilm_tokenizer() -> Any:
    """The all-MiniLM-L6-v2 WordPiece tokenizer shipped with the default encoder (no download)."""
    from transformers import AutoTokenizer

    from workbench.encoders.default import minilm_dir

    return AutoTokenizer.from_pretrained(minilm_dir(), local_files_only=True)


def _check_captions(captions: Sequence[str], what: str) -> list[str]:
    if isinstance(captions, str) or not isinstance(captions, Sequence):
        raise TypeError(f"{what} must be a sequence of strings, got {type(captions).__name__}")
    if len(captions) == 0:
        raise ValueError(f"{what} is empty; pass at least one caption")
    out = []
    for i, c in enumerate(captions):
        if not isinstance(c, str):
            raise TypeError(f"{what}[{i}] must be a string, got {type(c).__name__}")
        if not c.strip():
            raise ValueError(f"{what}[{i}] is an empty caption; drop it or give it text")
        out.append(c)
    return out


class CaptionTokenizer:
    """MiniLM WordPiece over a kept subset of its pieces (see the module docstring).

    Args:
        pieces: MiniLM token ids kept, in the order that defines the compact ids
            ``SPECIALS..SPECIALS+len(pieces)-1``. Build it with :meth:`fit`.

    Attributes:
        vocab_size: ``4 + len(pieces)`` (PAD, UNK, BOS, EOS first).
    """

    PAD, UNK, BOS, EOS = 0, 1, 2, 3
    SPECIALS = 4

    def __init__(self, pieces: Sequence[int]) -> None:
        hf = minilm_tokenizer()
        pieces = [int(p) for p in pieces]
        if len(set(pieces)) != len(pieces) or not all(0 <= p < len(hf) for p in pieces):
            raise ValueError("pieces must be distinct MiniLM token ids")
        self.pieces = pieces
        self.vocab_size = self.SPECIALS + len(pieces)
        self._to_compact = {p: self.SPECIALS + i for i, p in enumerate(pieces)}
        specials = [hf.pad_token_id, hf.unk_token_id, hf.cls_token_id, hf.sep_token_id]
        self._to_minilm = torch.tensor(specials + pieces, dtype=torch.long)

    @classmethod
    def fit(cls, captions: Sequence[str], min_count: int = 1) -> CaptionTokenizer:
        """Keep every MiniLM piece seen at least ``min_count`` times in ``captions``, most
        frequent first (ties by MiniLM id, so the result is a pure function of the corpus)."""
        captions = _check_captions(captions, "captions")
        if not (isinstance(min_count, int) and min_count >= 1):
            raise ValueError(f"min_count must be an int >= 1, got {min_count!r}")
        ids = minilm_tokenizer()(captions, add_special_tokens=False)["input_ids"]
        counts = Counter(t for seq in ids for t in seq)
        kept = sorted(
            (t for t, c in counts.items() if c >= min_count), key=lambda t: (-counts[t], t)
        )
        if not kept:
            raise ValueError(f"no piece occurs {min_count} times in the corpus; lower min_count")
        return cls(kept)

    def encode(self, captions: Sequence[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Captions → ``ids`` (B, T) int64 and ``mask`` (B, T) bool (True on real tokens).

        Each row is ``[BOS] w_1 … w_n [EOS]`` truncated to ``max_length`` tokens (the EOS is
        kept), right-padded with ``[PAD]`` to the longest row. Empty or non-string captions
        raise ``ValueError``/``TypeError`` naming the index.
        """
        captions = _check_captions(captions, "captions")
        if not (isinstance(max_length, int) and max_length >= 3):
            raise ValueError(
                f"max_length must be an int >= 3 (BOS, a word, EOS), got {max_length!r}"
            )
        raw = minilm_tokenizer()(captions, add_special_tokens=False)["input_ids"]
        rows = []
        for i, seq in enumerate(raw):
            if not seq:
                raise ValueError(f"captions[{i}] {captions[i]!r} has no WordPiece tokens")
            body = [self._to_compact.get(t, self.UNK) for t in seq][: max_length - 2]
            rows.append([self.BOS, *body, self.EOS])
        T = max(len(r) for r in rows)
        ids = torch.full((len(rows), T), self.PAD, dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r)
        return ids, ids != self.PAD

    def decode(self, ids: torch.Tensor | Sequence[Sequence[int]]) -> list[str]:
        """Compact ids (B, T) → captions; stops at the first EOS, drops BOS/PAD/UNK."""
        out = []
        for row in torch.as_tensor(ids, dtype=torch.long).reshape(len(ids), -1).tolist():
            body = []
            for t in row:
                if t == self.EOS:
                    break
                if t >= self.SPECIALS:
                    body.append(t)
            minilm = self._to_minilm[torch.tensor(body, dtype=torch.long)].tolist() if body else []
            out.append(minilm_tokenizer().decode(minilm, skip_special_tokens=True).strip())
        return out

    def state(self) -> torch.Tensor:
        """The kept pieces as an int64 tensor (stored beside the LM's weights)."""
        return torch.tensor(self.pieces, dtype=torch.long)
