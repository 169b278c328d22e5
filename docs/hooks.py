"""Build code of the documentation site (mkdocs `hooks:`), three small jobs:

1. Pages show the library's code and the README's measurements without copying them by hand:
   `<!-- code: PATH NAME -->` becomes the source of function/class NAME of file PATH
   (`Class.method` works too) as a code block titled with the file and lines (docs/blender.md);
   `<!-- readme: TITLE -->` becomes the text of the README's section `## TITLE`
   (docs/compare.md); `<!-- notebooks -->` becomes the list of notebooks/*.ipynb with their
   titles (docs/index.md), so a new notebook appears there by itself.
2. Notebook pages show an ipywidgets explorer as the picture of its first state: a static
   site has no kernel to move the controls, and every explorer's output also carries that
   picture (`image/png`). The widget view and the saved widget state are dropped from a
   copy of the notebook that is rendered in its place; the notebook itself is not touched.
   Their table of contents links to the headings' real ids (mkdocs-jupyter leaves inline
   code out of the TOC's anchors but not out of the headings' ids).
3. Pages with formulas (pymdownx.arithmatex) load the MathJax that the notebook pages load
   (mkdocs-jupyter's `custom_mathjax_url`), so formulas look the same everywhere.
"""

from __future__ import annotations

import ast
import json
import posixpath
import re
from pathlib import Path

from mkdocs.plugins import event_priority

ROOT = Path(__file__).resolve().parent.parent  # the repository
CODE_MARK = re.compile(r"<!-- code: (\S+) (\S+) -->")
README_MARK = re.compile(r"<!-- readme: (.+?) -->")
NOTEBOOKS_MARK = "<!-- notebooks -->"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
STATIC_NOTEBOOKS = ROOT / ".cache" / "static-notebooks"  # gitignored, like mkdocs-jupyter's cache


# -- 1. the source of a definition --------------------------------------------------------
def find_definition(path: str, name: str) -> tuple[int, int]:
    """First and last line (1-based) of function or class `name` ("A.b" for a method) in the
    file `path` (relative to the repository). Raises LookupError when there is none."""
    tree = ast.parse((ROOT / path).read_text(), filename=path)
    nodes = tree.body
    node = None
    for part in name.split("."):
        defs = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
        node = next((n for n in nodes if isinstance(n, defs) and n.name == part), None)
        if node is None:
            raise LookupError(f"{path} defines no {name}")
        nodes = node.body
    first = min([node.lineno] + [d.lineno for d in node.decorator_list])
    return first, node.end_lineno


def code_block(path: str, name: str) -> str:
    first, last = find_definition(path, name)
    lines = (ROOT / path).read_text().splitlines()[first - 1 : last]
    title = f"{path}, lines {first}–{last}"
    return f'```python title="{title}" linenums="{first}"\n' + "\n".join(lines) + "\n```"


def readme_section(title: str) -> str:
    """The body of the README's `## title` section, its links made relative to docs/."""
    lines = (ROOT / "README.md").read_text().splitlines()
    if f"## {title}" not in lines:
        raise LookupError(f"README.md has no section '## {title}'")
    start = lines.index(f"## {title}") + 1
    end = next((i for i in range(start, len(lines)) if lines[i].startswith("## ")), len(lines))
    return "\n".join(lines[start:end]).replace("](docs/", "](")


def notebook_list(page_dir: str) -> str:
    """A Markdown list of the notebooks, each linked (from `page_dir`) under its # title."""
    items = []
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        first = json.loads(path.read_text())["cells"][0]["source"]
        title = "".join(first).splitlines()[0].lstrip("# ").strip()
        link = posixpath.relpath(f"notebooks/{path.name}", page_dir or ".")
        items.append(f"* [{title}]({link})")
    return "\n".join(items)


def on_page_markdown(markdown, page, config, files):
    if NOTEBOOKS_MARK in markdown:
        page_dir = posixpath.dirname(page.file.src_uri)
        markdown = markdown.replace(NOTEBOOKS_MARK, notebook_list(page_dir))
    markdown = README_MARK.sub(lambda m: readme_section(m.group(1)), markdown)
    return CODE_MARK.sub(lambda m: code_block(m.group(1), m.group(2)), markdown)


# -- 2. notebooks: explorers as pictures --------------------------------------------------
def static_copy(notebook: dict) -> dict | None:
    """The notebook with widget views replaced by their picture; None if it has none."""
    changed = False
    for cell in notebook.get("cells", []):
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if WIDGET_VIEW in data and "image/png" in data:
                del data[WIDGET_VIEW]
                changed = True
    if not changed:
        return None
    notebook.get("metadata", {}).pop("widgets", None)
    return notebook


@event_priority(-50)  # after mkdocs-jupyter has wrapped the notebook files: set the wrapper's path
def on_files(files, config):
    for file in files:
        if file.src_uri.endswith(".ipynb"):
            notebook = static_copy(json.loads(Path(file.abs_src_path).read_text()))
            if notebook is not None:
                STATIC_NOTEBOOKS.mkdir(parents=True, exist_ok=True)
                copy = STATIC_NOTEBOOKS / Path(file.src_uri).name
                copy.write_text(json.dumps(notebook))
                file.abs_src_path = str(copy)
    return files


HEADING_ID = re.compile(r"<h[1-6][^>]*\bid=\"([^\"]+)\"")


def on_page_content(html, page, config, files):
    if page.file.src_uri.endswith(".ipynb"):
        ids = HEADING_ID.findall(html)
        fix_toc_anchors(page.toc, ids)
    return html


def fix_toc_anchors(items, ids: list[str]) -> None:
    """Point each TOC item whose anchor is no heading id at the heading id whose words hold
    the anchor's words in order (inline code is missing from the anchor, anywhere in it)."""
    for item in items:
        if item.id not in ids:
            words = item.id.split("-")
            item.id = next((i for i in ids if in_order(words, i.split("-"))), item.id)
        fix_toc_anchors(item.children, ids)


def in_order(words: list[str], longer: list[str]) -> bool:
    """Whether `words` appear in `longer` in the same order (gaps allowed)."""
    rest = iter(longer)
    return all(w in rest for w in words)


# -- 3. MathJax on Markdown pages with formulas -------------------------------------------
MATHJAX_CONFIG = """<script type="text/x-mathjax-config">
MathJax.Hub.Config({tex2jax: {inlineMath: [["\\\\(", "\\\\)"]], displayMath: [["\\\\[", "\\\\]"]],
  processEscapes: true, ignoreClass: ".*", processClass: "arithmatex"}, messageStyle: "none"});
</script>"""


def on_post_page(output, page, config):
    if page.file.src_uri.endswith(".ipynb") or 'class="arithmatex"' not in output:
        return output
    url = config["plugins"]["mkdocs-jupyter"].config["custom_mathjax_url"]
    scripts = f'{MATHJAX_CONFIG}\n<script src="{url}"></script>\n'
    return output.replace("</body>", scripts + "</body>", 1)
