"""Kill a short run at every point, resume it, and find every record the uninterrupted run wrote.

Issue 19: the evaluation of a step ran after that step's checkpoint and was not re-run on resume,
so a kill in that window lost the eval record for good; resuming a finished run appended a second
eval and resume/end pair and rewrote ``summary.json`` with a bare ``NaN``; a torn last log line
made the run impossible to resume or read; checkpoints carried no checksum.

The kill is simulated by raising a ``BaseException`` right after the k-th write of the run (a log
record, a checkpoint, ``config.json`` / ``summary.json``) or inside an eval hook: nothing the
run would have done afterwards happens, exactly as with SIGKILL at that point.
"""

from __future__ import annotations

import copy
import json
import warnings

import pytest
import torch
from test_train_toy import ToyDataset, ToyEncoder, toy_embeddings

import workbench.train.loop as loop_mod
import workbench.train.rundir as rundir_mod
from workbench.train import RunDir, TrainConfig, load_encoder_from_run, train
from workbench.train.checkpoint import CheckpointCorruptError


class _Killed(BaseException):
    """Stands for SIGKILL: a BaseException, so no ``except Exception`` in the loop sees it."""


@pytest.fixture(scope="module")
def toy():
    enc = ToyEncoder()
    data = ToyDataset(64)
    return enc, toy_embeddings(enc, data)


def _config(root) -> TrainConfig:
    return TrainConfig(
        encoder=None, dataset=None, steps=4, batch_size=16, holdout=16, warmup=1, lr=1e-2,
        log_every=1, eval_every=2, snapshot_every=2, checkpoint_every=2, run_root=str(root),
    )  # fmt: skip


def _hook(kill_at_step: int | None = None):
    def hook(encoder, step):
        if step == kill_at_step:
            raise _Killed(f"killed while evaluating step {step}")
        with torch.no_grad():
            return {"hook/weight_sum": float(sum(p.sum() for p in encoder.image_head.parameters()))}

    return hook


class _Writes:
    """Counts (and labels) every write of a run; kills it right after write number ``kill_at``."""

    def __init__(self, monkeypatch, kill_at: int | None = None) -> None:
        self.labels: list[str] = []
        self.kill_at = kill_at
        real_write = rundir_mod.LogWriter.write
        real_ckpt = loop_mod.save_training_state
        real_json = loop_mod.write_json_atomic

        def write(log_self, record):
            real_write(log_self, record)
            self._did(f"{record['kind']}:{record.get('event', record.get('step'))}")

        def ckpt(run_dir, step, *a, **k):
            real_ckpt(run_dir, step, *a, **k)
            self._did(f"checkpoint:{step}")

        def wjson(path, obj):
            real_json(path, obj)
            self._did(f"json:{path.name}")

        monkeypatch.setattr(rundir_mod.LogWriter, "write", write)
        monkeypatch.setattr(loop_mod, "save_training_state", ckpt)
        monkeypatch.setattr(loop_mod, "write_json_atomic", wjson)

    def _did(self, label: str) -> None:
        self.labels.append(label)
        if self.kill_at is not None and len(self.labels) == self.kill_at:
            raise _Killed(f"killed after {label}")


def _records(run_dir, kind: str) -> list[dict]:
    recs = RunDir(run_dir).records(kind)
    return [{k: v for k, v in r.items() if k != "time"} for r in recs]  # wall time differs


def _assert_same_records(run_dir, reference) -> None:
    for kind in ("step", "snapshot", "eval"):
        assert _records(run_dir, kind) == _records(reference, kind), kind
    assert RunDir(run_dir).summary == RunDir(reference).summary


@pytest.fixture(scope="module")
def reference(toy, tmp_path_factory):
    """The uninterrupted run, and the labels of its writes in order."""
    enc, emb = toy
    root = tmp_path_factory.mktemp("reference")
    mp = pytest.MonkeyPatch()
    try:
        writes = _Writes(mp)
        run = train(
            _config(root),
            embeddings=emb,
            encoder=copy.deepcopy(enc),
            eval_hooks=[_hook()],
            progress=False,
        )
    finally:
        mp.undo()
    return run.run_dir, writes.labels


def _kill_and_resume(toy, reference, tmp_path, monkeypatch, *, kill_at=None, eval_kill=None):
    enc, emb = toy
    ref_dir, labels = reference
    with monkeypatch.context() as mp:
        _Writes(mp, kill_at)
        with pytest.raises(_Killed):
            train(
                _config(tmp_path), embeddings=emb, encoder=copy.deepcopy(enc),
                eval_hooks=[_hook(eval_kill)], progress=False,
            )  # fmt: skip
    (crashed,) = list(tmp_path.iterdir())
    if not RunDir(crashed).checkpoint_steps():
        with pytest.raises(FileNotFoundError, match="no checkpoint"):
            train(resume=crashed, embeddings=emb, encoder=copy.deepcopy(enc), progress=False)
        return crashed, None
    finished = kill_at == len(labels)
    summary_before = (crashed / "summary.json").read_text() if finished else None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = train(
            resume=crashed, embeddings=emb, encoder=copy.deepcopy(enc),
            eval_hooks=[_hook()], progress=False,
        )  # fmt: skip
    _assert_same_records(crashed, ref_dir)
    events = [r["event"] for r in RunDir(crashed).records("event")]
    if finished:  # a no-op that says so: nothing appended, summary untouched
        assert events == ["start", "end"]
        assert (crashed / "summary.json").read_text() == summary_before
        assert any("already finished" in str(w.message) for w in caught)
    else:
        assert events == ["start", "resume", "end"]
    assert torch.equal(
        next(run.encoder.image_head.parameters()),
        next(load_encoder_from_run(ref_dir, encoder=copy.deepcopy(enc)).image_head.parameters()),
    )
    return crashed, run


def _point(reference, label: str) -> int:
    return reference[1].index(label) + 1  # kill right after this write


def test_the_reference_run_writes_in_the_safe_order(reference):
    labels = reference[1]
    # each step's eval is logged before that step's checkpoint, the summary comes last
    assert labels.index("eval:2") < labels.index("checkpoint:2")
    assert labels.index("eval:4") < labels.index("checkpoint:4") < labels.index("event:end")
    assert labels[-1] == "json:summary.json"


@pytest.mark.parametrize(
    "label",
    ["checkpoint:2", "eval:2", "checkpoint:4", "event:end", "json:summary.json"],
    ids=["checkpoint-written", "eval-logged", "last-checkpoint", "end-logged", "summary-written"],
)
def test_kill_at_a_key_point_then_resume_loses_no_record(
    toy, reference, tmp_path, monkeypatch, label
):
    _kill_and_resume(toy, reference, tmp_path, monkeypatch, kill_at=_point(reference, label))


@pytest.mark.parametrize("step", [2, 4])
def test_kill_while_evaluating_then_resume_reruns_that_eval(
    toy, reference, tmp_path, monkeypatch, step
):
    _kill_and_resume(toy, reference, tmp_path, monkeypatch, eval_kill=step)


def test_kill_after_every_write_then_resume_loses_no_record(toy, reference, tmp_path, monkeypatch):
    for k in range(1, len(reference[1]) + 1):
        sub = tmp_path / f"kill-{k}"
        sub.mkdir()
        _kill_and_resume(toy, reference, sub, monkeypatch, kill_at=k)


def test_a_torn_last_line_is_skipped_by_readers_and_dropped_on_resume(
    toy, reference, tmp_path, monkeypatch
):
    enc, emb = toy
    with monkeypatch.context() as mp:
        _Writes(mp, _point(reference, "step:3"))
        with pytest.raises(_Killed):
            train(
                _config(tmp_path),
                embeddings=emb,
                encoder=copy.deepcopy(enc),
                eval_hooks=[_hook()],
                progress=False,
            )
    (crashed,) = list(tmp_path.iterdir())
    with (crashed / "log.jsonl").open("a") as fh:
        fh.write('{"kind": "step", "step": 4, "loss": 0.3')  # power cut mid-line
    with pytest.warns(UserWarning, match="torn"):
        steps = RunDir(crashed).log()
    assert [r["step"] for r in steps] == [1, 2, 3]
    with pytest.warns(UserWarning, match="torn"):
        train(
            resume=crashed,
            embeddings=emb,
            encoder=copy.deepcopy(enc),
            eval_hooks=[_hook()],
            progress=False,
        )
    _assert_same_records(crashed, reference[0])
    resume = [r for r in RunDir(crashed).records("event") if r["event"] == "resume"]
    assert resume[0]["dropped_torn_log_line"].startswith('{"kind": "step", "step": 4')


def test_a_corrupted_middle_line_is_an_error_naming_the_line(reference, tmp_path):
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(reference[0], run_dir)
    lines = (run_dir / "log.jsonl").read_text().splitlines()
    lines[2] = lines[2][:10]
    (run_dir / "log.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"log.jsonl: line 3 is not a JSON record"):
        RunDir(run_dir).records()


def test_summary_is_valid_json_without_bare_nan(reference):
    text = (reference[0] / "summary.json").read_text()
    json.loads(text, parse_constant=lambda c: pytest.fail(f"bare {c} in summary.json"))


def test_write_json_atomic_writes_nan_as_null(tmp_path):
    rundir_mod.write_json_atomic(tmp_path / "s.json", {"a": float("nan"), "b": [float("inf"), 1.0]})
    assert json.loads((tmp_path / "s.json").read_text()) == {"a": None, "b": [None, 1.0]}


@pytest.mark.parametrize("name", ["model.safetensors", "optimizer.safetensors"])
def test_a_flipped_bit_in_a_checkpoint_is_refused_naming_the_file(toy, reference, tmp_path, name):
    import shutil

    enc, emb = toy
    run_dir = tmp_path / "run"
    shutil.copytree(reference[0], run_dir)
    ckpt = RunDir(run_dir).checkpoint_path()
    data = bytearray((ckpt / name).read_bytes())
    data[len(data) // 2] ^= 0x01
    (ckpt / name).write_bytes(bytes(data))
    with pytest.raises(CheckpointCorruptError, match=rf"{name} is corrupted"):
        train(resume=run_dir, embeddings=emb, encoder=copy.deepcopy(enc), progress=False)
    if name == "model.safetensors":
        with pytest.raises(CheckpointCorruptError, match=name):
            load_encoder_from_run(run_dir, encoder=copy.deepcopy(enc))
    state = json.loads((ckpt / "state.json").read_text())
    assert set(state["sha256"]) == {"model.safetensors", "optimizer.safetensors"}
