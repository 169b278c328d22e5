"""FCIS-style fusion, the "assembler" (Li et al., Fully Convolutional Instance-aware Semantic
Segmentation, CVPR 2017, §2.1; position-sensitive score maps from R-FCN, Dai et al. 2016).

How it differs from the blender: the box is cut into k×k cells and cell (i, j) reads its mask
from score map (i, j): a *fixed* one-hot spatial attention over k² bases, the same for every
instance. The blender *learns* a soft M×M attention over K bases for each instance.

    bottom module (the blender's) ─► k² position-sensitive score maps S [B, k², H/4, W/4]
    RoIAlign each box on every map  ─► cell crops [N, k², R, R]
    pixel (y, x) of the R×R grid lies in cell (i, j) = (⌊y·k/R⌋, ⌊x·k/R⌋):
        m_d(y, x) = crops_d[i·k + j](y, x)                              mask logits [N, R, R]

FCIS keeps two maps per cell (inside / outside) and classifies with them; here one map per cell
gives the mask logit and FCOS classifies (the maps and the absence of a per-instance prediction
are what differ from the blender).
Training uses the proposals of every branch of the zoo: the GT box of each positive location of
FCOS (BlendMask §3.5), with the same cap; the loss is the blender's (centerness-weighted BCE on
R×R). Inference assembles the detected boxes the same way.
"""

from __future__ import annotations

import torch
from torchvision.ops import roi_align

from ...config import BlenderConfig, FCISConfig, FCOSConfig
from ..bases import BottomModule, semantic_loss
from ..blender import crop_bases
from ..mask_branch import (
    MaskBranch,
    gather_detections,
    split_per_image,
    unique_instances,
    weighted_mask_bce,
    zero_touch,
)
from ..targets_batched import mask_targets_batched, positive_instances_batched


def cell_index(k: int, R: int, device=None) -> torch.Tensor:
    """The score map each pixel of an R×R grid reads: i·k + j for cell (i, j) → [R, R]."""
    cell = torch.arange(R, device=device) * k // R  # [R] cell row (or column) of each pixel
    return cell[:, None] * k + cell[None, :]  # [R, R]


def assemble(cell_crops: torch.Tensor, k: int) -> torch.Tensor:
    """[N, k², R, R] crops of the score maps → [N, R, R]: each pixel from its cell's map.
    The reference: every map is cropped, then one is kept per pixel."""
    N, _, R, _ = cell_crops.shape
    index = cell_index(k, R, cell_crops.device).expand(N, 1, R, R)  # [N, 1, R, R]
    return cell_crops.gather(1, index)[:, 0]  # [N, R, R]


def assemble_cells(
    score_maps: torch.Tensor,  # [B, k², h, w]
    boxes: torch.Tensor,  # [N, 4] xyxy, image pixels
    batch_index: torch.Tensor,  # [N]
    k: int,
    R: int,
    stride: int,
) -> torch.Tensor:
    """The same [N, R, R] as `assemble(crop_bases(...), k)`, k² times cheaper (R divisible by
    k): cell (i, j) of each box is RoIAligned on map i·k + j only, on a (R/k)² grid.
    This is FCIS' position-sensitive pooling; the tests check it equals the reference."""
    B, K2, h, w = score_maps.shape
    N, c = len(boxes), R // k  # c×c pixels per cell
    maps = score_maps.reshape(B * K2, 1, h, w)  # every map of every image as its own "image"
    i, j = torch.meshgrid(
        torch.arange(k, device=boxes.device), torch.arange(k, device=boxes.device), indexing="ij"
    )  # [k, k] cell row, column
    x0, y0, x1, y1 = (v[:, None, None] for v in boxes.unbind(1))  # [N, 1, 1] each
    cw, ch = (x1 - x0) / k, (y1 - y0) / k  # cell width, height
    cells = torch.stack([x0 + j * cw, y0 + i * ch, x0 + (j + 1) * cw, y0 + (i + 1) * ch], -1)
    map_id = batch_index[:, None, None] * K2 + i * k + j  # [N, k, k]
    rois = torch.cat([map_id.reshape(-1, 1).to(boxes.dtype), cells.reshape(-1, 4)], dim=1)
    out = roi_align(
        maps, rois.to(maps.dtype), (c, c), 1.0 / stride, sampling_ratio=1, aligned=True
    )  # [N·k², 1, c, c]
    return out.view(N, k, k, c, c).permute(0, 1, 3, 2, 4).reshape(N, R, R)


class FCISBranch(MaskBranch):
    def __init__(
        self,
        cfg: FCISConfig,
        bottom_cfg: BlenderConfig,
        in_channels: int,
        fcos_cfg: FCOSConfig,
        c2_channels: int = 0,  # the backbone's stride-4 map, read with `bottom_cfg.bottom_c2`
    ):
        super().__init__()
        self.cfg = cfg
        self.bottom_cfg = bottom_cfg  # the bottom module's settings and the proposal cap
        self.bottom = BottomModule(
            bottom_cfg,
            in_channels,
            fcos_cfg.num_classes,
            num_outputs=cfg.k * cfg.k,
            c2_channels=c2_channels,
        )
        level_strides = dict(zip(("p3", "p4", "p5", "p6", "p7"), fcos_cfg.strides))
        self.maps_stride = level_strides[bottom_cfg.bottom_in_levels[0]] // 2  # 4 with P3

    def masks_for_boxes(self, score_maps, boxes, batch_index) -> torch.Tensor:
        """Assembled mask logits [N, R, R] (the fast path when R is a multiple of k)."""
        cfg = self.cfg
        if cfg.R % cfg.k == 0:
            return assemble_cells(score_maps, boxes, batch_index, cfg.k, cfg.R, self.maps_stride)
        crops = crop_bases(score_maps, boxes, batch_index, cfg.R, self.maps_stride)
        return assemble(crops, cfg.k)

    def forward_train(self, features, fcos_out, targets) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        bottom = self.bottom(features, with_seg=True)
        score_maps = bottom["bases"]  # [B, k², H/4, W/4]
        pos = positive_instances_batched(fcos_out, self.bottom_cfg.max_instances_for_loss)
        # The mask depends on the box alone: once per GT instance, weighted by the summed
        # centerness of its positives (= the blender's loss over all positives).
        inst = unique_instances(pos, pos["centerness"])
        logits = self.masks_for_boxes(score_maps, inst["gt_boxes"], inst["batch_index"])
        target = mask_targets_batched(targets, cfg.R).to(logits.device)  # [ΣG, R, R]
        target = target[inst["gt_index"]]  # [U, R, R]
        loss_mask = weighted_mask_bce(logits, target, inst["weight"])
        loss_mask = loss_mask + zero_touch(score_maps)  # every parameter in the graph (DDP)
        losses = {"loss_mask": cfg.mask_loss_weight * loss_mask}
        if "seg_logits" in bottom:
            losses["loss_sem"] = self.bottom_cfg.aux_seg_weight * semantic_loss(
                bottom["seg_logits"], targets, 2 * self.maps_stride
            )
        return losses

    def forward_test(
        self, features, fcos_out, detections, intermediates: bool = True
    ) -> list[dict[str, torch.Tensor]]:
        """Per image: "masks" [N, R, R] probabilities; with `intermediates`, also
        "score_maps" [k², H/4, W/4], "cell_crops" [N, k², R, R] (every map cropped by the box,
        k² times the work of the masks) and "cell_index" [R, R] (the map each pixel reads).
        Without them (what `predict` runs) each cell is cropped on its own map only."""
        cfg = self.cfg
        score_maps = self.bottom(features)["bases"]  # [B, k², H/4, W/4]
        dets = gather_detections(detections)
        if not intermediates:
            logits = self.masks_for_boxes(score_maps, dets["boxes"], dets["batch_index"])
            per_detection = {"masks": logits.sigmoid(), "mask_logits": logits}
            return split_per_image(dets["batch_index"], len(detections), per_detection)
        crops = crop_bases(score_maps, dets["boxes"], dets["batch_index"], cfg.R, self.maps_stride)
        logits = assemble(crops, cfg.k)  # [ΣN, R, R]
        per_detection = {"masks": logits.sigmoid(), "mask_logits": logits, "cell_crops": crops}
        per_image = {
            "score_maps": score_maps,
            "cell_index": cell_index(cfg.k, cfg.R, logits.device).expand(len(detections), -1, -1),
        }
        return split_per_image(dets["batch_index"], len(detections), per_detection, per_image)
