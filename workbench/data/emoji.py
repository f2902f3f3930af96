"""``emoji``: Noto Color Emoji glyphs with their Unicode CLDR English names and keywords.

Images: each emoji sequence drawn with PIL (Raqm layout, so ZWJ sequences, flags and keycaps
become one glyph) from Debian's ``fonts-noto-color-emoji``. The font is a CBDT bitmap font with a
single strike, 109 px, whose glyphs are 136 × 128: a glyph is drawn at that size in colour
(``embedded_color=True``), centred on a white 136 × 136 square and optionally resized.

Text: ``annotations/en.xml`` (base emoji) and ``annotationsDerived/en.xml`` (sequences: skin tones,
ZWJ sequences, flags, keycaps) from Debian's ``unicode-cldr-core``. Each entry has a ``tts`` name
("grinning face", "flag: France", "woman firefighter") and ``|``-separated keywords
("face | grin | grinning face"). CLDR strips U+FE0F from its code points; the font renders the
stripped sequences as the full emoji (checked on Noto Color Emoji 2.042 with CLDR 41).

What is kept (CLDR 41 + Noto 2.042): of 4,022 English entries, 3,635 render as a single colour
glyph (the rest are punctuation and symbols the font has no glyph for: ``{``, ``‽``, ...). 1,780 of
those carry a skin-tone modifier (U+1F3FB–U+1F3FF); they are left out unless ``skin_tones=True``:
each is a near-copy of its base emoji whose caption differs only by "…: medium skin tone", so
they would make up half the set, and an id-hash split would put a variant in test whose base is
in train. That leaves 1,855 emoji, 219 of them ZWJ sequences (families, "heart on fire", ...).
A few distinct names share one picture (France, St. Martin and Clipperton Island share a flag);
they stay, as the data has them.

Captions: ``[name, "emoji of <name>", "emoji of <keyword>, <keyword>, ..."]`` — the CLDR name
first, as openclipart puts its title first; the keyword caption mirrors openclipart's
"clip art of ..." and leaves out keywords equal to the name (dropped when none are left).
Ids: ``"emoji-"`` + the CLDR code points in hex, e.g. ``"emoji-1f3f3-200d-1f308"``.
"""

from __future__ import annotations

import functools
import os
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from workbench.data.base import Dataset, Item, missing_files_error, subset_indices
from workbench.data.splits import check_split, in_split

DEBIAN_FONT = Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")
DEBIAN_CLDR = Path("/usr/share/unicode/cldr/common")
_ANNOTATION_FILES = ("annotations/en.xml", "annotationsDerived/en.xml")
STRIKE = 109  # the font's only bitmap size: FreeType refuses any other for a CBDT font
GLYPH_SIDE = 136  # width of every glyph at that strike (height 128)
SKIN_TONES = frozenset(chr(c) for c in range(0x1F3FB, 0x1F400))


def emoji_id(sequence: str) -> str:
    """``"🏳‍🌈"`` → ``"emoji-1f3f3-200d-1f308"``."""
    return "emoji-" + "-".join(f"{ord(c):x}" for c in sequence)


def read_annotations(cldr_root: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """``{sequence: {"name": tts name, "keywords": [...]}}`` from CLDR's English annotations.

    Entries without a ``tts`` name are skipped (every English emoji has one in CLDR 41).
    """
    out: dict[str, dict[str, Any]] = {}
    for rel in _ANNOTATION_FILES:
        root = ET.parse(Path(cldr_root) / rel).getroot()  # no DTD is fetched: expat ignores it
        for el in root.iter("annotation"):
            seq, text = el.get("cp"), (el.text or "").strip()
            if not seq or not text:
                continue
            entry = out.setdefault(seq, {"name": None, "keywords": []})
            if el.get("type") == "tts":
                entry["name"] = text
            else:
                entry["keywords"] = [k.strip() for k in text.split("|") if k.strip()]
    return {seq: e for seq, e in out.items() if e["name"]}


@functools.lru_cache(maxsize=2)
def _font(path: str) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, STRIKE)


def renders(font: ImageFont.FreeTypeFont, sequence: str) -> bool:
    """True when ``sequence`` lays out as exactly one non-empty glyph of the emoji font.

    A character the font lacks yields an empty box (zero height), and an unsupported
    sequence falls apart into several glyphs (a multiple of :data:`GLYPH_SIDE` wide).
    """
    left, top, right, bottom = font.getbbox(sequence)
    return right - left == GLYPH_SIDE and bottom > top


@functools.lru_cache(maxsize=4)
def build_index(font_path: str, cldr_root: str) -> tuple[dict[str, Any], ...]:
    """Every CLDR English entry that renders as one glyph, sorted by id (cached per process)."""
    font = _font(font_path)
    records = []
    for seq, entry in read_annotations(cldr_root).items():
        if not renders(font, seq):
            continue
        name = entry["name"]
        keywords = [k for k in entry["keywords"] if k.casefold() != name.casefold()]
        records.append(
            {
                "id": emoji_id(seq),
                "sequence": seq,
                "name": name,
                "keywords": keywords,
                "skin_tone": any(c in SKIN_TONES for c in seq),
                "zwj": "\u200d" in seq,
            }
        )
    records.sort(key=lambda r: r["id"])
    return tuple(records)


def render_emoji(font: ImageFont.FreeTypeFont, sequence: str) -> Image.Image:
    """One emoji in colour, centred on a white ``GLYPH_SIDE`` square (RGB)."""
    layer = Image.new("RGBA", (GLYPH_SIDE, GLYPH_SIDE), (255, 255, 255, 0))
    left, top, right, bottom = font.getbbox(sequence)
    offset = ((GLYPH_SIDE - (right - left)) // 2 - left, (GLYPH_SIDE - (bottom - top)) // 2 - top)
    ImageDraw.Draw(layer).text(offset, sequence, font=font, embedded_color=True)
    canvas = Image.new("RGBA", layer.size, (255, 255, 255, 255))
    return Image.alpha_composite(canvas, layer).convert("RGB")


def captions_for(record: dict[str, Any]) -> list[str]:
    """``[name, "emoji of <name>", "emoji of <keywords>"]`` (see the module docstring)."""
    captions = [record["name"], f"emoji of {record['name']}"]
    if record["keywords"]:
        captions.append("emoji of " + ", ".join(record["keywords"]))
    return captions


class Emoji(Dataset):
    """``emoji``: Noto Color Emoji glyphs captioned with their CLDR English names and keywords.

    Args:
        font: ``NotoColorEmoji.ttf`` (default ``$WORKBENCH_EMOJI_FONT``, else Debian's
            ``fonts-noto-color-emoji`` path).
        cldr_root: CLDR ``common/`` folder holding ``annotations/en.xml`` and
            ``annotationsDerived/en.xml`` (default ``$WORKBENCH_CLDR``, else Debian's
            ``unicode-cldr-core`` path).
        skin_tones: Keep the skin-tone variants (default ``False``: see the module docstring).
        split: ``"all"`` (default), ``"train"`` or ``"test"``, fixed by a hash of each id
            (:mod:`workbench.data.splits`).
        test_fraction: Share of emoji in ``"test"`` (0.2).
        size: Keep a seeded random subset of this many emoji (``None``: all).
        seed: Seed of that subset.
        image_size: Output side in pixels; ``None`` keeps the glyph's native 136.

    Items: captions from :func:`captions_for`; no classes (``label`` is ``None``); attributes
    ``{"sequence", "name", "keywords", "skin_tone", "zwj"}``.
    """

    name = "emoji"

    def __init__(
        self,
        font: str | os.PathLike[str] | None = None,
        cldr_root: str | os.PathLike[str] | None = None,
        skin_tones: bool = False,
        split: str = "all",
        test_fraction: float = 0.2,
        size: int | None = None,
        seed: int = 0,
        image_size: int | None = None,
    ) -> None:
        check_split("emoji", split, test_fraction)
        if image_size is not None and image_size < 8:
            raise ValueError(f"image_size must be ≥ 8 px or None, got {image_size}")
        self.font = Path(font or os.environ.get("WORKBENCH_EMOJI_FONT", DEBIAN_FONT))
        self.cldr_root = Path(cldr_root or os.environ.get("WORKBENCH_CLDR", DEBIAN_CLDR))
        missing = [p for p in (self.font,) if not p.is_file()]
        missing += [
            self.cldr_root / r for r in _ANNOTATION_FILES if not (self.cldr_root / r).is_file()
        ]
        if missing:
            raise missing_files_error(
                "the Noto Color Emoji font and CLDR English annotations",
                missing,
                "Install them with `apt-get install fonts-noto-color-emoji unicode-cldr-core` "
                "(Debian/Ubuntu) or pass font= and cldr_root= (or set WORKBENCH_EMOJI_FONT and "
                "WORKBENCH_CLDR).",
            )
        records = build_index(str(self.font.resolve()), str(self.cldr_root.resolve()))
        records = tuple(
            r
            for r in records
            if (skin_tones or not r["skin_tone"]) and in_split(r["id"], split, test_fraction)
        )
        self._records = [records[i] for i in subset_indices(len(records), size, seed)]
        self.skin_tones, self.split, self.test_fraction = skin_tones, split, test_fraction
        self.size, self.seed, self.image_size = size, seed, image_size

    @property
    def config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "split": self.split,
            "size": len(self),
            "seed": self.seed,
            "font": str(self.font),
            "cldr_root": str(self.cldr_root),
            "skin_tones": self.skin_tones,
            "test_fraction": self.test_fraction,
            "image_size": self.image_size,
        }

    def __len__(self) -> int:
        return len(self._records)

    def _get(self, i: int) -> Item:
        rec = self._records[i]
        image = render_emoji(_font(str(self.font.resolve())), rec["sequence"])
        if self.image_size is not None:
            side = (self.image_size, self.image_size)
            image = image.resize(side, Image.Resampling.LANCZOS)
        return Item(
            id=rec["id"],
            image=image,
            captions=captions_for(rec),
            label=None,
            attributes={k: rec[k] for k in ("sequence", "name", "keywords", "skin_tone", "zwj")},
        )
