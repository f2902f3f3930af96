"""Run a project notebook headless under papermill with the project kernel (test helper)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import nbformat

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
KERNEL = "workbench"


def kernel_name() -> str:
    """The registered project kernel when present (``make`` registers it), else ``python3``."""
    from jupyter_client.kernelspec import KernelSpecManager

    return KERNEL if KERNEL in KernelSpecManager().find_kernel_specs() else "python3"


def run_notebook(name: str, params: dict[str, Any], tmp_path: Path, timeout: int = 600) -> Path:
    """Execute ``notebooks/<name>`` with ``params`` injected; return the executed copy's path.

    The notebook runs with ``tmp_path`` as its working directory so anything it writes relative
    to the cwd stays out of the repository. Raises papermill's ``PapermillExecutionError`` (with
    the failing cell's traceback) when a cell fails.
    """
    import papermill as pm

    src = NOTEBOOKS / name
    if not src.exists():
        raise FileNotFoundError(f"no notebook {src}")
    out = tmp_path / f"executed-{Path(name).name}"
    pm.execute_notebook(
        str(src),
        str(out),
        parameters=params,
        kernel_name=kernel_name(),
        cwd=str(tmp_path),
        progress_bar=False,
        execution_timeout=timeout,
    )
    return out


def outputs_text(path: Path) -> str:
    """All stream/text outputs of an executed notebook, joined (for asserting on printed tables)."""
    nb = nbformat.read(path, as_version=4)
    chunks: list[str] = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if "text" in out:
                chunks.append(out["text"])
            data = out.get("data", {})
            if "text/plain" in data:
                chunks.append(data["text/plain"])
    return "\n".join(chunks)


def read_summary(out_dir: Path) -> dict[str, Any]:
    """The ``summary.json`` a notebook wrote into ``out_dir``."""
    return json.loads((out_dir / "summary.json").read_text())
