"""Deterministic random weights for AdelaiDet's BlendMask, in plain numpy (numpy only, so
that tests/adelaidet_recipe.py can load this file by its path outside our environment).

The fidelity test (tests/test_adelaidet_fidelity.py) compares our model with AdelaiDet's own
code on the same weights. The weights (~140 MB) are not committed: both sides rebuild them
from a seed with this recipe — AdelaiDet's side in tests/data/adelaidet/record_adelaidet.py,
ours in the test — one generator drawn key after key in sorted order. Notebook 11 runs on the
same weights when the official ones are not there (`tutorial.adelaidet_fixture`). The scales keep activations of
a random ResNet-50 + FPN near unit size, and the class bias lets a few locations pass FCOS'
score threshold, so that a random model still makes detections and masks to compare.
"""

from __future__ import annotations

import numpy as np


def init_value(key: str, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    if key.endswith("num_batches_tracked"):
        return np.zeros(shape, dtype=np.int64)
    if key.endswith("running_mean"):
        value = rng.normal(0.0, 0.1, shape)
    elif key.endswith("running_var"):
        value = rng.uniform(0.5, 2.0, shape)
    elif len(shape) == 4:  # conv weight [out, in, kh, kw]
        std = (1.0 / (shape[1] * shape[2] * shape[3])) ** 0.5
        if "stem" in key:
            std /= 50.0  # pixels are 0..255 minus the mean, not unit-sized
        if "bbox_pred" in key:
            std *= 0.3  # box sizes vary around the bias below
        if "basis_module.tower.5" in key or "top_layer" in key:
            std *= 4.0  # bases and attentions of a few units: masks with a clear inside
        value = rng.normal(0.0, std, shape)
    elif key.endswith("weight"):  # a norm's scale
        value = rng.uniform(0.5, 1.5, shape)
    elif "cls_logits" in key:  # class bias: P(class) ≈ 1 %, a few pass the threshold
        value = rng.normal(-5.2, 0.1, shape)
    elif "bbox_pred" in key:  # distances l, t, r, b of 2..8 strides
        value = rng.uniform(2.0, 8.0, shape)
    else:  # other biases
        value = rng.normal(0.0, 0.1, shape)
    return value.astype(np.float32)


def random_weights(shapes: dict[str, tuple[int, ...]], seed: int) -> dict[str, np.ndarray]:
    """{key: array} for every key of `shapes` (AdelaiDet's names), drawn in sorted key order."""
    rng = np.random.default_rng(seed)
    return {key: init_value(key, tuple(shapes[key]), rng) for key in sorted(shapes)}
