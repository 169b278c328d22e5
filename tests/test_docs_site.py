"""The documentation site (mkdocs.yml, docs/): it builds with `--strict`, its pages keep their
promises, and every page works in a real browser.

* `mkdocs build --strict` (what `make docs` runs) passes: no broken link, missing reference,
  missing image or docstring the API reference cannot read.
* Every notebook has its line in the nav, every module its `:::` block in the API reference,
  and every file and function named on the paper map exists.
* Headless Chromium visits every page of the built site, served on a free localhost port:
  no console error, no broken image, no dead internal link (nor anchor), formulas typeset,
  nothing fetched from the internet. One screenshot per page lands in
  runs/test_artifacts/docs/ (the home and blender pictures in docs/assets/ come from there).
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
import yaml
from browser import block_the_internet, launch, require_mathjax, serve, sync_playwright

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
ARTIFACTS = ROOT / "runs" / "test_artifacts" / "docs"

_spec = importlib.util.spec_from_file_location("docs_hooks", DOCS / "hooks.py")
hooks = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(hooks)


def build_site(site_dir: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    cmd = [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site_dir)]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    site_dir = tmp_path_factory.mktemp("site")
    result = build_site(site_dir)
    assert result.returncode == 0, "mkdocs build --strict failed:\n" + result.stderr[-4000:]
    return site_dir


def nav_entries(nav) -> list[str]:
    """Every page path of mkdocs.yml's nav, sections flattened."""
    if isinstance(nav, str):
        return [nav]
    if isinstance(nav, dict):
        return [p for value in nav.values() for p in nav_entries(value)]
    return [p for item in nav for p in nav_entries(item)]


def test_strict_build_has_every_page(site):
    pages = {p.parent.relative_to(site).as_posix() for p in site.rglob("index.html")}
    nav = yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"]
    expected = {"."} | {
        e.removesuffix(".md").removesuffix(".ipynb").removesuffix("/index")
        for e in nav_entries(nav)
        if e != "index.md"
    }
    assert pages == expected
    blender = (site / "blender" / "index.html").read_text()
    first, last = hooks.find_definition("blendmask_edu/modeling/blender.py", "blend")
    assert f"blender.py, lines {first}–{last}" in blender  # the library's code, by name
    compare = (site / "compare" / "index.html").read_text()
    assert "<table>" in compare and "compare_comparison.png" in compare  # README's results


def test_every_notebook_has_a_line_in_the_nav():
    nav = nav_entries(yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"])
    notebooks = sorted(f"notebooks/{p.name}" for p in (ROOT / "notebooks").glob("*.ipynb"))
    assert notebooks, "no notebooks found"
    missing = [n for n in notebooks if n not in nav]
    assert not missing, f"add them to the Notebooks section of mkdocs.yml's nav: {missing}"


def test_every_module_is_in_the_api_reference():
    package = ROOT / "blendmask_edu"
    modules = {
        ".".join(p.relative_to(ROOT).with_suffix("").parts)
        for p in package.rglob("*.py")
        if p.name != "__init__.py"
    }
    documented = set()
    for page in (DOCS / "reference").glob("*.md"):
        documented |= set(re.findall(r"^::: (\S+)$", page.read_text(), flags=re.M))
    assert documented == modules, (
        f"add to docs/reference/: {sorted(modules - documented)}; "
        f"gone from the package: {sorted(documented - modules)}"
    )


def test_every_file_and_function_on_the_paper_map_exists():
    text = (DOCS / "paper-map.md").read_text()
    refs = re.findall(r"`((?:blendmask_edu|benchmarks)/[\w/]+\.py)(?:::([\w.]+))?`", text)
    assert len(refs) >= 30  # the page names the code of every section it maps
    for path, name in refs:
        assert (ROOT / path).is_file(), f"paper-map.md: {path} does not exist"
        if name:
            hooks.find_definition(path, name)  # LookupError when the name is gone
    for eq in ("Eq. 1", "Eq. 2", "Eq. 3", "Eq. 4"):
        assert f"**{eq}**" in text


def test_source_and_readme_markers_resolve():
    assert hooks.find_definition("blendmask_edu/modeling/blender.py", "blend")[0] > 1
    with pytest.raises(LookupError):
        hooks.find_definition("blendmask_edu/modeling/blender.py", "no_such_function")
    with pytest.raises(LookupError):
        hooks.readme_section("No such section")
    listed = hooks.notebook_list("").splitlines()  # the home page's list of notebooks
    notebooks = sorted((ROOT / "notebooks").glob("*.ipynb"))
    assert len(listed) == len(notebooks) and f"(notebooks/{notebooks[0].name})" in listed[0]
    assert listed[0].startswith("* [00 · ")
    block = hooks.code_block("blendmask_edu/modeling/blendmask.py", "BlendMaskBranch.forward_test")
    assert block.startswith("```python") and "def forward_test(" in block


def test_explorer_outputs_become_their_picture():
    view = {"model_id": "abc", "version_major": 2, "version_minor": 0}
    nb = {
        "metadata": {"widgets": {"state": {}}},
        "cells": [{"outputs": [{"data": {hooks.WIDGET_VIEW: view, "image/png": "iVBOR"}}]}],
    }
    static = hooks.static_copy(nb)
    assert static["cells"][0]["outputs"][0]["data"] == {"image/png": "iVBOR"}
    assert "widgets" not in static["metadata"]
    assert hooks.static_copy({"metadata": {}, "cells": [{"outputs": []}]}) is None


# -- in the browser -----------------------------------------------------------------------
MATHJAX_DONE = """() => !window.MathJax || (MathJax.isReady === true && MathJax.Hub.queue.pending === 0
    && MathJax.Hub.queue.running === 0)"""
BROKEN_IMAGES = (
    "imgs => imgs.filter(i => !i.complete || i.naturalWidth === 0).map(i => i.src.slice(0, 80))"
)

# Text that is still TeX after MathJax ran (a formula MathJax did not find), outside code.
RAW_TEX = r"""() => {
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  const raw = [];
  while (walker.nextNode()) {
    const node = walker.currentNode;
    if (node.parentElement.closest("pre, code, script, style")) continue;
    const m = node.textContent.match(/\\(mathbf|mathbb|operatorname|frac|sum|begin|times)\b/);
    if (m) raw.push(node.textContent.trim().slice(0, 60));
  }
  return raw;
}"""


def dead_link(site: Path, base: str, href: str) -> str | None:
    """Why `href` (a link on a page of the site served at `base`) is dead, or None."""
    url = urlparse(href)
    path = site / unquote(url.path).lstrip("/")
    if path.is_dir():
        path = path / "index.html"
    if not path.is_file():
        return f"{href}: no such file"
    if url.fragment and path.suffix == ".html":
        anchor = re.escape(unquote(url.fragment))
        if not re.search(rf"""\b(id|name)=["']?{anchor}["'\s>]""", path.read_text()):
            return f"{href}: no anchor #{url.fragment}"
    return None


def test_every_page_in_a_browser(site):
    require_mathjax()
    pages = sorted(p.parent.relative_to(site).as_posix() for p in site.rglob("index.html"))
    assert len(pages) >= 20
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    problems, refused, events = [], [], []
    with sync_playwright() as pw, serve(site) as base:
        browser = launch(pw)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.on("console", lambda m: m.type == "error" and events.append(f"console: {m.text}"))
        page.on("pageerror", lambda e: events.append(f"page error: {e}"))
        page.on("response", lambda r: r.status >= 400 and events.append(f"{r.status} {r.url}"))
        block_the_internet(page, refused)
        for rel in pages:
            events.clear()
            url = base if rel == "." else f"{base}{rel}/"
            page.goto(url, wait_until="load")
            page.wait_for_function(MATHJAX_DONE, timeout=60_000)
            found = list(events)
            found += [
                f"broken image {src}" for src in page.eval_on_selector_all("img", BROKEN_IMAGES)
            ]
            links = page.eval_on_selector_all("a[href]", "as => as.map(a => a.href)")
            found += [d for h in links if h.startswith(base) and (d := dead_link(site, base, h))]
            bad_math = page.locator(".noError, .mjx-merror, .MathJax_Error").count()
            found += [f"{bad_math} formulas did not typeset"] if bad_math else []
            found += [f"raw TeX: {text!r}" for text in page.evaluate(RAW_TEX)]
            problems += [f"{rel}: {p}" for p in found]
            height = page.evaluate("document.documentElement.scrollHeight")
            clip = {"x": 0, "y": 0, "width": 1280, "height": min(height, 6000)}
            name = "home" if rel == "." else rel.replace("/", "__")
            page.screenshot(path=ARTIFACTS / f"{name}.png", full_page=True, clip=clip)
        page.goto(f"{base}blender/", wait_until="load")
        page.wait_for_function(MATHJAX_DONE, timeout=60_000)
        typeset = page.locator(".MathJax_CHTML").count()
        browser.close()
    assert not refused, f"pages asked the internet for {sorted(set(refused))}"
    assert not problems, "\n".join(problems)
    assert typeset >= 10, f"the blender page shows {typeset} typeset formulas"
