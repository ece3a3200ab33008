"""A real browser on runs of a folder without labels (issue 20): the Evaluate page ranks them by a label-free
signal, with no kNN, probe or label column anywhere, and the Train page marks the epoch that signal prefers.

Like tests/pages/test_browser.py: ``streamlit run app.py`` + Debian's Chromium through Playwright, screenshots in
``test-output/browser/``; skipped when Chromium is missing, except in CI. The runs are files made up by
tests/evaluation/label_free_runs.py, so no training is needed: the module takes about half a minute.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from simclr_core.cli.studio import server_flags, start_server
from simclr_core.evaluation import label_free
from simclr_core.runs.rundir import RunDir

from tests.evaluation.label_free_runs import SIGNALS, fabricate
from tests.pages.browser import chromium_page, require_chromium, settle

REPO = Path(__file__).resolve().parents[2]
SHOTS = REPO / "test-output" / "browser"

require_chromium()  # skips this module without Chromium (fails in CI)

pytestmark = pytest.mark.slow

NAMES = tuple(SIGNALS)  # the last one written is the newest: the sidebar's run


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The app on three finished runs of an unlabelled folder: (url, runs folder)."""
    home = tmp_path_factory.mktemp("app")
    (home / "runs").mkdir()
    fabricate(home / "runs")
    env: dict[str, str | None] = {"SIMCLR_RUNS_DIR": str(home / "runs"), "SIMCLR_JOBS": None}
    proc, url = start_server(REPO / "app.py", home, env, server_flags(REPO / ".streamlit" / "config.toml"))
    yield url, home / "runs"
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def page(server):
    yield from chromium_page(60_000)


def shot(page, name: str) -> None:
    """No exception box; a full-page screenshot for a person to look at."""
    assert page.locator('[data-testid="stException"]').count() == 0, f"exception on {name}"
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


GRID = """() => [...document.querySelectorAll('[data-testid="stDataFrame"]')].map(t => ({
    headers: [...t.querySelectorAll('[role="columnheader"]')].map(c => c.innerText.trim()),
    cells: [...t.querySelectorAll('[role="gridcell"]')].map(c => c.innerText.trim()),
}))"""


CELLS_READ = """(words) => {
    const cells = [...document.querySelectorAll('[data-testid="stDataFrame"] [role="gridcell"]')].map(c => c.innerText);
    return words.every(w => cells.includes(w));
}"""


def expected_order(runs: Path) -> list[str]:
    """The ranking the library gives these files, by the signal the study (if it has run) found best."""
    signal, _ = label_free.chosen_signal(label_free.load_study(), "runs")
    return [r.run for r in label_free.rank_runs({n: RunDir(runs / n).metrics() for n in NAMES}, signal)]


def test_an_unlabelled_folders_runs_are_ranked_with_no_label_column(server, page):
    url, runs = server
    page.goto(f"{url}/evaluate")
    settle(page, "Rank without labels")
    picker = page.locator('[data-testid="stMultiSelect"]').first
    for name in NAMES[:-1]:  # the sidebar's run is picked already: add the other two
        picker.locator("input").click()
        page.get_by_role("option", name=name, exact=True).click()
        page.locator('[data-testid="stStatusWidget"]').wait_for(state="detached")
    page.keyboard.press("Escape")
    page.get_by_text("These runs were trained on images without labels").wait_for()
    settle(page, "How far to trust this order")
    table = page.locator('[data-testid="stDataFrame"]').first
    table.scroll_into_view_if_needed()
    page.wait_for_function(CELLS_READ, arg=list(NAMES))
    grids = page.evaluate(GRID)
    ranking = grids[0]
    assert ranking["headers"][:3] == ["#", "Run", "Method"]
    cells = ranking["cells"]
    assert [c for c in cells if c in NAMES] == expected_order(runs)  # rows in the ranked order
    headers = [h.lower() for g in grids for h in g["headers"]]
    assert not [h for h in headers if "knn" in h or "probe" in h or "label" in h], headers
    assert page.get_by_role("button", name="Run evaluation").count() == 0  # kNN / probe need labels
    body = page.locator("body").inner_text()
    assert "How far to trust this order." in body and ("Spearman ρ" in body or "not measured" in body)
    shot(page, "label-free-evaluate")


def test_the_train_page_marks_the_preferred_epoch(server, page):
    url, runs = server
    page.goto(f"{url}/train")
    settle(page, "is the best by")
    signal, _ = label_free.chosen_signal(label_free.load_study(), "epochs")
    epoch, _ = label_free.preferred_epoch(RunDir(runs / NAMES[-1]).metrics(), signal)
    assert f"Epoch {epoch} is the best by {label_free.signal_name(signal)}" in page.locator("body").inner_text()
    page.get_by_text("is the best by").first.scroll_into_view_if_needed()
    shot(page, "label-free-train")
