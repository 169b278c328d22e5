"""The ipywidgets explorers, live: real JupyterLab, real widget JavaScript, a real slider.

What a learner does with notebook 06: open it in JupyterLab, run the explorer cell, move a
slider, see the picture change. The headless tests of `test_explorers.py` set `.value` in
Python; only this test shows that the widget JavaScript loads in JupyterLab and that a move
in the browser reaches the kernel and comes back as a new picture.

The test writes a one-cell notebook that builds the library's `BlendingExplorer` (explorer
(a) of notebook 06) on four shapes images, starts JupyterLab on a free localhost port with
a random token (its settings and workspaces in a temporary folder), opens the notebook with
headless Chromium, runs the cell, moves the explorer's image slider one step with the
keyboard, and compares screenshots of the output area before and after. The server is shut
down afterwards. The model is the `shapes` preset with untrained heads (no training in the
test; every detection is kept), so the pictures show the machinery, not a trained model.

`BLENDMASK_EDU_LIVE_MODEL=tutorial` uses the notebooks' trained model instead (trained on
first use, see `blendmask_edu.tutorial`): that is how docs/assets/explorer_*.png were made.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
from browser import launch, sync_playwright

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "runs" / "test_artifacts" / "docs"
STARTUP_S = 120  # JupyterLab's server on a busy 2-core machine

UNTRAINED = """\
import torch
from blendmask_edu.config import shapes_preset
from blendmask_edu.data.coco import CocoInstances
from blendmask_edu.data.shapes import make_shapes
from blendmask_edu.data.transforms import build_transforms
from blendmask_edu.modeling.segmenter import InstanceSegmenter
from blendmask_edu.viz.explorers import BlendingExplorer

torch.manual_seed(0)
cfg = shapes_preset()
cfg.model.fcos.score_thresh = 0.0  # untrained heads: keep detections to look at
cfg.model.fcos.max_detections = 5
data = CocoInstances(make_shapes("shapes", 4, 128, 0), build_transforms(cfg.data, train=False))
model = InstanceSegmenter(cfg.model).eval()
BlendingExplorer(model, data, data.class_names)"""

TUTORIAL = """\
from blendmask_edu.tutorial import cached_model, val_dataset
from blendmask_edu.viz.explorers import BlendingExplorer

tm = cached_model()
BlendingExplorer(tm.model, val_dataset(tm.cfg), tm.class_names)"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_notebook(folder: Path) -> Path:
    code = TUTORIAL if os.environ.get("BLENDMASK_EDU_LIVE_MODEL") == "tutorial" else UNTRAINED
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)])
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    path = folder / "explorer.ipynb"
    nbformat.write(nb, path)
    return path


# No news, no update checks, no toasts over the output area.
QUIET_SETTINGS = {"fetchNews": "false", "checkForUpdates": False, "doNotDisturbMode": True}


def start_jupyterlab(folder: Path, port: int, token: str) -> subprocess.Popen:
    settings = folder / ".settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text(json.dumps(QUIET_SETTINGS))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "JUPYTERLAB_SETTINGS_DIR": str(folder / ".settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(folder / ".workspaces"),
        "JUPYTER_RUNTIME_DIR": str(folder / ".runtime"),
    }
    cmd = [
        sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}",
        "--ip=127.0.0.1", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={folder}",
        "--allow-root",  # CI runs as root
        "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--LabApp.extension_manager=readonly",  # no package index lookups
    ]  # fmt: skip
    log = open(folder / "jupyterlab.log", "w")  # noqa: SIM115 (closed with the process)
    return subprocess.Popen(cmd, cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT)


def wait_until_up(proc: subprocess.Popen, base: str, token: str, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_S
    while time.monotonic() < deadline:
        assert proc.poll() is None, "JupyterLab exited:\n" + log.read_text()[-3000:]
        try:
            with urllib.request.urlopen(f"{base}api/status?token={token}", timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(1)
    raise AssertionError(f"JupyterLab not up after {STARTUP_S} s:\n" + log.read_text()[-3000:])


def shut_down(proc: subprocess.Popen, base: str, token: str) -> None:
    try:
        req = urllib.request.Request(f"{base}api/shutdown?token={token}", method="POST")
        urllib.request.urlopen(req, timeout=10).close()
        proc.wait(timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_explorer_slider_redraws_the_picture_in_jupyterlab(tmp_path):
    with sync_playwright() as pw:  # fails with the install command before anything starts
        browser = launch(pw)
        notebook = write_notebook(tmp_path)
        port, token = free_port(), secrets.token_hex(16)
        base = f"http://127.0.0.1:{port}/"
        proc = start_jupyterlab(tmp_path, port, token)
        try:
            wait_until_up(proc, base, token, tmp_path / "jupyterlab.log")
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            errors = []
            page.on("console", lambda m: m.type == "error" and errors.append(m.text))
            page.goto(f"{base}lab/tree/{notebook.name}?token={token}")
            try:
                before, after = run_and_move_slider(page, ARTIFACTS)
            except Exception:
                page.screenshot(path=ARTIFACTS / "jupyterlab_failure.png")
                raise
            seen = list(errors)  # (the shutdown below makes the page's websockets fail)
        finally:
            shut_down(proc, base, token)
            browser.close()
    assert before != after, "moving the slider did not change the picture"
    assert not seen, f"JupyterLab's console errors: {seen}"


def run_and_move_slider(page, artifacts: Path) -> tuple[bytes, bytes]:
    """Run the notebook's cell, then move the explorer's image slider one step to the right;
    returns screenshots of the output area before and after (also saved in `artifacts`)."""
    kernel_idle = ".jp-Notebook-ExecutionIndicator[data-status='idle']"
    page.wait_for_selector(kernel_idle, timeout=STARTUP_S * 1000)  # kernel started, connected
    # Run the cell (Ctrl+Enter: run in place). Right after the kernel connects, a run request is
    # now and then lost on a busy machine (seen: the prompt stays "[ ]:"): press again, as a
    # learner would.
    prompt = page.locator(".jp-Cell .jp-InputPrompt").first
    running_or_ran = r"p => /\[(\*|\d+)\]/.test(p.innerText)"  # "[*]:" or "[1]:"
    for attempt in range(3):
        page.locator(".jp-Notebook .jp-Cell .cm-content").first.click()
        page.keyboard.press("Control+Enter")
        try:
            page.wait_for_function(running_or_ran, arg=prompt.element_handle(), timeout=15_000)
            break
        except Exception:
            if attempt == 2:
                raise
    output = page.locator(".jp-OutputArea-output:has(.widget-image)").first  # the explorer
    picture = output.locator(".widget-image")
    try:
        picture.wait_for(state="visible", timeout=STARTUP_S * 1000)
    except Exception as e:  # say what the cell printed instead (a traceback, a plain picture)
        text = page.locator(".jp-Cell").first.inner_text()
        raise AssertionError(f"no explorer picture appeared; the cell shows:\n{text}") from e
    page.wait_for_function(
        "img => img.complete && img.naturalWidth > 0", arg=picture.element_handle()
    )
    artifacts.mkdir(parents=True, exist_ok=True)
    before = output.screenshot(path=artifacts / "explorer_before.png")
    first_src = picture.get_attribute("src")

    slider = output.locator(".widget-slider").first
    slider.locator(".noUi-handle").focus()
    page.keyboard.press("ArrowRight")  # image 0 → image 1, as a learner's arrow key
    page.wait_for_function(
        "([img, src]) => img.src !== src && img.complete && img.naturalWidth > 0",
        arg=[picture.element_handle(), first_src],
        timeout=60_000,
    )
    after = output.screenshot(path=artifacts / "explorer_after.png")
    readout = slider.locator(".widget-readout").inner_text()
    assert readout.strip() == "1", f"the slider reads {readout!r} after one step right"
    return before, after
