"""JupyterLab + Playwright helpers for the ``browser`` tests (Debian's chromium, no downloads).

:class:`LabServer` starts ``jupyter lab`` on 127.0.0.1 with a token, isolated config/data/runtime
and settings folders (news and update checks off, no windowing so every cell is in the DOM) and
stops exactly the process it started. :func:`launch_chromium` drives ``/usr/bin/chromium`` with
flags that keep it off the network.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import requests

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--no-first-run",
    "--no-default-browser-check",
    "--metrics-recording-only",
    # a dead loopback proxy: anything that is not 127.0.0.1 has nowhere to go
    "--proxy-server=127.0.0.1:9",
    "--proxy-bypass-list=127.0.0.1;localhost",
]

# JupyterLab user settings written before the server starts.
LAB_SETTINGS: dict[str, dict[str, Any]] = {
    "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
    "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def chromium_missing_reason() -> str | None:
    """Why the browser tests cannot run here, or ``None`` when they can."""
    if not (Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK)):
        return f"{CHROMIUM} is missing (Debian package `chromium`; .ci/run installs it)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright python package is not installed (dev extra)"
    return None


class LabServer:
    """A JupyterLab server serving ``root_dir``, started with ``subprocess.Popen``.

    Use as a context manager; ``stop()`` ends only this server's process group.
    """

    def __init__(self, root_dir: Path, work_dir: Path, startup_timeout: float = 60.0) -> None:
        self.root_dir = Path(root_dir)
        self.work_dir = Path(work_dir)
        self.startup_timeout = startup_timeout
        self.port = free_port()
        self.token = secrets.token_hex(16)
        self.base = f"http://127.0.0.1:{self.port}"
        self.http = requests.Session()
        self.http.trust_env = False  # never route loopback calls through a proxy from the env
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.work_dir / "jupyterlab.log"

    def _write_settings(self) -> Path:
        settings = self.work_dir / "lab-settings"
        for plugin, values in LAB_SETTINGS.items():
            pkg, name = plugin.rsplit("/", 1)
            path = settings / pkg / f"{name}.jupyterlab-settings"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(values))
        return settings

    def start(self) -> LabServer:
        settings = self._write_settings()
        env = dict(os.environ)
        for var, sub in (
            ("JUPYTER_CONFIG_DIR", "config"),
            ("JUPYTER_RUNTIME_DIR", "runtime"),
            ("IPYTHONDIR", "ipython"),
        ):
            (self.work_dir / sub).mkdir(parents=True, exist_ok=True)
            env[var] = str(self.work_dir / sub)
        env["JUPYTER_PLATFORM_DIRS"] = "1"
        env.pop("WORKBENCH_STATIC", None)  # the browser is interactive: widgets, not static figures
        cmd = [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={self.port}",
            "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={self.token}",
            f"--ServerApp.root_dir={self.root_dir}",
            f"--LabApp.user_settings_dir={settings}",
            f"--LabApp.workspaces_dir={self.work_dir / 'workspaces'}",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            "--LabApp.news_url=None",
            "--ServerApp.terminals_enabled=False",
        ]
        if hasattr(os, "geteuid") and os.geteuid() == 0:  # CI containers run as root
            cmd.append("--allow-root")
        log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            cmd,
            cwd=self.root_dir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stop() can end it and its kernels
        )
        log.close()
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"jupyter lab exited early:\n{self.log_tail()}")
            try:
                r = self.http.get(
                    f"{self.base}/api/status", params={"token": self.token}, timeout=2
                )
                if r.status_code == 200:
                    return self
            except requests.ConnectionError:
                pass
            time.sleep(0.3)
        self.stop()
        raise TimeoutError(
            f"jupyter lab did not answer in {self.startup_timeout}s:\n{self.log_tail()}"
        )

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return "<no log>"

    def _xsrf_headers(self) -> dict[str, str]:
        # jupyter_server sets the _xsrf cookie on a page load; POSTs must echo it in X-XSRFToken
        if "_xsrf" not in self.http.cookies:
            self.http.get(f"{self.base}/lab", params={"token": self.token}, timeout=10)
        headers = {"Authorization": f"token {self.token}"}
        xsrf = self.http.cookies.get("_xsrf")
        if xsrf:
            headers["X-XSRFToken"] = xsrf
        return headers

    def create_session(self, path: str, kernel_name: str) -> dict[str, Any]:
        """Start a kernel for notebook ``path`` so JupyterLab opens it without 'Select Kernel'."""
        r = self.http.post(
            f"{self.base}/api/sessions",
            headers=self._xsrf_headers(),
            json={
                "path": path,
                "name": Path(path).name,
                "type": "notebook",
                "kernel": {"name": kernel_name},
            },
            timeout=60,
        )
        r.raise_for_status()
        return r.json()

    def kernel_state(self, kernel_id: str) -> str:
        r = self.http.get(
            f"{self.base}/api/kernels/{kernel_id}", headers=self._xsrf_headers(), timeout=10
        )
        r.raise_for_status()
        return r.json().get("execution_state", "unknown")

    def url(self, path: str) -> str:
        return f"{self.base}/lab/tree/{path}?token={self.token}"

    def delete_session(self, session_id: str) -> None:
        """Shut a session's kernel down through the REST API."""
        self.http.delete(
            f"{self.base}/api/sessions/{session_id}", headers=self._xsrf_headers(), timeout=30
        )

    def stop(self) -> None:
        """End this server and any kernel it spawned (found as its child processes), nothing else."""
        if self.proc is None or self.proc.poll() is not None:
            return
        import psutil

        try:
            children = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            children = []
        self.proc.terminate()  # jupyter_server shuts its kernels down on SIGTERM
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)  # its own group (start_new_session)
            self.proc.wait(timeout=10)
        _, alive = psutil.wait_procs(children, timeout=5)
        for child in alive:  # kernels run in their own sessions, so end them by pid
            child.kill()

    def __enter__(self) -> LabServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def launch_chromium(playwright: Any, headless: bool = True) -> Any:
    """Debian's chromium through Playwright (no browser download)."""
    return playwright.chromium.launch(
        executable_path=CHROMIUM, headless=headless, args=CHROMIUM_ARGS
    )
