"""What the browser tests share: Chromium or a skip (a failure in CI), and a page of it for a module's tests."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from simclr_core.cli.studio import CHROMIUM, CHROMIUM_FLAGS


def require_chromium():
    """Playwright's ``sync_playwright``; skips the calling test module when Chromium is missing, except in CI
    (CI=true), where a missing browser is a failure."""
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI") == "true":
            raise RuntimeError(f"Chromium not found at {CHROMIUM}: .ci/run installs it with apt-get")
        pytest.skip("Chromium not installed (apt-get install chromium)", allow_module_level=True)
    return pytest.importorskip("playwright.sync_api").sync_playwright


def chromium_page(timeout_ms: int) -> Iterator:
    """A 1400 x 1000 page of headless Chromium, until the module's tests end (a fixture's body)."""
    with require_chromium()() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=list(CHROMIUM_FLAGS))
        pg = browser.new_page(viewport={"width": 1400, "height": 1000})
        pg.set_default_timeout(timeout_ms)
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
