"""Small builders shared by the tests (importable: pytest puts tests/ on sys.path)."""

from __future__ import annotations

import numpy as np
import torch


def box_mask(h: int, w: int, box) -> torch.Tensor:
    m = torch.zeros(h, w, dtype=torch.uint8)
    x0, y0, x1, y1 = box
    m[y0:y1, x0:x1] = 1
    return m


def instance_target(boxes: list, labels: list, size=(64, 64)) -> dict:
    if not boxes:
        return {
            "boxes": torch.zeros(0, 4),
            "labels": torch.zeros(0, dtype=torch.long),
            "masks": torch.zeros(0, *size, dtype=torch.uint8),
        }
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32),
        "labels": torch.tensor(labels),
        "masks": torch.stack([box_mask(*size, b) for b in boxes]),
    }


def write_model_checkpoint(path, cfg, seed: int = 0, config: dict | None = None):
    """A checkpoint of a randomly initialised `InstanceSegmenter(cfg.model)`, as `evaluate` and
    `predict` read it (model, config, categories): for tests that need a model, not a trained
    one. `config` replaces the saved config dict (another version's, say). → path."""
    from blendmask_edu.engine.checkpoint import save_checkpoint
    from blendmask_edu.modeling.segmenter import InstanceSegmenter

    torch.manual_seed(seed)
    model = InstanceSegmenter(cfg.model)
    names = ["circle", "square", "triangle", "ring", "star", "cross"]
    categories = [{"id": i + 1, "name": n} for i, n in enumerate(names)]
    state = {
        "model": model.state_dict(),
        "config": cfg.to_dict() if config is None else config,
        "categories": categories[: cfg.model.fcos.num_classes],
    }
    save_checkpoint(state, path)
    return path


def uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO's *uncompressed* RLE of `[H, W]` (pycocotools writes only the compressed one):
    run lengths down the columns (column-major), starting with a run of zeros."""
    flat = mask.flatten(order="F")
    change = np.flatnonzero(np.diff(flat)) + 1  # where a new run starts
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    return {"size": list(mask.shape), "counts": ([0] if flat[0] else []) + counts}
