"""Sharded ``embed`` and all-reduced probes: 2 gloo processes reproduce one process.

Workers get torchrun's environment (RANK, WORLD_SIZE, MASTER_ADDR/PORT) and call
``workbench.distributed.setup``, the path ``torchrun --nproc_per_node 2`` takes; the last test
runs the CLI under ``torchrun`` itself. What a user relies on: the cache a 2-process run writes
is the one a single process writes (every row bit-identical), every rank's statistics are the
single-process ones to 1e-10, an error on one rank is an error on all (never a hang), and a
killed extraction resumes computing only the chunks that are missing.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from PIL import Image
from test_embed_cache import CountingEncoder, TinyDataset

from workbench.data.base import Item
from workbench.encoders.cache import EmbeddingCache
from workbench.encoders.embed import embed

pytestmark = pytest.mark.slow

N_ROWS, CHUNK, BATCH = 40, 6, 4  # 7 chunks (the last of 4 rows), batches of 4 within each


class NoisySquares(TinyDataset):
    """Seeded noise images (full-rank features) with the tiny squares' captions and labels;
    records the rows it reads and can die mid-extraction like a killed rank."""

    name = "noisy-squares"

    def __init__(
        self,
        n: int = N_ROWS,
        log: str | None = None,
        die_at: int | None = None,
        wait_for: tuple[str, int] | None = None,
    ) -> None:
        super().__init__(n)
        self.log, self.die_at, self.wait_for = log, die_at, wait_for

    @property
    def config(self) -> dict:
        return {"name": self.name, "n": self.n}

    def _get(self, i: int) -> Item:
        if self.log is not None:
            with open(self.log, "a") as f:
                f.write(f"{i}\n")
        if i == self.die_at:
            if self.wait_for is not None:  # let the other rank finish first: a fixed disk state
                folder, count = self.wait_for
                deadline = time.monotonic() + 120
                while len(list(Path(folder).rglob("chunk-*.json"))) < count:
                    if time.monotonic() > deadline:
                        break
                    time.sleep(0.05)
            os.kill(os.getpid(), signal.SIGKILL)
        item = super()._get(i)
        rgb = np.random.default_rng(i).integers(0, 256, size=(10, 12, 3), dtype=np.uint8)
        return Item(item.id, Image.fromarray(rgb), item.captions, item.label, item.attributes)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _join(rank: int, world: int, port: int) -> None:
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        GLOO_SOCKET_IFNAME="lo",
    )
    torch.set_num_threads(1)
    from workbench.distributed import setup

    setup(torch.device("cpu"))


def _statistics(emb, rank: int, world: int, group) -> dict:
    """Every all-reducing probe on this rank's shard (``group=None``: one process, all rows)."""
    from workbench.probes import (
        C3,
        FixedFrame,
        ReAlign,
        modality_gap,
        spectra_by_modality,
        spectrum,
    )

    local = emb.shard(rank, world)
    out: dict = {}
    for side in ("image", "text"):
        for center in (True, False):
            s = spectrum(getattr(local, side), center=center, group=group)
            out[f"spectrum/{side}/{center}"] = (
                s.singular_values,
                s.resolution,
                s.mean,
                s.n_samples,
            )
    ra = ReAlign().fit(local.image, local.text, group=group)
    for name in ("mu_x_", "mu_y_", "trace_x_", "trace_y_", "scale_", "mu_y_prime_", "n_text_"):
        out[f"realign/{name}"] = getattr(ra, name)
    c3 = C3().fit(local.image, local.text, group=group)
    out["c3/mu_x_"], out["c3/mu_y_"] = c3.mu_x_, c3.mu_y_
    image, text = np.asarray(local.image, np.float64), np.asarray(local.text, np.float64)
    ff = FixedFrame(energy=0.8).fit(image, text, group=group)
    out["frame/eigenvalues_"], out["frame/rank_"] = ff.eigenvalues_, ff.rank_
    out["frame/projector"] = ff.U_ @ ff.U_.T  # the subspace, free of eigenvector signs
    gap = modality_gap(image, text, group=group)
    for name in ("delta", "image_spectrum", "text_spectrum"):
        out[f"gap/{name}"] = getattr(gap, name)
    for name, value in gap.summary().items():
        out[f"gap/{name}"] = value
    groups = spectra_by_modality(
        {"image": image, "text": text}, labels=local.labels, method="gram", group=group
    )
    for key, s in groups.items():
        out[f"by_modality/{key}"] = (s.singular_values, s.resolution, s.mean, s.n_samples)
    return out


def _embed_kw(cache_dir: Path, **kw) -> dict:
    return {
        "chunk_rows": CHUNK,
        "batch_size": BATCH,
        "cache_dir": cache_dir,
        "tower_features": True,
        "progress": False,
        **kw,
    }


def _rows(emb) -> dict:
    return {
        name: np.asarray(getattr(emb, name))
        for name in ("image", "text", "image_tower", "text_tower", "labels")
    } | {"ids": emb.ids, "captions": emb.captions, "attributes": emb.attributes}


def _worker(rank: int, world: int, port: int, cache_dir: str, out: str) -> None:
    _join(rank, world, port)
    log = f"{out}.reads.{rank}"
    emb = embed(
        CountingEncoder(), NoisySquares(log=log), **_embed_kw(Path(cache_dir), group="auto")
    )
    result = {"rows": _rows(emb), "type": type(emb.image).__name__}
    result["stats"] = _statistics(emb, rank, world, "auto")
    # an error on one rank reaches every rank instead of hanging the other
    from workbench.probes import spectrum

    bad = np.asarray(emb.shard(rank, world).image).copy()
    if rank == 1:
        bad[0, 0] = np.nan
    try:
        spectrum(bad, group="auto")
    except Exception as e:
        result["error"] = (type(e).__name__, str(e))
    with open(f"{out}.{rank}", "wb") as f:
        pickle.dump(result, f)
    torch.distributed.destroy_process_group()


def _close(a, b, key: str) -> None:
    """Equal to 1e-10 relative (spectra: the singular values above both resolution floors)."""
    if isinstance(a, tuple):  # a spectrum
        (sa, ra, ma, na), (sb, rb, mb, nb) = a, b
        assert na == nb, key
        keep = (sa > max(ra, rb)) & (sb > max(ra, rb))
        assert keep.sum() >= 1 and np.array_equal(keep, sb > max(ra, rb)), key
        np.testing.assert_allclose(sa[keep], sb[keep], rtol=1e-10, atol=0, err_msg=key)
        np.testing.assert_allclose(ma, mb, rtol=1e-10, atol=1e-12 * np.abs(mb).max(), err_msg=key)
        return
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = float(np.abs(b).max()) if b.size else 0.0
    np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10 * scale, err_msg=key)


def test_two_processes_embed_and_measure_what_one_process_does(tmp_path: Path) -> None:
    out = str(tmp_path / "result")
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path / "ddp"), out), nprocs=2, join=True)
    torch.set_num_threads(1)
    single = embed(CountingEncoder(), NoisySquares(), **_embed_kw(tmp_path / "one", mmap=True))
    want_rows, want = _rows(single), _statistics(single, 0, 1, None)
    reads = [sorted(int(x) for x in Path(f"{out}.reads.{r}").read_text().split()) for r in (0, 1)]
    assert sorted(reads[0] + reads[1]) == list(range(N_ROWS))  # each row embedded once
    chunks = [sorted({i // CHUNK for i in r}) for r in reads]
    assert chunks == [[0, 2, 4, 6], [1, 3, 5]]  # dealt round-robin by chunk index
    for rank in (0, 1):
        with open(f"{out}.{rank}", "rb") as f:
            got = pickle.load(f)
        assert got["type"] == "ChunkedRows"  # distributed: memory-mapped by default
        for name, value in want_rows.items():  # the one cache entry, every row bit-identical
            if isinstance(value, np.ndarray):
                np.testing.assert_array_equal(got["rows"][name], value, err_msg=name)
            else:
                assert got["rows"][name] == value, name
        assert set(got["stats"]) == set(want)
        for key, value in want.items():
            _close(got["stats"][key], value, key)
        kind, message = got["error"]  # the NaN row of rank 1, reported on both ranks
        if rank == 1:
            assert kind == "ValueError" and "NaN" in message and "row 0" in message
        else:
            assert kind == "RuntimeError" and "rank 1" in message and "NaN" in message


def _crash_worker(rank: int, world: int, port: int, cache_dir: str, out: str) -> None:
    _join(rank, world, port)
    # rank 1 owns chunks 1, 3, 5: it finishes chunk 1, waits until rank 0's four chunks are on
    # disk, then is killed inside chunk 3 (row 20): 5 of 7 chunks survive
    data = NoisySquares(
        log=f"{out}.reads.{rank}",
        die_at=20 if rank == 1 else None,
        wait_for=(cache_dir, 5),
    )
    embed(CountingEncoder(), data, **_embed_kw(Path(cache_dir), group="auto"))


def _resume_worker(rank: int, world: int, port: int, cache_dir: str, out: str) -> None:
    _join(rank, world, port)
    data = NoisySquares(log=f"{out}.resumed.{rank}")
    emb = embed(CountingEncoder(), data, **_embed_kw(Path(cache_dir), group="auto"))
    with open(f"{out}.{rank}", "wb") as f:
        pickle.dump(_rows(emb), f)
    torch.distributed.destroy_process_group()


def _read_log(path: str) -> list[int]:
    p = Path(path)
    return sorted(int(x) for x in p.read_text().split()) if p.exists() else []


def test_a_killed_rank_is_resumed_with_only_the_missing_chunks(tmp_path: Path) -> None:
    cache_dir, out = tmp_path / "cache", str(tmp_path / "run")
    with pytest.raises(mp.ProcessExitedException):
        mp.spawn(_crash_worker, args=(2, _free_port(), str(cache_dir), out), nprocs=2, join=True)
    (entry,) = (cache_dir / "towers").iterdir()
    assert not (entry / "entry.json").exists()  # never committed
    key = entry.name
    done = sorted(EmbeddingCache(cache_dir).done_chunks(key))  # verified survivors
    assert done == [(0, 6), (6, 12), (12, 18), (24, 30), (36, 40)]
    mp.spawn(_resume_worker, args=(2, _free_port(), str(cache_dir), out), nprocs=2, join=True)
    resumed = [_read_log(f"{out}.resumed.{r}") for r in (0, 1)]
    assert resumed == [list(range(18, 24)), list(range(30, 36))]  # the two missing chunks only
    torch.set_num_threads(1)
    whole = embed(CountingEncoder(), NoisySquares(), **_embed_kw(tmp_path / "one"))
    for rank in (0, 1):
        with open(f"{out}.{rank}", "rb") as f:
            got = pickle.load(f)
        for name in ("image", "text", "image_tower", "text_tower"):
            np.testing.assert_array_equal(got[name], getattr(whole, name), err_msg=name)
        assert got["ids"] == whole.ids
    assert (entry / "entry.json").exists()


def test_the_cli_embeds_and_probes_under_torchrun(tmp_path: Path) -> None:
    """``torchrun --nproc_per_node 2 -m workbench embed imagefolder --root ... --probe``."""
    root = tmp_path / "photos"
    for k, cls in enumerate(("red_apple", "blue_car")):
        (root / cls).mkdir(parents=True)
        for i in range(9):
            rgb = np.random.default_rng(10 * k + i).integers(0, 256, (16, 16, 3), dtype=np.uint8)
            Image.fromarray(rgb).save(root / cls / f"{i}.png")
    plugin = tmp_path / "wb_plugin.py"  # the user's own encoder, registered by --import
    plugin.write_text(
        "from test_embed_cache import CountingEncoder\n"
        "from workbench.encoders import ENCODERS\n"
        "ENCODERS.register('test-counting')(lambda **kw: CountingEncoder())\n"
    )
    tests_dir = Path(__file__).resolve().parent
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            [str(tmp_path), str(tests_dir), os.environ.get("PYTHONPATH", "")]
        ),
        "OMP_NUM_THREADS": "1",
        "GLOO_SOCKET_IFNAME": "lo",
    }
    summary = tmp_path / "summary.json"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
        "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
        "-m", "workbench", "embed", "imagefolder", "--root", str(root),
        "--encoder", "test-counting", "--import", "wb_plugin", "--chunk-rows", "4",
        "--cache-dir", str(tmp_path / "cache"), "--device", "cpu", "--probe",
        "--summary", str(summary), "--no-progress",
    ]  # fmt: skip
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(summary.read_text())
    assert result["rows"] == 18 and result["world_size"] == 2
    assert "open_embeddings(" in done.stdout and result["entry"] in done.stdout
    from workbench.data import load_dataset
    from workbench.encoders.embed import open_embeddings
    from workbench.probes import ReAlign

    opened = open_embeddings(result["entry"], CountingEncoder())  # what the notebook does
    folder = load_dataset("imagefolder", root=str(root))
    direct = embed(CountingEncoder(), folder, chunk_rows=4, cache=False)  # the CLI's batches
    np.testing.assert_array_equal(np.asarray(opened.image), direct.image)
    assert opened.captions[0] == "a photo of a blue car."
    want = ReAlign().fit(opened.image, opened.text).statistics()
    for name, value in want.items():
        assert result["probe"]["realign"][name] == pytest.approx(value, rel=1e-10), name
