"""The course website in a real browser: headless Chromium reads the site that `make site` builds.

The site is built from the quick-profile runs of labs 00, 01 and 04 (executed once per test session by
``notebook_metrics``, shared with the notebook tests), laid out as `make labs` leaves ``runs/``, and served by
``python -m http.server`` on 127.0.0.1. Every lab page linked from the landing page must load, show at least one
figure and no traceback; the report page must show its tables. A screenshot of lab 04's page goes to
``runs/browser/site_04_residual_mlp.png`` at the repository root.

Skipped like tests/test_browser.py without Chromium and its driver, unless ``LABS_REQUIRE_BROWSER=1``.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import test_browser
from test_browser import TRACEBACK, _free_port, loaded_images, stderr_texts, wait_for

from conftest import session_root
from labutils import site
from labutils.results import build_report
from labutils.util import REPO_ROOT

pytestmark = pytest.mark.browser
# tests/test_browser.py's fixtures: Chromium through its own driver, and the check that both are installed (importing
# that module skips this one where they are missing, unless LABS_REQUIRE_BROWSER=1)
browser, browser_tools = test_browser.browser, test_browser.browser_tools

LABS = ["00_setup_and_data", "01_numpy_mlp", "04_residual_mlp"]
PAGE_LOAD_S = 60
SCREENSHOT = REPO_ROOT / "runs" / "browser" / "site_04_residual_mlp.png"


def lay_out_run(runs: Path) -> None:
    """Copy the session's executed labs into ``runs`` as `make labs` names them, and write REPORT.md."""
    for stem in LABS:
        source, target = session_root() / "runs" / stem, runs / stem
        target.mkdir(parents=True)
        shutil.copyfile(source / f"{stem}.executed.ipynb", target / f"{stem}.ipynb")
        for path in [source / "metrics.json", *source.glob("*.png")]:
            shutil.copyfile(path, target / path.name)
    build_report(runs)


@pytest.fixture(scope="module")
def served_site(notebook_metrics, tmp_path_factory):
    """The site built from labs 00, 01 and 04, served on 127.0.0.1; yields ``(base URL, build seconds)``."""
    for stem in LABS:
        notebook_metrics(stem)  # executes the lab unless another test of this session already did
    root = tmp_path_factory.mktemp("site-browser")
    lay_out_run(root / "runs")
    start = time.monotonic()
    index = site.build(root / "runs", root / "site")
    seconds = time.monotonic() - start
    port = _free_port()
    command = [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "--directory", str(index.parent), str(port)]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def answers() -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            return False

    try:
        wait_for(answers, 30, "the site's web server", poll=0.2)
        yield f"http://127.0.0.1:{port}/", seconds
    finally:
        server.terminate()
        server.wait(timeout=10)


def open_page(driver, url: str) -> None:
    driver.get(url)
    wait_for(lambda: driver.execute_script("return document.readyState") == "complete", PAGE_LOAD_S, f"{url} to load")


def test_every_lab_page_loads_with_figures_and_no_traceback(served_site, browser):
    from selenium.webdriver.common.by import By

    base, seconds = served_site
    open_page(browser, base)
    assert browser.title == site.SITE_NAME
    links = [
        a.get_attribute("href") for a in browser.find_elements(By.CSS_SELECTOR, "article table tbody td:first-child a")
    ]
    assert len(links) == len(LABS), f"the landing page's lab table links {links}"
    for url, stem in zip(links, LABS):
        open_page(browser, url)
        assert browser.title.startswith(f"Lab {stem[:2]} "), f"{url}: title {browser.title!r}"
        article = browser.find_element(By.CSS_SELECTOR, "article")
        figures = wait_for(
            lambda a=article: [s for s in loaded_images(browser, a) if s.startswith("data:image/png")],
            PAGE_LOAD_S,
            f"a figure on {url}",
        )
        assert figures, f"{url} shows no figure"
        text = article.text
        assert "Traceback (most recent call last)" not in text, f"{url} shows a traceback"
        errors = [t for t in stderr_texts(browser, article) if TRACEBACK.search(t)]
        assert not errors, f"{url} shows an error output:\n{errors[0][-2000:]}"
        if stem == "04_residual_mlp":
            first = article.find_elements(By.CSS_SELECTOR, "img[src^='data:image/png']")[0]
            browser.execute_script("arguments[0].scrollIntoView({block: 'center'});", first)
            time.sleep(0.5)
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            browser.save_screenshot(str(SCREENSHOT))
    assert SCREENSHOT.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    print(f"site built in {seconds:.0f} s; lab 04's page: {SCREENSHOT}")


def test_report_page_shows_the_run_tables(served_site, browser):
    from selenium.webdriver.common.by import By

    base, _ = served_site
    open_page(browser, base + "report/")
    tables = browser.find_elements(By.CSS_SELECTOR, "article table")
    assert len(tables) >= 1 + len(LABS), f"{len(tables)} tables on the report page"
    assert all(stem in browser.find_element(By.CSS_SELECTOR, "article").text for stem in LABS)
    assert loaded_images(browser, browser.find_element(By.CSS_SELECTOR, "article")), "the report shows no figure"
