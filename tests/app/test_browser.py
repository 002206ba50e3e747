"""The workbench in a real browser: `streamlit run` on a free localhost port, driven by Playwright in Debian's
Chromium; every page is visited, one pair opened, and a screenshot of each page saved under test-artifacts/."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.app.conftest import APP

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = APP.parent / "test-artifacts" / "browser"
PAGES = {"": "Reward-model data workbench", "Builds": "Funnel", "Pairs": "rows of the shards match",
         "Removed": "Contamination", "Bias": "Chosen vs rejected length", "Mixture": "Mixture",
         "Runs": "No training runs", "Review": "pairs in this queue"}  # fmt: skip


def _browser_or_skip() -> None:
    checks = (("chromium", Path(CHROMIUM).exists()), ("playwright", _has_playwright()))
    missing = [what for what, ok in checks if not ok]
    if missing:
        message = f"real-browser test needs {' and '.join(missing)} (apt-get install chromium; pip install playwright)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


def _has_playwright() -> bool:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture(scope="module")
def server(data_root: Path) -> Iterator[str]:
    _browser_or_skip()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "streamlit", "run", str(APP / "Home.py"), "--server.headless", "true",
               "--server.address", "127.0.0.1", "--server.port", str(port), "--browser.gatherUsageStats", "false",
               "--", "--data", str(data_root)]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):  # bounded wait for start-up
            try:
                if urllib.request.urlopen(f"{url}/_stcore/health", timeout=1).read() == b"ok":
                    break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("streamlit did not start within 60 s")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=20)


@pytest.mark.slow  # a streamlit server and Chromium, every page rendered: about half a minute
def test_every_page_in_a_real_browser(server: str) -> None:
    from playwright.sync_api import expect, sync_playwright

    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True)
    args = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"]  # fmt: skip
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        for path, expected in PAGES.items():
            page.goto(f"{server}/{path}", timeout=60_000)
            expect(page.get_by_text(expected).first).to_be_visible(timeout=60_000)
            page.wait_for_timeout(500)
            assert page.locator('[data-testid="stException"]').count() == 0, f"exception on /{path}"
            page.screenshot(path=str(ARTIFACTS / f"{path or 'Home'}.png"), full_page=True)
        # Open one image pair: its prompt, both answers and its image are shown; a click on a row opens that row.
        page.goto(f"{server}/Pairs?modality=image", timeout=60_000)
        expect(page.get_by_text("green: only in chosen").first).to_be_visible(timeout=60_000)
        expect(page.locator('[data-testid="stImage"] img').first).to_be_visible(timeout=30_000)
        expect(page.get_by_text("1 of ", exact=False).first).to_be_visible()
        grid = page.locator('[data-testid="stDataFrame"]').first.bounding_box()
        assert grid is not None
        page.mouse.click(grid["x"] + 12, grid["y"] + 35 * 2 + 17)  # the second row's selection cell
        expect(page.get_by_text("2 of ", exact=False).first).to_be_visible(timeout=30_000)
        assert page.locator('[data-testid="stException"]').count() == 0
        page.screenshot(path=str(ARTIFACTS / "Pair.png"), full_page=True)
        # Hostile dataset text stays text, its differences marked: no script element is created from it.
        page.goto(f"{server}/Pairs?build=hostile", timeout=60_000)
        expect(page.get_by_text("<script>alert('x')</script>", exact=False).first).to_be_visible(timeout=60_000)
        assert page.locator("script", has_text="alert('x')").count() == 0
        assert page.locator(".pair-text del").count() >= 1 and page.locator(".pair-text a").count() == 0
        # A removed row's label names its file, which holds a bare `www.` address: shown, not made a link.
        page.goto(f"{server}/Removed?build=hostile", timeout=60_000)
        expect(page.get_by_text("hostile-www", exact=False).first).to_be_visible(timeout=60_000)
        assert page.locator('[data-testid="stExpander"] summary a').count() == 0
        # The images of a contaminated pair beside the benchmark item's.
        page.goto(f"{server}/Removed", timeout=60_000)
        expect(page.get_by_text("training pair:", exact=False).first).to_be_visible(timeout=60_000)
        expect(page.get_by_text("benchmark item", exact=False).first).to_be_visible()
        page.screenshot(path=str(ARTIFACTS / "Removed-images.png"), full_page=True)
        # A review written from the browser.
        page.goto(f"{server}/Review", timeout=60_000)
        expect(page.get_by_text("pairs in this queue", exact=False).first).to_be_visible(timeout=60_000)
        page.get_by_role("textbox", name="reviewer").fill("browser")
        page.get_by_role("textbox", name="reviewer").press("Enter")  # the name enables Save
        expect(page.get_by_role("button", name="Save review")).to_be_enabled(timeout=30_000)
        page.wait_for_timeout(500)  # the page's rerun settles (its elements replaced)
        page.get_by_text("drop", exact=True).first.click()
        page.get_by_role("textbox", name="note").fill("not a real preference")
        page.get_by_role("button", name="Save review").click()
        expect(page.get_by_text("Review saved.").first).to_be_visible(timeout=30_000)
        page.screenshot(path=str(ARTIFACTS / "Review.png"), full_page=True)
        browser.close()
