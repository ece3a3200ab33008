"""A real browser drives the real app: ``streamlit run app.py`` + headless Chromium through Playwright.

Run it alone with ``.venv/bin/python -m pytest tests/pages/test_browser.py`` after installing
Debian's Chromium (``apt-get install chromium``); Playwright drives it, it downloads no browser.
Screenshots land in ``test-output/browser/``. Skipped when Chromium is missing, except in CI
(CI=true), where a missing browser is a failure.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SHOTS = REPO / "test-output" / "browser"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-quic",
         "--no-first-run", "--disable-component-update", "--disable-sync"]

if not Path(CHROMIUM).exists():
    if os.environ.get("CI") == "true":
        raise RuntimeError(f"Chromium not found at {CHROMIUM}: .ci/run installs it with apt-get")
    pytest.skip("Chromium not installed (apt-get install chromium)", allow_module_level=True)
sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The app on a free localhost port, with an empty runs folder, until the tests end."""
    home = tmp_path_factory.mktemp("app")
    port = free_port()
    env = {**os.environ, "SIMCLR_RUNS_DIR": str(home / "runs"), "PYTHONPATH": str(REPO)}
    log = open(home / "streamlit.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(REPO / "app.py"), "--server.headless", "true",
         "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false"],
        cwd=home, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while True:
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                break
        except OSError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            raise AssertionError(f"streamlit did not start: {(home / 'streamlit.log').read_text()[-2000:]}")
        time.sleep(0.5)
    yield url, home
    proc.terminate()
    proc.wait(timeout=30)
    log.close()


@pytest.fixture(scope="module")
def page(server):
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        pg = browser.new_page(viewport={"width": 1400, "height": 1000})
        pg.set_default_timeout(120_000)
        yield pg
        browser.close()


def settle(page, text: str, ready: str | None = None) -> None:
    """Wait until ``text`` (and the ``ready`` selector, if given) shows and the script has stopped running."""
    page.get_by_text(text, exact=False).first.wait_for()
    if ready:
        page.locator(ready).first.wait_for()
    # The toolbar's status widget ("Running...", "Stop") is there only while a script runs.
    page.locator('[data-testid="stStatusWidget"]').wait_for(state="detached")
    page.wait_for_timeout(500)


def check_page(page, name: str) -> None:
    """No exception box anywhere; a full-page screenshot for a person to look at."""
    assert page.locator('[data-testid="stException"]').count() == 0, f"exception on {name}"
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


PAGES = [("Augmentations", "Augmentations"), ("Embeddings", "Embeddings"), ("Search", "Search"),
         ("Evaluate", "Evaluate & compare")]
# What each page shows once it has a trained run to work with.
READY = {"Augmentations": '[data-testid="stImage"] >> nth=17', "Embeddings": '[data-testid="stPlotlyChart"]',
         "Search": "text=neighbours share", "Evaluate": "text=Compare runs"}


def test_every_page_without_runs(server, page):
    url, _ = server
    page.goto(url)
    settle(page, "No runs yet")
    check_page(page, "0-train-empty")
    for link, title in PAGES:
        page.get_by_role("link", name=link).click()
        settle(page, title)
        check_page(page, f"0-{link.lower()}-empty")


def test_launch_a_quick_cpu_run_and_watch_its_curve(server, page):
    url, home = server
    page.goto(url)
    settle(page, "No runs yet")
    page.get_by_role("spinbutton", name="Epochs", exact=True).fill("2")
    page.get_by_role("textbox", name="Run name", exact=True).fill("browser-demo")
    page.get_by_role("button", name="Launch").click()
    # The live view draws the loss curve from metrics.jsonl as soon as the first steps are logged.
    page.locator('[data-testid="stPlotlyChart"]').first.wait_for(timeout=240_000)
    check_page(page, "1-train-running")
    deadline = time.time() + 300
    while time.time() < deadline:
        if "finished" in (home / "runs" / "browser-demo" / "status.json").read_text():
            break
        time.sleep(2)
    else:
        raise AssertionError("the run did not finish in 5 minutes")
    page.reload()
    settle(page, "All runs")
    check_page(page, "2-train-finished")
    for link, title in PAGES:
        page.get_by_role("link", name=link).click()
        settle(page, title, READY[link])
        check_page(page, f"3-{link.lower()}-with-run")
