"""Compositional hard-negative captions (ARO, Yuksekgonul et al. 2023; SugarCrepe, Hsieh et al. 2023).

Five kinds, each a caption that reuses the positive's words but is false of its image:

- ``swap_attributes``: exchange the attributes of two different nouns ("a red car and a blue
  bus" → "a blue car and a red bus").
- ``swap_nouns``: exchange two different nouns, keeping each slot's number ("two dogs and a cat" →
  "two cats and a dog").
- ``reorder``: permute words: the adjectives and nouns among their own slots, or word trigrams
  (ARO's "shuffle nouns and adjectives" / "shuffle trigrams").
- ``replace_attribute``: one attribute word replaced by a contrasting one of the same kind
  (colour → another colour, small → large, left → right, two → three).
- ``replace_noun``: one noun replaced by another from the same group (dog → cat, car → bus).

With a synthetic-world factor dict whose canonical caption is the positive, negatives are built
*exactly* from the factors (a replaced factor is really different; swaps use the black dot as the
second noun). Otherwise rules over a small vocabulary (:data:`ATTRIBUTE_GROUPS`,
:data:`NOUN_GROUPS`) apply to free text, so any captioned dataset works. A kind that cannot apply
(one noun → no noun swap) yields an empty list; nothing is faked.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

#: A predicate on replacement words (``None`` = every word allowed).
Allow = Callable[[str], bool] | None

KINDS = ("swap_attributes", "swap_nouns", "reorder", "replace_attribute", "replace_noun")

#: Attribute words by kind; a replacement comes from the same kind, a different meaning.
ATTRIBUTE_GROUPS: dict[str, tuple[str, ...]] = {
    "colour": ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black",
               "white", "grey", "gray", "silver", "gold"),
    "size": ("small", "little", "tiny", "medium-sized", "medium", "large", "big", "huge", "giant"),
    "count": ("two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"),
    "spatial": ("left", "right", "top", "bottom", "up", "down", "above", "below", "front",
                "behind", "inside", "outside"),
}  # fmt: skip
#: Adjectives with explicit contrasts (also used as attribute words).
OPPOSITES: dict[str, tuple[str, ...]] = {
    "old": ("new", "young"), "new": ("old",), "young": ("old",), "tall": ("short",),
    "short": ("tall", "long"), "long": ("short",), "open": ("closed",), "closed": ("open",),
    "empty": ("full",), "full": ("empty",), "wet": ("dry",), "dry": ("wet",), "hot": ("cold",),
    "cold": ("hot",), "dark": ("bright",), "bright": ("dark",), "light": ("dark", "heavy"),
    "heavy": ("light",), "wooden": ("metal", "plastic"), "metal": ("wooden",),
    "plastic": ("wooden",), "solid": ("outlined",), "outlined": ("solid",), "filled": ("outlined",),
    "sitting": ("standing",), "standing": ("sitting",), "happy": ("sad",), "sad": ("happy",),
    "clean": ("dirty",), "dirty": ("clean",), "handwritten": ("printed",),
    "printed": ("handwritten",), "striped": ("plain",), "plain": ("striped",),
}  # fmt: skip
_SIZE_CLASSES = (
    {"small", "little", "tiny"},
    {"medium-sized", "medium"},
    {"large", "big", "huge", "giant"},
)
_SYNONYMS = ({"grey", "gray"}, *_SIZE_CLASSES)

#: Content nouns (singular) by group; a replacement noun comes from the same group.
NOUN_GROUPS: dict[str, tuple[str, ...]] = {
    "people": ("man", "woman", "person", "child", "boy", "girl", "baby", "player", "skier",
               "surfer", "rider"),
    "animals": ("dog", "cat", "horse", "cow", "sheep", "bird", "elephant", "giraffe", "zebra",
                "bear", "duck", "frog", "pig", "rabbit", "fish", "lion", "tiger", "monkey",
                "mouse"),
    "vehicles": ("car", "bus", "truck", "train", "bicycle", "motorcycle", "airplane", "boat",
                 "ship", "van", "taxi", "scooter"),
    "food": ("pizza", "sandwich", "cake", "banana", "apple", "donut", "broccoli", "carrot",
             "bread", "cheese", "egg", "pear", "strawberry", "cookie", "burger", "salad", "soup"),
    "furniture": ("chair", "table", "bed", "couch", "sofa", "bench", "desk", "shelf", "lamp"),
    "clothing": ("shirt", "t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "sneaker",
                 "boot", "bag", "hat", "jacket", "shoe", "sock", "skirt", "tie"),
    "objects": ("book", "clock", "phone", "laptop", "computer", "cup", "bottle", "glass", "bowl",
                "plate", "knife", "fork", "spoon", "vase", "kite", "ball", "umbrella", "box",
                "surfboard", "skateboard", "racket"),
    "scenery": ("street", "road", "beach", "field", "kitchen", "room", "park", "river",
                "mountain", "building", "house", "tree", "flower", "rock", "cloud", "moon",
                "wall"),
    "shapes": ("circle", "square", "triangle", "star", "arrow", "cross", "heart", "diamond",
               "dot", "rectangle"),
}  # fmt: skip
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_IRREGULAR = {
    "man": "men", "woman": "women", "person": "people", "child": "children", "mouse": "mice",
    "sheep": "sheep", "fish": "fish", "knife": "knives", "shelf": "shelves", "foot": "feet",
}  # fmt: skip
_TOKEN = re.compile(r"[A-Za-z]+(?:[-'][A-Za-z]+)*|\d+|\s+|[^\sA-Za-z\d]+")


def pluralise(noun: str) -> str:
    """English plural of a vocabulary noun."""
    if noun in _IRREGULAR:
        return _IRREGULAR[noun]
    if re.search(r"(s|x|ch|sh)$", noun):
        return noun + "es"
    if re.search(r"[^aeiou]y$", noun):
        return noun[:-1] + "ies"
    return noun + "s"


_NOUN_GROUP = {n: g for g, nouns in NOUN_GROUPS.items() for n in nouns}
_NOUN_FORMS = {n: (n, False) for n in _NOUN_GROUP} | {pluralise(n): (n, True) for n in _NOUN_GROUP}
_ATTR_KIND = {w: k for k, words in ATTRIBUTE_GROUPS.items() for w in words}
_ATTR_KIND.update({w: "contrast" for w in OPPOSITES if w not in _ATTR_KIND})


def _same_meaning(a: str, b: str) -> bool:
    return a == b or any(a in s and b in s for s in _SYNONYMS)


class _Tagged:
    """A caption split into tokens (whitespace kept), with noun / attribute tags on word tokens."""

    def __init__(self, caption: str) -> None:
        self.tokens = _TOKEN.findall(caption)
        self.words = [i for i, t in enumerate(self.tokens) if t[0].isalpha()]
        self.nouns: list[int] = []
        self.attrs: list[int] = []
        prev = ""
        for i in self.words:
            low = self.tokens[i].lower()
            if low in DIGIT_WORDS and prev in ("digit", "number"):
                self.nouns.append(i)  # "the digit seven": a name, not a count
            elif low in _NOUN_FORMS:
                self.nouns.append(i)
            elif low in _ATTR_KIND:
                self.attrs.append(i)
            prev = low

    def text(self, replacements: Mapping[int, str]) -> str:
        toks = list(self.tokens)
        for i, word in replacements.items():
            toks[i] = _match_case(self.tokens[i], word)
        for i in replacements:  # fix "a"/"an" right before a changed word
            j = self._prev_word(i)
            if j is not None and toks[j].lower() in ("a", "an"):
                article = "an" if toks[i][0].lower() in "aeiou" else "a"
                toks[j] = _match_case(toks[j], article)
        return "".join(toks)

    def _prev_word(self, i: int) -> int | None:
        k = self.words.index(i)
        return self.words[k - 1] if k > 0 else None

    def noun_of(self, i: int) -> int | None:
        """The noun an attribute word modifies: the next noun with only attributes in between."""
        k = self.words.index(i)
        for j in self.words[k + 1 :]:
            if j in self.nouns:
                return j
            if j not in self.attrs:
                return None
        return None


def _match_case(template: str, word: str) -> str:
    if template.isupper() and len(template) > 1:
        return word.upper()
    return word[0].upper() + word[1:] if template[0].isupper() else word


def _noun_info(token: str, digit_slot: bool) -> tuple[str, bool, str]:
    low = token.lower()
    if digit_slot:
        return low, False, "digits"
    lemma, is_plural = _NOUN_FORMS[low]
    return lemma, is_plural, _NOUN_GROUP[lemma]


def _inflect(lemma: str, plural: bool, group: str) -> str:
    return pluralise(lemma) if plural and group != "digits" else lemma


def _text_swap_attributes(t: _Tagged) -> list[str]:
    bound = [(i, t.noun_of(i)) for i in t.attrs if _ATTR_KIND[t.tokens[i].lower()] != "spatial"]
    bound = [(i, n) for i, n in bound if n is not None]
    out = []
    for a, (i, ni) in enumerate(bound):
        for j, nj in bound[a + 1 :]:
            wi, wj = t.tokens[i].lower(), t.tokens[j].lower()
            if (
                ni != nj
                and t.tokens[ni].lower() != t.tokens[nj].lower()
                and not _same_meaning(wi, wj)
            ):
                out.append(t.text({i: wj, j: wi}))
    return out


def _digit_slot(t: _Tagged, i: int) -> bool:
    return t.tokens[i].lower() in DIGIT_WORDS


def _text_swap_nouns(t: _Tagged) -> list[str]:
    out = []
    for a, i in enumerate(t.nouns):
        for j in t.nouns[a + 1 :]:
            li, pi, gi = _noun_info(t.tokens[i], _digit_slot(t, i))
            lj, pj, gj = _noun_info(t.tokens[j], _digit_slot(t, j))
            if li == lj or (gi == "digits") != (gj == "digits"):
                continue
            out.append(t.text({i: _inflect(lj, pi, gj), j: _inflect(li, pj, gi)}))
    return out


def _alternatives(word: str) -> list[str]:
    low = word.lower()
    kind = _ATTR_KIND[low]
    if kind == "contrast":
        return list(OPPOSITES[low])
    if kind == "spatial":
        pairs = [("left", "right"), ("top", "bottom"), ("up", "down"), ("above", "below"),
                 ("front", "behind"), ("inside", "outside")]  # fmt: skip
        return [b if low == a else a for a, b in pairs if low in (a, b)]
    if kind == "size":
        return [w for w in ("small", "large") if not _same_meaning(low, w)]
    return [w for w in ATTRIBUTE_GROUPS[kind] if not _same_meaning(low, w)]


def _text_replace_attribute(t: _Tagged, rng: np.random.Generator, allow: Allow) -> list[str]:
    out = []
    for i in t.attrs:
        options = [w for w in _alternatives(t.tokens[i]) if allow is None or allow(w)]
        if options:
            out.append(t.text({i: options[int(rng.integers(len(options)))]}))
    return out


def _text_replace_noun(t: _Tagged, rng: np.random.Generator, allow: Allow) -> list[str]:
    out = []
    for i in t.nouns:
        lemma, plural, group = _noun_info(t.tokens[i], _digit_slot(t, i))
        pool = DIGIT_WORDS if group == "digits" else NOUN_GROUPS[group]
        options = [n for n in pool if n != lemma and (allow is None or allow(n))]
        if not options:
            continue
        pick = options[int(rng.integers(len(options)))]
        out.append(t.text({i: _inflect(pick, plural, group)}))
    return out


def _text_reorder(caption: str, t: _Tagged, rng: np.random.Generator) -> list[str]:
    out = []
    slots = sorted(t.nouns + t.attrs)
    words = [t.tokens[i] for i in slots]
    if len({w.lower() for w in words}) >= 2:  # shuffle nouns and adjectives among their slots
        for _ in range(10):
            perm = rng.permutation(len(slots))
            if any(words[p].lower() != words[k].lower() for k, p in enumerate(perm)):
                out.append(t.text({slots[k]: words[p] for k, p in enumerate(perm)}))
                break
    plain = caption.split()
    trigrams = [" ".join(plain[k : k + 3]) for k in range(0, len(plain), 3)]
    if len(set(trigrams)) >= 2:  # shuffle trigrams
        for _ in range(10):
            perm = rng.permutation(len(trigrams))
            if any(trigrams[p] != trigrams[k] for k, p in enumerate(perm)):
                out.append(" ".join(trigrams[p] for p in perm))
                break
    return out


def is_synthetic_caption(caption: str, attributes: Mapping[str, Any] | None) -> bool:
    """True when ``attributes`` is a synthetic-world factor dict whose canonical caption is
    ``caption`` (then negatives are exact factor edits)."""
    if attributes is None:
        return False
    from workbench.data import synthetic

    if not set(synthetic.FACTORS) <= set(attributes):
        return False
    try:
        return synthetic.caption(attributes) == caption
    except (KeyError, ValueError):
        return False


def _synthetic_negatives(
    kind: str, attrs: Mapping[str, Any], rng: np.random.Generator, allow: Allow = None
) -> list[str]:
    from workbench.data import synthetic as sw

    parts = sw.caption_parts(attrs)
    n = attrs["count"]
    each = "each with" if n > 1 else "with"
    if kind == "swap_attributes":  # the colours of the shapes and of their dot trade places
        if not attrs["dot"]:
            return []
        return [
            sw.join_caption(
                {**parts, "colour": "black", "dot": f", {each} a {attrs['colour']} dot"}
            )
        ]
    if kind == "swap_nouns":  # the shapes become dots and the dots become shapes
        if not attrs["dot"]:
            return []
        noun = "dot" if n == 1 else "dots"
        return [
            sw.join_caption({**parts, "noun": noun, "dot": f", {each} a black {attrs['shape']}"})
        ]
    variants: list[dict[str, Any]] = []
    if kind == "replace_attribute":
        for factor in (
            "colour",
            "size",
            "fill",
            "orientation",
            "position",
            "count",
            "arrangement",
            "dot",
            "view",
        ):
            if attrs[factor] is None:
                continue
            values = (2, 3) if factor == "count" and n > 1 else sw.FACTORS[factor]
            if factor == "count" and n == 1:
                continue  # 1 → 2 would add an arrangement too: two changes, not one
            options = [v for v in values if v != attrs[factor] and (allow is None or allow(str(v)))]
            if not options:
                continue
            variants.append({**attrs, factor: options[int(rng.integers(len(options)))]})
    if kind == "replace_noun":
        same_kind = [
            s for s in sw.FACTORS["shape"]
            if s != attrs["shape"] and (s in sw.ORIENTABLE_SHAPES) == (attrs["shape"] in sw.ORIENTABLE_SHAPES)
            and (allow is None or allow(s))
        ]  # fmt: skip
        if same_kind:
            variants.append({**attrs, "shape": same_kind[int(rng.integers(len(same_kind)))]})
        glyphs = [
            g for g in sw.FACTORS["text"] if g != attrs["text"] and (allow is None or allow(g))
        ]
        if glyphs:
            variants.append({**attrs, "text": glyphs[int(rng.integers(len(glyphs)))]})
    return [sw.caption(v) for v in variants]


def hard_negatives(
    caption: str,
    attributes: Mapping[str, Any] | None = None,
    kinds: Sequence[str] = KINDS,
    seed: int = 0,
    max_per_kind: int | None = 3,
    allow: Allow = None,
) -> dict[str, list[str]]:
    """Hard-negative captions of ``caption``, by kind.

    Args:
        caption: The positive caption.
        attributes: Optional synthetic-world factor dict; used for exact negatives when
            ``caption`` is its canonical caption (``synthetic.caption(attributes)``), ignored else.
        kinds: Which of :data:`KINDS` to produce.
        seed: Seeds the choice of replacements and permutations (same seed → same output).
        max_per_kind: Keep at most this many per kind (seeded choice; ``None`` keeps all).
        allow: Predicate on replacement words (``replace_*`` kinds; synthetic factor values as
            ``str``): only words it accepts replace one, so two generators with disjoint
            vocabularies never produce the same replacement (a held-out vocabulary split).
            ``None`` allows every word.

    Returns:
        ``{kind: [negative, ...]}`` for every requested kind: distinct strings, none equal to the
        positive; an empty list where the kind cannot apply.
    """
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise ValueError(f"unknown hard-negative kinds {unknown}; choose from {KINDS}")
    if not isinstance(caption, str) or not caption.strip():
        raise ValueError(f"caption must be a non-empty string, got {caption!r}")
    structured = is_synthetic_caption(caption, attributes)
    tagged = _Tagged(caption)
    out: dict[str, list[str]] = {}
    for k, kind in enumerate(kinds):
        rng = np.random.default_rng([seed, k])
        if structured and kind != "reorder":
            found = _synthetic_negatives(kind, attributes, rng, allow)  # type: ignore[arg-type]
        elif kind == "swap_attributes":
            found = _text_swap_attributes(tagged)
        elif kind == "swap_nouns":
            found = _text_swap_nouns(tagged)
        elif kind == "reorder":
            found = _text_reorder(caption, tagged, rng)
        elif kind == "replace_attribute":
            found = _text_replace_attribute(tagged, rng, allow)
        else:
            found = _text_replace_noun(tagged, rng, allow)
        unique = [c for c in dict.fromkeys(found) if c.casefold() != caption.casefold()]
        if max_per_kind is not None and len(unique) > max_per_kind:
            keep = sorted(rng.choice(len(unique), size=max_per_kind, replace=False).tolist())
            unique = [unique[i] for i in keep]
        out[kind] = unique
    return out
