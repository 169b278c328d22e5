"""Packaging: compatible ranges in pyproject.toml, the tested pins in constraints.txt only,
declared dependencies for every import, the license, `__version__`, `python -m`."""

from __future__ import annotations

import ast
import functools
import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import blendmask_edu

tomllib = pytest.importorskip("tomllib")  # Python ≥ 3.11 (the version `make` uses)

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def requirements(group: str | None = None) -> dict[str, Requirement]:
    """The core dependencies (group None) or an extra's, by canonical name."""
    lines = (
        PYPROJECT["dependencies"] if group is None else PYPROJECT["optional-dependencies"][group]
    )
    reqs = [Requirement(line) for line in lines]
    return {canonicalize_name(r.name): r for r in reqs}


def constraint_pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version.strip()
    return pins


def test_pyproject_ranges_admit_the_constraints_pins():
    core, pins = requirements(), constraint_pins()
    assert {"torch", "torchvision"} <= set(pins)
    for name, version in pins.items():
        assert name in core, f"constraints.txt pins {name}, which pyproject does not depend on"
        assert core[name].specifier.contains(version, prereleases=True), (name, version)


def test_torch_is_pinned_in_one_place_only():
    for name in ("torch", "torchvision"):  # a range in pyproject, not one version
        spec = requirements()[name].specifier
        assert not any(s.operator == "==" for s in spec), f"pyproject pins {name}: {spec}"
        assert len(spec) >= 2, f"{name}: give a lower and an upper bound, not {spec}"
    makefile = (ROOT / "Makefile").read_text()
    assert "-c constraints.txt" in makefile
    exact = re.compile(r"\btorch(vision)?==\d")
    for path in [ROOT / "Makefile", ROOT / "README.md", *ROOT.glob("environment*.y*ml")]:
        assert not exact.search(path.read_text()), f"{path.name} repeats an exact torch pin"


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def _third_party(paths) -> dict[str, set[str]]:
    """Top-level module → the files importing it, leaving out the standard library and our own
    modules (the package, the test helpers, the benchmark scripts)."""
    local = {p.stem for p in [*ROOT.glob("tests/*.py"), *ROOT.glob("benchmarks/*.py")]}
    local |= {"blendmask_edu", "__future__"}
    found: dict[str, set[str]] = {}
    for path in paths:
        for module in _imported_modules(path) - local - set(sys.stdlib_module_names):
            found.setdefault(module, set()).add(str(path.relative_to(ROOT)))
    return found


@functools.cache
def _module_to_distributions() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()  # reads every installed distribution


def _distributions(module: str) -> set[str]:
    dists = _module_to_distributions().get(module, [])
    assert dists, f"{module} is imported but not installed"
    return {canonicalize_name(d) for d in dists}


def test_every_import_is_declared():
    core = set(requirements())
    everything = core | {
        n for group in PYPROJECT["optional-dependencies"] for n in requirements(group)
    }
    everything |= {"mkdocs", "mkdocs-material"}  # docs/hooks.py: mkdocs comes with mkdocs-material
    for module, files in _third_party(ROOT.glob("blendmask_edu/**/*.py")).items():
        assert _distributions(module) & core, f"{module} ({sorted(files)}): not a core dependency"
    others = [*ROOT.glob("tests/*.py"), *ROOT.glob("benchmarks/*.py"), ROOT / "notebooks/build.py",
              ROOT / "docs/hooks.py"]  # fmt: skip
    for module, files in _third_party(others).items():
        assert _distributions(module) & everything, f"{module} ({sorted(files)}): not declared"


def test_license_and_version():
    assert PYPROJECT["license"] == "MIT"  # an SPDX expression (PEP 639)
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License") and "blendmask_edu authors" in text
    assert blendmask_edu.__version__ == PYPROJECT["version"]


def test_python_dash_m_runs_the_command():
    done = subprocess.run(
        [sys.executable, "-m", "blendmask_edu", "make-shapes", "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert done.returncode == 0 and "--num-images" in done.stdout


def test_explorers_name_the_extra_without_ipywidgets(monkeypatch):
    monkeypatch.setitem(sys.modules, "ipywidgets", None)  # as if it were not installed
    monkeypatch.delitem(sys.modules, "blendmask_edu.viz.explorers", raising=False)
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'blendmask_edu\[notebooks\]'"):
        import blendmask_edu.viz.explorers  # noqa: F401
