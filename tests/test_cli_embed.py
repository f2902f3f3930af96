"""``workbench embed`` in one process: the driver embeds, probes and points at its entry.

(Under ``torchrun`` with 2 processes: ``tests/test_distributed.py``, slow.)
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_embed_cache import CountingEncoder

import workbench as wb
from workbench.cli import main
from workbench.encoders import ENCODERS


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    if "test-counting" not in ENCODERS:
        ENCODERS.register("test-counting")(lambda **kw: CountingEncoder())
    for k, cls in enumerate(("cat", "dog")):
        (tmp_path / "photos" / cls).mkdir(parents=True)
        for i in range(5):
            rgb = np.random.default_rng(10 * k + i).integers(0, 256, (8, 8, 3), dtype=np.uint8)
            Image.fromarray(rgb).save(tmp_path / "photos" / cls / f"{i}.png")
    return tmp_path / "photos"


def test_embed_writes_an_entry_a_notebook_can_open(
    photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    summary = tmp_path / "summary.json"
    args = ["embed", "imagefolder", "--root", str(photos), "--encoder", "test-counting"]
    args += ["--cache-dir", str(tmp_path / "cache"), "--chunk-rows", "4", "--device", "cpu"]
    args += ["--probe", "--summary", str(summary), "--no-progress"]
    assert main(args) == 0
    result = json.loads(summary.read_text())
    assert result["rows"] == 10 and result["world_size"] == 1
    assert f"wb.open_embeddings({result['entry']!r}" in capsys.readouterr().out
    emb = wb.open_embeddings(result["entry"], CountingEncoder())
    assert emb.captions[0] == "a photo of a cat."
    want = wb.probes.ReAlign().fit(emb.image, emb.text).statistics()
    assert result["probe"]["realign"] == pytest.approx(want, rel=1e-12)
    assert 1 <= result["probe"]["image"]["rankme"] <= 6


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--dataset-arg", "templates"], "NAME=VALUE"),
        (["--chunk-rows", "0"], "chunk_rows"),
        (["--encoder", "no-such-encoder"], "no-such-encoder"),
    ],
)
def test_bad_arguments_exit_2_naming_the_problem(
    photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture, extra: list, message: str
) -> None:
    base = ["embed", "imagefolder", "--root", str(photos), "--encoder", "test-counting"]
    code = main([*base, "--cache-dir", str(tmp_path / "c"), "--no-progress", *extra])
    assert code == 2 and message in capsys.readouterr().err
