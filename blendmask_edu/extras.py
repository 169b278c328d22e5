"""Optional dependencies, imported only where they are used, with the extra that installs them.

The core package (train, evaluate, predict) needs neither Jupyter nor widgets; the notebooks'
helpers do. `require("ipywidgets")` imports it or says which extra to install.
"""

from __future__ import annotations

import importlib
from types import ModuleType

EXTRA_OF = {"ipywidgets": "notebooks", "IPython": "notebooks", "skimage": "dev"}


def require(module: str) -> ModuleType:
    """`import module`, or a ModuleNotFoundError that names the pip extra providing it."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        top = module.split(".")[0]
        extra = EXTRA_OF.get(top, "notebooks")
        raise ModuleNotFoundError(
            f"{module} is not installed; it comes with blendmask_edu's '{extra}' extra: "
            f"pip install 'blendmask_edu[{extra}]' (from a clone: pip install -e '.[{extra}]')",
            name=top,
        ) from err
