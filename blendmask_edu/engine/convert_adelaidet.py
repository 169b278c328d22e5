"""`blendmask-edu convert-adelaidet IN OUT [--config NAME]`: AdelaiDet's BlendMask weights →
our checkpoint, loadable by `predict`, `evaluate` and the notebooks.

The input comes from a third-party mirror, so it is read without running any of its code:

* `.pth` (torch): `torch.load(weights_only=True)`, which only rebuilds tensors and plain
  containers; numpy arrays are allowed by name, nothing else;
* `.pkl` (detectron2's numpy pickles): `SafeUnpickler` below, which rebuilds numpy arrays and
  refuses every other class or function by its name.

Every key is renamed by the table in `modeling/adelaidet_keys.py`; a key of the file that no
row renames, a key of our model that no key of the file fills, or a tensor of the wrong
shape is an error that lists them all.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from ..config import DCN_CONFIGS, Config, get_preset
from ..data.coco_categories import coco_categories
from ..modeling.adelaidet_keys import key_table, rename
from .checkpoint import save_checkpoint

# AdelaiDet config name (configs/BlendMask/NAME.yaml) → our preset of the same model.
ADELAIDET_CONFIGS = {
    "R_50_1x": "coco_r50_1x",
    "R_50_3x": "coco_r50_3x",
    "R_101_3x": "coco_r101_3x",
    "550_R_50_3x": "coco_550_r50_3x",
    "RT_R_50_4x_syncbn_shtw": "coco_rt_r50_4x",
}
# Published, but not expressible here without more modules: refused with the reason.
NOT_SUPPORTED = {
    "RT_R_50_4x_bn-head_syncbn_shtw": "its FCOS head has one BatchNorm per FPN level",
    "DLA_34_syncbn_4x": "the DLA-34 backbone is not implemented",
}

# What a numpy pickle may name: array reconstruction, dtypes, and the containers.
SAFE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("collections", "OrderedDict"),
    ("_codecs", "encode"),  # Python 2 pickles store array bytes as latin-1 text
}


class SafeUnpickler(pickle.Unpickler):
    """An Unpickler that builds only numpy arrays and plain containers."""

    def find_class(self, module: str, name: str):
        if (module, name) in SAFE_GLOBALS or (
            module == "numpy.dtypes" and name.endswith("DType")  # numpy ≥ 1.25 dtype classes
        ):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f"refusing to load {module}.{name}: a weights file needs only numpy arrays"
        )


def read_adelaidet_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The model weights of a detectron2/AdelaiDet checkpoint → {key: tensor}."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    if path.suffix == ".pkl":
        with open(path, "rb") as f:
            obj = SafeUnpickler(f, encoding="latin1").load()
    else:
        safe = [np.ndarray, np.dtype, np.dtypes.Float32DType, np.dtypes.Int64DType]
        try:
            with torch.serialization.safe_globals(safe + _reconstruct_functions()):
                obj = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            raise ValueError(f"{path}: refused, it holds more than weights ({err})") from err
    state = obj.get("model", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a dict with a 'model' dict of weights")
    out = {}
    for key, value in state.items():
        if isinstance(value, np.ndarray):
            value = torch.from_numpy(np.ascontiguousarray(value))
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"{path}: {key} is a {type(value).__name__}, not an array")
        out[key] = value
    return out


def _reconstruct_functions() -> list:
    """numpy's array-rebuilding function (numpy._core in numpy 2, numpy.core before)."""
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct
    return [_reconstruct]


def preset_for(config: str) -> Config:
    """Our preset equal to AdelaiDet's `configs/BlendMask/<config>.yaml`."""
    name = config.removesuffix(".yaml").split("/")[-1]
    if name in DCN_CONFIGS or "dcn" in name.lower():
        raise ValueError(
            f"{name}: deformable convolutions (DCN) need compiled ops; not supported. "
            f"Supported: {', '.join(ADELAIDET_CONFIGS)}"
        )
    if name in NOT_SUPPORTED:
        raise ValueError(f"{name}: not supported ({NOT_SUPPORTED[name]})")
    if name not in ADELAIDET_CONFIGS:
        raise ValueError(f"AdelaiDet config {name!r}: supported are {', '.join(ADELAIDET_CONFIGS)}")
    return get_preset(ADELAIDET_CONFIGS[name])


def convert_state_dict(
    theirs: dict[str, torch.Tensor], ours: dict[str, torch.Tensor], bottom_num_convs: int = 3
) -> dict[str, torch.Tensor]:
    """Rename every AdelaiDet key by the table → a complete state_dict for our model, whose
    keys and shapes are `ours`. Raises listing every unmatched key and wrong shape."""
    table = key_table(bottom_num_convs)
    converted, no_row = {}, []
    for key, value in theirs.items():
        new = rename(key, table)
        if new is None or new not in ours:
            no_row.append(key if new is None else f"{key} → {new} (no such key in our model)")
            continue
        converted[new] = value
    not_filled = [k for k in ours if k not in converted]
    wrong = [
        f"{k}: {tuple(v.shape)} ≠ ours {tuple(ours[k].shape)}"
        for k, v in converted.items()
        if v.shape != ours[k].shape
    ]
    problems = []
    if no_row:
        problems.append(
            f"{len(no_row)} key(s) of the file have no place in our model:\n  "
            + "\n  ".join(no_row)
        )
    if not_filled:
        problems.append(
            f"{len(not_filled)} key(s) of our model are not in the file:\n  "
            + "\n  ".join(not_filled)
        )
    if wrong:
        problems.append(f"{len(wrong)} tensor(s) of the wrong shape:\n  " + "\n  ".join(wrong))
    if problems:
        raise ValueError("cannot convert:\n" + "\n".join(problems))
    return {k: converted[k].to(ours[k].dtype) for k in ours}


def convert_adelaidet(src: str | Path, dst: str | Path, config: str = "R_50_1x") -> dict:
    """Read `src`, convert it for `config`, write our checkpoint to `dst`; returns it."""
    from ..modeling.segmenter import InstanceSegmenter

    cfg = preset_for(config)
    theirs = read_adelaidet_weights(src)
    model = InstanceSegmenter(cfg.model)
    state = convert_state_dict(theirs, model.state_dict(), cfg.model.blender.bottom_num_convs)
    model.load_state_dict(state, strict=True)
    ckpt = {
        "format": 1,
        "model": state,
        "config": cfg.to_dict(),
        "categories": coco_categories(),
        "source": {"file": Path(src).name, "adelaidet_config": config},
    }
    save_checkpoint(ckpt, dst)
    print(f"converted {len(theirs)} tensors of {src} (AdelaiDet {config}) → {dst}")
    return ckpt
