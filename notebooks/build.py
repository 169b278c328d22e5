"""Build the tutorial notebooks from their readable sources, and run them.

The source of every notebook is a "percent" script in notebooks/src/, read with jupytext
(https://jupytext.readthedocs.io; the format VS Code and PyCharm run cell by cell too): cells
start with a marker line,

    # %% [markdown]                a markdown cell; each line below starts with "# "
    # %%                           a code cell
    # %% tags=["solution"]         a code cell collapsed in Jupyter (an exercise's solution)

    python notebooks/build.py                 # .ipynb from the sources, then execute in place
    python notebooks/build.py --no-execute    # only write the .ipynb (no outputs)
    python notebooks/build.py 03 06           # only notebooks whose name starts so

Executing uses nbclient with the `python3` kernel of this interpreter, the notebook's folder
as working directory and this checkout first on PYTHONPATH, and prints each notebook's wall
time and the CPU time of its kernel (and the kernel's children): on a busy machine the wall
time says little, the CPU time still says how much work a notebook is.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

import nbformat

HERE = Path(__file__).resolve().parent
SRC = HERE / "src"
REPO = HERE.parent
KERNEL = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}


SOLUTION = "solution"  # the tag of an exercise's solution cell


def parse_percent(text: str) -> list[nbformat.NotebookNode]:
    """A percent script → notebook cells, by jupytext. A cell tagged "solution" is collapsed
    (source and outputs hidden in JupyterLab); cells keep no other metadata."""
    import jupytext

    cells = []
    for cell in jupytext.reads(text, fmt="py:percent").cells:
        tags = cell.metadata.get("tags", [])
        if cell.cell_type == "code":
            new = nbformat.v4.new_code_cell(cell.source)
            if SOLUTION in tags:
                new.metadata = {"tags": [SOLUTION],
                                "jupyter": {"source_hidden": True, "outputs_hidden": True}}  # fmt: skip
        else:
            new = nbformat.v4.new_markdown_cell(cell.source)
        cells.append(new)
    return cells


def build(src: Path) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.cells = parse_percent(src.read_text())
    nb.metadata = {"kernelspec": KERNEL, "language_info": {"name": "python"}}
    return nb


def execute(nb: nbformat.NotebookNode, timeout: int = 900) -> None:
    """Run `nb` top to bottom in place (a fresh kernel; the notebook folder as cwd)."""
    from nbclient import NotebookClient

    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(REPO)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    )
    os.environ.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    client = NotebookClient(
        nb,
        timeout=timeout,
        startup_timeout=300,  # a busy machine can take over a minute to start a kernel
        kernel_name="python3",
        resources={"metadata": {"path": str(HERE)}},
    )
    client.execute()


def _children_cpu() -> float:
    """User + system seconds of the finished child processes (the kernels) so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("prefixes", nargs="*", help="only notebooks whose name starts with these")
    p.add_argument("--no-execute", action="store_true")
    args = p.parse_args(argv)
    sources = sorted(SRC.glob("[0-9][0-9]_*.py"))
    if args.prefixes:
        sources = [s for s in sources if any(s.stem.startswith(x) for x in args.prefixes)]
    total = total_cpu = 0.0
    for src in sources:
        nb = build(src)
        start, cpu_start = time.perf_counter(), _children_cpu()
        if not args.no_execute:
            execute(nb)
        seconds, cpu = time.perf_counter() - start, _children_cpu() - cpu_start
        total, total_cpu = total + seconds, total_cpu + cpu
        nbformat.write(nb, HERE / f"{src.stem}.ipynb")
        timing = f"  {seconds:6.1f} s wall, {cpu:6.1f} s CPU"
        print(f"{src.stem}.ipynb" + ("" if args.no_execute else timing), flush=True)
    if not args.no_execute:
        print(
            f"all {len(sources)} notebooks: {total / 60:.1f} min wall, {total_cpu / 60:.1f} min CPU"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
