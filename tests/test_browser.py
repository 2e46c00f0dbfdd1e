"""A real browser over a real JupyterLab: notebook 03 run from JupyterLab's menus in headless Chromium.

JupyterLab is started on 127.0.0.1 (a free port, a fresh token) over a temporary copy of the notebook, with its own
runtime, config, data, settings and workspace folders, so no user state leaks in and the committed notebook is never
touched (JupyterLab autosaves what it runs). In the page: Edit -> Clear Outputs of All Cells, Run -> Run All Cells, wait
until the kernel is idle and every code cell shows a fresh execution count (1..n), then check that the matplotlib plot
is an <img> with PNG data, that the step viewer (ipywidgets) rendered and answers a key press on its slider, that the
quiz rendered, and that no output is an error. A two-cell notebook ending in ``1/0`` checks that errors are seen.
The screenshot goes to build/test-artifacts/browser_notebook03.png.

Skipped only where Chromium or chromedriver cannot be found (``make test`` installs them with apt-get when it can).
"""
import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "03_acceptance_rule.ipynb"
ARTIFACTS = REPO / "build" / "test-artifacts"
RUN_TIMEOUT = 600  # seconds for Run All (quick mode: 20 to 40 s on a 2-core CPU)
CHROME_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1400,1300"]


def find_chromium():
    browser = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
    return browser, shutil.which("chromedriver")


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server over a temporary folder: (base URL, token, root folder)."""
    browser, driver = find_chromium()
    if not (browser and driver):
        pytest.skip("browser test skipped: no Chromium/chromedriver found (as root with apt-get, `make test` installs "
                    "them: apt-get install chromium chromium-driver)")
    tmp = tmp_path_factory.mktemp("lab")
    root = tmp / "root"
    root.mkdir()
    shutil.copy(NOTEBOOK, root / NOTEBOOK.name)
    broken = {"cells": [{"cell_type": "code", "metadata": {}, "execution_count": None, "outputs": [], "source": src}
                        for src in ('print("fine so far")', "1 / 0")],
              "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
              "nbformat": 4, "nbformat_minor": 5}
    (root / "broken.ipynb").write_text(json.dumps(broken))
    settings = tmp / "settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)  # no "official Jupyter news?" toast over the screenshot
    (settings / "notification.jupyterlab-settings").write_text('{"fetchNews": "false", "checkForUpdates": false}')
    env = dict(os.environ, SPECDEC_QUICK="1", HF_HUB_OFFLINE="1")
    for var in ("JUPYTER_RUNTIME_DIR", "JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "IPYTHONDIR"):
        env[var] = str(tmp / var.lower())
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    token = secrets.token_hex(16)
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
           "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
           f"--LabApp.workspaces_dir={tmp / 'workspaces'}", f"--LabApp.user_settings_dir={tmp / 'settings'}",
           "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate", "--LabApp.news_url="]
    if os.geteuid() == 0:
        cmd.append("--allow-root")
    log = open(tmp / "server.log", "w")
    server = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=5)
                break
            except OSError:
                if server.poll() is not None or time.time() > deadline:
                    raise RuntimeError("JupyterLab did not start:\n" + (tmp / "server.log").read_text()[-3000:])
                time.sleep(0.5)
        yield base, token, root
    finally:
        try:  # shuts the kernels down too
            urllib.request.urlopen(urllib.request.Request(f"{base}/api/shutdown", method="POST",
                                                          headers={"Authorization": f"token {token}"}), timeout=10)
            server.wait(20)
        except Exception:
            if server.poll() is None:
                os.killpg(server.pid, signal.SIGTERM)
                try:
                    server.wait(10)
                except subprocess.TimeoutExpired:
                    os.killpg(server.pid, signal.SIGKILL)
                    server.wait()
        log.close()


@pytest.fixture(scope="module")
def page(lab, tmp_path_factory):
    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager never downloads anything
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver = find_chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in CHROME_FLAGS + [f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"]:
        options.add_argument(flag)
    d = webdriver.Chrome(options=options, service=Service(driver))
    try:
        yield d
    finally:
        d.quit()


def wait_for(predicate, timeout, what, poll=0.5):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def js(d, script, *args):
    return d.execute_script(script, *args)


def shutdown_kernels(lab):
    base, token, _ = lab

    def call(path, method="GET"):
        request = urllib.request.Request(base + path, method=method, headers={"Authorization": f"token {token}"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read() or b"null")

    for session in call("/api/sessions"):
        call(f"/api/sessions/{session['id']}", "DELETE")


def open_and_run_all(d, lab, name):
    """Open a notebook in JupyterLab, clear its outputs and run all its cells from the menus; returns the prompts."""
    from selenium.webdriver.common.by import By

    base, token, root = lab
    n_code = sum(c["cell_type"] == "code" for c in json.loads((root / name).read_text())["cells"])
    shutdown_kernels(lab)  # of the notebook opened before, if any
    d.get(f"{base}/lab/tree/{name}?reset&token={token}")  # reset: a fresh workspace, one notebook open
    prompts = "return [...document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell .jp-InputPrompt')].map(e => e.textContent.trim())"
    status = "const e = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook-ExecutionIndicator'); return e && e.dataset.status"
    wait_for(lambda: len(js(d, prompts)) == n_code and js(d, status) == "idle", 120, f"{name} open with an idle kernel")

    def menu(top, command):
        wait_for(lambda: [e for e in d.find_elements(By.CSS_SELECTOR, ".lm-MenuBar-item") if e.text.strip() == top],
                 10, f"menu {top}")[0].click()
        wait_for(lambda: d.find_elements(By.CSS_SELECTOR, f'.lm-Menu-item[data-command="{command}"]'),
                 10, f"menu item {command}")[0].click()

    menu("Edit", "editmenu:clear-all")
    wait_for(lambda: all(p == "[ ]:" for p in js(d, prompts)), 10, "cleared prompts")
    menu("Run", "runmenu:run-all")
    done = lambda: js(d, status) == "idle" and not any(p in ("[*]:", "[ ]:") for p in js(d, prompts))
    wait_for(lambda: done() and (time.sleep(1) or done()), RUN_TIMEOUT, f"Run All Cells in {name}", poll=1)
    return js(d, prompts)


ERRORS = """
const panel = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)');
return [...panel.querySelectorAll('.jp-OutputArea-output')]
  .filter(o => ['application/vnd.jupyter.stderr', 'application/vnd.jupyter.error'].includes(o.dataset.mimeType)
               || o.querySelector('.jupyter-widgets-error-widget, .widget-error')
               || /Error displaying widget|model not found/.test(o.textContent))
  .map(o => o.textContent)
  .filter(t => /Traceback|Error|Exception|model not found/.test(t));
"""


def error_outputs(d):
    return js(d, ERRORS)


def screenshot(d, name):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    d.save_screenshot(str(path))
    return path


def test_an_error_cell_is_detected(page, lab):
    prompts = open_and_run_all(page, lab, "broken.ipynb")
    assert prompts == ["[1]:", "[2]:"]
    errors = error_outputs(page)
    screenshot(page, "browser_broken.png")
    assert len(errors) == 1 and "ZeroDivisionError" in errors[0], errors


def test_notebook_03_runs_in_jupyterlab(page, lab, capsys):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    before = hashlib.sha256(NOTEBOOK.read_bytes()).hexdigest()
    d, start = page, time.time()
    try:
        prompts = open_and_run_all(d, lab, NOTEBOOK.name)
        assert prompts == [f"[{i}]:" for i in range(1, len(prompts) + 1)], prompts
        panel = d.find_element(By.CSS_SELECTOR, ".jp-NotebookPanel:not(.lm-mod-hidden)")

        # the plot: a PNG image in an output area
        images = panel.find_elements(By.CSS_SELECTOR, ".jp-OutputArea-output[data-mime-type='image/png'] img")
        assert images and all(i.get_attribute("src").startswith("data:image/png") for i in images)
        assert all(js(d, "return arguments[0].naturalWidth", i) > 100 for i in images)

        # the step viewer: an ipywidgets slider over the steps and an HTML view, live (a key press moves it)
        sliders = panel.find_elements(By.CSS_SELECTOR, ".jp-OutputArea-output .jupyter-widgets.widget-slider")
        viewers = sum("".join(c["source"]).count("step_viewer(") for c in json.loads(NOTEBOOK.read_text())["cells"]
                      if c["cell_type"] == "code")
        assert viewers >= 1 and len(sliders) == viewers, f"{viewers} step viewers, {len(sliders)} sliders rendered"
        viewer = sliders[0].find_element(By.XPATH, "./ancestor::div[contains(@class, 'widget-vbox')][1]")
        view = viewer.find_element(By.CSS_SELECTOR, ".widget-html-content")
        readout = sliders[0].find_element(By.CSS_SELECTOR, ".widget-readout")
        assert readout.text.strip() == "0" and "step 0:" in view.text and "drafts accepted" in view.text
        js(d, "arguments[0].scrollIntoView({block: 'end'})", viewer)  # the plot above it, the viewer at the bottom
        sliders[0].find_element(By.CSS_SELECTOR, ".noUi-handle").send_keys(Keys.ARROW_RIGHT)
        wait_for(lambda: readout.text.strip() == "1" and "step 1:" in view.text, 30,
                 "the step viewer to show step 1 after a key press on its slider")

        # the quiz: radio buttons and Check buttons
        assert panel.find_elements(By.CSS_SELECTOR, ".jp-OutputArea-output .widget-radio-box input[type=radio]")
        assert [b for b in panel.find_elements(By.CSS_SELECTOR, ".jp-OutputArea-output button") if b.text == "Check"]

        assert not error_outputs(d)
    finally:  # the screenshot is kept whether the checks pass or not
        path = screenshot(d, "browser_notebook03.png")
        with capsys.disabled():
            print(f"\n[browser test] notebook 03 after {time.time() - start:.0f} s in JupyterLab; screenshot: {path}")
    assert hashlib.sha256(NOTEBOOK.read_bytes()).hexdigest() == before, "the committed notebook was modified"
