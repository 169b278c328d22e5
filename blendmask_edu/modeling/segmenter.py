"""InstanceSegmenter = backbone+FPN → FCOS → a mask branch (BlendMask's blender by default).

    images (list of [3, H, W] in [0, 1])
      └─ normalise, pad to a multiple of 32 ─► [B, 3, Hp, Wp]
           └─ BackboneFPN ─► P3..P7
                ├─ FCOS ─► losses | detections (boxes, scores, labels, loc_index)
                └─ mask branch ─► losses | [N, R, R] masks per image ─► pasted into the image

The mask branch is injected (`mask_branch=...`) or built from `ModelConfig.mask_branch`;
`mask_branch="none"` gives the detector alone.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.ops import clip_boxes_to_image

from ..config import MASK_BRANCHES, ModelConfig
from ..data.batching import pad_images
from .backbone import BackboneFPN, pyramid_levels
from .fcos import FCOS
from .mask_branch import MaskBranch
from .paste import paste_masks


def build_mask_branch(
    cfg: ModelConfig, in_channels: int, c2_channels: int = 0
) -> MaskBranch | None:
    """The mask branch named by `cfg.mask_branch` (None for "none": the detector alone).
    `c2_channels`: the backbone's stride-4 channels, for a bottom module with `bottom_c2`."""
    name = cfg.mask_branch
    if name == "none":
        return None
    if name == "blender":
        from .blendmask import BlendMaskBranch

        return BlendMaskBranch(cfg.blender, in_channels, cfg.fcos, c2_channels)
    if name == "yolact":
        from .fusion.yolact import YolactBranch

        return YolactBranch(cfg.yolact, cfg.blender, in_channels, cfg.fcos, c2_channels)
    if name == "fcis":
        from .fusion.fcis import FCISBranch

        return FCISBranch(cfg.fcis, cfg.blender, in_channels, cfg.fcos, c2_channels)
    if name == "roi":
        from .fusion.roi import RoIMaskHead

        return RoIMaskHead(cfg.roi, cfg.blender, in_channels, cfg.fcos, c2_channels)
    raise ValueError(
        f"model.mask_branch: unknown mask branch {name!r}; choose one of {', '.join(MASK_BRANCHES)}"
    )


class InstanceSegmenter(nn.Module):
    def __init__(
        self,
        cfg: ModelConfig,
        mask_branch: MaskBranch | None = None,
        backbone: nn.Module | None = None,
        size_divisibility: int = 32,
    ):
        super().__init__()
        self.cfg = cfg
        if backbone is None:  # every branch's mask input may read C2 (the RoI head as P2)
            with_c2 = cfg.blender.bottom_c2 and cfg.mask_branch in (
                "blender",
                "yolact",
                "fcis",
                "roi",
            )
            backbone = BackboneFPN(cfg.backbone, cfg.fpn, with_c2=with_c2)
        self.backbone = backbone
        self.fcos = FCOS(cfg.fcos, self.backbone.out_channels)
        if mask_branch is None:
            c2_channels = getattr(self.backbone, "c2_channels", 0)  # 0 for other backbones
            mask_branch = build_mask_branch(cfg, self.backbone.out_channels, c2_channels)
        self.mask_branch = mask_branch
        self.size_divisibility = size_divisibility
        self.register_buffer("pixel_mean", torch.tensor(cfg.pixel_mean).view(3, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(cfg.pixel_std).view(3, 1, 1), False)

    def preprocess(self, images: list[torch.Tensor]):
        """Normalise each [3, H, W] RGB image in [0, 1], then zero-pad the batch
        → [B, 3, Hp, Wp], sizes. detectron2-trained models (`input_format="BGR"`,
        `pixel_scale=255`) see BGR pixels in 0..255, as they were trained."""
        normed = []
        for im in images:
            im = im.to(self.pixel_mean.device)
            if self.cfg.input_format == "BGR":
                im = im.flip(0)  # RGB → BGR
            if self.cfg.pixel_scale != 1.0:
                im = im * self.cfg.pixel_scale
            normed.append((im - self.pixel_mean) / self.pixel_std)
        return pad_images(normed, self.size_divisibility)

    def forward(
        self,
        images: list[torch.Tensor],
        targets: list[dict] | None = None,
        orig_sizes: list[tuple[int, int]] | None = None,
        paste: bool = True,
    ):
        """Training: `targets` required → dict of losses.
        Inference: → per image {"boxes", "scores", "labels"[, "masks"]} at `orig_sizes`
        (default: the input sizes); masks are [N, H, W] probabilities. `paste=False` gives
        "box_masks" [N, R, R] instead (each over its box, not yet pasted): evaluation pastes
        them a few at a time (`paste_masks_in_chunks`) to stay in bounded memory."""
        out = self.run(images, targets if self.training else None, intermediates=False)
        if self.training:
            return out["losses"]
        return self.postprocess(out, orig_sizes, paste)

    def compute_losses(self, images: list[torch.Tensor], targets: list[dict]) -> dict:
        """The training loss dict, in whichever mode the model is in. In eval mode (validation
        loss) BatchNorm uses its running statistics and updates nothing; wrap the call in
        `torch.no_grad()` to keep no graph."""
        return self.run(images, targets)["losses"]

    def run(
        self,
        images: list[torch.Tensor],
        targets: list[dict] | None = None,
        intermediates: bool = True,
    ) -> dict:
        """Every stage's output in one dict (features, fcos, masks, losses): for teaching.
        `intermediates=False` (what `forward`, hence predict/evaluate, uses) asks the mask
        branch for the masks only, without its visualisation intermediates."""
        if targets is None and self.training:
            raise ValueError("InstanceSegmenter in training mode needs targets")
        x, image_sizes = self.preprocess(images)
        features = self.backbone(x)  # p3..p7 (+ c2)
        fcos_out = self.fcos(pyramid_levels(features), image_sizes, targets)
        out = {"image_sizes": image_sizes, "features": features, "fcos": fcos_out}
        if targets is not None:
            losses = dict(fcos_out["losses"])
            if self.mask_branch is not None:
                losses.update(self.mask_branch.forward_train(features, fcos_out, targets))
            out["losses"] = losses
        elif self.mask_branch is not None:
            out["masks"] = self.mask_branch.forward_test(
                features, fcos_out, fcos_out["detections"], intermediates=intermediates
            )
        return out

    def postprocess(self, out: dict, orig_sizes=None, paste: bool = True) -> list[dict]:
        results = []
        for b, det in enumerate(out["fcos"]["detections"]):
            h, w = out["image_sizes"][b]
            H, W = orig_sizes[b] if orig_sizes is not None else (h, w)
            scale = det["boxes"].new_tensor([W / w, H / h, W / w, H / h])
            res = {"boxes": det["boxes"] * scale, "scores": det["scores"], "labels": det["labels"]}
            masks = out["masks"][b]["masks"] if "masks" in out else None  # [N, R, R]
            if not self.cfg.fcos.clip_before_nms:  # detectron2: clip now, drop empty boxes
                res["boxes"] = clip_boxes_to_image(res["boxes"], (H, W))
                boxes = res["boxes"]
                keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
                res = {k: v[keep] for k, v in res.items()}
                masks = masks[keep] if masks is not None else None
            if masks is not None and paste:
                res["masks"] = paste_masks(masks, res["boxes"], (H, W))
            elif masks is not None:
                res["box_masks"] = masks  # [N, R, R]
            results.append(res)
        return results
