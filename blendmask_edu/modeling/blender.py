"""The blender: mix the bases of a box with the instance's attention (paper §3.5, Eq. 1–4).

For each instance d with box p_d, bases B [K, H/4, W/4] and attention a_d [K, M, M]:

    r_d  = RoIAlign_{R×R}(B, p_d)               (Eq. 1)  basis crops        [K, R, R]
    a'_d = interpolate_{M×M → R×R}(a_d)         (Eq. 2)  attention upsampled [K, R, R]
    s_d  = softmax_K(a'_d)                      (Eq. 3)  weights over bases  [K, R, R]
                                                (K = 1: sigmoid on both, below)
    m_d  = Σ_k s_d^k ∘ r_d^k                    (Eq. 4)  mask logits        [R, R]

K = 1 (the paper's Table 3 caption): a softmax over one basis is the constant 1, so the K = 1
model uses a sigmoid on BOTH the basis and the attention, mask = σ(a') ∘ σ(r). That product is
a probability, not a logit; `blend` returns its logit, log(p / (1 − p)), so that the loss (BCE
on logits), `mask_logits > 0` and `.sigmoid()` work for every K alike.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F
from torchvision.ops import roi_align


def crop_bases(
    bases: torch.Tensor,  # [B, K, Hb, Wb]
    boxes: torch.Tensor,  # [N, 4] xyxy in input-image pixels
    batch_index: torch.Tensor,  # [N] image of each box
    R: int,
    bases_stride: int = 4,
) -> torch.Tensor:
    """Eq. 1: RoIAlign with sampling ratio 1 (one sample per bin) and aligned boxes → [N, K, R, R]."""
    rois = torch.cat([batch_index[:, None].to(boxes.dtype), boxes], dim=1)  # [N, 5]
    return roi_align(
        bases,
        rois.to(bases.dtype),
        (R, R),
        spatial_scale=1.0 / bases_stride,
        sampling_ratio=1,
        aligned=True,
    )


def upsample_attention(
    attention: torch.Tensor,  # [N, K, M, M]
    R: int,
    interpolation: str = "bilinear",
) -> torch.Tensor:
    """Eq. 2: a'_d = interpolate_{M×M → R×R}(a_d) → [N, K, R, R]."""
    if interpolation == "bilinear":
        return F.interpolate(attention, (R, R), mode="bilinear", align_corners=False)
    if interpolation == "nearest":
        return F.interpolate(attention, (R, R), mode="nearest")
    raise ValueError(f"blender interpolation {interpolation!r}: use 'bilinear' or 'nearest'")


def blend(
    basis_crops: torch.Tensor,  # [N, K, R, R]
    attention: torch.Tensor,  # [N, K, M, M]
    interpolation: str = "bilinear",
) -> dict[str, torch.Tensor]:
    """Eq. 2–4. Returns the mask logits [N, R, R] and the per-basis weights [N, K, R, R]."""
    upsampled = upsample_attention(attention, basis_crops.shape[-1], interpolation)  # Eq. 2
    if upsampled.shape[1] > 1:
        weights = upsampled.softmax(dim=1)  # Eq. 3: softmax over K     [N, K, R, R]
        mask_logits = (weights * basis_crops).sum(dim=1)  # Eq. 4       [N, R, R]
        return {"mask_logits": mask_logits, "attention_weights": weights}
    # K = 1 (Table 3 caption): sigmoid on the attention and on the basis; the product is a
    # probability, returned as its logit (module docstring).
    weights = upsampled.sigmoid()  # [N, 1, R, R]
    log_p = F.logsigmoid(upsampled[:, 0]) + F.logsigmoid(basis_crops[:, 0])  # log σ(a')σ(r)
    log_p = log_p.clamp(max=-1e-6)  # p ≤ 1 − 1e-6: a finite logit
    mask_logits = log_p - torch.log(-torch.expm1(log_p))  # log p − log(1 − p)   [N, R, R]
    return {"mask_logits": mask_logits, "attention_weights": weights}
