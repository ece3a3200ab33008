"""A real browser drives the real app: ``streamlit run app.py`` + headless Chromium through Playwright.

Run it alone with ``.venv/bin/python -m pytest tests/pages/test_browser.py`` after installing
Debian's Chromium (``apt-get install chromium``); Playwright drives it, it downloads no browser.
Screenshots land in ``test-output/browser/``. Skipped when Chromium is missing, except in CI
(CI=true), where a missing browser is a failure.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest

from simclr_core.cli.studio import server_flags, start_server

from tests.pages.browser import chromium_page, require_chromium, settle

REPO = Path(__file__).resolve().parents[2]
SHOTS = REPO / "test-output" / "browser"

require_chromium()  # skips this module without Chromium (fails in CI)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def app_server(tmp_path_factory):
    """The app on a free localhost port, with an empty runs folder, until the tests end: (url, home, process).

    It gets the settings of the repository's .streamlit/config.toml (no file watcher, static files), as
    `streamlit run app.py` in the repository and `simclr-studio` give them; Streamlit itself reads that
    file only from the folder it starts in, and this server starts in a temp folder.
    """
    home = tmp_path_factory.mktemp("app")
    # SIMCLR_JOBS unset: the real background worker, as a user's app has
    env: dict[str, str | None] = {"SIMCLR_RUNS_DIR": str(home / "runs"), "SIMCLR_JOBS": None}
    proc, url = start_server(REPO / "app.py", home, env, server_flags(REPO / ".streamlit" / "config.toml"))
    yield url, home, proc
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def server(app_server):
    """(url, home) of the app."""
    return app_server[:2]


@pytest.fixture(scope="module")
def page(server):
    yield from chromium_page(120_000)


def idle(page) -> None:
    """Wait until no script runs (after a widget change): an edit made while the page is still being
    drawn may be overtaken by that drawing, in a browser as in this test."""
    page.wait_for_timeout(300)
    page.locator('[data-testid="stStatusWidget"]').wait_for(state="detached")
    page.wait_for_timeout(300)


def check_page(page, name: str) -> None:
    """No exception box anywhere; a full-page screenshot for a person to look at."""
    assert page.locator('[data-testid="stException"]').count() == 0, f"exception on {name}"
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


PAGES = [
    ("Augmentations", "Augmentations"),
    ("Embeddings", "Embeddings"),
    ("Search", "Search"),
    ("Evaluate", "Evaluate & compare"),
]
# What each page shows once it has a trained run to work with.
READY = {
    "Augmentations": '[data-testid="stImage"] >> nth=17',
    "Embeddings": ".map[data-drawn]:not([data-preview])",
    "Search": "text=neighbours share",
    "Evaluate": "text=Compare runs",
}
DECK = ".map[data-drawn]:not([data-preview])"  # ui/scatter.js: in a shadow root, which Playwright pierces
TIP = ".map .tip"


def test_every_page_without_runs(server, page):
    url, _ = server
    # A bookmark opened first on a freshly started server (issue 11): the page itself with the app's
    # navigation, not Streamlit's list of the files in pages/ (app, augment, common, ...).
    page.goto(f"{url}/embeddings")
    page.locator('[data-testid="stSidebar"] a').first.wait_for()  # the first links drawn, whoever draws them
    legacy = ("app", "common", "mapview")  # files of pages/ that are not pages
    assert not any(page.get_by_role("link", name=n, exact=True).count() for n in legacy)
    settle(page, "How the encoder arranges images")
    assert page.get_by_role("link", name="Train", exact=True).count() == 1
    assert not any(page.get_by_role("link", name=n, exact=True).count() for n in legacy)
    page.goto(f"{url}/train")  # a link to Train: its own page, not "Page not found"
    settle(page, "No runs yet")
    assert page.get_by_text("Page not found").count() == 0
    page.goto(url)  # the root opens Train at its own address, so a reload stays there
    settle(page, "No runs yet")
    page.wait_for_url(re.compile(r".*/train/?$"), timeout=30_000)  # the address follows a moment after the page
    assert page.get_by_text("Page not found").count() == 0
    check_page(page, "0-train-empty")
    for link, title in PAGES:
        page.get_by_role("link", name=link).click()
        settle(page, title)
        check_page(page, f"0-{link.lower()}-empty")


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) the process ``pid`` has used so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime: fields 14 and 15


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads CPU time from /proc (Linux)")
def test_an_idle_tab_costs_the_server_under_five_percent_of_a_core(app_server, page):
    """With a file watcher on a repository holding its .venv, each open tab kept a core busy (issue 11):
    about 9 CPU-s in 10 s here with `--server.fileWatcherType auto`, 0.05 without."""
    url, _, proc = app_server
    page.goto(f"{url}/train")
    page.get_by_role("button", name="Launch").wait_for()  # the last element: the page is drawn
    settle(page, "New run")
    page.wait_for_timeout(3000)
    before = cpu_seconds(proc.pid)
    page.wait_for_timeout(10_000)  # idle: the tab is open, nobody touches it
    used = cpu_seconds(proc.pid) - before
    assert used < 0.5, f"the server used {used:.2f} CPU-s in 10 s with one idle tab"


PICKER = '[data-testid="stSidebar"] [data-testid="stSelectbox"] input'


def picked_run(page) -> str:
    """The sidebar's run picker as it reads: ``name (state)``."""
    return page.locator(PICKER).input_value()


RUN_TABLE_HAS = """(words) => {
    const cells = [...document.querySelectorAll('[data-testid="stDataFrame"] [role="gridcell"]')].map(c => c.innerText);
    return words.every(w => cells.includes(w));
}"""


def wait_for_run_table(page, *words: str, timeout_ms: int = 60_000) -> None:
    """Wait until the All runs table (a canvas grid; its accessible cells are in the DOM once it is in
    view) has cells reading each of ``words``."""
    page.locator('[data-testid="stDataFrame"]').first.scroll_into_view_if_needed()
    page.wait_for_function(RUN_TABLE_HAS, arg=list(words), timeout=timeout_ms)


def test_launch_a_quick_cpu_run_and_watch_its_curve(server, page):
    url, home = server
    run = home / "runs" / "browser-demo"
    page.goto(url)
    settle(page, "No runs yet")
    batch = page.get_by_role("spinbutton", name="Batch size", exact=True)
    batch.fill("0")
    batch.press("Enter")
    # a wrong value is kept and said beside Launch, which is greyed out
    page.get_by_text("must be at least 2, got 0").wait_for()
    idle(page)
    assert page.get_by_role("button", name="Launch").is_disabled()
    page.get_by_role("button", name="Launch").scroll_into_view_if_needed()
    check_page(page, "1-train-batch-zero")
    batch.fill("256")  # the preset's
    batch.press("Enter")
    idle(page)
    epochs = page.get_by_role("spinbutton", name="Epochs", exact=True)
    epochs.fill("2")
    epochs.press("Enter")
    idle(page)
    name = page.get_by_role("textbox", name="Run name", exact=True)
    name.fill("browser-demo")
    name.press("Enter")  # Enter in a field launches nothing: only the Launch button does
    idle(page)
    page.wait_for_timeout(1000)
    assert not run.exists(), "Enter in a field launched a run"
    page.get_by_role("button", name="Launch").click()
    page.get_by_text("Started run browser-demo").wait_for()
    # The live view draws the loss curve from metrics.jsonl as soon as the first steps are logged.
    page.locator('[data-testid="stPlotlyChart"]').first.wait_for(timeout=240_000)
    # The sidebar and the run list follow the run's state without a reload: "starting", then "running".
    page.wait_for_function(
        "(sel) => document.querySelector(sel)?.value === 'browser-demo (running)'", arg=PICKER, timeout=60_000
    )
    wait_for_run_table(page, "browser-demo", "running")
    check_page(page, "1-train-running")
    deadline = time.time() + 300
    while time.time() < deadline:
        if "finished" in (run / "status.json").read_text():
            break
        time.sleep(2)
    else:
        raise AssertionError("the run did not finish in 5 minutes")
    # No reload: the page follows the run to its end by itself.
    page.get_by_role("button", name="Resume").wait_for(timeout=60_000)
    settle(page, "All runs")
    assert page.get_by_role("button", name="Stop").count() == 0
    assert page.get_by_text("Started run browser-demo").count() == 0  # the banner went with the run
    assert picked_run(page) == "browser-demo (finished)"
    assert "2/2 epochs done" in page.locator("body").inner_text()
    wait_for_run_table(page, "browser-demo", "finished", "2/2", timeout_ms=10_000)
    check_page(page, "2-train-finished")
    for link, title in PAGES:
        page.get_by_role("link", name=link).click()
        # the first map waits for the worker to embed the split and compile UMAP (once per server)
        settle(page, title, READY[link], timeout_ms=420_000 if link == "Embeddings" else 120_000)
        check_page(page, f"3-{link.lower()}-with-run")


def point_under_pointer(page, skip: int = 0) -> tuple[float, float]:
    """Move the pointer over the map until a point's tooltip shows its thumbnail, passing the first ``skip``
    points found; returns where."""
    box = page.locator(DECK).first.bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    last = None
    for r in range(0, 260, 12):
        for dx, dy in ((r, 0), (-r, 0), (0, r), (0, -r), (r, r), (-r, -r), (r, -r), (-r, r)):
            page.mouse.move(cx + dx, cy + dy)
            page.wait_for_timeout(50)
            tip = page.locator(TIP).first
            if tip.is_visible():
                page.locator(TIP + "[data-ready]").first.wait_for(timeout=10_000)  # the picture is in
                if tip.get_attribute("data-row") != last:
                    last, skip = tip.get_attribute("data-row"), skip - 1
                    if skip < 0:
                        return cx + dx, cy + dy
    raise AssertionError("no point of the map showed a tooltip")


def click_a_point(page, shown: str) -> str:
    """Click a point of the map until ``shown`` (text) appears; returns the clicked point's "#row"."""
    for attempt in range(3):
        x, y = point_under_pointer(page, skip=attempt)
        row = "#" + page.locator(TIP).first.get_attribute("data-row")
        page.mouse.click(x, y)
        try:
            page.get_by_text(re.compile(shown)).first.wait_for(timeout=8_000)
        except Exception:  # noqa: BLE001 - Playwright's TimeoutError: try the next point
            page.mouse.move(5, 5)
            continue
        return row
    raise AssertionError(f"3 clicks on the map never showed {shown!r}")


def test_explorer_hover_click_and_over_training(server, page):
    """Needs the run of the test above: hover shows the image, a click its neighbours, the slider moves epochs."""
    url, _ = server
    page.goto(f"{url}/embeddings?run=browser-demo&view=map&projection=pca")  # a deep link
    settle(page, "Embeddings", DECK, timeout_ms=300_000)
    point_under_pointer(page)
    tip = page.locator(TIP).first.inner_text()
    assert tip.startswith("#") and "kNN:" in tip
    check_page(page, "4-map-hover")
    row = click_a_point(page, "nearest neighbours in the")
    settle(page, "nearest neighbours in the")
    # the map lists them itself, beside the points: the picked image and its 10 neighbours, each with its picture
    side = page.locator(".side").first
    assert side.get_attribute("data-row") == row[1:] and side.locator(".nbr").count() == 10
    assert side.locator(".sprite").count() == 11 and "url(" in side.locator(".sprite").first.get_attribute("style")
    assert page.locator(".map").first.get_attribute("data-marked") == "10"  # rings on the plotted ones
    check_page(page, "5-map-neighbours")
    nbr = side.locator(".nbr").nth(3)
    picked = nbr.get_attribute("data-row")
    nbr.click()  # a neighbour's picture picks it: its own neighbours, and Python learns the pick
    page.locator(f".side[data-ready='{picked}']").wait_for()
    settle(page, "nearest neighbours in the")
    assert page.get_by_text(re.compile(rf"^#{picked} · ")).count() >= 1
    assert f"focus={picked}" in page.url

    page.get_by_text("Over training", exact=True).click()
    settle(page, "probe images", DECK, timeout_ms=300_000)
    metric = page.locator('[data-testid="stMetricValue"]').first
    assert metric.inner_text().startswith("2 /")  # the newest frame first
    check_page(page, "6-over-training-last")
    page.get_by_role("slider").first.focus()
    page.keyboard.press("Home")  # the first epoch
    page.wait_for_function(
        "() => document.querySelector('[data-testid=\"stMetricValue\"]').innerText.startsWith('1 /')"
    )
    settle(page, "probe images", DECK)
    # the frames morph: the map moves its points from epoch 2's places to epoch 1's (ui/scatter.js animate)
    page.locator(".map[data-morphed]").first.wait_for(timeout=30_000)
    check_page(page, "7-over-training-first")


def test_the_map_keeps_hover_pan_and_zoom_in_the_browser_and_selects_areas(server, page):
    """Issue 19: hover, pan and zoom send nothing to the server (no rerun); a click picks its neighbours; a Box
    selection comes back as the selected images; a new colouring fetches a colour column, not new positions."""
    url, _ = server
    page.goto(f"{url}/embeddings?run=browser-demo&view=map&projection=pca&split=test")
    settle(page, "Embeddings", DECK, timeout_ms=300_000)
    sent: list[str] = []
    page.on("websocket", lambda ws: ws.on("framesent", lambda f: sent.append("frame")))
    page.reload()  # the listener sees the page's own websocket
    settle(page, "Embeddings", DECK, timeout_ms=300_000)
    fetched: list[str] = []
    page.on("request", lambda r: fetched.append(r.url) if "/static/" in r.url else None)
    before = len(sent)
    point_under_pointer(page)
    point_under_pointer(page, skip=1)
    box = page.locator(DECK).first.bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(cx, cy)
    page.mouse.down()
    page.mouse.move(cx + 60, cy + 30, steps=6)  # pan
    page.mouse.up()
    page.mouse.wheel(0, -240)  # zoom in
    page.wait_for_timeout(800)
    assert len(sent) == before, "hover, pan or zoom reached the server"
    assert any(".png" in u and "/static/thumbs/" in u for u in fetched)  # the hover card's atlas
    page.locator(".map .tools button[data-act=fit]").click()
    # a box over the whole map selects every plotted image
    page.locator(".map .tools button[data-mode=box]").click()
    page.mouse.move(box["x"] + 8, box["y"] + 40)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] - 8, box["y"] + box["height"] - 8, steps=6)
    page.mouse.up()
    page.get_by_text(re.compile(r"\*?\*?\d+\*?\*? points selected")).first.wait_for(timeout=60_000)
    selected = int(page.locator(DECK).first.get_attribute("data-selected"))
    assert selected > 300  # the 360 test images, less any outside the fitted view's margin
    settle(page, "points selected")
    check_page(page, "5b-map-box-selection")
    # another colouring: new colours, the same positions column (fetched from the browser's cache, not again)
    drawn = page.locator(DECK).first.get_attribute("data-drawn")
    fetched.clear()
    choose(page, "Colour by", "kNN right / wrong")
    for _ in range(600):
        now = page.locator(DECK).first.get_attribute("data-drawn")
        if now and now != drawn:
            break
        page.wait_for_timeout(100)
    xy_before, rgba_before = drawn.split("|")
    xy_after, rgba_after = now.split("|")
    assert xy_after == xy_before and rgba_after != rgba_before
    assert not any(u.endswith(xy_before.rsplit("/", 1)[1]) for u in fetched)  # positions not fetched again
    check_page(page, "5c-map-colour-change")


# ---- issue 16: the explorer keeps its numbers; runs are followed; one Stop; cheap to watch ----------------


def slider(page, label: str):
    return page.locator('[data-testid="stSlider"]').filter(has_text=label).get_by_role("slider")


def choose(page, label: str, option: str) -> None:
    """Pick ``option`` in the selectbox labelled ``label``."""
    page.locator('[data-testid="stSelectbox"]').filter(has_text=label).locator("input").click()
    page.get_by_role("option", name=option, exact=True).click()


def neighbours_line(page) -> str:
    return page.get_by_text(re.compile(r"\d+ nearest neighbours in the \w+ split")).first.inner_text()


def test_the_map_keeps_its_settings_through_a_wait_and_clicks_after_a_split_switch(server, page):
    """Items 1 and 4: k set to 5, then a projection the worker has not made yet; then another split and a click."""
    url, _ = server
    page.goto(f"{url}/embeddings?run=browser-demo&view=map&projection=pca")
    settle(page, "Embeddings", DECK, timeout_ms=300_000)
    k = slider(page, "Neighbours k")
    k.focus()
    page.keyboard.press("Home")  # 1
    idle(page)
    for _ in range(4):
        k.press("ArrowRight")
    idle(page)
    assert k.input_value() == "5"
    page.wait_for_timeout(1500)
    click_a_point(page, "nearest neighbours in the")
    settle(page, "nearest neighbours in the")
    assert neighbours_line(page).startswith("5 nearest neighbours in the test split")
    choose(page, "Projection", "t-SNE")  # not made yet: the page waits for the worker
    page.get_by_text("Preparing the t-SNE map").first.wait_for(timeout=60_000)
    settle(page, "nearest neighbours in the", DECK, timeout_ms=300_000)
    assert slider(page, "Neighbours k").input_value() == "5"
    assert neighbours_line(page).startswith("5 nearest neighbours in the test split")
    check_page(page, "8-map-kept-k-after-wait")
    choose(page, "Split", "train")  # another wait: the train split's embeddings
    settle(page, "Embeddings", DECK, timeout_ms=300_000)
    page.wait_for_timeout(1500)
    row = click_a_point(page, "nearest neighbours in the train split")  # "#123"
    settle(page, "nearest neighbours in the train split")
    assert neighbours_line(page).startswith("5 nearest neighbours in the train split")
    assert page.get_by_text(re.compile(rf"^{row} · ")).count() >= 1  # the clicked image heads the panel
    check_page(page, "9-map-click-after-split-switch")


def test_the_map_stays_on_its_checkpoint_until_the_user_moves(server, page):
    """Item 2: a new checkpoint does not rebuild the map under the user; a banner offers it."""
    url, home = server
    run = home / "runs" / "browser-demo"
    page.goto(f"{url}/embeddings?run=browser-demo&view=map&projection=pca&split=test")
    settle(page, "Embeddings", DECK, timeout_ms=300_000)
    assert page.get_by_text("A newer checkpoint").count() == 0
    ckpt = run / "last.pt"
    ckpt.write_bytes(ckpt.read_bytes())  # the run "wrote" a new checkpoint: a new file, a new mtime
    choose(page, "Colour by", "kNN prediction")  # any touch draws the page again
    settle(page, "A newer checkpoint", DECK)
    assert page.get_by_text("Preparing the PCA map").count() == 0  # nothing recomputed meanwhile
    check_page(page, "10-map-newer-checkpoint-banner")
    page.get_by_role("button", name="Move to it").click()
    settle(page, "Checkpoint:", DECK, timeout_ms=300_000)
    assert page.get_by_text("A newer checkpoint").count() == 0


def stop_widget_buttons_visible(page) -> int:
    return page.evaluate(
        "() => [...document.querySelectorAll('[data-testid=\"stStatusWidget\"] button')]"
        ".filter(b => b.offsetParent !== null).length"
    )


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads CPU time from /proc (Linux)")
def test_stop_resume_is_followed_with_one_stop_button_and_watching_costs_little(app_server, page):
    """Items 3 and 5 and the watched-run CPU test: a run trains, is stopped, resumed and followed without a
    reload; the only Stop on screen is the app's; the open Train tab costs the server under 5% of a core."""
    url, home, proc = app_server
    run = home / "runs" / "browser-again"
    page.goto(f"{url}/train")
    settle(page, "New run")
    for label, value in (("Epochs", "200"), ("Run name", "browser-again")):
        box = page.get_by_role("spinbutton" if label == "Epochs" else "textbox", name=label, exact=True)
        box.fill(value)
        box.press("Enter")
        idle(page)
    page.get_by_role("button", name="Launch").click()
    page.wait_for_function(
        "(sel) => document.querySelector(sel)?.value === 'browser-again (running)'", arg=PICKER, timeout=120_000
    )
    stop = page.get_by_role("button", name="Stop training browser-again")
    stop.wait_for()
    # Streamlit's toolbar "Stop" (of a script run) never shows beside it while the page follows the run:
    # whenever the toolbar's status shows (a redraw that takes a moment), its Stop is hidden ...
    for _ in range(80):
        assert stop_widget_buttons_visible(page) == 0
        page.wait_for_timeout(125)
    # ... by the app's own style, which a status widget with a Stop button, as Streamlit draws it, meets
    hidden = page.evaluate(
        """() => { const w = document.createElement('div'); w.setAttribute('data-testid', 'stStatusWidget');
        const b = document.createElement('button'); b.textContent = 'Stop'; w.appendChild(b);
        document.querySelector('header, [data-testid="stHeader"]').appendChild(w);
        const shown = b.offsetParent !== null; w.remove(); return !shown; }"""
    )
    assert hidden, "Streamlit's toolbar Stop would show beside the app's"
    page.wait_for_timeout(3000)
    before = cpu_seconds(proc.pid)
    page.wait_for_timeout(20_000)  # watched: the tab follows a training run
    used = cpu_seconds(proc.pid) - before
    assert used < 1.0, f"the server used {used:.2f} CPU-s in 20 s watching a training run"
    stop.click()
    page.get_by_role("button", name="Resume").wait_for(timeout=120_000)
    page.wait_for_function(
        "(sel) => document.querySelector(sel)?.value === 'browser-again (stopped)'", arg=PICKER, timeout=60_000
    )
    stopped_at = json.loads((run / "status.json").read_text())["step"]
    page.get_by_role("button", name="Resume").click()
    # followed at once: "starting" (written by the app), then "running", with Stop, and no reload
    page.wait_for_function(
        "(sel) => /browser-again \\((starting|running)\\)/.test(document.querySelector(sel)?.value)",
        arg=PICKER,
        timeout=10_000,
    )
    page.wait_for_function(
        "(sel) => document.querySelector(sel)?.value === 'browser-again (running)'", arg=PICKER, timeout=120_000
    )
    page.get_by_role("button", name="Stop training browser-again").wait_for(timeout=30_000)
    page.wait_for_function(
        f"() => /epoch \\d+\\/200 · step (\\d+)/.exec(document.body.innerText)?.[1] > {stopped_at}", timeout=120_000
    )
    check_page(page, "11-train-resumed-and-followed")
    page.get_by_role("button", name="Stop training browser-again").click()
    page.get_by_role("button", name="Resume").wait_for(timeout=120_000)
