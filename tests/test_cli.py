"""`workbench figures`: runs stale notebooks with their defaults, skips current ones."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from workbench import cli


def _notebook(path: Path, body: str = "x = 1") -> Path:
    params = new_code_cell('output_dir = "figures/x"')
    params.metadata["tags"] = ["parameters"]
    write = new_code_cell(
        "from workbench.viz.save import write_summary\n"
        f"{body}\n"
        "write_summary(output_dir, {'x': x})"
    )
    nb = new_notebook(cells=[params, write])
    nb.metadata["kernelspec"] = {
        "name": "workbench",
        "display_name": "Python (workbench)",
        "language": "python",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


class FakeExecutor:
    """Records calls and writes what the notebook would (its summary.json)."""

    def __init__(self, fail: str | None = None) -> None:
        self.calls: list[tuple[str, dict]] = []
        self.fail = fail

    def __call__(self, notebook, executed, parameters, kernel, cwd):
        self.calls.append((notebook.stem, parameters))
        if notebook.stem == self.fail:
            raise RuntimeError("cell 3 raised")
        out = Path(parameters["output_dir"])
        (out / "summary.json").write_text(json.dumps({"x": 1}))
        executed.write_text("{}")


@pytest.fixture
def repo(tmp_path):
    _notebook(tmp_path / "notebooks" / "a.ipynb")
    _notebook(tmp_path / "notebooks" / "b.ipynb")
    return tmp_path


def _run(repo, ex, **kw):
    return cli.run_figures(
        repo / "notebooks", repo / "figures", execute=ex, echo=lambda _: None, **kw
    )


def test_runs_every_notebook_with_its_output_dir_then_skips_current_ones(repo):
    ex = FakeExecutor()
    assert _run(repo, ex) == {"a": "ran", "b": "ran"}
    assert [c[0] for c in ex.calls] == ["a", "b"]
    assert ex.calls[0][1] == {"output_dir": str((repo / "figures" / "a").resolve())}
    summary = json.loads((repo / "figures" / "a" / "summary.json").read_text())
    assert summary["x"] == 1 and summary[cli.STAMP_KEY]["notebook_sha256"]
    ex2 = FakeExecutor()
    assert _run(repo, ex2) == {"a": "current", "b": "current"} and not ex2.calls


def test_an_edited_notebook_reruns_alone(repo):
    _run(repo, FakeExecutor())
    _notebook(repo / "notebooks" / "b.ipynb", body="x = 2")
    ex = FakeExecutor()
    assert _run(repo, ex) == {"a": "current", "b": "ran"}


def test_a_library_change_makes_outputs_stale(repo):
    _run(repo, FakeExecutor())
    nb = repo / "notebooks" / "a.ipynb"
    assert cli.is_current(nb, repo / "figures" / "a")
    assert not cli.is_current(nb, repo / "figures" / "a", library="something else")


def test_force_only_and_dry_run(repo):
    _run(repo, FakeExecutor())
    ex = FakeExecutor()
    assert _run(repo, ex, force=True, only=["b.ipynb"]) == {"b": "ran"}
    assert _run(repo, FakeExecutor(), force=True, dry_run=True) == {
        "a": "would run",
        "b": "would run",
    }
    with pytest.raises(ValueError, match="unknown notebooks"):
        _run(repo, ex, only=["c"])


def test_a_failing_notebook_does_not_stop_the_others_and_stays_stale(repo):
    status = _run(repo, FakeExecutor(fail="a"))
    assert status["a"].startswith("failed: RuntimeError") and status["b"] == "ran"
    assert not cli.is_current(repo / "notebooks" / "a.ipynb", repo / "figures" / "a")


def test_main_exit_codes(repo, monkeypatch, capsys):
    monkeypatch.setattr(cli, "papermill_executor", FakeExecutor(fail="b"))
    monkeypatch.setattr(
        cli.run_figures,
        "__kwdefaults__",
        {**cli.run_figures.__kwdefaults__, "execute": cli.papermill_executor},
    )
    args = [
        "figures",
        "--notebooks-dir",
        str(repo / "notebooks"),
        "--figures-dir",
        str(repo / "figures"),
    ]
    assert cli.main(args) == 1
    assert "b: failed" in capsys.readouterr().err
    assert cli.main([*args, "nope"]) == 2


@pytest.mark.notebooks
def test_real_papermill_run_of_a_tiny_notebook(repo):
    status = cli.run_figures(repo / "notebooks", repo / "figures", only=["a"], echo=lambda _: None)
    assert status == {"a": "ran"}
    assert (repo / "figures" / "a" / "a.ipynb").exists()
    assert json.loads((repo / "figures" / "a" / "summary.json").read_text())["x"] == 1
