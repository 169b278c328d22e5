"""FCOS: Fully Convolutional One-Stage object detection (Tian et al., ICCV 2019)."""

from .detector import FCOS
from .head import FCOSHead
from .targets import FCOSTargets, fcos_targets

__all__ = ["FCOS", "FCOSHead", "FCOSTargets", "fcos_targets"]
