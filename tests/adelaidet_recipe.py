"""The recipe of the fidelity fixture's random weights, blendmask_edu/engine/adelaidet_recipe.py,
loaded by its path: record_adelaidet.py imports it from here outside this repository's
environment (detectron2 + AdelaiDet, without blendmask_edu installed), and it needs only numpy."""

from __future__ import annotations

import importlib.util
from pathlib import Path

_PATH = Path(__file__).resolve().parent.parent / "blendmask_edu" / "engine" / "adelaidet_recipe.py"
_spec = importlib.util.spec_from_file_location("_adelaidet_recipe", _PATH)
_recipe = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_recipe)

init_value = _recipe.init_value
random_weights = _recipe.random_weights
