"""``emoji``: Noto Color Emoji + CLDR names (Debian packages; skipped with a reason when absent)."""

from __future__ import annotations

import numpy as np
import pytest

from workbench.data import emoji as em
from workbench.data import load_dataset


def _item(ds, item_id):
    """The item with this id, rendering only that one."""
    return ds[[r["id"] for r in ds._records].index(item_id)]


needs_emoji = pytest.mark.skipif(
    not em.DEBIAN_FONT.is_file() or not (em.DEBIAN_CLDR / "annotations" / "en.xml").is_file(),
    reason="Debian packages fonts-noto-color-emoji/unicode-cldr-core not installed "
    "(apt-get install fonts-noto-color-emoji unicode-cldr-core)",
)


@needs_emoji
def test_every_item_is_one_colour_glyph_named_by_cldr():
    ds = load_dataset("emoji")
    assert 1500 < len(ds) < 2500  # 1,855 with CLDR 41 + Noto 2.042 (module docstring)
    assert len({it["id"] for it in ds._records}) == len(ds)
    item = _item(ds, "emoji-1f600")
    assert item.captions[0] == "grinning face"
    assert item.captions[1] == "emoji of grinning face"
    assert item.captions[2].startswith("emoji of ") and "grinning face" not in item.captions[2]
    assert item.label is None and item.image.mode == "RGB" and item.image.size == (136, 136)
    px = np.asarray(item.image).astype(int)
    assert tuple(px[0, 0]) == (255, 255, 255)  # transparent margin composited on white
    centre = px[48:88, 48:88]
    assert (centre[..., 0] - centre[..., 2]).mean() > 60  # a yellow face, not a grey box


@needs_emoji
def test_sequences_render_as_one_glyph_and_symbols_without_one_are_left_out():
    ds = load_dataset("emoji")
    ids = {r["id"] for r in ds._records}
    assert em.emoji_id("🏳\u200d🌈") in ids  # ZWJ sequence (CLDR strips U+FE0F)
    assert em.emoji_id("🇫🇷") in ids  # regional-indicator flag
    assert em.emoji_id("{") not in ids  # CLDR names it, the font has no glyph
    font = em._font(str(em.DEBIAN_FONT))
    assert em.renders(font, "🏳\u200d🌈") and not em.renders(font, "‽")
    rainbow = _item(ds, em.emoji_id("🏳\u200d🌈"))
    assert rainbow.attributes["zwj"] and rainbow.captions[0] == "rainbow flag"


@needs_emoji
def test_skin_tone_variants_only_on_request():
    base = load_dataset("emoji")
    every = load_dataset("emoji", skin_tones=True)
    assert not any(r["skin_tone"] for r in base._records)
    toned = [r for r in every._records if r["skin_tone"]]
    assert len(every) == len(base) + len(toned) and len(toned) > 1000
    assert any(r["name"] == "thumbs up: medium skin tone" for r in toned)
    assert base.config != every.config


@needs_emoji
def test_split_size_and_image_size():
    full = load_dataset("emoji")
    train, test = load_dataset("emoji", split="train"), load_dataset("emoji", split="test")
    a, b = {r["id"] for r in train._records}, {r["id"] for r in test._records}
    assert not a & b and a | b == {r["id"] for r in full._records}
    assert 0.15 < len(b) / len(full) < 0.25
    small = load_dataset("emoji", size=5, seed=2, image_size=64)
    assert len(small) == 5 and small[0].image.size == (64, 64)
    assert [it.id for it in small] == [it.id for it in load_dataset("emoji", size=5, seed=2)]


def test_missing_files_say_what_to_install(tmp_path):
    with pytest.raises(
        FileNotFoundError, match="apt-get install fonts-noto-color-emoji unicode-cldr-core"
    ):
        load_dataset("emoji", font=tmp_path / "none.ttf", cldr_root=tmp_path)


def test_annotations_are_read_from_both_cldr_files(tmp_path):
    for rel, body in (
        ("annotations/en.xml", '<annotation cp="😀">face | grin | grinning face</annotation>'
         '<annotation cp="😀" type="tts">grinning face</annotation>'),
        ("annotationsDerived/en.xml", '<annotation cp="👍🏽">thumbs up | medium skin tone</annotation>'
         '<annotation cp="👍🏽" type="tts">thumbs up: medium skin tone</annotation>'
         '<annotation cp="x">no name here</annotation>'),
    ):  # fmt: skip
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"<ldml><annotations>{body}</annotations></ldml>", encoding="utf-8")
    table = em.read_annotations(tmp_path)
    assert table == {
        "😀": {"name": "grinning face", "keywords": ["face", "grin", "grinning face"]},
        "👍🏽": {
            "name": "thumbs up: medium skin tone",
            "keywords": ["thumbs up", "medium skin tone"],
        },
    }
    record = {"name": "grinning face", "keywords": ["face", "grin"]}
    assert em.captions_for(record) == [
        "grinning face",
        "emoji of grinning face",
        "emoji of face, grin",
    ]
    assert em.captions_for({"name": "zebra", "keywords": []}) == ["zebra", "emoji of zebra"]
