"""``synthetic-world``: a procedural, seeded image–caption world drawn with PIL (no downloads).

Each image shows a *group* of 1–3 identical objects plus a small text glyph, described by eleven
factors (:data:`FACTORS`): shape × colour × size × count × position × orientation × fill ×
dot (presence) × arrangement × text × view. Every image comes with a caption generated from its
factors, a class label (the shape by default, ``label_by=`` any factor in :data:`LABEL_FACTORS`),
its factor dict as ``Item.attributes`` and an instance segmentation mask (:meth:`SyntheticWorld.mask`).

Layout of an ``S × S`` image: objects live in the top 80 % ("scene"); the glyph always sits at the
same spot in the bottom strip, so changing one factor never moves anything else.

Determinism: item ``i`` of ``(split, seed)`` is drawn from ``numpy.random.default_rng([seed,
split_code, i])`` and rendered without any other randomness, so the same seed gives pixel-identical
images whatever ``size`` is (a larger ``size`` extends a smaller one).

:func:`mmvp_pairs` builds MMVP-style image pairs (Tong et al. 2024, "Eyes Wide Shut?") that differ in
exactly one factor, one factor per MMVP-VLM category (:data:`MMVP_FACTOR`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from workbench.data.base import MMVP_CATEGORIES, Dataset, Item, MMVPPair

GLYPHS = "ABCDEFGHJKLMNPRSTUVWXYZ2345789"  # no I/1, O/0, Q, 6: too easy to confuse at 15 px

#: Every factor of the world and its possible values (``orientation`` is ``None`` for shapes
#: without a direction, ``arrangement`` is ``None`` for a single object).
FACTORS: dict[str, tuple[Any, ...]] = {
    "shape": ("circle", "square", "triangle", "star", "arrow", "cross", "heart", "diamond"),
    "colour": ("red", "green", "blue", "yellow", "purple", "orange", "pink", "brown"),
    "size": ("small", "medium-sized", "large"),
    "count": (1, 2, 3),
    "position": (
        "top left",
        "top",
        "top right",
        "left",
        "centre",
        "right",
        "bottom left",
        "bottom",
        "bottom right",
    ),
    "orientation": ("up", "right", "down", "left"),
    "fill": ("solid", "outlined"),
    "dot": (False, True),
    "arrangement": ("row", "column"),
    "text": tuple(GLYPHS),
    "view": ("head-on", "from the left", "from the right"),
}
ORIENTABLE_SHAPES = ("triangle", "star", "arrow")
#: Factors usable as the class label (always defined, finite).
LABEL_FACTORS = ("shape", "colour", "size", "count", "position", "fill", "dot", "text", "view")

#: Which factor each MMVP-VLM category varies in the synthetic world (our reading of the nine
#: visual patterns): orientation = direction a triangle/star/arrow points; presence = a black dot
#: on each object; state = solid vs outlined; quantity = 2 vs 3 objects; position = where a single
#: object sits; colour = its colour; structure = a row vs a column of 2–3 objects; text = which
#: glyph is written; viewpoint = the whole scene seen head-on vs in perspective from either side.
MMVP_FACTOR: dict[str, str] = dict(
    zip(
        MMVP_CATEGORIES,
        (
            "orientation",
            "dot",
            "fill",
            "count",
            "position",
            "colour",
            "arrangement",
            "text",
            "view",
        ),
    )
)

RGB = {
    "red": (220, 30, 30),
    "green": (30, 160, 50),
    "blue": (30, 70, 220),
    "yellow": (240, 200, 20),
    "purple": (140, 50, 180),
    "orange": (245, 130, 20),
    "pink": (240, 110, 180),
    "brown": (130, 80, 30),
}
PLURAL = {"cross": "crosses"}
_BACKGROUND = (255, 255, 255)
_SUPERSAMPLE = 2  # draw at 2x then box-downsample: cheap anti-aliasing
_SCENE = 0.8  # fraction of the height holding the objects; the glyph strip is below
_RADIUS = {"small": 0.065, "medium-sized": 0.09, "large": 0.115}  # object radius / image size
_GAP = 0.03  # gap between objects / image size
_MARGIN = 0.03
_ROTATION = {"up": 0, "right": 90, "down": 180, "left": 270}  # degrees clockwise
_SPLIT_CODE = {"train": 0, "test": 1}
GLYPH_MASK_ID = 255


def _star(inner: float = 0.42) -> list[tuple[float, float]]:
    radii = [1.0 if k % 2 == 0 else inner for k in range(10)]
    angles = [math.radians(-90 + 36 * k) for k in range(10)]
    return [(r * math.cos(a), r * math.sin(a)) for r, a in zip(radii, angles)]


def _heart() -> list[tuple[float, float]]:
    ts = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    x = 16 * np.sin(ts) ** 3  # the classic heart curve, scaled into [-1, 1]²
    y = -(13 * np.cos(ts) - 5 * np.cos(2 * ts) - 2 * np.cos(3 * ts) - np.cos(4 * ts))
    return list(zip((x / 17).tolist(), ((y + 2.5) / 15).tolist()))


def _cross(a: float = 0.3, b: float = 0.95) -> list[tuple[float, float]]:
    """A plus sign with half arm width ``a`` and arm length ``b``."""
    quarter = [(-a, -b), (a, -b), (a, -a)]  # top arm, then turn the corner
    out = []
    for k in range(4):  # rotate the quarter by 0, 90, 180, 270 degrees
        c, s = round(math.cos(k * math.pi / 2)), round(math.sin(k * math.pi / 2))
        out += [(x * c - y * s, x * s + y * c) for x, y in quarter]
    return out


#: Outline of each shape in [-1, 1]², pointing up (y grows downwards); ``None``: drawn as a circle.
UNIT_POLYGONS: dict[str, list[tuple[float, float]] | None] = {
    "circle": None,
    "square": [(-0.85, -0.85), (0.85, -0.85), (0.85, 0.85), (-0.85, 0.85)],
    "triangle": [(0.0, -1.0), (0.95, 0.8), (-0.95, 0.8)],
    "star": _star(),
    "arrow": [(0, -1), (0.8, -0.1), (0.3, -0.1), (0.3, 1), (-0.3, 1), (-0.3, -0.1), (-0.8, -0.1)],
    "cross": _cross(),
    "heart": _heart(),
    "diamond": [(0.0, -1.0), (0.7, 0.0), (0.0, 1.0), (-0.7, 0.0)],
}


def check_attributes(attributes: Mapping[str, Any]) -> None:
    """Raise ``ValueError`` unless ``attributes`` is a complete, consistent factor dict."""
    missing = set(FACTORS) - set(attributes)
    if missing:
        raise ValueError(f"synthetic-world attributes lack {sorted(missing)}; need {list(FACTORS)}")
    for key, values in FACTORS.items():
        value = attributes[key]
        if key == "orientation" and value is None:
            if attributes["shape"] in ORIENTABLE_SHAPES:
                raise ValueError(f"shape {attributes['shape']!r} needs an orientation")
            continue
        if key == "arrangement" and value is None:
            if attributes["count"] != 1:
                raise ValueError("count > 1 needs an arrangement ('row' or 'column')")
            continue
        if value not in values:
            raise ValueError(f"synthetic-world {key}={value!r} is not one of {values}")
    if attributes["shape"] not in ORIENTABLE_SHAPES and attributes["orientation"] is not None:
        raise ValueError(f"shape {attributes['shape']!r} has no orientation; set it to None")
    if attributes["count"] == 1 and attributes["arrangement"] is not None:
        raise ValueError("a single object has no arrangement; set it to None")


def _pick(rng: np.random.Generator, values: tuple[Any, ...]) -> Any:
    return values[int(rng.integers(len(values)))]


def sample_attributes(rng: np.random.Generator, **fixed: Any) -> dict[str, Any]:
    """Draw a factor dict uniformly (factor by factor, in :data:`FACTORS` order), then apply ``fixed``.

    ``orientation``/``arrangement`` are drawn only where defined (orientable shape / count > 1).
    """

    attrs: dict[str, Any] = {key: _pick(rng, values) for key, values in FACTORS.items()}
    attrs.update(fixed)
    if attrs["shape"] not in ORIENTABLE_SHAPES:
        attrs["orientation"] = None
    elif attrs["orientation"] is None:
        attrs["orientation"] = _pick(rng, FACTORS["orientation"])
    if attrs["count"] == 1:
        attrs["arrangement"] = None
    elif attrs["arrangement"] is None:
        attrs["arrangement"] = _pick(rng, FACTORS["arrangement"])
    return attrs


_COUNT_WORD = {1: "a", 2: "two", 3: "three"}
_POSITION_PHRASE = {
    "top left": "at the top left",
    "top": "at the top",
    "top right": "at the top right",
    "left": "on the left",
    "centre": "in the centre",
    "right": "on the right",
    "bottom left": "at the bottom left",
    "bottom": "at the bottom",
    "bottom right": "at the bottom right",
}


def plural(noun: str) -> str:
    """English plural of a shape noun (``cross`` → ``crosses``)."""
    return PLURAL.get(noun, noun + "s")


def caption_parts(attributes: Mapping[str, Any]) -> dict[str, str]:
    """The caption's slots, in order; :func:`caption` joins them and hard negatives edit them."""
    a = attributes
    n = a["count"]
    text_kind = "digit" if str(a["text"]).isdigit() else "letter"
    return {
        "count": _COUNT_WORD[n],
        "size": a["size"],
        "fill": a["fill"],
        "colour": a["colour"],
        "noun": a["shape"] if n == 1 else plural(a["shape"]),
        "orientation": f" pointing {a['orientation']}" if a["orientation"] else "",
        "arrangement": f" in a {a['arrangement']}" if a["arrangement"] else "",
        "position": " " + _POSITION_PHRASE[a["position"]],
        "dot": (", each with a black dot" if n > 1 else ", with a black dot")
        if a["dot"]
        else ", with no dot",
        "view": f", seen {a['view']}",
        "text": f", and the {text_kind} {a['text']}",
    }


def join_caption(parts: Mapping[str, str]) -> str:
    """Inverse of :func:`caption_parts`."""
    head = " ".join(parts[k] for k in ("count", "size", "fill", "colour", "noun"))
    return head + "".join(
        parts[k] for k in ("orientation", "arrangement", "position", "dot", "view", "text")
    )


def caption(attributes: Mapping[str, Any]) -> str:
    """Canonical caption that states every factor, e.g. ``"two small outlined red triangles
    pointing left in a row at the top right, with no dot, seen head-on, and the letter K"``."""
    return join_caption(caption_parts(attributes))


def short_caption(attributes: Mapping[str, Any]) -> str:
    """Count, colour and shape only, e.g. ``"two red triangles"``."""
    p = caption_parts(attributes)
    return f"{p['count']} {p['colour']} {p['noun']}"


@functools.lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _perspective_coeffs(
    out_pts: list[tuple[float, float]], in_pts: list[tuple[float, float]]
) -> list[float]:
    """8 coefficients of PIL's PERSPECTIVE transform mapping each output point to its input point."""
    rows, rhs = [], []
    for (x, y), (u, v) in zip(out_pts, in_pts):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
        rhs += [u, v]
    return np.linalg.solve(np.asarray(rows, float), np.asarray(rhs, float)).tolist()


def _apply_view(img: Image.Image, mask: Image.Image, view: str) -> tuple[Image.Image, Image.Image]:
    """Keystone the whole scene as if the picture plane were turned about its vertical axis."""
    if view == "head-on":
        return img, mask
    s = img.size[0]
    squeeze, shrink = 0.07 * s, 0.17 * s  # horizontal foreshortening, far edge shortening
    near_l = view == "from the left"  # seen from the left: the left edge is nearer, so taller
    tl = (squeeze, 0.0 if near_l else shrink)
    bl = (squeeze, s if near_l else s - shrink)
    tr = (s - squeeze, shrink if near_l else 0.0)
    br = (s - squeeze, s - shrink if near_l else s)
    coeffs = _perspective_coeffs([tl, tr, br, bl], [(0, 0), (s, 0), (s, s), (0, s)])
    persp = Image.Transform.PERSPECTIVE
    img = img.transform(img.size, persp, coeffs, Image.Resampling.BILINEAR, fillcolor=_BACKGROUND)
    mask = mask.transform(mask.size, persp, coeffs, Image.Resampling.NEAREST, fillcolor=0)
    return img, mask


def _object_centres(a: Mapping[str, Any], s: float, r: float) -> list[tuple[float, float]]:
    n, gap = a["count"], _GAP * s
    span = n * 2 * r + (n - 1) * gap
    w, h = (span, 2 * r) if a["arrangement"] != "column" else (2 * r, span)
    margin, scene_h = _MARGIN * s, _SCENE * s
    pos = a["position"]
    vert = pos.split()[0] if pos.split()[0] in ("top", "bottom") else "middle"
    horiz = pos.split()[-1] if pos.split()[-1] in ("left", "right") else "centre"
    cx = {"left": margin + w / 2, "centre": s / 2, "right": s - margin - w / 2}[horiz]
    cy = {"top": margin + h / 2, "middle": scene_h / 2, "bottom": scene_h - margin - h / 2}[vert]
    offsets = [(-span / 2 + r + k * (2 * r + gap)) for k in range(n)]
    if a["arrangement"] == "column":
        return [(cx, cy + o) for o in offsets]
    return [(cx + o, cy) for o in offsets]


def render_scene(
    attributes: Mapping[str, Any], image_size: int = 96
) -> tuple[Image.Image, np.ndarray]:
    """Draw one scene.

    Args:
        attributes: A complete factor dict (see :data:`FACTORS`, :func:`sample_attributes`).
        image_size: Side ``S`` of the square output, ≥ 48 px (the glyph needs ~15 px at 96).

    Returns:
        ``(image, mask)``: RGB PIL image ``(S, S)`` on white, and a ``(S, S)`` uint8 instance mask:
        0 background, ``k`` (1-based, left→right / top→bottom) for pixels painted by the ``k``-th
        object (its outline only when ``fill == "outlined"``, its dot included), and
        :data:`GLYPH_MASK_ID` (255) for the text glyph.
    """
    check_attributes(attributes)
    if image_size < 48:
        raise ValueError(
            f"image_size must be >= 48 px so the glyph stays legible, got {image_size}"
        )
    a = attributes
    s = image_size * _SUPERSAMPLE
    img = Image.new("RGB", (s, s), _BACKGROUND)
    mask = Image.new("L", (s, s), 0)
    draw, mdraw = ImageDraw.Draw(img), ImageDraw.Draw(mask)
    mdraw.fontmode = "1"  # no anti-aliasing: mask values stay exact ids
    r = _RADIUS[a["size"]] * s
    width = max(1, round(s / 40))  # outline stroke
    colour = RGB[a["colour"]]
    unit = UNIT_POLYGONS[a["shape"]]
    theta = math.radians(_ROTATION[a["orientation"]] if a["orientation"] else 0)
    cos, sin = math.cos(theta), math.sin(theta)
    for k, (cx, cy) in enumerate(_object_centres(a, s, r), start=1):
        solid = a["fill"] == "solid"
        if unit is None:
            box = [cx - r, cy - r, cx + r, cy + r]
            draw.ellipse(box, fill=colour if solid else None, outline=colour, width=width)
            mdraw.ellipse(box, fill=k if solid else None, outline=k, width=width)
        else:
            pts = [(cx + r * (x * cos - y * sin), cy + r * (x * sin + y * cos)) for x, y in unit]
            draw.polygon(pts, fill=colour if solid else None, outline=colour, width=width)
            mdraw.polygon(pts, fill=k if solid else None, outline=k, width=width)
        if a["dot"]:
            d = max(1.5 * _SUPERSAMPLE, 0.28 * r)
            draw.ellipse([cx - d, cy - d, cx + d, cy + d], fill=(0, 0, 0))
            mdraw.ellipse([cx - d, cy - d, cx + d, cy + d], fill=k)
    font = _font(round(0.17 * s))
    glyph_xy = (0.85 * s, (1 + _SCENE) / 2 * s)
    draw.text(glyph_xy, a["text"], fill=(0, 0, 0), font=font, anchor="mm")
    mdraw.text(glyph_xy, a["text"], fill=GLYPH_MASK_ID, font=font, anchor="mm")
    img, mask = _apply_view(img, mask, a["view"])
    out = img.resize((image_size, image_size), Image.Resampling.BOX)
    out_mask = mask.resize((image_size, image_size), Image.Resampling.NEAREST)
    return out, np.asarray(out_mask, dtype=np.uint8)


class SyntheticWorld(Dataset):
    """The ``synthetic-world`` dataset: ``size`` seeded scenes, rendered lazily on access.

    Args:
        size: Number of items (default 1000).
        seed: World seed; same ``(seed, split)`` → pixel-identical items.
        split: ``"train"`` or ``"test"`` (independent streams of the same world).
        image_size: Side of the square images in pixels (default 96, ≥ 48).
        label_by: Factor used as the class label, one of :data:`LABEL_FACTORS` (default ``"shape"``).

    Items: ``captions = [caption, short_caption]``, ``label`` = index of ``attributes[label_by]``
    in ``class_names``, ``attributes`` = the factor dict. Masks: :meth:`mask`.
    """

    name = "synthetic-world"

    #: Items are generated, so ``embed(encoder, "synthetic-world", size=n, seed=s)`` builds a
    #: world of ``n`` scenes from seed ``s`` rather than subsetting the default-size one.
    generated = True

    def __init__(
        self,
        size: int = 1000,
        seed: int = 0,
        split: str = "train",
        image_size: int = 96,
        label_by: str = "shape",
    ) -> None:
        if split not in _SPLIT_CODE:
            raise ValueError(f"synthetic-world split must be 'train' or 'test', got {split!r}")
        if label_by not in LABEL_FACTORS:
            raise ValueError(f"label_by must be one of {LABEL_FACTORS}, got {label_by!r}")
        if not isinstance(size, int) or size < 1:
            raise ValueError(f"size must be a positive int, got {size!r}")
        if image_size < 48:
            raise ValueError(f"image_size must be >= 48 px, got {image_size}")
        self.size, self.seed, self.split = size, seed, split
        self.image_size, self.label_by = image_size, label_by
        self._values = FACTORS[label_by]
        self.class_names = [_class_name(label_by, v) for v in self._values]

    @property
    def config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "split": self.split,
            "size": self.size,
            "seed": self.seed,
            "image_size": self.image_size,
            "label_by": self.label_by,
        }

    def __len__(self) -> int:
        return self.size

    def attributes(self, i: int) -> dict[str, Any]:
        """Factor dict of item ``i`` (no rendering)."""
        rng = np.random.default_rng([self.seed, _SPLIT_CODE[self.split], i])
        return sample_attributes(rng)

    def mask(self, i: int) -> np.ndarray:
        """Instance mask ``(S, S)`` uint8 of item ``i`` (see :func:`render_scene`)."""
        return render_scene(self.attributes(i), self.image_size)[1]

    def _get(self, i: int) -> Item:
        attrs = self.attributes(i)
        image, _ = render_scene(attrs, self.image_size)
        return Item(
            id=f"synthetic-{self.split}-{self.seed}-{i}",
            image=image,
            captions=[caption(attrs), short_caption(attrs)],
            label=self._values.index(attrs[self.label_by]),
            attributes=attrs,
        )


def _class_name(factor: str, value: Any) -> str:
    if factor == "dot":
        return "dotted shape" if value else "plain shape"
    if factor == "count":
        return {1: "one shape", 2: "two shapes", 3: "three shapes"}[value]
    return str(value)


#: What each pair category pins so the one change stays visible and the factor dicts honest.
_PAIR_FIXED: dict[str, dict[str, tuple[Any, ...]]] = {
    "orientation": {"shape": ("triangle", "arrow"), "orientation": (None,)},  # star: too subtle
    "count": {"count": (2,)},  # 2 vs 3, so the arrangement stays defined on both sides
    "position": {"count": (1,)},  # a single object: "left" vs "centre" is unambiguous
    "arrangement": {"count": (2, 3)},
}
_PAIR_VALUES: dict[str, tuple[Any, ...]] = {"count": (2, 3)}


def _pair_values(rng: np.random.Generator, values: tuple[Any, ...]) -> tuple[Any, Any]:
    i, j = rng.choice(len(values), size=2, replace=False)
    return values[int(i)], values[int(j)]


def mmvp_pairs(n_pairs_per_category: int, seed: int = 0, image_size: int = 96) -> list[MMVPPair]:
    """MMVP-style pairs of synthetic scenes that differ in exactly one factor.

    For each of the nine MMVP-VLM categories (in the benchmark's order, :data:`MMVP_CATEGORIES`)
    ``n_pairs_per_category`` pairs are drawn; the factor each category varies is
    :data:`MMVP_FACTOR` (see its comment for what each means here). Statement ``k`` is the full
    caption of image ``k``, so the two statements also differ only in that factor's words.

    Constraints that keep the difference visible and the attribute dicts honest: orientation pairs
    use a triangle or an arrow; quantity pairs compare 2 vs 3 objects (same arrangement); position
    pairs use a single object; structure pairs use 2–3 objects.

    Returns:
        ``9 * n_pairs_per_category`` :class:`MMVPPair`, category-major; ``attributes`` are the two
        factor dicts, which differ in exactly the category's factor.
    """
    if n_pairs_per_category < 1:
        raise ValueError(f"n_pairs_per_category must be >= 1, got {n_pairs_per_category}")
    pairs = []
    for c, category in enumerate(MMVP_CATEGORIES):
        factor = MMVP_FACTOR[category]
        for j in range(n_pairs_per_category):
            rng = np.random.default_rng([seed, 7, c, j])
            fixed = {k: _pick(rng, v) for k, v in _PAIR_FIXED.get(factor, {}).items()}
            base = sample_attributes(rng, **fixed)
            values = _PAIR_VALUES.get(factor, FACTORS[factor])
            v0, v1 = _pair_values(rng, values)
            attrs = ({**base, factor: v0}, {**base, factor: v1})
            rendered = [render_scene(a, image_size)[0] for a in attrs]
            pairs.append(
                MMVPPair(
                    category=category,
                    images=(rendered[0], rendered[1]),
                    statements=(caption(attrs[0]), caption(attrs[1])),
                    attributes=attrs,
                )
            )
    return pairs


__all__ = [
    "FACTORS",
    "LABEL_FACTORS",
    "MMVP_FACTOR",
    "MMVPPair",
    "SyntheticWorld",
    "caption",
    "caption_parts",
    "check_attributes",
    "mmvp_pairs",
    "render_scene",
    "sample_attributes",
    "short_caption",
]
