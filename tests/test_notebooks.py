"""The tutorial notebooks: committed with the outputs of a clean run, and every one of them runs.

* Each committed `notebooks/NN_*.ipynb` has the cells of its source `notebooks/src/NN_*.py`
  and the outputs of one top-to-bottom run: execution counts 1, 2, 3, ... in order, no error,
  at least one picture.
* Each notebook executes without error in fast mode (nbclient). They share one cached model,
  trained once per test session in a temporary folder (so the test neither needs nor touches
  runs/tutorial_cache).
"""

from __future__ import annotations

import importlib.util
import os
import re
import tempfile
from pathlib import Path

import nbformat
import pytest

from blendmask_edu import tutorial

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
_spec = importlib.util.spec_from_file_location("notebook_build", NOTEBOOKS / "build.py")
build = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(build)
SOURCES = sorted((NOTEBOOKS / "src").glob("[0-9][0-9]_*.py"))


def _code_cells(nb):
    return [c for c in nb.cells if c.cell_type == "code"]


def _pictures(nb) -> int:
    return sum("image/png" in o.get("data", {}) for c in _code_cells(nb) for o in c.outputs)


def test_there_are_notebooks():
    names = [s.stem[:2] for s in SOURCES]
    assert names == ["00", "01", "02", "03", "04", "05", "06", "07", "08", "09", "10", "11"]


@pytest.mark.parametrize("src", SOURCES, ids=lambda p: p.stem)
def test_committed_notebook_is_a_clean_run_of_its_source(src):
    committed = nbformat.read(NOTEBOOKS / f"{src.stem}.ipynb", as_version=4)
    fresh = build.build(src)
    assert [(c.cell_type, c.source) for c in committed.cells] == [
        (c.cell_type, c.source) for c in fresh.cells
    ], "the .ipynb is out of date: run `python notebooks/build.py` (make notebooks)"
    code = _code_cells(committed)
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1))
    errors = [o for c in code for o in c.outputs if o.output_type == "error"]
    assert not errors, errors[0].get("evalue")
    assert _pictures(committed) >= 1


def test_notebooks_open_with_what_you_will_learn_and_end_with_exercises():
    for src in SOURCES:
        nb = build.build(src)
        text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
        assert "**What you will learn**" in nb.cells[0].source, src.name
        assert "## Summary" in text and "## Exercises" in text, src.name
        solutions = [c for c in nb.cells if "solution" in c.metadata.get("tags", [])]
        assert len(solutions) >= 2, src.name
        assert all(c.metadata["jupyter"]["source_hidden"] for c in solutions)


def test_percent_parser_makes_markdown_code_and_collapsed_solution_cells():
    cells = build.parse_percent(
        '# %% [markdown]\n# # Title\n# text\n\n# %%\nx = 1\n\n# %% tags=["solution"]\nprint(x)\n'
    )
    assert [c.cell_type for c in cells] == ["markdown", "code", "code"]
    assert cells[0].source == "# Title\ntext" and cells[1].source == "x = 1"
    assert cells[2].metadata["jupyter"] == {"source_hidden": True, "outputs_hidden": True}


# A machine's absolute folders; /tmp/ may appear in prose as an example, not in an output.
ABSOLUTE = re.compile(r"(?<![\w.~$])/(home|root|work|tmp|Users)/")


def _output_text(output) -> str:
    """All the text of one output: stream, text/* data (not pictures), error and traceback."""
    parts = [output.get("text", ""), output.get("evalue", "")] + output.get("traceback", [])
    parts += [v for k, v in output.get("data", {}).items() if k.startswith("text/")]
    return "\n".join(p if isinstance(p, str) else "".join(p) for p in parts)


@pytest.mark.parametrize("src", SOURCES, ids=lambda p: p.stem)
def test_committed_outputs_show_no_absolute_path_of_the_machine(src):
    committed = nbformat.read(NOTEBOOKS / f"{src.stem}.ipynb", as_version=4)
    found = [
        (n, m.group(0), text[max(m.start() - 40, 0) : m.end() + 40])
        for n, cell in enumerate(committed.cells)
        if cell.cell_type == "code"
        for output in cell.outputs
        for text in [_output_text(output)]
        for m in ABSOLUTE.finditer(text)
    ]
    assert not found, f"print paths with tutorial.shown(): cell, match, context = {found[:3]}"


def test_the_absolute_path_check_and_shown():
    assert ABSOLUTE.search("using /work/wt/runs/tutorial_cache") is not None
    assert ABSOLUTE.search("wrote /tmp/tmpab/predictions.json") is not None
    assert ABSOLUTE.search("into runs/tutorial_cache/shapes_fast and ~/x, $TMPDIR/y") is None
    assert tutorial.shown(tutorial.REPO / "runs" / "x") == str(Path("runs") / "x")
    assert tutorial.shown(Path.home() / "data" / "y").startswith(("~/", "$TMPDIR/", "runs"))
    tmp = Path(tempfile.mkdtemp())
    assert tutorial.shown(tmp / "z") == f"$TMPDIR/{tmp.name}/z"
    assert not ABSOLUTE.search(tutorial.shown(tmp / "z"))


@pytest.fixture(scope="session")
def tutorial_cache(tmp_path_factory):
    """Train the notebooks' shared model once for the session, in fast mode."""
    saved = {k: os.environ.get(k) for k in (tutorial.CACHE_ENV, tutorial.FULL_ENV)}
    os.environ[tutorial.CACHE_ENV] = str(tmp_path_factory.mktemp("tutorial_cache"))
    os.environ.pop(tutorial.FULL_ENV, None)
    tutorial.cached_model()
    yield Path(os.environ[tutorial.CACHE_ENV])
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.mark.slow
@pytest.mark.parametrize("src", SOURCES, ids=lambda p: p.stem)
def test_notebook_runs_in_fast_mode(src, tutorial_cache):
    nb = build.build(src)
    build.execute(nb)  # raises CellExecutionError, with the cell and traceback, on a failure
    assert [c.execution_count for c in _code_cells(nb)][-1] == len(_code_cells(nb))
    assert _pictures(nb) >= 1
    assert "shapes_fast" in {p.name for p in tutorial_cache.iterdir()}
