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
    env.pop("SIMCLR_JOBS", None)  # the real background worker, as a user's app has
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


def settle(page, text: str, ready: str | None = None, timeout_ms: int = 120_000) -> None:
    """Wait until ``text`` (and the ``ready`` selector, if given) shows and the script has stopped running."""
    page.get_by_text(text, exact=False).first.wait_for()
    if ready:
        page.locator(ready).first.wait_for(timeout=timeout_ms)
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
READY = {"Augmentations": '[data-testid="stImage"] >> nth=17', "Embeddings": '[data-testid="stDeckGlJsonChart"] canvas',
         "Search": "text=neighbours share", "Evaluate": "text=Compare runs"}
DECK = '[data-testid="stDeckGlJsonChart"] canvas'
TOOLTIP_IMAGE = ("() => { const t = document.querySelector('.deck-tooltip');"
                 " const i = t && t.style.display !== 'none' && t.querySelector('img');"
                 " return !!i && i.complete && i.naturalWidth > 0; }")


def test_every_page_without_runs(server, page):
    url, _ = server
    page.goto(f"{url}/train")  # a link to Train on a freshly started server: its own page, not "Page not found"
    settle(page, "No runs yet")
    assert page.get_by_text("Page not found").count() == 0
    page.goto(url)  # the root opens Train at its own address, so a reload stays there
    settle(page, "No runs yet")
    assert page.url.rstrip("/").endswith("/train") and page.get_by_text("Page not found").count() == 0
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
        # the first map waits for the worker to embed the split and compile UMAP (once per server)
        settle(page, title, READY[link], timeout_ms=420_000 if link == "Embeddings" else 120_000)
        check_page(page, f"3-{link.lower()}-with-run")


def point_under_pointer(page, done_js: str) -> tuple[float, float]:
    """Move the pointer over the map until ``done_js`` holds (a point's tooltip shows); returns where."""
    box = page.locator(DECK).first.bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    for r in range(0, 260, 12):
        for dx, dy in ((r, 0), (-r, 0), (0, r), (0, -r), (r, r), (-r, -r), (r, -r), (-r, r)):
            page.mouse.move(cx + dx, cy + dy)
            page.wait_for_timeout(50)
            if page.evaluate(done_js):
                return cx + dx, cy + dy
    raise AssertionError("no point of the map showed a tooltip")


def test_explorer_hover_click_and_over_training(server, page):
    """Needs the run of the test above: hover shows the image, a click its neighbours, the slider moves epochs."""
    url, _ = server
    page.goto(f"{url}/embeddings?run=browser-demo&view=map&projection=pca")  # a deep link
    settle(page, "Embeddings", DECK, timeout_ms=300_000)
    page.wait_for_timeout(1500)  # deck.gl draws after the element appears
    x, y = point_under_pointer(page, TOOLTIP_IMAGE)
    tip = page.locator(".deck-tooltip").inner_text()
    assert tip.startswith("#") and "kNN:" in tip
    check_page(page, "4-map-hover")
    page.mouse.click(x, y)
    settle(page, "nearest neighbours in the")
    assert page.locator('[data-testid="stImage"]').count() >= 10  # the query and its neighbours
    check_page(page, "5-map-neighbours")

    page.get_by_text("Over training", exact=True).click()
    settle(page, "probe images", DECK, timeout_ms=300_000)
    metric = page.locator('[data-testid="stMetricValue"]').first
    assert metric.inner_text().startswith("2 /")  # the newest frame first
    check_page(page, "6-over-training-last")
    page.get_by_role("slider").first.focus()
    page.keyboard.press("Home")  # the first epoch
    page.wait_for_function("() => document.querySelector('[data-testid=\"stMetricValue\"]')"
                           ".innerText.startsWith('1 /')")
    settle(page, "probe images", DECK)
    check_page(page, "7-over-training-first")
