"""The ``workbench`` command line: ``workbench figures`` regenerates every notebook's figures;
``workbench embed`` extracts (and optionally probes) a dataset's embeddings, on one process or
many (``torchrun --nproc_per_node N -m workbench embed ...``).

``workbench figures`` runs each ``notebooks/*.ipynb`` with its default parameters through papermill
(kernel ``workbench``), with ``output_dir`` set to ``figures/<notebook>/``, and keeps the executed
copy there as ``<notebook>.ipynb``. A notebook is skipped when its outputs are current: its
``summary.json`` carries a stamp (``_figures``) of the notebook's bytes, the workbench version and
the library's source, and the stamp still matches. ``--force`` reruns anyway.

``workbench embed imagefolder --root DIR`` builds the dataset, embeds it into the tower cache
(sharded over the ranks when started by ``torchrun``: gloo on CPU, NCCL on CUDA; resumable),
and prints the cache entry's folder, which ``workbench.open_embeddings`` opens in a notebook.
``--probe`` adds the spectra, the modality gap and the ReAlign fit of the result, each
all-reduced over the ranks, and ``--summary FILE`` writes them as JSON (rank 0).

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

import numpy as np

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


def _dataset_kwargs(pairs: Sequence[str]) -> dict[str, Any]:
    """``["size=100", "root=/data"]`` → ``{"size": 100, "root": "/data"}`` (JSON values, else text)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise ValueError(f"--dataset-arg wants NAME=VALUE, got {pair!r}")
        try:
            out[name] = json.loads(value)
        except json.JSONDecodeError:
            out[name] = value
    return out


def probe_summary(emb: Any, info: Any) -> dict[str, Any]:
    """Spectra (RankMe, erank-cov, top-10 energy), centroid gap, cone widths and ReAlign
    statistics of ``emb``, each summed over the ranks of the default process group (call on
    every rank; local when there is none)."""
    from workbench.probes import ReAlign, effective_rank, modality_gap, spectrum

    local = emb.shard(info.rank, info.world_size)
    out: dict[str, Any] = {}
    for side in ("image", "text"):
        X = getattr(local, f"{side}_normed")
        centred = spectrum(X, center=True, group="auto")
        raw = spectrum(X, center=False, group="auto")
        out[side] = {
            "rankme": effective_rank(raw, "rankme"),
            "erank_cov": effective_rank(centred, "erank-cov"),
            "top10_energy": float(centred.cumulative_energy[min(9, len(centred) - 1)]),
        }
    gap = modality_gap(
        np.asarray(local.image), np.asarray(local.text), with_spectra=False, group="auto"
    )  # the spectra are above; their power-law α needs more rows than a smoke run has
    out["gap"] = {
        k: gap.summary()[k]
        for k in ("gap_norm", "centroid_cosine", "cone_width_image", "cone_width_text")
    }
    out["realign"] = ReAlign().fit(local.image, local.text, group="auto").statistics()
    return out


def run_embed(args: argparse.Namespace, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """``workbench embed``: join torchrun's process group if any, embed, probe, summarise."""
    import importlib
    import os

    import torch

    from workbench import distributed as D
    from workbench.data import load_dataset
    from workbench.encoders import EmbeddingCache, load_encoder
    from workbench.encoders.embed import embed

    for module in args.imports:
        importlib.import_module(module)  # e.g. one that registers the user's own encoder
    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    info = D.setup(device)
    try:
        kwargs = _dataset_kwargs(args.dataset_arg)
        for name in ("root", "split"):
            if getattr(args, name) is not None:
                kwargs[name] = str(getattr(args, name))
        data = load_dataset(args.dataset, **kwargs)
        encoder = load_encoder(args.encoder)
        t0 = time.perf_counter()
        emb = embed(
            encoder,
            data,
            size=args.size,
            seed=args.seed,
            batch_size=args.batch_size,
            chunk_rows=args.chunk_rows,
            cache_dir=args.cache_dir,
            device=str(device),
            progress=info.is_main and not args.no_progress,
            mmap=True,
            group="auto",
        )
        seconds = time.perf_counter() - t0
        entry = EmbeddingCache(args.cache_dir).path_for(emb.provenance["cache_key"])
        summary: dict[str, Any] = {
            "entry": str(entry.resolve()),
            "rows": len(emb),
            "world_size": info.world_size,
            "seconds": seconds,
            "encoder": args.encoder,
            "dataset": args.dataset,
        }
        if args.probe:
            summary["probe"] = probe_summary(emb, info)
        if info.is_main:
            echo(
                f"embedded {len(emb)} rows of {args.dataset} with {args.encoder} on "
                f"{info.world_size} process(es) in {seconds:.1f} s -> {summary['entry']}"
            )
            for side in ("image", "text"):
                if "probe" in summary:
                    p = summary["probe"][side]
                    echo(
                        f"  {side}: RankMe {p['rankme']:.1f}, erank-cov {p['erank_cov']:.1f}, "
                        f"top-10 energy {p['top10_energy']:.3f}"
                    )
            if "probe" in summary:
                echo(f"  gap ‖Δ‖ {summary['probe']['gap']['gap_norm']:.3f}")
            echo(
                f"open it in a notebook: wb.open_embeddings({summary['entry']!r}, {args.encoder!r})"
            )
            if args.summary is not None:
                Path(args.summary).write_text(json.dumps(summary, indent=1, default=float))
        return summary
    finally:
        if info.enabled:
            torch.distributed.destroy_process_group()


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
    emb = sub.add_parser(
        "embed",
        help="embed a dataset into the tower cache (under torchrun: sharded over the processes)",
    )
    emb.add_argument("dataset", help="dataset id, e.g. imagefolder or coco-captions")
    emb.add_argument("--root", type=Path, help="the dataset's folder (root=)")
    emb.add_argument("--split", help="the dataset's split (split=)")
    emb.add_argument(
        "--dataset-arg",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="another dataset keyword argument (JSON value), repeatable",
    )
    emb.add_argument("--encoder", default="default", help="encoder id (default: default)")
    emb.add_argument("--size", type=int, help="embed a seeded subset of this many items")
    emb.add_argument("--seed", type=int, default=0, help="seed of that subset")
    emb.add_argument("--batch-size", type=int, default=64)
    emb.add_argument("--chunk-rows", type=int, default=1024, help="rows per cache chunk")
    emb.add_argument("--cache-dir", type=Path, help="cache root (default $WORKBENCH_CACHE)")
    emb.add_argument("--device", default="auto", help="auto (cuda:$LOCAL_RANK if any), cpu, ...")
    emb.add_argument("--probe", action="store_true", help="also all-reduce spectra, gap, ReAlign")
    emb.add_argument("--summary", type=Path, help="write the summary as JSON here (rank 0)")
    emb.add_argument(
        "--import",
        dest="imports",
        action="append",
        default=[],
        metavar="MODULE",
        help="import MODULE first (e.g. one registering your own encoder or dataset)",
    )
    emb.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``workbench`` console script; returns the exit status."""
    args = _parser().parse_args(argv)
    if args.command == "embed":
        try:
            run_embed(args)
        except (ValueError, FileNotFoundError, KeyError, TypeError) as exc:
            print(f"workbench embed: {exc}", file=sys.stderr)
            return 2
        return 0
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
