"""openclipart on a small layout written here: oversized PNGs, id-hash splits, caption cleaning."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from workbench.data import load_dataset
from workbench.data import openclipart as oc

_SVG = """<?xml version="1.0"?>
<svg xmlns="http://www.w3.org/2000/svg" xmlns:dc="http://purl.org/dc/elements/1.1/"
     xmlns:cc="http://web.resource.org/cc/" xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"
     width="{w}" height="{h}" viewBox="0 0 {w} {h}">
  <metadata><rdf:RDF><cc:Work rdf:about="">
    <dc:title>{title}</dc:title>
    <dc:description>{description}</dc:description>
  </cc:Work></rdf:RDF></metadata>
  <rect width="{w}" height="{h}" fill="#ff0000"/>
</svg>"""

needs_rasteriser = pytest.mark.skipif(
    oc.svg_rasteriser() is None,
    reason="no SVG rasteriser (pip install cairosvg, or apt-get install librsvg2-bin)",
)


def _drawing(root, rel, size, title, description="", png=True):
    """An SVG (red) and, when asked, a PNG of ``size`` (blue) at ``rel`` under svg/ and png/."""
    w, h = size
    svg = root / "svg" / f"{rel}.svg"
    svg.parent.mkdir(parents=True, exist_ok=True)
    svg.write_text(_SVG.format(w=w, h=h, title=title, description=description))
    if png:
        target = root / "png" / f"{rel}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", size, (0, 0, 255)).save(target)
    oc.build_index.cache_clear()


def _forge_png_size(path, width, height):
    """Rewrite a PNG's IHDR to claim ``width`` × ``height`` (valid CRC, pixel data unchanged)."""
    data = bytearray(path.read_bytes())
    ihdr = bytes(data[12:16]) + struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:24] = ihdr[4:12]
    data[29:33] = struct.pack(">I", zlib.crc32(ihdr))
    path.write_bytes(bytes(data))


@pytest.fixture
def root(tmp_path):
    _drawing(tmp_path, "animals/frog", (60, 40), "Green Frog", "A green frog sitting")
    _drawing(tmp_path, "signs/stop", (60, 80), "Stop Sign")
    return tmp_path


@needs_rasteriser
def test_an_oversized_png_is_rendered_from_its_svg_at_the_working_size(root, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 3000)  # stop (60 × 80 = 4,800 px) is "too big"
    ds = load_dataset("openclipart", root=root, max_side=32)
    items = {it.attributes["path"]: it for it in ds}
    stop, frog = items["signs/stop.svg"], items["animals/frog.svg"]
    assert stop.attributes["from_svg"] and not frog.attributes["from_svg"]
    assert stop.image.size == (24, 32)  # the PNG's aspect, longer side max_side
    assert tuple(np.asarray(stop.image)[16, 12]) == (255, 0, 0)  # the SVG's red, not the PNG's blue
    assert tuple(np.asarray(frog.image)[10, 10]) == (0, 0, 255)
    assert frog.image.size == (32, 21)


@needs_rasteriser
def test_a_poster_sized_png_is_never_decoded(root):
    # the header claims the size of Debian's largest drawing; the pixel data would not decode
    _forge_png_size(root / "png" / "signs" / "stop.png", 20_990, 29_700)
    oc.build_index.cache_clear()
    ds = load_dataset("openclipart", root=root)
    stop = next(it for it in ds if it.attributes["path"] == "signs/stop.svg")
    assert stop.attributes["from_svg"] and max(stop.image.size) == 512
    assert stop.image.size == (362, 512)


def test_without_a_rasteriser_oversized_drawings_are_left_out_by_name(root, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 3000)
    monkeypatch.setattr(oc, "svg_rasteriser", lambda: None)
    with pytest.warns(UserWarning, match=r"leaving out 1 drawings.*signs/stop\.svg"):
        ds = load_dataset("openclipart", root=root)
    assert [it.attributes["path"] for it in ds] == ["animals/frog.svg"]
    assert ds.config["left_out"] == ["signs/stop.svg"]
    assert "left_out" not in load_dataset("openclipart", root=root, categories=["animals"]).config


def test_png_size_reads_the_header_only(tmp_path):
    path = tmp_path / "x.png"
    Image.new("RGB", (7, 5)).save(path)
    _forge_png_size(path, 20_990, 29_700)
    assert oc.png_size(path) == (20_990, 29_700)
    (tmp_path / "y.png").write_bytes(b"GIF89a" + bytes(30))
    with pytest.raises(ValueError, match="not a PNG"):
        oc.png_size(tmp_path / "y.png")


def test_id_hash_split_is_disjoint_and_keeps_labels(tmp_path):
    for k in range(40):
        _drawing(tmp_path, f"{'animals' if k % 2 else 'plants'}/thing_{k}", (8, 8), f"Thing {k}")
    full = load_dataset("openclipart", root=tmp_path)
    train = load_dataset("openclipart", root=tmp_path, split="train")
    test = load_dataset("openclipart", root=tmp_path, split="test", test_fraction=0.3)
    ids = {s: {it.id for it in ds} for s, ds in (("all", full), ("train", train), ("test", test))}
    assert not ids["train"] & ids["test"] and ids["train"] | ids["test"] == ids["all"]
    assert 0 < len(ids["test"]) < 40
    assert train.class_names == test.class_names == full.class_names
    # a subset draws from the split, never across it
    assert {
        it.id for it in load_dataset("openclipart", root=tmp_path, split="test", size=3)
    } <= ids["test"]
    assert test.config["split"] == "test" and test.config["test_fraction"] == 0.3
    assert "test_fraction" not in full.config  # unchanged cache key for the whole set
    with pytest.raises(ValueError, match="split must be one of"):
        load_dataset("openclipart", root=tmp_path, split="val")


def test_tool_and_licence_notes_are_not_captions(tmp_path):
    _drawing(tmp_path, "music/note", (8, 8), "Musical Note 1", "Released into the Public Domain.")
    _drawing(tmp_path, "people/tux", (8, 8), "Baby-Tux", "Made with Sodipodi")
    _drawing(tmp_path, "plants/tree", (8, 8), "Sapin", "Evergreen with stars made with Inkscape")
    captions = {
        it.attributes["path"]: it.captions for it in load_dataset("openclipart", root=tmp_path)
    }
    assert captions["music/note.svg"] == ["Musical Note 1"]
    assert captions["people/tux.svg"] == ["Baby-Tux"]
    assert captions["plants/tree.svg"] == ["Sapin", "Evergreen with stars made with Inkscape"]
