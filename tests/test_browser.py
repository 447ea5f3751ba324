"""JupyterLab in a real browser, used as a student uses it: ``make lab``'s server driven by headless Chromium.

Each test opens a lab notebook, runs it with the menu (Run > Run All Cells), waits for the kernel to go idle and
checks the page: every code cell ran, no cell shows a traceback or a progress bar printed as text (tqdm's widget
failed), no widget failed to display, and the lab's pictures and widgets are there.
Lab 04's depth dropdown must redraw the figure below it when changed; lab 00's sample grids must render.
Screenshots go to ``$LABS_RUNS/browser/`` (``runs/browser/`` without it), failures' full pages too.

Needs Debian's ``chromium`` and ``chromium-driver`` packages and selenium. Without them the tests skip with one
line saying how to install them, unless ``LABS_REQUIRE_BROWSER=1`` (``make test-browser`` and CI) makes that a
failure. The chromedriver path is always given explicitly, so Selenium Manager never downloads a browser.

The server gets its own port on 127.0.0.1, a random token and temporary runtime, settings and workspace folders
(autosave off, so the repository's notebooks are never written; a test checks their bytes). It is stopped
whatever happens: REST shutdown, then the process group, then any kernel still holding our runtime folder;
``atexit`` does the same if the fixture's finaliser never runs.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

from labutils import data
from labutils.results import runs_dir

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
INSTALL = "apt-get install -y chromium chromium-driver"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")

SERVER_START_S = 180
KERNEL_START_S = 180
RUN_ALL_S = 1200  # lab 04 quick runs in under a minute on an idle machine; CI shares two cores with the whole suite
WIDGET_REDRAW_S = 60  # a redraw takes seconds; the figure of a broken callback never changes

# What JupyterLab 4 renders for an `error` output: an application/vnd.jupyter.stderr output holding IPython's
# traceback. Plain stderr streams (warnings, progress text) share the MIME type, so the text decides.
TRACEBACK = re.compile(r"Traceback \(most recent call last\)|^\s*\w*(Error|Exception)\b.*$", re.M)

# tqdm's text bar ("depth sweep:  50%|#####     | 2/4"): in JupyterLab, tqdm.auto must draw a widget instead.
TEXT_PROGRESS_BAR = re.compile(r"\d+%\|.*\| *\d+/\d+")

# The settings a fresh user would have, except autosave (never write the repository's notebooks) and the news feed
# (it makes requests to a website).
LAB_SETTINGS = {
    "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false", "checkForUpdates": False},
}


def _missing_tools() -> list[str]:
    missing = [name for name, path in (("chromium", CHROMIUM), ("chromedriver", CHROMEDRIVER)) if not path]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium (pip install -r requirements.txt)")
    if not shutil.which("make"):
        missing.append("make")
    return missing


MISSING = _missing_tools()
REQUIRED = os.environ.get("LABS_REQUIRE_BROWSER") == "1"
MISSING_MESSAGE = f"browser test needs {', '.join(MISSING)}: install Chromium and its driver with `{INSTALL}`"
if MISSING and not REQUIRED:
    pytest.skip(MISSING_MESSAGE, allow_module_level=True)  # one line in the summary, not one per test


@pytest.fixture(scope="module", autouse=True)
def browser_tools():
    if MISSING:
        pytest.fail(MISSING_MESSAGE + " (LABS_REQUIRE_BROWSER=1 forbids skipping)")


# ---------------------------------------------------------------------------------------------- processes


def _pids_mentioning(text: str) -> list[int]:
    """Processes whose command line contains ``text`` (a private temporary path, so only ours)."""
    pids = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if text.encode() in (proc / "cmdline").read_bytes():
                pids.append(int(proc.name))
        except OSError:
            continue
    return [p for p in pids if p != os.getpid()]


def _kill_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LabServer:
    """``make lab`` on 127.0.0.1 with a private token, port and folders; ``stop()`` is safe to call twice."""

    def __init__(self, root: Path):
        self.root = root
        self.port = _free_port()
        self.token = secrets.token_hex(16)
        self.runtime = root / "runtime"
        self.log_path = root / "server.log"
        self.runs = root / "runs"
        settings = root / "settings"
        for name, values in LAB_SETTINGS.items():
            (settings / name).parent.mkdir(parents=True, exist_ok=True)
            (settings / name).write_text(json.dumps(values))
        env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
        env.update(
            LABS_PROFILE="quick",
            LABS_RUNS=str(self.runs),
            WANDB_MODE="offline",
            WANDB_DIR=str(root / "wandb"),
            WANDB_SILENT="true",
            OMP_NUM_THREADS="1",
            MKL_NUM_THREADS="1",
            JUPYTER_TOKEN=self.token,
            JUPYTER_RUNTIME_DIR=str(self.runtime),
            JUPYTERLAB_SETTINGS_DIR=str(settings),
            JUPYTERLAB_WORKSPACES_DIR=str(root / "workspaces"),
        )
        # The venv this test runs in is the one `make lab` would use; `-o` stops make from reinstalling it.
        venv = sys.prefix
        lab_args = f"--no-browser --ip=127.0.0.1 --port={self.port} --port-retries=0"
        command = ["make", "--no-print-directory", "-o", f"{venv}/.installed", "lab", f"VENV={venv}"]
        command.append(f"LAB_ARGS={lab_args}")
        self._log = open(self.log_path, "wb")  # noqa: SIM115 -- closed in stop()
        self.proc = subprocess.Popen(
            command, cwd=REPO, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        atexit.register(self.stop)

    def url(self, path: str) -> str:
        sep = "&" if "?" in path else "?"
        return f"http://127.0.0.1:{self.port}{path}{sep}token={self.token}"

    def api(self, path: str, method: str = "GET"):
        request = urllib.request.Request(self.url(path), method=method, data=b"" if method != "GET" else None)
        with urllib.request.urlopen(request, timeout=10) as response:
            body = response.read()
        return json.loads(body) if body else None

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""

    def wait_ready(self) -> None:
        deadline = time.monotonic() + SERVER_START_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"`make lab` exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                self.api("/api/status")
                return
            except OSError:
                time.sleep(0.5)
        raise AssertionError(f"JupyterLab did not answer within {SERVER_START_S} s:\n{self.log_tail()}")

    def shutdown_kernels(self) -> None:
        """Frees the CPU and memory of the last notebook's kernel before the next test."""
        for kernel in self.api("/api/kernels") or []:
            self.api(f"/api/kernels/{kernel['id']}", method="DELETE")

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:  # a clean shutdown stops the kernels too
                self.api("/api/shutdown", method="POST")
                self.proc.wait(timeout=20)
            except (OSError, subprocess.TimeoutExpired):
                pass
        # make and jupyter share the process group started above; kernels run in sessions of their own and are
        # found by the connection file in our private runtime folder.
        _kill_group(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        _kill_group(self.proc.pid, signal.SIGKILL)
        for pid in _pids_mentioning(str(self.runtime)):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait()
        self._log.close()
        atexit.unregister(self.stop)


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


@pytest.fixture(scope="module")
def lab_server():
    # A SIGTERM (a CI timeout, `kill`) would end Python without finalisers or atexit: turn it into an interrupt,
    # which runs both. Only the main thread may install handlers.
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _interrupt) if main_thread else None
    root = Path(tempfile.mkdtemp(prefix="labs-browser-"))
    server = LabServer(root)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
        if main_thread:
            signal.signal(signal.SIGTERM, previous)


@pytest.fixture
def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tmp_path / "chromium-profile"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",  # containers run as root, where Chromium's sandbox cannot start
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1400,1000",
        "--no-first-run",
        "--disable-background-networking",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(arg)
    # An explicit driver path: Selenium Manager (which would download a browser) is never consulted.
    service = Service(executable_path=CHROMEDRIVER, log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=options)

    def close():
        try:
            driver.quit()
        finally:
            for pid in _pids_mentioning(str(profile)):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            atexit.unregister(close)

    atexit.register(close)
    try:
        yield driver
    finally:
        close()


# ---------------------------------------------------------------------------------------------- the page


def screenshot_dir() -> Path:
    path = runs_dir() / "browser"
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextmanager
def diagnosed(driver, server: LabServer, name: str):
    """On failure, add a full-page screenshot and the server's log to the assertion."""
    try:
        yield
    except Exception as exc:
        shot = screenshot_dir() / f"failed_{Path(name).stem}.png"
        try:
            driver.save_screenshot(str(shot))
        except Exception:  # the browser itself may be what failed
            shot = None
        raise AssertionError(f"{exc}\n\nscreenshot: {shot}\nserver log (tail):\n{server.log_tail()}") from exc


@contextmanager
def kernels_shut_down(server: LabServer):
    """Whatever the test did, its kernel stops with it: the next test gets the CPU and memory back."""
    try:
        yield
    finally:
        server.shutdown_kernels()


def wait_for(condition, timeout: float, what: str, poll: float = 1.0):
    """Poll ``condition()`` until it returns something truthy; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(poll)


NOTEBOOK_STATE_JS = """
const panel = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)');
if (!panel) return null;
const indicator = panel.querySelector('.jp-Notebook-ExecutionIndicator');
const prompts = Array.from(panel.querySelectorAll('.jp-CodeCell .jp-InputPrompt')).map(p => p.textContent.trim());
const stderr = Array.from(panel.querySelectorAll(
    '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')).map(e => e.textContent);
const widgetErrors = Array.from(panel.querySelectorAll('.jp-OutputArea-output'))
    .map(e => e.textContent).filter(t => t.includes('Error displaying widget'));
return {status: indicator ? indicator.dataset.status : null, prompts, stderr, widgetErrors};
"""


def notebook_state(driver) -> dict | None:
    return driver.execute_script(NOTEBOOK_STATE_JS)


def open_notebook(driver, server: LabServer, name: str) -> None:
    """Open ``notebooks/<name>`` in a fresh workspace and wait until its kernel is idle."""
    from selenium.webdriver.common.by import By

    driver.get(server.url(f"/lab/workspaces/{Path(name).stem}/tree/{name}?reset"))
    settled = []

    def ready():
        # A fresh JupyterLab asks which kernel to start (autoStartDefaultKernel is off): accept the preferred one,
        # as a student would.
        for button in driver.find_elements(By.CSS_SELECTOR, ".jp-Dialog .jp-Dialog-button.jp-mod-accept"):
            button.click()
        state = notebook_state(driver)
        settled.append(bool(state and state["prompts"] and state["status"] == "idle"))
        settled.append(not driver.find_elements(By.CSS_SELECTOR, ".jp-Dialog"))
        return settled[-6:] == [True] * 6  # idle with no dialog for three polls: a late dialog gets its chance

    wait_for(ready, KERNEL_START_S, f"{name} to open with an idle kernel", poll=0.5)


def click_menu(driver, menu: str, item: str) -> None:
    """Click ``menu`` in the menu bar, then ``item`` in it, as a user would."""
    from selenium.webdriver.common.by import By

    driver.find_element(By.XPATH, f"//div[contains(@class,'lm-MenuBar-itemLabel')][normalize-space()='{menu}']").click()
    wait_for(
        lambda: driver.find_elements(
            By.XPATH, f"//div[contains(@class,'lm-Menu-itemLabel')][normalize-space()='{item}']"
        ),
        10,
        f"menu item {menu} > {item}",
        poll=0.2,
    )[0].click()


def run_all_cells(driver, timeout: float = RUN_ALL_S) -> dict:
    """Run > Run All Cells, then wait until the kernel is idle and no cell is queued or running."""
    click_menu(driver, "Run", "Run All Cells")
    wait_for(
        lambda: (s := notebook_state(driver)) and (s["status"] == "busy" or any("*" in p for p in s["prompts"])),
        60,
        "the kernel to start running the cells",
        poll=0.2,
    )
    settled = []

    def finished():
        state = notebook_state(driver)
        done = state["status"] == "idle" and not any("*" in p for p in state["prompts"])
        settled.append(done)
        return state if done and settled[-3:] == [True] * 3 else None  # idle for three polls in a row

    return wait_for(finished, timeout, "Run All Cells to finish")


def assert_ran_cleanly(state: dict) -> None:
    tracebacks = [text for text in state["stderr"] if TRACEBACK.search(text)]
    assert not tracebacks, f"{len(tracebacks)} cell(s) show an error; the first:\n{tracebacks[0][-3000:]}"
    text_bars = [text for text in state["stderr"] if TEXT_PROGRESS_BAR.search(text)]
    assert not text_bars, f"a progress bar printed as text (no tqdm widget): {text_bars[0][-300:]!r}"
    assert not state["widgetErrors"], f"a widget failed to display: {state['widgetErrors'][0]}"
    not_run = [p for p in state["prompts"] if not re.fullmatch(r"\[\d+\]:", p)]
    assert not not_run, f"{len(not_run)} of {len(state['prompts'])} code cells did not run: prompts {state['prompts']}"


def code_cell_containing(driver, text: str):
    """The code cell whose source contains ``text``: found by content, never by position."""
    from selenium.webdriver.common.by import By

    cells = [
        cell
        for cell in driver.find_elements(By.CSS_SELECTOR, ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell")
        if text in cell.find_element(By.CSS_SELECTOR, ".jp-InputArea-editor").get_attribute("textContent")
    ]
    assert len(cells) == 1, f"expected one code cell containing {text!r}, found {len(cells)}"
    return cells[0]


def loaded_images(driver, element) -> list[str]:
    """``src`` of every decoded image under ``element`` (an image still loading or broken does not count)."""
    return driver.execute_script(
        "return Array.from(arguments[0].querySelectorAll('img'))"
        ".filter(i => i.complete && i.naturalWidth > 0).map(i => i.src);",
        element,
    )


def stderr_texts(driver, element) -> list[str]:
    """Text of every stderr or error output under ``element`` (an interactive widget prints its errors there)."""
    return driver.execute_script(
        "return Array.from(arguments[0].querySelectorAll("
        "'.jp-OutputArea-output[data-mime-type=\"application/vnd.jupyter.stderr\"]')).map(e => e.textContent);",
        element,
    )


def screenshot(driver, element, name: str) -> Path:
    """Save a picture of ``element`` alone (it must fit the window). JupyterLab scrolls the notebook itself, not
    the window, so the element is scrolled into view first."""
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", element)
    time.sleep(1)  # let the layout settle after the scroll
    path = screenshot_dir() / name
    element.screenshot(str(path))
    return path


def notebook_digest(name: str) -> str:
    return hashlib.sha256((NOTEBOOKS / name).read_bytes()).hexdigest()


@contextmanager
def notebook_run_in_lab(driver, server: LabServer, name: str):
    """Open ``notebooks/<name>`` in JupyterLab and run all its cells cleanly (diagnosed on failure, kernels shut
    down after); on leaving, the file on disk must be unchanged by the session."""
    before = notebook_digest(name)
    with diagnosed(driver, server, name), kernels_shut_down(server):
        open_notebook(driver, server, name)
        assert_ran_cleanly(run_all_cells(driver))
        yield
    assert notebook_digest(name) == before, f"the browser session changed notebooks/{name} on disk"


# ---------------------------------------------------------------------------------------------- the tests


def test_lab04_runs_in_jupyterlab_and_depth_widget_redraws(lab_server, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    name = "04_residual_mlp.ipynb"
    with notebook_run_in_lab(browser, lab_server, name):
        cell = code_cell_containing(browser, "def show_profile")  # the lab's explorer cell has a depth dropdown too
        dropdowns = cell.find_elements(
            By.XPATH,
            ".//div[contains(@class,'widget-dropdown')][.//label[normalize-space()='depth']]//select",
        )
        assert len(dropdowns) == 1, f"expected one rendered 'depth' dropdown in its cell, found {len(dropdowns)}"
        select = Select(dropdowns[0])
        interact = dropdowns[0].find_element(By.XPATH, "./ancestor::div[contains(@class,'widget-interact')][1]")
        shown = wait_for(lambda: loaded_images(browser, interact), WIDGET_REDRAW_S, "the depth widget's figure")
        assert len(shown) == 1, f"the depth widget shows {len(shown)} images, expected one figure"

        current = select.first_selected_option.text
        others = [o.text for o in select.options if o.text != current]
        assert others, f"the depth dropdown offers only {current}"
        select.select_by_visible_text(others[0])

        def redrawn_figure():
            failed = [t for t in stderr_texts(browser, interact) if TRACEBACK.search(t)]
            assert not failed, f"the depth widget's callback failed:\n{failed[0][-3000:]}"
            images = loaded_images(browser, interact)
            return images and images[0] != shown[0] and images

        redrawn = wait_for(
            redrawn_figure,
            WIDGET_REDRAW_S,
            f"the figure to redraw after choosing depth {others[0]} (was {current})",
        )
        assert len(redrawn) == 1, f"after the change the widget shows {len(redrawn)} images, expected one"
        assert_ran_cleanly(notebook_state(browser))  # the callback's own errors land in the widget's output
        screenshot(browser, interact, "04_depth_widget.png")


def test_lab00_sample_grids_render_as_images(lab_server, browser):
    from selenium.webdriver.common.by import By

    name = "00_setup_and_data.ipynb"
    with notebook_run_in_lab(browser, lab_server, name):
        cell = code_cell_containing(browser, "viz.image_grid(")
        grids = loaded_images(browser, cell)
        # The quick profile loads every dataset, real or as a synthetic stand-in: one grid each.
        assert len(grids) == len(data.DATASETS), f"{len(grids)} sample grids rendered for {len(data.DATASETS)} datasets"
        assert all(src.startswith("data:image/png;base64,") for src in grids)
        screenshot(browser, cell.find_elements(By.CSS_SELECTOR, ".jp-OutputArea-output img")[0], "00_mnist_grid.png")
