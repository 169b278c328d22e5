"""Small configs and data for tests that train: fast on 2 CPU cores, no downloads."""

from __future__ import annotations

from blendmask_edu.config import (
    BackboneConfig,
    BlenderConfig,
    Config,
    DataConfig,
    FCOSConfig,
    FPNConfig,
    ModelConfig,
    OptimConfig,
    TrainConfig,
)


def tiny_config(mask_branch: str = "blender", image_size: int = 64, **train) -> Config:
    """EfficientNet-Lite0 (random init), 16-channel FPN, 1-conv towers, K=2 M=4 R=8."""
    return Config(
        model=ModelConfig(
            backbone=BackboneConfig(name="efficientnet_lite0", weights_path=None, freeze_bn=True),
            fpn=FPNConfig(channels=16),
            fcos=FCOSConfig(num_classes=6, num_convs=1, sizes_of_interest=(16, 32, 64, 128)),
            mask_branch=mask_branch,
            blender=BlenderConfig(K=2, M=4, R=8, bottom_channels=16, bottom_num_convs=1),
        ),
        data=DataConfig(
            train_min_sizes=(image_size,),
            train_max_size=2 * image_size,
            test_min_size=image_size,
            test_max_size=2 * image_size,
            num_workers=0,
        ),
        optim=OptimConfig(
            name="adamw",
            lr=1e-3,
            schedule="cosine",
            warmup_iters=2,
            warmup_factor=0.1,
            clip_grad_norm=10.0,
        ),
        train=TrainConfig(
            **{
                "max_iters": 6,
                "batch_size": 2,
                "time_budget_min": 0.0,
                "checkpoint_period": 3,
                "log_period": 1,
                "device": "cpu",
                **train,
            }
        ),
    )
