"""Oracle attention: is the blender limited by its bases or by its top layer's attention?

On a trained blender, freeze everything and, for each validation instance on its GT box,
optimise its K×M×M attention a_d directly against its ground truth (the same crops and
R×R target as training, BlendMask §3.4, Eq. 1–4):

    r_d = RoIAlign(B, gt box_d)                     fixed bases crops      [N, K, R, R]
    a_d ← argmin_a BCE(Σ_k softmax_K(up(a))_k ∘ r_d^k, target_d)   Adam from the prediction
    mask AP on the GT boxes with a_d (oracle)  vs  with the top layer's a_d (predicted)

If the oracle AP is far above the predicted one, the 4 bases can draw the masks and the top
layer's per-instance prediction is the limit; if it is barely above, the bases are.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader

from ..data.batching import collate
from ..modeling.backbone import pyramid_levels
from ..modeling.blender import blend
from ..modeling.mask_branch import mask_targets
from .coco_eval import evaluate_coco
from .gt_boxes import gt_detections
from .occlusion import with_ann_ids


def fit_attention(
    crops: torch.Tensor,  # [N, K, R, R] basis crops (fixed)
    attention: torch.Tensor,  # [N, K, M, M] starting point (the top layer's prediction)
    target: torch.Tensor,  # [N, R, R] in {0, 1}
    interpolation: str,
    steps: int = 200,
    lr: float = 0.1,
) -> torch.Tensor:
    """Each instance's attention optimised alone (Adam on Σ_d mean-BCE_d: the instances do not
    interact) → [N, K, M, M]."""
    a = attention.detach().clone().requires_grad_(True)
    optimizer = torch.optim.Adam([a], lr=lr)
    for _ in range(steps):
        logits = blend(crops, a, interpolation)["mask_logits"]  # [N, R, R]
        loss = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        optimizer.zero_grad()
        loss.mean(dim=(1, 2)).sum().backward()
        optimizer.step()
    return a.detach()


def oracle_predictions(model, dataset, steps: int = 200, lr: float = 0.1, batch_size: int = 8):
    """GT-box predictions of a trained blender with its predicted and with oracle attentions →
    (predicted, oracle, stats): two lists of per-image prediction dicts (as
    occlusion.gt_box_predictions) and the mean R×R BCE to the target of each."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    branch = model.mask_branch
    cfg = branch.cfg
    if getattr(branch, "top", None) is None:
        raise ValueError("the oracle needs a blender with a top layer (attention='predicted')")
    loader = DataLoader(dataset, batch_size=batch_size, collate_fn=collate, num_workers=0)
    predicted, oracle, bce = [], [], {"predicted": [], "oracle": []}
    for images, targets in loader:
        with torch.no_grad():
            x, image_sizes = model.preprocess(images)
            features = model.backbone(x)
            fcos_out = model.fcos(pyramid_levels(features), image_sizes)
            detections = gt_detections(fcos_out, targets, model.fcos.cfg)
            per_image = branch.forward_test(features, fcos_out, detections)
        if sum(len(t["boxes"]) for t in targets) == 0:
            continue
        crops = torch.cat([o["basis_crops"] for o in per_image])  # [N, K, R, R]
        attention = torch.cat([o["attention"] for o in per_image])  # [N, K, M, M]
        target = mask_targets(targets, cfg.R)  # [N, R, R]: the same GT order
        fitted = fit_attention(crops, attention, target, cfg.interpolation, steps, lr)
        orig_sizes = [tuple(int(s) for s in t["orig_size"]) for t in targets]
        counts = [len(d["boxes"]) for d in detections]
        for name, a, out in (("predicted", attention, predicted), ("oracle", fitted, oracle)):
            with torch.no_grad():
                logits = blend(crops, a, cfg.interpolation)["mask_logits"]  # [N, R, R]
                bce[name].append(
                    F.binary_cross_entropy_with_logits(logits, target, reduction="none").mean(
                        dim=(1, 2)
                    )
                )
                masks = [{"masks": m} for m in logits.sigmoid().split(counts)]
                run = {"image_sizes": image_sizes, "fcos": {"detections": detections}}
                results = model.postprocess({**run, "masks": masks}, orig_sizes)
            out.extend(with_ann_ids(dataset, t, r) for t, r in zip(targets, results))
    stats = {f"mean_bce_{k}": torch.cat(v).mean().item() for k, v in bce.items()}
    return predicted, oracle, stats


def oracle_attention_ap(model, dataset, steps: int = 200, lr: float = 0.1) -> dict:
    """Mask AP on GT boxes with the predicted and with the oracle attentions (and AP50, AP75,
    the mean per-instance BCE of each)."""
    predicted, oracle, stats = oracle_predictions(model, dataset, steps, lr)
    out = {"steps": steps, "lr": lr, **stats}
    for name, preds in (("predicted", predicted), ("oracle", oracle)):
        segm = evaluate_coco(dataset.coco, preds, dataset.label_to_cat_id, ("segm",))["segm"]
        out[name] = {k: segm[k] for k in ("AP", "AP50", "AP75")}
    return out
