"""Every lab's explorer in a real browser: ``notebooks/explorers.ipynb`` run in JupyterLab (headless Chromium), then
each explorer's controls moved one by one, as a student would.

The small runs the notebook builds on (:func:`labutils.explore.demo_runs`) are made once, before the notebook opens,
in the server's private runs folder, so the kernel only reloads them. For each explorer, every control is moved
once (a dropdown to another option, a toggle to another button, a slider one step with the keyboard, another
choice in a multiple selection); after each move the explorer's output must change (its text or its image) and
show no traceback. One screenshot per explorer goes to ``$LABS_RUNS/browser/`` (``runs/browser/``).

Uses the server, browser and page helpers of ``tests/test_browser.py``, and skips (or, with
``LABS_REQUIRE_BROWSER=1``, fails) as that module does without Chromium and its driver.
"""

from __future__ import annotations

import os

import pytest
from test_browser import (  # noqa: F401  (the fixtures browser, browser_tools and lab_server are used by name)
    TRACEBACK,
    assert_ran_cleanly,
    browser,
    browser_tools,
    lab_server,
    notebook_run_in_lab,
    notebook_state,
    screenshot,
    wait_for,
)

pytestmark = pytest.mark.browser

NOTEBOOK = "explorers.ipynb"
EXPLORERS = 12  # the explorers notebooks/explorers.ipynb builds
REDRAW_S = 60

OUTPUT_STATE_JS = """
const out = arguments[0].querySelector('.widget-output');
const images = Array.from(out.querySelectorAll('img')).filter(i => i.complete && i.naturalWidth > 0).map(i => i.src);
const stderr = Array.from(out.querySelectorAll(
    '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')).map(e => e.textContent);
return {text: out.innerText, images: images, stderr: stderr};
"""


@pytest.fixture(scope="module")
def demo_in_server_runs(lab_server):  # noqa: F811
    """Build the demo runs in the runs folder the server's kernels use, so the notebook reloads them."""
    from labutils import explore

    saved = os.environ.get("LABS_RUNS")
    os.environ["LABS_RUNS"] = str(lab_server.runs)
    try:
        explore.demo_runs("quick")
    finally:
        if saved is None:
            del os.environ["LABS_RUNS"]
        else:
            os.environ["LABS_RUNS"] = saved
    return lab_server.runs


def output_state(driver, panel) -> dict:
    return driver.execute_script(OUTPUT_STATE_JS, panel)


def explorer_name(panel) -> str:
    classes = panel.get_attribute("class").split()
    return next(c.removeprefix("labs-explorer-") for c in classes if c.startswith("labs-explorer-"))


def controls_of(panel) -> list:
    """``(kind, element)`` of every control in the panel, in the order shown."""
    from selenium.webdriver.common.by import By

    kinds = {
        "select-multiple": ".widget-select-multiple select",
        "dropdown": ".widget-dropdown select",
        "toggle": ".widget-toggle-buttons",
        "slider": ".widget-slider .noUi-handle",
    }
    found = []
    for kind, css in kinds.items():
        found += [(kind, element) for element in panel.find_elements(By.CSS_SELECTOR, css)]
    return sorted(found, key=lambda kind_element: (kind_element[1].location["y"], kind_element[1].location["x"]))


def move(driver, kind: str, element) -> str:
    """Move one control as a user would; return what was done, for messages."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", element)
    if kind == "dropdown":
        select = Select(element)
        current = select.first_selected_option.text
        other = next(o.text for o in select.options if o.text != current)
        select.select_by_visible_text(other)
        return f"dropdown {current!r} -> {other!r}"
    if kind == "select-multiple":
        select = Select(element)
        chosen = {o.text for o in select.all_selected_options}
        other = next(o for o in reversed(select.options) if o.text not in chosen)
        other.click()  # a plain click: that option alone
        return f"selection {sorted(chosen)} -> {other.text!r}"
    if kind == "toggle":
        buttons = element.find_elements(By.CSS_SELECTOR, "button")
        other = next(b for b in buttons if "mod-active" not in b.get_attribute("class"))
        other.click()
        return f"toggle -> {other.text!r}"
    at_end = element.get_attribute("aria-valuenow") == element.get_attribute("aria-valuemax")
    element.send_keys(Keys.ARROW_LEFT if at_end else Keys.ARROW_RIGHT)
    return f"slider {'left' if at_end else 'right'} from {element.get_attribute('aria-valuetext')}"


def check_explorer(driver, panel) -> None:
    """Move each control of one explorer panel once: the output must change every time and never show an error."""
    name = explorer_name(panel)
    shown = wait_for(lambda: (s := output_state(driver, panel))["images"] and s, REDRAW_S, f"{name}'s first view")
    controls = controls_of(panel)
    assert controls, f"{name} shows no control"
    for kind, element in controls:
        before = output_state(driver, panel)
        what = move(driver, kind, element)

        def changed(before=before, what=what):
            now = output_state(driver, panel)
            failed = [t for t in now["stderr"] if TRACEBACK.search(t)]
            assert not failed, f"{name}: after {what} the explorer shows an error:\n{failed[0][-3000:]}"
            fresh = now["text"] != before["text"] or now["images"] != before["images"]
            return fresh and (now["images"] or now["text"].strip()) and now

        shown = wait_for(changed, REDRAW_S, f"{name} to redraw after {what}")
    assert shown["images"] or shown["text"]
    screenshot(driver, panel, f"explorer_{name}.png")


def test_every_explorer_redraws_when_each_of_its_controls_moves(demo_in_server_runs, lab_server, browser):  # noqa: F811
    from selenium.webdriver.common.by import By

    with notebook_run_in_lab(browser, lab_server, NOTEBOOK):

        def all_rendered():
            found = browser.find_elements(By.CSS_SELECTOR, ".labs-explorer")
            return len(found) >= EXPLORERS and found

        panels = wait_for(all_rendered, REDRAW_S, f"{EXPLORERS} explorers to render")
        assert len(panels) == EXPLORERS, f"{len(panels)} explorers rendered, expected {EXPLORERS}"
        for panel in panels:
            check_explorer(browser, panel)
        assert_ran_cleanly(notebook_state(browser))
