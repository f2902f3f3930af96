"""COCO/Flickr30k (Karpathy JSON), MMVP-VLM and ImageFolder loaders on small layouts written here."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image

from workbench.data import MMVP_CATEGORIES, load_dataset

_COLOURS = [
    (200, 30, 30),
    (30, 200, 30),
    (30, 30, 200),
    (200, 200, 30),
    (90, 90, 90),
    (10, 160, 160),
]


def _save(path, colour, mode="RGB", fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGB", (12, 10), colour)
    if mode == "RGBA":
        image = image.convert("RGBA")
        image.putpixel((0, 0), (0, 0, 0, 0))
    elif mode == "L":
        image = image.convert("L")
    image.save(path, format=fmt)


def _karpathy(tmp_path, name, with_filepath):
    root = tmp_path / name
    images = []
    splits = ["train", "val", "test", "test", "restval", "train"]
    for k, split in enumerate(splits):
        entry = {
            "filename": f"img_{k}.jpg",
            "split": split,
            "sentences": [{"raw": f"caption {k} number {j}. ", "tokens": []} for j in range(5)],
            "imgid": k,
        }
        if with_filepath:
            entry["filepath"] = "val2014" if k % 2 else "train2014"
            entry["cocoid"] = 1000 + k
            img_dir = root / "images" / entry["filepath"]
        else:
            img_dir = root / "flickr30k-images"
        _save(img_dir / entry["filename"], _COLOURS[k], fmt="JPEG")
        images.append(entry)
    json_name = "dataset_coco.json" if with_filepath else "dataset_flickr30k.json"
    (root / json_name).write_text(json.dumps({"images": images, "dataset": name}))
    return root


@pytest.mark.parametrize(("name", "with_filepath"), [("coco-captions", True), ("flickr30k", False)])
def test_karpathy_layouts(tmp_path, name, with_filepath):
    root = _karpathy(tmp_path, name, with_filepath)
    test = load_dataset(name, root=root)  # default split: test
    assert len(test) == 2 and test.split == "test"
    item = test[0]
    assert item.image.mode == "RGB" and item.image.size == (12, 10)
    assert item.captions == [f"caption 2 number {j}." for j in range(5)]
    assert item.label is None and item.attributes["split"] == "test"
    assert np.abs(np.asarray(item.image)[5, 5].astype(int) - _COLOURS[2]).max() < 20  # right file
    if with_filepath:
        assert item.attributes["cocoid"] == 1002 and item.id == f"{name}-1002"
    assert len(load_dataset(name, root=root, split="train+restval")) == 3
    assert len(load_dataset(name, root=root, split="all")) == 6
    sub = load_dataset(name, root=root, split="all", size=3, seed=4)
    assert len(sub) == 3 and sub.config["size"] == 3 and sub.config["seed"] == 4
    with pytest.raises(ValueError, match="Karpathy splits"):
        load_dataset(name, root=root, split="dev")


def test_karpathy_missing_files_name_the_json_and_root(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"dataset_coco\.json") as err:
        load_dataset("coco-captions", root=tmp_path)
    assert "root=" in str(err.value)
    root = _karpathy(tmp_path, "flickr30k", with_filepath=False)
    for f in (root / "flickr30k-images").iterdir():
        f.unlink()
    with pytest.raises(FileNotFoundError, match="image_root="):
        load_dataset("flickr30k", root=root)


def _mmvp(tmp_path, pairs_per_category=1):
    root = tmp_path / "MMVP_VLM"
    rows = []
    qid = 1
    for category in MMVP_CATEGORIES:
        for p in range(pairs_per_category):
            for side in range(2):
                rows.append((qid, category, f"{category.lower()} statement {p}-{side}"))
                _save(
                    root / "MLLM_VLM Images" / category / f"{qid}.jpg",
                    _COLOURS[(qid - 1) % 6],
                    fmt="JPEG",
                )
                qid += 1
    with open(root / "Questions.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["Question ID", "Type", "Statement"])
        writer.writerows(rows)
    return root


def test_mmvp_vlm_layout_gives_items_and_pairs(tmp_path):
    root = _mmvp(tmp_path, pairs_per_category=2)
    ds = load_dataset("mmvp-vlm", root=root)
    assert len(ds) == 9 * 2 * 2 and ds.class_names == list(MMVP_CATEGORIES)
    first = ds[0]
    assert first.captions == ["a photo of orientation and direction statement 0-0"]
    assert first.attributes == {"qid": 1, "category": MMVP_CATEGORIES[0], "pair": 0, "position": 0}
    pairs = ds.pairs()
    assert len(pairs) == 18
    assert [p.category for p in pairs] == [c for c in MMVP_CATEGORIES for _ in range(2)]
    p = pairs[3]  # statement k belongs to image k (odd qid first)
    assert p.statements[0].endswith("statement 1-0") and p.statements[1].endswith("statement 1-1")
    assert p.attributes[0]["qid"] % 2 == 1 and p.attributes[1]["qid"] == p.attributes[0]["qid"] + 1
    assert (
        np.abs(
            np.asarray(p.images[0])[5, 5].astype(int) - _COLOURS[(p.attributes[0]["qid"] - 1) % 6]
        ).max()
        < 20
    )
    raw = load_dataset("mmvp-vlm", root=root, statement_prefix="")
    assert raw[0].captions == ["orientation and direction statement 0-0"]


def test_mmvp_vlm_rejects_broken_layouts(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"Questions\.csv") as err:
        load_dataset("mmvp-vlm", root=tmp_path)
    assert "root=" in str(err.value)
    root = _mmvp(tmp_path)
    (root / "Questions.csv").write_text("id,kind,text\n1,Texts,a\n2,Texts,b\n")
    with pytest.raises(ValueError, match="Question ID,Type,Statement"):
        load_dataset("mmvp-vlm", root=root)
    (root / "Questions.csv").write_text("Question ID,Type,Statement\n1,Texts,a\n2,Colour,b\n")
    with pytest.raises(ValueError, match="do not form a pair"):
        load_dataset("mmvp-vlm", root=root)


def test_imagefolder_classes_captions_and_modes(tmp_path):
    root = tmp_path / "pets"
    _save(root / "cat" / "a.png", _COLOURS[0], mode="RGBA")
    _save(root / "cat" / "b.jpg", _COLOURS[1], fmt="JPEG")
    _save(root / "golden_retriever" / "c.png", _COLOURS[2], mode="L")
    _save(root / "golden_retriever" / "sub" / "d.bmp", _COLOURS[3])
    palette = Image.new("P", (12, 10), 1)
    palette.putpalette([0, 0, 0, 10, 200, 10] + [0] * 762)
    palette.info["transparency"] = 1  # the whole image is transparent
    palette.save(root / "golden_retriever" / "e.png", transparency=1)
    (root / "golden_retriever" / "notes.txt").write_text("not an image")
    ds = load_dataset("imagefolder", root=root)
    assert ds.class_names == ["cat", "golden retriever"] and len(ds) == 5
    items = list(ds)
    assert [it.label for it in items] == [0, 0, 1, 1, 1]
    assert (np.asarray(items[3].image) == 255).all()  # palette transparency → white
    assert all(it.image.mode == "RGB" for it in items)
    assert items[0].captions == ["a photo of a cat.", "a picture of a cat."]
    assert tuple(np.asarray(items[0].image)[0, 0]) == (255, 255, 255)  # transparent → white
    assert items[2].attributes == {
        "path": "golden_retriever/c.png",
        "class_dir": "golden_retriever",
    }
    custom = load_dataset("imagefolder", root=root, templates=["an image of {}"], size=2, seed=0)
    assert len(custom) == 2 and custom[0].captions[0].startswith("an image of ")
    with pytest.raises(ValueError, match=r"\{\}"):
        load_dataset("imagefolder", root=root, templates=["no slot"])


def test_imagefolder_split_subfolder_and_missing_root(tmp_path):
    _save(tmp_path / "data" / "train" / "dog" / "x.png", _COLOURS[0])
    ds = load_dataset("imagefolder", root=tmp_path / "data", split="train")
    assert ds.class_names == ["dog"] and len(ds) == 1
    with pytest.raises(FileNotFoundError, match="root="):
        load_dataset("imagefolder", root=tmp_path / "nothing")
    with pytest.raises(ValueError, match="root="):
        load_dataset("imagefolder")
