"""Loaders on real files: bundled digits/skimage photos, Debian's Fashion-MNIST and OpenClipart."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from workbench.data import DATASETS, load_dataset
from workbench.data.fashion_mnist import DEBIAN_ROOT as FASHION_ROOT
from workbench.data.fashion_mnist import FASHION_CLASSES, FASHION_TEMPLATES, read_idx
from workbench.data.openclipart import DEBIAN_ROOT as OPENCLIPART_ROOT
from workbench.data.openclipart import captions_from_metadata, clean_title, parse_svg_metadata

needs_fashion = pytest.mark.skipif(
    not (FASHION_ROOT / "t10k-images-idx3-ubyte.gz").is_file(),
    reason="Debian package dataset-fashion-mnist not installed (apt-get install dataset-fashion-mnist)",
)
needs_openclipart = pytest.mark.skipif(
    not (OPENCLIPART_ROOT / "svg").is_dir() or not (OPENCLIPART_ROOT / "png").is_dir(),
    reason="Debian packages openclipart-svg/openclipart-png not installed",
)


def _check_items(ds, n=5):
    for i in range(min(n, len(ds))):
        item = ds[i]
        assert item.image.mode == "RGB" and min(item.image.size) > 0
        assert item.captions and all(isinstance(c, str) and c for c in item.captions)
        if ds.class_names is not None:
            assert 0 <= item.label < len(ds.class_names)


def test_registry_knows_every_dataset_and_rejects_typos():
    assert set(DATASETS.names()) >= {
        "synthetic-world", "digits", "skimage-photos", "fashion-mnist", "openclipart",
        "coco-captions", "flickr30k", "mmvp-vlm", "imagefolder", "emoji", "tuxpaint-stamps",
    }  # fmt: skip
    with pytest.raises(KeyError, match="fashion-mnist"):
        load_dataset("fashion-mnst")
    with pytest.raises(TypeError, match="does not take"):
        load_dataset("digits", colour="red")


def test_digits_split_is_disjoint_stratified_and_deterministic():
    train, test = load_dataset("digits", split="train"), load_dataset("digits", split="test")
    everything = load_dataset("digits")
    train_rows, test_rows = set(train._rows.tolist()), set(test._rows.tolist())
    assert not train_rows & test_rows
    assert train_rows | test_rows == set(range(len(everything)))
    per_class_all = np.bincount(everything._labels, minlength=10)
    per_class_test = np.bincount(test._labels, minlength=10)
    assert np.array_equal(per_class_test, np.round(0.25 * per_class_all))  # stratified
    again = load_dataset("digits", split="test")
    assert np.array_equal(again._rows, test._rows)
    assert test[5].attributes["index"] == test._rows[5] and test[5].id != train[5].id
    item = load_dataset("digits", size=3, seed=1, image_size=32)[0]
    assert item.image.size == (32, 32)
    assert item.captions[0] == f"a handwritten digit {everything.class_names[item.label]}"
    # ink is dark on a light background
    px = np.asarray(item.image.convert("L"))
    assert np.median(px) > 128


def test_skimage_photos_load_offline_with_a_cat():
    ds = load_dataset("skimage-photos")
    assert len(ds) >= 15
    _check_items(ds, n=len(ds))
    chelsea = next(it for it in ds if it.attributes["skimage_name"] == "chelsea")
    assert ds.class_names[chelsea.label] == "cat" and "cat" in chelsea.captions[0]
    horse = next(it for it in ds if it.attributes["skimage_name"] == "horse")
    assert "black silhouette" in horse.captions[0]
    assert tuple(np.asarray(horse.image)[0, 0]) == (255, 255, 255)  # as captioned: white ground
    with pytest.raises(ValueError, match="available"):
        load_dataset("skimage-photos", names=["eagle"])


@needs_fashion
def test_fashion_mnist_from_the_debian_files():
    ds = load_dataset("fashion-mnist", split="test")
    assert len(ds) == 10_000 and ds.class_names == list(FASHION_CLASSES)
    labels = np.array([ds._labels[i] for i in range(len(ds))])
    assert np.bincount(labels).tolist() == [1000] * 10  # the test set is balanced
    item = ds[0]
    assert item.image.size == (28, 28) and item.image.mode == "RGB"
    assert item.captions[0] in (
        f"a photo of a {ds.class_names[item.label]}",
        f"a photo of an {ds.class_names[item.label]}",
    )
    raw = read_idx(FASHION_ROOT / "t10k-images-idx3-ubyte.gz")
    assert np.array_equal(np.asarray(item.image)[..., 0], raw[0])

    sub = load_dataset("fashion-mnist", split="train", size=50, seed=3, image_size=56)
    assert len(sub) == 50 and sub[0].image.size == (56, 56)
    assert [it.id for it in sub] == [
        it.id for it in load_dataset("fashion-mnist", split="train", size=50, seed=3)
    ]
    assert sub.config["size"] == 50 and sub.config["split"] == "train"


@needs_fashion
def test_fashion_mnist_items_carry_every_caption_template():
    ds = load_dataset("fashion-mnist", split="test", size=40, seed=0)
    boot = next(it for it in ds if ds.class_names[it.label] == "ankle boot")
    # the first two are the captions items always had (cached embeddings hold captions[0])
    assert boot.captions[:2] == [
        "a photo of an ankle boot",
        "a black and white photo of an ankle boot",
    ]
    assert len(boot.captions) == len(FASHION_TEMPLATES) == len(set(boot.captions))
    assert all("an ankle boot" in c for c in boot.captions)


def test_fashion_mnist_missing_files_say_what_to_install(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist") as err:
        load_dataset("fashion-mnist", root=tmp_path)
    assert "root=" in str(err.value)


def test_idx_reader_checks_its_header(tmp_path):
    good = tmp_path / "x-idx1-ubyte.gz"
    with gzip.open(good, "wb") as f:
        f.write(b"\x00\x00\x08\x01" + (3).to_bytes(4, "big") + bytes([7, 8, 9]))
    assert read_idx(good).tolist() == [7, 8, 9]
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x00\x00\x08\x01" + (5).to_bytes(4, "big") + bytes([1]))
    with pytest.raises(ValueError, match="header says"):
        read_idx(bad)


@needs_openclipart
def test_openclipart_from_the_debian_files():
    full = load_dataset("openclipart")
    assert 1000 < len(full) < 8121  # boilerplate-only drawings dropped, duplicates skipped
    assert len({it["path"] for it in full._records}) == len(full)
    for rec in full._records:
        assert rec["captions"] and len({c.casefold() for c in rec["captions"]}) == len(
            rec["captions"]
        )
        for cap in rec["captions"]:
            assert not any(a and a.casefold() == cap.casefold() for a in rec["creators"])
            assert "Flat Icon Collection" not in cap and cap.lower() != "untitled"
    sub = load_dataset("openclipart", size=20, seed=1)
    assert len(sub) == 20
    _check_items(sub, n=20)
    item = sub[0]
    assert sub.class_names[item.label] == item.attributes["category"]
    assert [it.id for it in load_dataset("openclipart", size=20, seed=1)] == [it.id for it in sub]
    animals = load_dataset("openclipart", categories=["animals"], size=5)
    assert animals.class_names == ["animals"]


@needs_openclipart
def test_openclipart_png_alpha_is_composited_on_white():
    ds = load_dataset("openclipart", size=30, seed=0)
    corners = []
    for it in ds:
        px = np.asarray(it.image)
        corners.append(px[0, 0])
    assert np.mean([c.min() for c in corners]) > 200  # transparent corners became white


def test_openclipart_metadata_parsing(tmp_path):
    svg = tmp_path / "frog.svg"
    svg.write_text(
        """<?xml version="1.0"?>
<svg xmlns="http://www.w3.org/2000/svg" xmlns:dc="http://purl.org/dc/elements/1.1/"
     xmlns:cc="http://web.resource.org/cc/" xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
  <metadata><rdf:RDF><cc:Work rdf:about="">
    <dc:title>Green Frog</dc:title>
    <dc:description>A green frog sitting. http://example.org</dc:description>
    <dc:subject><rdf:Bag><rdf:li>frog</rdf:li><rdf:li>hash</rdf:li><rdf:li>animal</rdf:li></rdf:Bag></dc:subject>
    <dc:creator><cc:Agent><dc:title>Jane Artist</dc:title></cc:Agent></dc:creator>
    <dc:publisher><cc:Agent><dc:title>Open Clip Art Library</dc:title></cc:Agent></dc:publisher>
  </cc:Work></rdf:RDF></metadata>
  <rect width="1" height="1"/>
</svg>"""
    )
    meta = parse_svg_metadata(svg)
    assert meta["title"] == "Green Frog" and "Jane Artist" in meta["creators"]
    assert captions_from_metadata(meta) == [
        "Green Frog",
        "A green frog sitting",
        "clip art of frog, animal",
    ]
    for boiler in ("", "Untitled", "Layer 1", "frog_01.svg", "jigsaw_red_10",
                   "Part of the Flat Icon Collection (Wed Aug 25 23:29:46 2004)",
                   "Open Clip Art Library", "Etiquette Icons"):  # fmt: skip
        assert clean_title(boiler) is None, boiler
    assert clean_title("Jane Artist", {"Jane Artist"}) is None
    assert clean_title("Clipart by Nicu Buculei - smiley111") == "smiley"


def test_openclipart_missing_files_say_what_to_install(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install openclipart-svg openclipart-png"):
        load_dataset("openclipart", root=tmp_path)


def test_openclipart_never_resolves_external_entities(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP SECRET")
    svg = tmp_path / "evil.svg"
    svg.write_text(
        f"""<?xml version="1.0"?>
<!DOCTYPE svg [<!ENTITY xxe SYSTEM "file://{secret}">]>
<svg xmlns="http://www.w3.org/2000/svg" xmlns:dc="http://purl.org/dc/elements/1.1/"
     xmlns:cc="http://web.resource.org/cc/" xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
  <metadata><rdf:RDF><cc:Work><dc:title>&xxe;</dc:title></cc:Work></rdf:RDF></metadata>
</svg>"""
    )
    meta = parse_svg_metadata(svg)
    assert meta is None or "SECRET" not in meta["title"]


def test_config_identifies_the_data():
    a = load_dataset("digits", split="test", size=10, seed=0).config
    b = load_dataset("digits", split="test", size=10, seed=1).config
    assert a != b and a["name"] == "digits" and a["split"] == "test" and a["size"] == 10
