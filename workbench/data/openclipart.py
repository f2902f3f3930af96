"""``openclipart``: Debian's ``openclipart-svg`` metadata + ``openclipart-png`` renderings.

Layout: ``<root>/svg/<category>[/<sub>...]/<name>.svg`` and the same path under ``<root>/png`` with
``.png``. Symlinked duplicates (the same file filed under two categories) are skipped, so every
drawing appears once, under the category of its real file.

Captions come from the Dublin Core metadata of the SVG's ``cc:Work``: ``dc:title``,
``dc:description`` and the ``dc:subject`` keywords. Titles that do not describe the drawing are
dropped (see :func:`clean_title`): empty/"Untitled", file-name-like, "Layer 1", collection or
theme names ("Part of the Flat Icon Collection (...)", "Etiquette Icons", ...), publisher strings
and the author's own name (authors live in ``dc:creator``/``dc:publisher``, never used as text).
Drawings left with no usable text are not part of the dataset.

Parsing uses ``xml.etree`` on the ``<metadata>`` block only, never resolves external entities and
never touches the network. The index is built once per root and process and kept in memory.

Oversized PNGs: a few drawings were exported at poster size (up to 20,990 × 29,700 px, ≈ 2.5 GB
to decode; PIL refuses them as decompression bombs). Any PNG whose header declares more than
``PIL.Image.MAX_IMAGE_PIXELS`` pixels is rasterised from its SVG at the working size instead
(:func:`rasterise_svg`: CairoSVG, else ``rsvg-convert``); with neither installed those drawings
are left out with a warning that names them.
"""

from __future__ import annotations

import functools
import io
import math
import os
import re
import shutil
import struct
import subprocess
import warnings
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from PIL import Image

from workbench.data.base import Dataset, Item, missing_files_error, subset_indices, to_rgb
from workbench.data.splits import check_split, in_split

DEBIAN_ROOT = Path("/usr/share/openclipart")
_NS = {
    "dc": "http://purl.org/dc/elements/1.1/",
    "rdf": "http://www.w3.org/1999/02/22-rdf-syntax-ns#",
    "cc": "http://web.resource.org/cc/",
}
_DC = "{" + _NS["dc"] + "}"
_RDF = "{" + _NS["rdf"] + "}"
_META_RE = re.compile(rb"<(?:\w+:)?metadata\b.*?</(?:\w+:)?metadata\s*>", re.S)
_META_END_RE = re.compile(rb"</(?:\w+:)?metadata\s*>")
_XMLNS_RE = re.compile(rb"""xmlns:(\w+)\s*=\s*("[^"]*"|'[^']*')""")
_READ_LIMIT = 1 << 20  # metadata sits near the top; never read more than 1 MiB of a drawing

_BOILERPLATE_WORDS = re.compile(
    r"\b(untitled|layer ?\d*|collection|theme|icons?|iconset|icon set|svg|clip ?arts?|"
    r"open ?clip ?art|openclipart|library|submission|sibmission|gramastar|"
    r"various|drawing|image|picture|new document|document|converted)\b",
    re.I,
)
_BYLINE = re.compile(r"^clip ?art by [^-]+ - ", re.I)
_DESC_BOILERPLATE = re.compile(
    r"^(created|made|drawn|done) (with|in|using) (inkscape|sodipodi)\b|public domain", re.I
)
_BAD_KEYWORDS = {
    "hash", "unsorted", "magick", "theme", "icons", "icon", "clipart", "clip art", "svg",
    "openclipart", "special", "media", "lemon_theme_icon", "mapsym", "action", "application",
    "stock", "mimetypes", "filesystem", "menu", "inkscape", "png", "remix",
}  # fmt: skip


def _humanise(text: str) -> str:
    """``"jigsaw_red_10"`` → ``"jigsaw red"``: underscores/hyphens to spaces, trailing numbers off."""
    text = re.sub(r"[_\s]+", " ", text.replace("-", " ")).strip()
    return re.sub(r"(\s*\d+[a-z]?)+$", "", text).strip()


def _looks_like_filename(text: str) -> bool:
    return bool(re.fullmatch(r"[\w.\-]+\.(svg|png|jpe?g|ai|eps)", text, re.I)) or (
        " " not in text and ("_" in text or bool(re.search(r"\d", text)))
    )


def clean_title(title: str, authors: set[str] = frozenset()) -> str | None:  # type: ignore[assignment]
    """The title as a caption, or ``None`` when it is boilerplate (see the module docstring)."""
    title = " ".join(title.split())
    byline = _BYLINE.match(title)
    if byline:  # "Clipart by Nicu Buculei - smiley111": keep what follows, humanised
        title = _humanise(title[byline.end() :])
    elif _looks_like_filename(title):
        return None
    if re.search(r"\(\w{3} \w{3} \d+ [\d:]+ \d{4}\)", title):  # "(Wed Aug 25 23:29:46 2004)"
        return None
    if len(re.sub(r"[^a-zA-Z]", "", title)) < 3 or _BOILERPLATE_WORDS.search(title) or "@" in title:
        return None
    if title.casefold() in {a.casefold() for a in authors}:
        return None
    return title


def clean_keywords(keywords: list[str], authors: set[str] = frozenset()) -> list[str]:  # type: ignore[assignment]
    """Keywords as words: boilerplate, tag-like entries and author names dropped, deduped."""
    out: list[str] = []
    names = {" ".join(a.split()).casefold() for a in authors}
    for kw in keywords:
        word = " ".join(kw.replace("_", " ").split()).lower()
        if word in _BAD_KEYWORDS or kw.lower() in _BAD_KEYWORDS or not word.isascii():
            continue
        if word in names or " ".join(kw.split()).casefold() in names:
            continue
        if len(word) < 3 or re.search(r"\d|https?:", word) or word in out:
            continue
        out.append(word)
    return out


def clean_description(
    desc: str,
    title: str | None,
    authors: set[str] = frozenset(),  # type: ignore[assignment]
) -> str | None:
    """Description without URLs, cut to its first sentence (≤ 200 chars); ``None`` if empty,
    boilerplate (a tool or licence note included), the title again or an author's name."""
    desc = re.sub(r"https?://\S+|www\.\S+|HASH\(0x[0-9a-f]+\)", "", " ".join(desc.split()))
    desc = desc.strip(" .-:")
    if not desc:
        return None
    desc = re.split(r"(?<=[.!?])\s", desc, maxsplit=1)[0][:200].strip()
    if len(re.sub(r"[^a-zA-Z]", "", desc)) < 3 or _BOILERPLATE_WORDS.search(desc) or "@" in desc:
        return None
    if _DESC_BOILERPLATE.search(desc):  # tool and licence notes say nothing about the drawing
        return None
    if title and desc.casefold().rstrip(".") == title.casefold():
        return None
    if desc.casefold() in {a.casefold() for a in authors}:
        return None
    return desc


def _metadata_element(path: Path) -> ET.Element | None:
    """Parse only the SVG's ``<metadata>`` block (namespaces taken from the root element)."""
    head = b""
    with open(path, "rb") as f:
        while len(head) < _READ_LIMIT:
            chunk = f.read(1 << 15)
            head += chunk
            if not chunk or _META_END_RE.search(head, max(0, len(head) - len(chunk) - 32)):
                break
    match = _META_RE.search(head)
    if match is None:
        return None
    decls = dict(_XMLNS_RE.findall(head[: match.start()]))
    for prefix, uri in _NS.items():
        decls.setdefault(prefix.encode(), f'"{uri}"'.encode())
    wrapper = b"<wrap " + b" ".join(b"xmlns:" + k + b"=" + v for k, v in decls.items()) + b">"
    try:
        return ET.fromstring(wrapper + match.group(0) + b"</wrap>")
    except ET.ParseError:
        return None


def _agent_names(work: ET.Element) -> set[str]:
    names = set()
    for tag in ("creator", "publisher", "rights"):
        for el in work.findall(f"{_DC}{tag}"):
            names.update(t.strip() for t in el.itertext() if t.strip())
    return names


def parse_svg_metadata(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """``{"title", "description", "keywords", "creators"}`` (raw) from an SVG's ``cc:Work``."""
    meta = _metadata_element(Path(path))
    if meta is None:
        return None
    work = next((el for el in meta.iter() if el.tag.endswith("}Work")), None)
    if work is None:
        return None
    subject = work.find(f"{_DC}subject")
    keywords = []
    if subject is not None:
        keywords = [
            li.text.strip() for li in subject.iter(f"{_RDF}li") if li.text and li.text.strip()
        ]
        if not keywords and subject.text and subject.text.strip():  # plain-text subject
            keywords = [k.strip() for k in re.split(r"[,;]", subject.text) if k.strip()]
    return {
        "title": (work.findtext(f"{_DC}title") or "").strip(),
        "description": (work.findtext(f"{_DC}description") or "").strip(),
        "keywords": keywords,
        "creators": sorted(_agent_names(work)),
    }


def captions_from_metadata(meta: dict[str, Any]) -> list[str]:
    """De-duplicated captions: cleaned title, description, then a keyword caption.

    Empty when neither the title nor the description is usable: keywords alone are mostly
    collection tags ("computer", "stars, shapes, geometry" on ~2,700 icons) and make no caption.
    """
    authors = set(meta["creators"])
    title = clean_title(meta["title"], authors)
    desc = clean_description(meta["description"], title, authors)
    if title is None and desc is None:
        return []
    keywords = clean_keywords(meta["keywords"], authors)
    candidates = [title, desc, ("clip art of " + ", ".join(keywords[:6])) if keywords else None]
    out: list[str] = []
    for cap in candidates:
        if cap and cap.casefold() not in {c.casefold() for c in out}:
            out.append(cap)
    return out


def png_size(path: str | os.PathLike[str]) -> tuple[int, int]:
    """``(width, height)`` from a PNG's IHDR chunk, without decoding (or bomb-checking) it."""
    with open(path, "rb") as f:
        head = f.read(24)
    if head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        raise ValueError(f"{path} is not a PNG file")
    return struct.unpack(">II", head[16:24])


def svg_rasteriser() -> str | None:
    """The SVG rasteriser available offline: ``"cairosvg"``, ``"rsvg-convert"`` or ``None``."""
    try:
        import cairosvg  # noqa: F401  (needs the system's libcairo2)
    except (ImportError, OSError):
        return "rsvg-convert" if shutil.which("rsvg-convert") else None
    return "cairosvg"


def rasterise_svg(path: str | os.PathLike[str], width: int, height: int) -> Image.Image:
    """Render an SVG at ``width`` × ``height`` px as RGBA.

    CairoSVG runs in its default safe mode (no external entities or files); ``rsvg-convert``
    only reads files beside the SVG.

    Raises:
        RuntimeError: neither CairoSVG nor ``rsvg-convert`` is installed.
    """
    tool = svg_rasteriser()
    if tool == "cairosvg":
        import cairosvg

        data = cairosvg.svg2png(url=str(path), output_width=width, output_height=height)
    elif tool == "rsvg-convert":
        cmd = ["rsvg-convert", "-w", str(width), "-h", str(height), "-f", "png", str(path)]
        data = subprocess.run(cmd, check=True, capture_output=True, timeout=120).stdout
    else:
        raise RuntimeError(
            "no SVG rasteriser: `pip install cairosvg` or `apt-get install librsvg2-bin`"
        )
    with Image.open(io.BytesIO(data)) as image:
        return image.convert("RGBA")


def _target_size(size: tuple[int, int], max_side: int | None) -> tuple[int, int]:
    """Size an oversized drawing is rendered at: longer side ``max_side``, else PIL's pixel budget."""
    w, h = size
    if max_side is not None:
        scale = max_side / max(w, h)
    else:
        scale = math.sqrt(Image.MAX_IMAGE_PIXELS / (w * h)) if Image.MAX_IMAGE_PIXELS else 1.0
    scale = min(scale, 1.0)
    return max(1, round(w * scale)), max(1, round(h * scale))


def _is_oversized(record: dict[str, Any]) -> bool:
    w, h = record["png_size"]
    return Image.MAX_IMAGE_PIXELS is not None and w * h > Image.MAX_IMAGE_PIXELS


@functools.lru_cache(maxsize=4)
def build_index(root: str) -> tuple[dict[str, Any], ...]:
    """Every drawing under ``root`` with usable captions (cached per root for the process).

    Returns:
        Records sorted by path: ``{"path": "animals/frog.svg", "category": "animals",
        "captions": [...], "keywords": [...], "title": <raw>, "creators": [...],
        "png_size": (width, height)}``.
    """
    svg_root, png_root = Path(root) / "svg", Path(root) / "png"
    records = []
    for dirpath, _dirs, files in os.walk(svg_root):
        for name in files:
            svg = Path(dirpath) / name
            if not name.endswith(".svg") or svg.is_symlink():
                continue
            rel = svg.relative_to(svg_root)
            png = png_root / rel.with_suffix(".png")
            if not png.exists():
                continue
            meta = parse_svg_metadata(svg)
            captions = captions_from_metadata(meta) if meta else []
            if not captions:
                continue
            records.append(
                {
                    "path": rel.as_posix(),
                    "category": rel.parts[0],
                    "captions": captions,
                    "keywords": clean_keywords(meta["keywords"], set(meta["creators"])),
                    "title": meta["title"],
                    "creators": meta["creators"],
                    "png_size": png_size(png),
                }
            )
    records.sort(key=lambda r: r["path"])
    return tuple(records)


class OpenClipart(Dataset):
    """``openclipart``: public-domain clip art with captions from its SVG metadata.

    Args:
        root: Folder with ``svg/`` and ``png/`` (default ``$WORKBENCH_OPENCLIPART`` or Debian's
            ``/usr/share/openclipart``).
        size: Keep a seeded random subset of this many drawings (``None``: all).
        seed: Seed of that subset.
        categories: Keep only these top-level categories (default: all).
        max_side: Downscale PNGs so their longer side is at most this (default 512; ``None``: as is).
        split: ``"all"`` (default), or ``"train"``/``"test"``: fixed by a hash of each item's id
            (:mod:`workbench.data.splits`), so a drawing never changes side whatever ``size``,
            ``categories`` or the package version.
        test_fraction: Share of drawings in ``"test"`` (0.3: ≈ 1,100 of the 3,676 captioned
            drawings, so a ``captions[0]`` retrieval gallery holds over 1,000 captions).

    Items: RGB image (alpha composited on white), captions from :func:`captions_from_metadata`
    (title, description, keyword caption: every text the metadata has), ``label`` = index of the
    top-level category directory in ``class_names``, attributes
    ``{"path", "category", "keywords", "title", "creators", "from_svg"}``; ``from_svg`` marks the
    oversized drawings rendered from their SVG (module docstring).
    """

    name = "openclipart"

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        size: int | None = None,
        seed: int = 0,
        categories: list[str] | None = None,
        max_side: int | None = 512,
        split: str = "all",
        test_fraction: float = 0.3,
    ) -> None:
        check_split("openclipart", split, test_fraction)
        if root is None:
            root = os.environ.get("WORKBENCH_OPENCLIPART", DEBIAN_ROOT)
        self.root = Path(root)
        if not (self.root / "svg").is_dir() or not (self.root / "png").is_dir():
            raise missing_files_error(
                "openclipart svg/ and png/ folders",
                [self.root / "svg", self.root / "png"],
                "Install them with `apt-get install openclipart-svg openclipart-png` (Debian/Ubuntu) "
                "or pass root= (or set WORKBENCH_OPENCLIPART) to a folder holding svg/ and png/.",
            )
        records = build_index(str(self.root.resolve()))
        all_categories = sorted({r["category"] for r in records})
        if categories is not None:
            unknown = sorted(set(categories) - set(all_categories))
            if unknown:
                raise ValueError(f"unknown openclipart categories {unknown}; have {all_categories}")
            records = tuple(r for r in records if r["category"] in categories)
        # class names before the split, so a label means the same category in train and test
        self.class_names = sorted({r["category"] for r in records})
        records = tuple(r for r in records if in_split(_item_id(r), split, test_fraction))
        self.left_out: list[str] = []
        if svg_rasteriser() is None:
            self.left_out = [r["path"] for r in records if _is_oversized(r)]
            if self.left_out:
                warnings.warn(
                    f"openclipart: leaving out {len(self.left_out)} drawings whose PNG is too "
                    f"large to decode and no SVG rasteriser is installed (`pip install cairosvg` "
                    f"or `apt-get install librsvg2-bin`): {', '.join(self.left_out)}",
                    stacklevel=2,
                )
                records = tuple(r for r in records if r["path"] not in self.left_out)
        self._records = [records[i] for i in subset_indices(len(records), size, seed)]
        self.size, self.seed, self.categories, self.max_side = size, seed, categories, max_side
        self.split, self.test_fraction = split, test_fraction

    @property
    def config(self) -> dict[str, Any]:
        config = {
            "name": self.name,
            "split": self.split,
            "size": len(self),
            "seed": self.seed,
            "root": str(self.root),
            "categories": self.categories,
            "max_side": self.max_side,
        }
        if self.split != "all":
            config["test_fraction"] = self.test_fraction
        if self.left_out:  # only then, so existing cache keys stay valid
            config["left_out"] = self.left_out
        return config

    def __len__(self) -> int:
        return len(self._records)

    def _get(self, i: int) -> Item:
        rec = self._records[i]
        from_svg = _is_oversized(rec)
        if from_svg:
            svg = self.root / "svg" / rec["path"]
            raw = rasterise_svg(svg, *_target_size(rec["png_size"], self.max_side))
            image = to_rgb(raw)
        else:
            png = (self.root / "png" / rec["path"]).with_suffix(".png")
            with Image.open(png) as raw:
                image = to_rgb(raw)
        if self.max_side is not None and max(image.size) > self.max_side:
            image.thumbnail((self.max_side, self.max_side), Image.Resampling.LANCZOS)
        attributes = {k: rec[k] for k in ("path", "category", "keywords", "title", "creators")}
        return Item(
            id=_item_id(rec),
            image=image,
            captions=list(rec["captions"]),
            label=self.class_names.index(rec["category"]),
            attributes={**attributes, "from_svg": from_svg},
        )


def _item_id(record: dict[str, Any]) -> str:
    return f"openclipart-{record['path']}"
