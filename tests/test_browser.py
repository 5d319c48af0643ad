"""The temperature-tuning notebook in a real browser: JupyterLab + headless Chromium through Playwright.

Skipped (with the reason) where Chromium is missing; CI sets CSKD_VIZ_REQUIRE_BROWSER=1, which turns that
skip into a failure.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path(os.environ.get("CSKD_VIZ_CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = ROOT / "test-artifacts" / "browser"
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
]
NOTEBOOK = "03_temperature_tuning.ipynb"

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _skip_or_fail(reason: str) -> None:
    if os.environ.get("CSKD_VIZ_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{reason} (CSKD_VIZ_REQUIRE_BROWSER=1 makes this a failure)")
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for_server(url: str, process: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"JupyterLab exited early with code {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"JupyterLab did not answer at {url} within {timeout:.0f} s")


@pytest.fixture
def jupyterlab(tmp_path):
    token = secrets.token_hex(16)
    port = _free_port()
    work = tmp_path / "lab"
    work.mkdir()
    shutil.copy(ROOT / "notebooks" / NOTEBOOK, work / NOTEBOOK)
    env = dict(os.environ, CSKD_VIZ_FAST="1", JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"))
    log = open(tmp_path / "jupyterlab.log", "w")
    process = subprocess.Popen(
        [
            sys.executable, "-m", "jupyter", "lab",
            "--no-browser",
            "--ip=127.0.0.1",
            f"--port={port}",
            f"--IdentityProvider.token={token}",
            f"--ServerApp.root_dir={work}",
            "--LabApp.expose_app_in_browser=True",
            "--ServerApp.allow_root=True",
            f"--LabApp.workspaces_dir={tmp_path / 'workspaces'}",
            f"--LabApp.user_settings_dir={tmp_path / 'settings'}",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            "--LabApp.news_url=",
        ],
        cwd=work,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        _wait_for_server(f"http://127.0.0.1:{port}/api/status?token={token}", process)
        yield f"http://127.0.0.1:{port}", token
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def _slider(page, label: str):
    exact_label = page.locator(".widget-label").filter(has_text=re.compile(f"^{re.escape(label)}$"))
    return page.locator(".widget-slider", has=exact_label)


@pytest.mark.timeout(600)
def test_temperature_tuner_in_jupyterlab(jupyterlab):
    if not CHROMIUM.exists():
        _skip_or_fail(f"Chromium not found at {CHROMIUM}: install Debian's chromium package to run the browser test")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _skip_or_fail("playwright is not installed: pip install -e .[dev]")

    base, token = jupyterlab
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{base}/lab/tree/{NOTEBOOK}?token={token}", timeout=120_000)
            page.wait_for_function("() => window.jupyterapp && window.jupyterapp.shell", timeout=120_000)
            page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=120_000)
            page.wait_for_function(
                """() => {
                    const w = window.jupyterapp.shell.currentWidget;
                    return w && w.sessionContext && w.sessionContext.session &&
                           w.sessionContext.session.kernel && w.sessionContext.session.kernel.status === 'idle';
                }""",
                timeout=180_000,
            )
            page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")

            t_high = _slider(page, "T_high").first
            t_high.wait_for(state="visible", timeout=420_000)
            for label in ("T", "T_low", "T_high", "batch size"):
                assert _slider(page, label).count() == 1, f"slider {label!r} did not render"
            readout = page.locator(".cskd-readout").first
            readout.wait_for(state="visible", timeout=60_000)
            image = page.locator(".cskd-figure img, img.cskd-figure").first
            image.wait_for(state="visible", timeout=60_000)
            readout.scroll_into_view_if_needed()
            before_text, before_image = readout.inner_text(), image.get_attribute("src")
            page.screenshot(path=str(ARTIFACTS / "03_temperature_tuning_before.png"), full_page=False)

            value = t_high.locator(".widget-readout")
            value.click()
            page.keyboard.press("Control+A")
            page.keyboard.type("9")
            page.keyboard.press("Enter")

            page.wait_for_function(
                "([el, old]) => el.innerText !== old",
                arg=[readout.element_handle(), before_text],
                timeout=60_000,
            )
            page.wait_for_function(
                "([el, old]) => el.getAttribute('src') !== old",
                arg=[image.element_handle(), before_image],
                timeout=60_000,
            )
            assert "9" in value.inner_text()
            t_high.scroll_into_view_if_needed()
            page.screenshot(path=str(ARTIFACTS / "03_temperature_tuning.png"), full_page=False)
        finally:
            browser.close()
