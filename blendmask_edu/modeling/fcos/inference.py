"""FCOS inference (Tian et al. 2019, §3.3): from per-location predictions to detections.

Per image and level: keep locations whose class probability exceeds `score_thresh`, rank them
by cls·centerness (centerness down-weights boxes far from object centers, §3.3), keep the top
`pre_nms_topk`; decode boxes (Eq. 1 inverted); then over all levels class-wise NMS
(`torchvision.ops.batched_nms`) and the best `max_detections`. The final score is
sqrt(cls · centerness), as in the official FCOS code.

Each detection also carries `loc_index`, the index of the location (in the flattened
[L] order of `flatten_levels`) that predicted it, so mask branches can gather per-location
outputs (BlendMask's attention) for exactly these detections.
"""

from __future__ import annotations

import torch
from torchvision.ops import batched_nms, clip_boxes_to_image

from ...config import FCOSConfig
from .loss import distances_to_boxes


def detect_image(
    cls_logits: torch.Tensor,  # [L, C]
    box_reg: torch.Tensor,  # [L, 4]
    centerness: torch.Tensor,  # [L, 1]
    locations: torch.Tensor,  # [L, 2]
    loc_stride: torch.Tensor,  # [L]
    level_sizes: list[int],  # number of locations per level, Σ = L
    image_size: tuple[int, int],  # (H, W) of the (resized, unpadded) image
    cfg: FCOSConfig,
) -> dict[str, torch.Tensor]:
    cls_prob = cls_logits.sigmoid()  # [L, C]
    ctr_prob = centerness.sigmoid()  # [L, 1]
    C = cls_prob.shape[1]
    cand_scores, cand_loc, cand_label = [], [], []
    start = 0
    for n in level_sizes:
        prob = cls_prob[start : start + n]  # [n, C]
        score = (prob * ctr_prob[start : start + n]).flatten()  # [n·C]
        # THRESH_WITH_CTR (AdelaiDet): threshold cls · centerness rather than cls.
        keep = (score if cfg.thresh_with_ctr else prob.flatten()) > cfg.score_thresh  # [n·C]
        idx = keep.nonzero().squeeze(1)
        if idx.numel() > cfg.pre_nms_topk:
            idx = idx[score[idx].topk(cfg.pre_nms_topk).indices]
        cand_scores.append(score[idx])
        cand_loc.append(idx // C + start)
        cand_label.append(idx % C + 1)  # labels are 1..C
        start += n
    scores = torch.cat(cand_scores).sqrt()  # [N] sqrt(cls · ctr)
    loc_index = torch.cat(cand_loc)  # [N]
    labels = torch.cat(cand_label)  # [N]
    ltrb = box_reg[loc_index].float() * loc_stride[loc_index, None]  # [N, 4] in pixels
    boxes = distances_to_boxes(locations[loc_index], ltrb)  # [N, 4]
    if cfg.clip_before_nms:  # else: clipped after the mask branch (InstanceSegmenter.postprocess)
        boxes = clip_boxes_to_image(boxes, image_size)
        nonempty = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        boxes, scores, labels, loc_index = (t[nonempty] for t in (boxes, scores, labels, loc_index))
    keep = batched_nms(boxes, scores, labels, cfg.nms_thresh)[: cfg.max_detections]
    return {
        "boxes": boxes[keep],  # [N, 4] xyxy, in input-image pixels
        "scores": scores[keep],  # [N]
        "labels": labels[keep],  # [N] 1..C
        "loc_index": loc_index[keep],  # [N] into the flattened locations
    }
