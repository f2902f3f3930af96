"""DeGLA's hard-negative captions: K per caption, two kinds merged, generated once and cached.

DeGLA (``methods-geometry.md`` §5) writes about 2M negatives for COCO captions with an LLM, five
kinds — (1) reorder the sentence, (2) swap nouns, (3) swap adjectives, (4) replace an
adjective, (5) replace a noun — and trains with K = 4 per caption, "two subtypes merged".
**No LLM is available offline; every negative here is rule-based**:

* synthetic-world captions (their factor dict in ``attributes``) use the attribute-aware
  generator :func:`workbench.data.negatives.hard_negatives`, whose replacements are *true*
  factor changes;
* every other caption uses part-of-speech rules over spaCy's parse
  (:mod:`workbench.data.pos_negatives`, ``text_rules="pos"``), with replacements from the
  corpus' own nouns and adjectives, or the fixed word lists of :mod:`workbench.data.negatives`
  (``text_rules="words"``).

Per caption (seeded by :attr:`NegativeConfig.seed` and the caption's text alone, so the choice
does not depend on batch order): the kinds that produced candidates are shuffled (those with at
least ``K / kinds_per_caption`` first), the first ``kinds_per_caption`` are merged with
``K / kinds_per_caption`` negatives each, any
shortfall is filled from the remaining kinds, and a caption with fewer than K distinct negatives
repeats them (counted in :attr:`NegativeBank.n_repeated`). A negative equal (case and spacing
folded) to the caption or to another positive of the same image is never emitted.

Held-out vocabulary: :func:`vocabulary_half` splits every replacement word into ``"train"`` or
``"eval"`` by a hash; a generator with ``vocabulary="train"`` only ever replaces a word *by* a
``"train"`` word, so an evaluation generator on ``"eval"`` never grades a training replacement.

>>> bank = NegativeBank(NegativeConfig(text_rules="words"))
>>> negs = bank.lookup(["a red car and a blue bus"])[0]
>>> len(negs), "a red car and a blue bus" in negs
(4, False)
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from workbench.data.negatives import hard_negatives, is_synthetic_caption

__all__ = [
    "DEGLA_KINDS",
    "NegativeBank",
    "NegativeConfig",
    "build_negative_bank",
    "vocabulary_half",
]

#: DeGLA's five kinds, in the paper's order (1)–(5), named as :mod:`workbench.data.negatives`.
DEGLA_KINDS: tuple[str, ...] = (
    "reorder",
    "swap_nouns",
    "swap_attributes",
    "replace_attribute",
    "replace_noun",
)
VOCABULARIES: tuple[str, ...] = ("all", "train", "eval")
TEXT_RULES: tuple[str, ...] = ("pos", "words")
_FORMAT = 2  # bump when the bank's rules or file layout change; part of every cache key


def vocabulary_half(word: str) -> str:
    """``"train"`` or ``"eval"``: the half of the replacement vocabulary ``word`` belongs to
    (CRC-32 of the lower-cased word, parity) [our reading of "a held-out vocabulary split"]."""
    return "train" if zlib.crc32(word.lower().encode()) % 2 == 0 else "eval"


def _fold(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().casefold()


def _text_seed(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")


@dataclass(frozen=True)
class NegativeConfig:
    """How :class:`NegativeBank` generates negatives; every field is validated.

    Attributes:
        k: Negatives per caption (4 [paper]).
        kinds_per_caption: Kinds merged per caption (2 [paper]: "two subtypes merged").
        kinds: Kinds to draw from (default DeGLA's five, :data:`DEGLA_KINDS`).
        seed: Seeds every choice (kinds, replacements, permutations).
        vocabulary: ``"train"``/``"eval"``: replacements only from that half of
            :func:`vocabulary_half`; ``"all"``: any word.
        text_rules: Non-synthetic captions: ``"pos"`` (spaCy rules, corpus vocabulary; needs a
            corpus, see :func:`build_negative_bank`) or ``"words"`` (fixed word lists).
    """

    k: int = 4
    kinds_per_caption: int = 2
    kinds: tuple[str, ...] = DEGLA_KINDS
    seed: int = 0
    vocabulary: str = "train"
    text_rules: str = "pos"

    def __post_init__(self) -> None:
        if isinstance(self.kinds, str):
            raise TypeError(
                f"NegativeConfig: kinds must be a sequence of kinds, got {self.kinds!r}"
            )
        object.__setattr__(self, "kinds", tuple(self.kinds))
        if not (isinstance(self.k, int) and self.k >= 1):
            raise ValueError(f"NegativeConfig: k must be an int ≥ 1, got {self.k!r}")
        if not (isinstance(self.kinds_per_caption, int) and 1 <= self.kinds_per_caption <= self.k):
            raise ValueError(
                f"NegativeConfig: kinds_per_caption must be an int in [1, k={self.k}], got "
                f"{self.kinds_per_caption!r}"
            )
        unknown = [x for x in self.kinds if x not in DEGLA_KINDS]
        if unknown or not self.kinds or len(set(self.kinds)) != len(self.kinds):
            raise ValueError(
                f"NegativeConfig: kinds must be distinct names from {DEGLA_KINDS}, got {self.kinds}"
            )
        if self.vocabulary not in VOCABULARIES:
            raise ValueError(
                f"NegativeConfig: vocabulary must be one of {VOCABULARIES}, got {self.vocabulary!r}"
            )
        if self.text_rules not in TEXT_RULES:
            raise ValueError(
                f"NegativeConfig: text_rules must be 'pos' or 'words', got {self.text_rules!r}"
            )

    @property
    def allow(self) -> Callable[[str], bool] | None:
        """The replacement-word predicate of :attr:`vocabulary` (``None`` for ``"all"``)."""
        if self.vocabulary == "all":
            return None
        half = self.vocabulary
        return lambda word: vocabulary_half(word) == half

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["kinds"] = list(self.kinds)
        return d


@dataclass
class NegativeBank:
    """Caption → K hard negatives, generated on first request and kept.

    Args:
        config: How negatives are generated.
        vocabulary: The corpus' :class:`~workbench.data.pos_negatives.PosVocabulary`
            (``text_rules="pos"``); :func:`build_negative_bank` makes it from the corpus.

    Attributes:
        negatives: caption → its K negatives (in kind order of the merge).
        kinds: caption → the kind of each of its negatives.
        n_repeated: Captions that had fewer than K distinct negatives (some repeat).
        path: Where the bank was saved or loaded from (``None`` for an unsaved bank).
        frozen: A loaded bank refuses captions it does not hold (its corpus is fixed).
    """

    config: NegativeConfig = field(default_factory=NegativeConfig)
    vocabulary: Any = None
    negatives: dict[str, list[str]] = field(default_factory=dict)
    kinds: dict[str, list[str]] = field(default_factory=dict)
    n_repeated: int = 0
    path: Path | None = None
    frozen: bool = False

    def __len__(self) -> int:
        return len(self.negatives)

    def __contains__(self, caption: object) -> bool:
        return caption in self.negatives

    def lookup(
        self, captions: Sequence[str], attributes: Sequence[Mapping[str, Any]] | None = None
    ) -> list[list[str]]:
        """``[K negatives]`` of each caption (generated now when new, unless :attr:`frozen`)."""
        if isinstance(captions, str):
            raise TypeError("NegativeBank.lookup takes a list of captions; wrap one as [caption]")
        attributes = list(attributes) if attributes else [{}] * len(captions)
        if len(attributes) != len(captions):
            raise ValueError(f"got {len(attributes)} attribute dicts for {len(captions)} captions")
        missing = [(c, a) for c, a in zip(captions, attributes) if c not in self.negatives]
        if missing and self.frozen:
            raise ValueError(
                f"NegativeBank {self.path}: {len(missing)} caption(s) not in the bank, e.g. "
                f"{missing[0][0]!r}; rebuild it with build_negative_bank over the training data"
            )
        for caption, attrs in missing:
            self.add(caption, attrs, positives=(caption,))
        return [self.negatives[c] for c in captions]

    def add(
        self,
        caption: str,
        attributes: Mapping[str, Any] | None,
        positives: Sequence[str],
        parsed: Any = None,
    ) -> list[str]:
        """Generate and store ``caption``'s negatives, none equal to one of ``positives``
        (``parsed``: its :class:`~workbench.data.pos_negatives.ParsedCaption`, if at hand)."""
        if not isinstance(caption, str) or not caption.strip():
            raise ValueError(f"caption must be a non-empty string, got {caption!r}")
        candidates = self._candidates(caption, attributes, parsed)
        chosen, kinds = self._merge(caption, candidates, {_fold(p) for p in (caption, *positives)})
        if not chosen:
            raise ValueError(
                f"no hard negative can be made from caption {caption!r} with kinds "
                f"{self.config.kinds} (no noun, adjective or reorderable words); drop it from "
                "the training data (build_negative_bank(..., skip_empty=True) lists such captions)"
            )
        if len(set(chosen)) < len(chosen):
            self.n_repeated += 1
        self.negatives[caption], self.kinds[caption] = chosen, kinds
        return chosen

    # -- generation ---------------------------------------------------------------------------
    def _candidates(
        self, caption: str, attributes: Mapping[str, Any] | None, parsed: Any
    ) -> dict[str, list[str]]:
        cfg = self.config
        seed = [cfg.seed, _text_seed(caption) % (2**32)]
        if is_synthetic_caption(caption, attributes) or cfg.text_rules == "words":
            attrs = attributes if is_synthetic_caption(caption, attributes) else None
            return hard_negatives(
                caption, attrs, cfg.kinds, seed=seed[0] * 1_000_003 + seed[1],
                max_per_kind=None, allow=cfg.allow,
            )  # fmt: skip
        from workbench.data.pos_negatives import parse_captions, pos_negatives

        if self.vocabulary is None:
            raise ValueError(
                "text_rules='pos' draws replacements from a corpus vocabulary, and this bank has "
                "none: build it with build_negative_bank(captions, ...) or use text_rules='words'"
            )
        parsed = parsed if parsed is not None else parse_captions([caption])[0]
        vocab = self.vocabulary.restrict(cfg.allow)
        return pos_negatives(parsed, vocab, cfg.kinds, np.random.default_rng(seed))

    def _merge(
        self, caption: str, candidates: dict[str, list[str]], banned: set[str]
    ) -> tuple[list[str], list[str]]:
        cfg = self.config
        rng = np.random.default_rng([cfg.seed, _text_seed(caption) % (2**32), 1])
        seen: set[str] = set(banned)
        pools: dict[str, list[str]] = {}
        for kind in cfg.kinds:
            pool = []
            for c in candidates.get(kind, []):
                if _fold(c) not in seen:
                    seen.add(_fold(c))
                    pool.append(c)
            if pool:
                pools[kind] = [pool[int(i)] for i in rng.permutation(len(pool))]
        per = cfg.k // cfg.kinds_per_caption
        order = [list(pools)[int(i)] for i in rng.permutation(len(pools))]
        order.sort(key=lambda kind: len(pools[kind]) < per)  # kinds that can give `per` first
        merged, primary = order[: cfg.kinds_per_caption], order[cfg.kinds_per_caption :]
        taken: list[tuple[str, str]] = []
        for kind in merged:  # K / kinds_per_caption from each merged kind
            taken += [(kind, c) for c in pools[kind][:per]]
        leftovers = [(kind, c) for kind in merged for c in pools[kind][per:]]
        leftovers += [(kind, c) for kind in primary for c in pools[kind]]
        taken += leftovers[: max(0, cfg.k - len(taken))]
        if not taken:
            return [], []
        while len(taken) < cfg.k:  # too few distinct negatives: repeat them
            taken.append(taken[len(taken) % max(1, len(taken))])
        taken = sorted(taken[: cfg.k], key=lambda kc: cfg.kinds.index(kc[0]))
        return [c for _, c in taken], [k for k, _ in taken]

    # -- files ----------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write the bank as JSON (atomically); returns the path and sets :attr:`path`."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        blob = {
            "format": _FORMAT,
            "config": self.config.to_dict(),
            "negatives": self.negatives,
            "kinds": self.kinds,
            "n_repeated": self.n_repeated,
        }
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump(blob, f)
        os.replace(tmp, path)
        self.path = path
        return path

    @classmethod
    def load(cls, path: str | Path) -> NegativeBank:
        """A bank saved by :meth:`save` (frozen: it refuses captions it does not hold)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"no negative bank at {path}; build one with "
                "workbench.data.negative_bank.build_negative_bank(...)"
            )
        try:
            blob = json.loads(path.read_text())
            if blob.get("format") != _FORMAT:
                raise ValueError(f"format {blob.get('format')!r}, expected {_FORMAT}")
            config = NegativeConfig(**{**blob["config"], "kinds": tuple(blob["config"]["kinds"])})
        except (ValueError, KeyError, TypeError) as err:
            raise ValueError(f"{path} is not a negative bank this version reads: {err}") from None
        return cls(
            config,
            negatives={k: list(v) for k, v in blob["negatives"].items()},
            kinds={k: list(v) for k, v in blob["kinds"].items()},
            n_repeated=int(blob.get("n_repeated", 0)),
            path=path,
            frozen=True,
        )


def _bank_key(
    captions: Sequence[str],
    positives: Sequence[Sequence[str]],
    attributes: Sequence[Mapping[str, Any]],
    corpus: Sequence[str] | None,
    config: NegativeConfig,
) -> str:
    h = hashlib.sha256(json.dumps({"format": _FORMAT, "config": config.to_dict()}).encode())
    for part in (captions, positives, [dict(a) for a in attributes], corpus or []):
        h.update(json.dumps(list(part), sort_keys=True, default=str).encode())
    if config.text_rules == "pos":
        import spacy

        h.update(f"spacy={spacy.__version__}".encode())
    return h.hexdigest()[:32]


def build_negative_bank(
    captions: Sequence[str],
    *,
    positives: Sequence[Sequence[str]] | None = None,
    attributes: Sequence[Mapping[str, Any]] | None = None,
    config: NegativeConfig | None = None,
    corpus: Sequence[str] | None = None,
    skip_empty: bool = False,
    cache_dir: str | Path | None = None,
) -> tuple[NegativeBank, list[int]]:
    """Generate K negatives for every caption of a data set, once, and save them (cached).

    Args:
        captions: Row ``i``'s training caption (duplicates share one entry).
        positives: Row ``i``'s other captions (all captions of its image); none is ever emitted
            as a negative of ``captions[i]`` (nor of any row with the same caption).
        attributes: Row ``i``'s attribute dict (synthetic-world factors get exact negatives).
        config: Generation settings (default :class:`NegativeConfig`).
        corpus: Captions whose nouns/adjectives form the replacement vocabulary
            (``text_rules="pos"``); default ``captions`` plus ``positives``.
        skip_empty: Leave out captions no rule applies to and return their rows (else raise).
        cache_dir: Reuse / write ``<cache_dir>/<key>.json``, ``key`` a digest of every input
            and the config (studies pass ``default_cache_dir() / "negatives"``); ``None``
            builds in memory only.

    Returns:
        ``(bank, skipped_rows)``: the frozen bank (saved when ``cache_dir`` is given;
        ``bank.path`` is what ``methods.get("degla", negatives=...)`` takes) and the rows
        left out.
    """
    config = config or NegativeConfig()
    if isinstance(captions, str):
        raise TypeError("build_negative_bank takes a sequence of captions, got a str")
    captions = list(captions)
    if not captions:
        raise ValueError("build_negative_bank got no captions")
    n = len(captions)
    positives = [list(p) for p in positives] if positives is not None else [[] for _ in range(n)]
    attributes = [dict(a or {}) for a in attributes] if attributes is not None else [{}] * n
    if len(positives) != n or len(attributes) != n:
        raise ValueError(
            f"positives ({len(positives)}) and attributes ({len(attributes)}) need one entry per "
            f"caption ({n})"
        )
    path = skipped_file = None
    if cache_dir is not None:
        key = _bank_key(captions, positives, attributes, corpus, config)
        path = Path(cache_dir).expanduser() / f"{key}.json"
        skipped_file = path.with_suffix(".skipped.json")
        if path.is_file() and skipped_file.is_file():
            return NegativeBank.load(path), json.loads(skipped_file.read_text())
    vocabulary, parsed = None, {}
    free = [c for c, a in zip(captions, attributes) if not is_synthetic_caption(c, a)]
    if config.text_rules == "pos" and free:
        from workbench.data.pos_negatives import PosVocabulary, parse_captions

        free = list(dict.fromkeys(free))
        parsed = dict(zip(free, parse_captions(free)))
        texts = (
            list(corpus) if corpus is not None else captions + [p for ps in positives for p in ps]
        )
        texts = [t for t in dict.fromkeys(texts) if t not in parsed]
        docs = [*parsed.values(), *parse_captions(texts)]
        vocabulary = PosVocabulary.from_parsed(docs)
    bank = NegativeBank(config, vocabulary)
    banned: dict[str, list[str]] = {}
    for cap, pos in zip(captions, positives):
        banned.setdefault(cap, []).extend(pos)
    skipped = []
    for i, (cap, attrs) in enumerate(zip(captions, attributes)):
        if cap in bank.negatives:
            continue
        try:
            bank.add(cap, attrs, banned[cap], parsed.get(cap))
        except ValueError:
            if not skip_empty:
                raise
            skipped.append(i)
    bank.vocabulary, bank.frozen = None, True
    if path is not None:
        bank.save(path)
        skipped_file.write_text(json.dumps(skipped))
    return bank, skipped
