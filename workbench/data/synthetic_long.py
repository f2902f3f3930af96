"""Long, detailed captions of ``synthetic-world`` scenes: the DreamLIP-style recaptions ProCLIP
trains on, in a form a 77-token CLIP text encoder cannot read to the end.

:func:`long_caption` describes a scene in 12–13 sentences: a fixed two-sentence preamble about the
picture, then one sentence per factor (shape, colour, size, fill, orientation, arrangement,
position, dot, view, glyph) in an order shuffled per scene, each in one of a few phrasings. It
runs to about 150 CLIP BPE tokens (120–190), so truncation at CLIP's 77-token context keeps the
preamble and only the first few factor sentences — *which* factors survive differs per scene —
while MiniLM's 256-token window reads all of it. The canonical caption (:func:`caption`) of the
same scene states every factor in ~30 tokens.

Determinism: the sentence order and phrasings are drawn from a generator seeded by ``seed`` and a
digest of the canonical caption, so a scene always gets the same long caption, and two items with
identical factors get identical long captions.

>>> from workbench.data.synthetic import sample_attributes
>>> import numpy as np
>>> a = sample_attributes(np.random.default_rng(0))
>>> long = long_caption(a)
>>> long.startswith("This is a simple flat drawing") and len(long.split()) > 90
True
>>> long == long_caption(a)
True
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from workbench.data.synthetic import caption, check_attributes, plural

__all__ = ["PREAMBLE", "long_caption", "long_captions"]

#: The fixed opening every long caption shares (~30 BPE tokens that carry no factor).
PREAMBLE = (
    "This is a simple flat drawing on a plain white background, made in the style of a "
    "clip-art illustration with clean edges and no shading or texture at all. "
    "The picture is split into a large scene area at the top and a narrow strip at the bottom."
)

_NUMBER = {1: "one", 2: "two", 3: "three"}


def _sentences(a: Mapping[str, Any]) -> dict[str, tuple[str, ...]]:
    """Alternative phrasings of one sentence per factor (the subject agrees with the count)."""
    n = a["count"]
    one = n == 1
    noun = a["shape"] if one else plural(a["shape"])
    it, they = ("It", "it") if one else ("They", "they")
    verb = "is" if one else "are"
    group = "The object" if one else "The group"
    out: dict[str, tuple[str, ...]] = {
        "count": (
            f"The scene area holds {_NUMBER[n]} object{'s' if not one else ''}"
            f"{' of the same kind' if not one else ''}.",
            f"There {'is' if one else 'are'} exactly {_NUMBER[n]} "
            f"{'object' if one else 'identical objects'} in the scene.",
        ),
        "shape": (
            f"{it} {verb} {'a ' if one else ''}{noun}.",
            f"Looking closely, the shape of {'the object' if one else 'each object'} is a "
            f"{a['shape']}.",
        ),
        "colour": (
            f"{it} {verb} coloured {a['colour']}.",
            f"The colour used for {'it' if one else 'all of them'} is {a['colour']}.",
        ),
        "size": (
            f"{it} {verb} {a['size']} compared with the whole picture.",
            f"In terms of size, {they} {verb} {a['size']}.",
        ),
        "fill": (
            f"{it} {verb} {'drawn solid, completely filled in' if a['fill'] == 'solid' else 'drawn as an outline only, hollow inside'}.",
            f"The drawing style is {'solid' if a['fill'] == 'solid' else 'outlined'}.",
        ),
        "position": (
            f"{group} sits {_position(a['position'])} of the scene.",
            f"You can find {'it' if one else 'them'} {_position(a['position'])}.",
        ),
        "dot": (
            f"{it} {'has' if one else 'each have'} a small black dot in the middle."
            if a["dot"]
            else f"There is no black dot on {'it' if one else 'any of them'}.",
            f"A black dot {'is' if a['dot'] else 'is not'} drawn on "
            f"{'it' if one else ('each of them' if a['dot'] else 'any of them')}.",
        ),
        "view": (
            f"The whole scene is seen {a['view']}.",
            f"The point of view of the picture is {a['view']}.",
        ),
        "text": (
            f"In the strip at the bottom right, the {_glyph_kind(a['text'])} {a['text']} is "
            "written in black.",
            f"A black {_glyph_kind(a['text'])}, {a['text']}, is printed at the bottom right.",
        ),
    }
    if a["orientation"] is not None:
        out["orientation"] = (
            f"{it} {'points' if one else 'point'} {a['orientation']}.",
            f"The direction {'it points' if one else 'they point'} is {a['orientation']}.",
        )
    if a["arrangement"] is not None:
        out["arrangement"] = (
            f"They are placed next to each other in a {a['arrangement']}.",
            f"The {_NUMBER[n]} objects are lined up in a {a['arrangement']}.",
        )
    return out


def _position(position: str) -> str:
    if position == "centre":
        return "in the centre"
    return (
        f"at the {position}"
        if " " in position or position in ("top", "bottom")
        else (f"on the {position}")
    )


def _glyph_kind(text: str) -> str:
    return "digit" if str(text).isdigit() else "letter"


def long_caption(attributes: Mapping[str, Any], seed: int = 0) -> str:
    """A long, detailed description of one scene (see the module docstring).

    Args:
        attributes: A complete factor dict (``Item.attributes`` of ``synthetic-world``).
        seed: Seeds the sentence order and phrasings (with a digest of the canonical caption).

    Returns:
        One string of 12–13 sentences: :data:`PREAMBLE`, the count sentence, then every other
        factor's sentence in a shuffled order.
    """
    check_attributes(attributes)
    digest = int.from_bytes(hashlib.sha256(caption(attributes).encode()).digest()[:8], "little")
    rng = np.random.default_rng([int(seed), digest])
    sentences = _sentences(attributes)
    count = sentences.pop("count")
    order = [k for k in sentences]
    rng.shuffle(order)
    picked = [count[int(rng.integers(len(count)))]]
    picked += [sentences[k][int(rng.integers(len(sentences[k])))] for k in order]
    return " ".join([PREAMBLE, *picked])


def long_captions(attributes: Sequence[Mapping[str, Any]], seed: int = 0) -> list[str]:
    """:func:`long_caption` of every factor dict in ``attributes`` (e.g. ``Embeddings.attributes``)."""
    if isinstance(attributes, Mapping):
        raise TypeError("long_captions takes a sequence of factor dicts; wrap one dict as [attrs]")
    return [long_caption(a, seed) for a in attributes]
