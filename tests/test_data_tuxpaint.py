"""``tuxpaint-stamps`` on a layout written here, and on Debian's files when installed."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from workbench.data import load_dataset
from workbench.data import tuxpaint as tp

needs_tuxpaint = pytest.mark.skipif(
    not tp.DEBIAN_ROOT.is_dir(),
    reason="Debian package tuxpaint-stamps-default not installed "
    "(apt-get install tuxpaint-stamps-default)",
)


def _stamp(root, rel, text, dat=None, colour=(200, 30, 30)):
    png = root / f"{rel}.png"
    png.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGBA", (20, 10), (*colour, 255))
    image.putpixel((0, 0), (0, 0, 0, 0))
    image.save(png)
    if text is not None:
        png.with_suffix(".txt").write_text(text + "\nde.utf8=Übersetzung.\n", encoding="utf-8")
    if dat is not None:
        png.with_suffix(".dat").write_text(dat)


@pytest.fixture
def stamps(tmp_path):
    _stamp(tmp_path, "animals/frog", "A frog.")
    _stamp(tmp_path, "animals/frog_mirror", None)  # a pre-flipped copy: skipped
    _stamp(tmp_path, "symbols/chess/knight", "Knight. The only piece that can jump.", "colorable")
    _stamp(tmp_path, "food/cartoon/apple", "An apple core.")
    _stamp(tmp_path, "food/nodesc", None)  # no description: not an item
    return tmp_path


def test_stamps_with_descriptions_become_captioned_items(stamps):
    ds = load_dataset("tuxpaint-stamps", root=stamps)
    assert ds.class_names == ["animals", "food", "symbols"]
    items = {it.attributes["path"]: it for it in ds}
    assert sorted(items) == [
        "animals/frog.png",
        "food/cartoon/apple.png",
        "symbols/chess/knight.png",
    ]
    frog, knight = items["animals/frog.png"], items["symbols/chess/knight.png"]
    assert frog.captions == ["A frog"] and frog.id == "tuxpaint-animals/frog.png"
    assert knight.captions == ["Knight", "Knight. The only piece that can jump."]
    assert knight.attributes["colorable"] and not frog.attributes["colorable"]
    assert items["food/cartoon/apple.png"].attributes["cartoon"]
    assert frog.attributes["photo_like"] and not knight.attributes["photo_like"]
    photos = load_dataset("tuxpaint-stamps", root=stamps, photos_only=True)
    assert [it.id for it in photos] == [frog.id] and photos.class_names == ds.class_names
    assert ds.class_names[frog.label] == "animals"
    assert tuple(np.asarray(frog.image)[0, 0]) == (255, 255, 255)  # transparency on white
    assert tuple(np.asarray(frog.image)[5, 10]) == (200, 30, 30)


def test_split_is_by_id_hash_and_labels_agree(stamps):
    for k in range(30):
        _stamp(stamps, f"animals/bird_{k}", f"Bird number {k}.")
    train = load_dataset("tuxpaint", root=stamps, split="train")
    test = load_dataset("tuxpaint", root=stamps, split="test")
    a, b = {it.id for it in train}, {it.id for it in test}
    assert not a & b and len(a | b) == 33 and b
    assert train.class_names == test.class_names


def test_missing_stamps_say_what_to_install(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install tuxpaint-stamps-default"):
        load_dataset("tuxpaint-stamps", root=tmp_path)


@needs_tuxpaint
def test_the_debian_stamps():
    ds = load_dataset("tuxpaint-stamps")
    assert 700 < len(ds) < 900  # 785 in 2022.06.04 (module docstring)
    assert len(ds.class_names) >= 12 and "animals" in ds.class_names
    frog = next(it for it in ds if it.attributes["path"] == "animals/amphibians/frog.png")
    assert frog.captions[0] == "A frog" and frog.image.mode == "RGB"
    assert max(frog.image.size) <= 512
    photos = load_dataset("tuxpaint-stamps", photos_only=True)
    assert 300 < len(photos) < 450  # 370 in 2022.06.04
    assert all(r["category"] != "symbols" and not r["cartoon"] for r in photos._records)
