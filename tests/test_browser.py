"""The explorers in a real JupyterLab, driven through Debian's chromium (marker ``browser``).

A fresh JupyterLab server (127.0.0.1, free port, token) serves a temporary copy of
``notebooks/explore_spectra.ipynb`` with small parameters; a session with the project kernel is
created through the REST API first (no "Select Kernel" dialog); chromium runs all cells through
the Run menu, then a person's moves are replayed — switch the modality of the first
SpectrumExplorer, step the run explorer's slider back, move the GapExplorer's λ — and each must
change the plot in the DOM (SVG path geometry). Screenshots go to ``test-artifacts/``.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import nbformat
import pytest
from browser_util import LabServer, chromium_missing_reason, launch_chromium
from nbutil import NOTEBOOKS, ROOT, kernel_name

pytestmark = pytest.mark.browser

NOTEBOOK = "explore_spectra.ipynb"
ARTIFACTS = ROOT / "test-artifacts"
# Small enough that the whole notebook runs in well under a minute of kernel time.
SMOKE_PARAMS = {
    "sample_size": 48,
    "train_steps": 10,
    "batch_size": 16,
    "snapshot_every": 5,
    "checkpoint_every": 5,
    "holdout": 8,
}
RUN_TIMEOUT_MS = 240_000
CHANGE_TIMEOUT_MS = 60_000

# Geometry of every line trace of the n-th plot inside an explorer (joined SVG path data).
_PATHS_JS = """([root, idx, plot]) => {
    const ex = document.querySelectorAll(root)[idx];
    if (!ex) return null;
    const p = ex.querySelectorAll('.js-plotly-plot')[plot];
    if (!p) return null;
    return Array.from(p.querySelectorAll('.scatterlayer path.js-line, .scatterlayer path.point'))
        .map(e => e.getAttribute('d')).join('|');
}"""


def _with_params(src: Path, dst: Path, params: dict) -> None:
    """Copy the notebook, rewriting literals in its ``parameters`` cell (as papermill would)."""
    nb = nbformat.read(src, as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    lines = []
    for line in cell.source.splitlines():
        name = line.split("=", 1)[0].strip()
        lines.append(f"{name} = {params[name]!r}" if name in params else line)
    cell.source = "\n".join(lines)
    nbformat.write(nb, dst)


def _wait_kernel_ready(server: LabServer, kernel_id: str, timeout: float = 120) -> None:
    """Until the page is connected to the kernel and the kernel is idle."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = server.http.get(
            f"{server.base}/api/kernels/{kernel_id}", headers=server._xsrf_headers()
        )
        k = r.json()
        if k.get("connections", 0) >= 1 and k.get("execution_state") == "idle":
            return
        time.sleep(0.3)
    raise TimeoutError(f"kernel {kernel_id} not ready after {timeout}s:\n{server.log_tail()}")


def _paths(page, root: str, idx: int, plot: int) -> str | None:  # type: ignore[no-untyped-def]
    return page.evaluate(_PATHS_JS, [root, idx, plot])


def _wait_changed(page, root: str, idx: int, plot: int, before: str) -> str:  # type: ignore[no-untyped-def]
    page.wait_for_function(
        """([js, args, before]) => { const d = eval(js)(args); return d && d !== before; }""",
        arg=[_PATHS_JS, [root, idx, plot], before],
        timeout=CHANGE_TIMEOUT_MS,
    )
    return _paths(page, root, idx, plot)


@pytest.fixture
def lab(tmp_path):  # type: ignore[no-untyped-def]
    reason = chromium_missing_reason()
    if reason:
        pytest.skip(reason)
    root = tmp_path / "root"
    root.mkdir()
    _with_params(NOTEBOOKS / NOTEBOOK, root / NOTEBOOK, SMOKE_PARAMS)
    server = LabServer(root, tmp_path / "lab")
    server.start()
    try:
        yield server
    finally:
        server.stop()
        if server.proc is not None and server.proc.returncode not in (0, -15, 143, None):
            print(server.log_tail())


def test_explorers_respond_to_controls_in_jupyterlab(lab: LabServer) -> None:
    from playwright.sync_api import sync_playwright

    t0 = time.monotonic()
    timings: dict[str, float] = {}
    session = lab.create_session(NOTEBOOK, kernel_name())  # fresh kernel for this test only
    ARTIFACTS.mkdir(exist_ok=True)
    shot_dir = ARTIFACTS / "explore_spectra"
    shutil.rmtree(shot_dir, ignore_errors=True)
    shot_dir.mkdir()
    with sync_playwright() as pw:
        browser = launch_chromium(pw)
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1100})
            page.goto(lab.url(NOTEBOOK))
            page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=90_000)
            _wait_kernel_ready(lab, session["kernel"]["id"])
            timings["open"] = time.monotonic() - t0

            page.get_by_role("menuitem", name="Run", exact=True).click()
            page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
            # every explorer rendered with all its plots, and the last one finished computing
            page.wait_for_function(
                """() => {
                    const s = document.querySelectorAll('.wb-spectrum-explorer');
                    const g = document.querySelectorAll('.wb-gap-explorer');
                    if (s.length < 2 || g.length < 2) return false;
                    const ok = e => e.querySelectorAll('.js-plotly-plot .scatterlayer path').length > 0;
                    return [...s, ...g].every(ok) && g[1].innerText.includes('✓');
                }""",
                timeout=RUN_TIMEOUT_MS,
            )
            timings["run_all"] = time.monotonic() - t0
            errors = page.locator(
                ".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']"
            )
            tracebacks = [t for t in errors.all_inner_texts() if "Traceback" in t or "Error" in t]
            assert not tracebacks, tracebacks

            spec = ".wb-spectrum-explorer"
            first = page.locator(spec).nth(0)
            first.scroll_into_view_if_needed()
            page.screenshot(path=str(shot_dir / "01_after_run_all.png"))

            # 1. switch modality of the first explorer: the sorted spectrum is redrawn
            before = _paths(page, spec, 0, 0)
            assert before, "no spectrum line in the first explorer"
            first.locator(".widget-toggle-button", has_text="text").first.click()
            after = _wait_changed(page, spec, 0, 0, before)
            assert after != before
            page.wait_for_function(
                "() => document.querySelectorAll('.wb-spectrum-explorer')[0].innerText.includes('· text ·')",
                timeout=CHANGE_TIMEOUT_MS,
            )
            timings["modality"] = time.monotonic() - t0
            first.screenshot(path=str(shot_dir / "02_spectrum_explorer_text.png"))

            # 2. step the run explorer's slider back one position: new checkpoint, new spectrum
            run_ex = page.locator(spec).nth(1)
            run_ex.scroll_into_view_if_needed()
            before = _paths(page, spec, 1, 0)
            handle = run_ex.locator(".widget-slider .noUi-handle").first
            handle.focus()
            page.keyboard.press("ArrowLeft")
            after = _wait_changed(page, spec, 1, 0, before)
            assert after != before
            timings["step"] = time.monotonic() - t0
            run_ex.screenshot(path=str(shot_dir / "03_run_explorer_step_back.png"))

            # 3. move λ in the first gap explorer: both clouds move
            gap = page.locator(".wb-gap-explorer").nth(0)
            gap.scroll_into_view_if_needed()
            before = _paths(page, ".wb-gap-explorer", 0, 0)
            lam = gap.locator(".widget-slider", has_text="λ").locator(".noUi-handle").first
            lam.focus()
            for _ in range(5):
                page.keyboard.press("ArrowRight")
            after = _wait_changed(page, ".wb-gap-explorer", 0, 0, before)
            assert after != before
            timings["lambda"] = time.monotonic() - t0
            gap.screenshot(path=str(shot_dir / "04_gap_explorer_lambda.png"))
        except Exception:
            # leave evidence for CI: what the page showed and what the notebook printed
            page.screenshot(path=str(shot_dir / "failure.png"), full_page=True)
            (shot_dir / "failure.txt").write_text(
                page.locator(".jp-Notebook").inner_text()
                + "\n--- server log ---\n"
                + lab.log_tail()
            )
            raise
        finally:
            browser.close()
    lab.delete_session(session["id"])
    print("browser test timings (s since start):", {k: round(v, 1) for k, v in timings.items()})
