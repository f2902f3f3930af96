"""The ``workbench`` command line: ``workbench figures`` regenerates every notebook's figures.

``workbench figures`` runs each ``notebooks/*.ipynb`` with its default parameters through papermill
(kernel ``workbench``), with ``output_dir`` set to ``figures/<notebook>/``, and keeps the executed
copy there as ``<notebook>.ipynb``. A notebook is skipped when its outputs are current: its
``summary.json`` carries a stamp (``_figures``) of the notebook's bytes, the workbench version and
the library's source, and the stamp still matches. ``--force`` reruns anyway.

A thin driver (STYLE.md §1): argument parsing and printing live here, nothing else does.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

STAMP_KEY = "_figures"
PACKAGE_DIR = Path(__file__).resolve().parent

Executor = Callable[[Path, Path, dict[str, Any], str, Path], None]


def library_digest(package_dir: Path = PACKAGE_DIR) -> str:
    """sha256 over the library's ``*.py`` files (relative path + bytes), sorted."""
    h = hashlib.sha256()
    for path in sorted(package_dir.rglob("*.py")):
        h.update(str(path.relative_to(package_dir)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def notebook_stamp(notebook: Path, library: str | None = None) -> dict[str, str]:
    """What makes a notebook's outputs current: its bytes, the version and the library source."""
    from workbench import __version__

    return {
        "notebook_sha256": hashlib.sha256(Path(notebook).read_bytes()).hexdigest(),
        "workbench_version": __version__,
        "library_sha256": library or library_digest(),
    }


def read_stamp(out_dir: Path) -> dict[str, Any] | None:
    """The stamp stored in ``<out_dir>/summary.json``, or ``None`` (missing or unreadable)."""
    path = Path(out_dir) / "summary.json"
    try:
        stamp = json.loads(path.read_text()).get(STAMP_KEY)
    except (OSError, json.JSONDecodeError, AttributeError):
        return None
    return stamp if isinstance(stamp, dict) else None


def is_current(notebook: Path, out_dir: Path, library: str | None = None) -> bool:
    """Whether ``out_dir`` holds outputs of exactly this notebook, version and library."""
    stamp = read_stamp(out_dir)
    if stamp is None:
        return False
    want = notebook_stamp(notebook, library)
    return all(stamp.get(k) == v for k, v in want.items())


def papermill_executor(
    notebook: Path, executed: Path, parameters: dict[str, Any], kernel: str, cwd: Path
) -> None:
    """Run ``notebook`` with papermill, writing the executed copy to ``executed``."""
    import papermill as pm

    pm.execute_notebook(
        str(notebook),
        str(executed),
        parameters=parameters,
        kernel_name=kernel,
        cwd=str(cwd),
        progress_bar=False,
    )


def run_figures(
    notebooks_dir: Path,
    figures_dir: Path,
    *,
    only: Sequence[str] = (),
    force: bool = False,
    dry_run: bool = False,
    kernel: str = "workbench",
    execute: Executor | None = None,
    echo: Callable[[str], None] = print,
) -> dict[str, str]:
    """Run every notebook whose outputs are not current; return ``{name: status}``.

    ``execute`` runs one notebook (default :func:`papermill_executor`).
    Status is ``"current"`` (skipped), ``"ran"``, ``"would run"`` (dry run) or
    ``"failed: <error>"``. Notebooks run from the repository root (the parent of
    ``notebooks_dir``) with ``output_dir=<figures_dir>/<name>``.
    """
    from workbench.viz.save import write_summary

    execute = execute or papermill_executor
    books = sorted(Path(notebooks_dir).glob("*.ipynb"))
    if not books:
        raise ValueError(f"no notebooks in {notebooks_dir}")
    names = {p.stem: p for p in books}
    unknown = [n for n in only if n.removesuffix(".ipynb") not in names]
    if unknown:
        raise ValueError(f"unknown notebooks {unknown}; have {sorted(names)}")
    chosen = [names[n.removesuffix(".ipynb")] for n in only] if only else books
    library = library_digest()
    status: dict[str, str] = {}
    for nb in chosen:
        out = Path(figures_dir) / nb.stem
        if not force and is_current(nb, out, library):
            status[nb.stem] = "current"
            echo(f"{nb.stem}: current, skipped")
            continue
        if dry_run:
            status[nb.stem] = "would run"
            echo(f"{nb.stem}: would run")
            continue
        echo(f"{nb.stem}: running ...")
        out.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        try:
            execute(
                nb,
                out / nb.name,
                {"output_dir": str(out.resolve())},
                kernel,
                Path(notebooks_dir).resolve().parent,
            )
        except Exception as exc:  # one failing notebook must not stop the others
            status[nb.stem] = f"failed: {type(exc).__name__}: {str(exc).strip()[:300]}"
            echo(f"{nb.stem}: FAILED ({type(exc).__name__}); see {out / nb.name}")
            continue
        seconds = time.perf_counter() - t0
        write_summary(out, {STAMP_KEY: {**notebook_stamp(nb, library), "seconds": seconds}})
        status[nb.stem] = "ran"
        echo(f"{nb.stem}: done in {seconds:.0f} s -> {out}")
    return status


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="workbench", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    fig = sub.add_parser(
        "figures",
        help="run every notebook with its defaults, skipping those whose outputs are current",
    )
    fig.add_argument("names", nargs="*", help="notebooks to consider (default: all)")
    fig.add_argument("--force", action="store_true", help="rerun even when outputs are current")
    fig.add_argument("--dry-run", action="store_true", help="only say what would run")
    fig.add_argument("--notebooks-dir", type=Path, default=Path("notebooks"))
    fig.add_argument("--figures-dir", type=Path, default=Path("figures"))
    fig.add_argument("--kernel", default="workbench", help="Jupyter kernel (default: workbench)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``workbench`` console script; returns the exit status."""
    args = _parser().parse_args(argv)
    if args.command == "figures":
        try:
            status = run_figures(
                args.notebooks_dir,
                args.figures_dir,
                only=args.names,
                force=args.force,
                dry_run=args.dry_run,
                kernel=args.kernel,
            )
        except ValueError as exc:
            print(f"workbench figures: {exc}", file=sys.stderr)
            return 2
        failed = [n for n, s in status.items() if s.startswith("failed")]
        for name in failed:
            print(f"{name}: {status[name]}", file=sys.stderr)
        return 1 if failed else 0
    return 2  # pragma: no cover - argparse enforces the sub-command


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
