"""How AdelaiDet (on detectron2) and blendmask_edu name the same parts of BlendMask.

One row per part: (AdelaiDet checkpoint key, our `InstanceSegmenter` key). `{x}` matches the
rest of a name (any characters, dots included) and is copied across; `{i}` one index. Rows are
tried in order; the first that matches a key renames it. `convert_adelaidet.py` applies the
table to every key of a checkpoint and fails, listing them all, if a key is left over on
either side: nothing is silently dropped or left at its random init.

Read with the paper's figure (§3) in mind:

    image → backbone (detectron2 ResNet + FPN) → FCOS head ─► boxes
                                                   └ box tower → top layer → attentions
            bottom module (AdelaiDet: "basis module", ProtoNet) → bases → blender
"""

from __future__ import annotations

import re


def key_table(bottom_num_convs: int = 3) -> list[tuple[str, str]]:
    """The rows for AdelaiDet's BlendMask configs. `bottom_num_convs` is BASIS_MODULE.NUM_CONVS
    (3 in Base-BlendMask.yaml): the basis module keeps all its layers in one `tower`
    Sequential, so the index of the layers after the ×2 upsample depends on it."""
    n = bottom_num_convs
    return [
        # -- backbone: detectron2's ResNet, same names (resnet_d2.py): stem.conv1[.norm],
        #    res2..res5.<block>.conv1/conv2/conv3/shortcut[.norm].{weight,bias,running_*}
        ("backbone.bottom_up.{x}", "backbone.body.{x}"),
        # -- FPN: detectron2 names layers by stage (3 = stride 8); torchvision's FPN by
        #    position (0 = the first input level, C3). Lateral = 1×1 "inner", output = 3×3.
        ("backbone.fpn_lateral3.{x}", "backbone.fpn.inner_blocks.0.0.{x}"),
        ("backbone.fpn_lateral4.{x}", "backbone.fpn.inner_blocks.1.0.{x}"),
        ("backbone.fpn_lateral5.{x}", "backbone.fpn.inner_blocks.2.0.{x}"),
        ("backbone.fpn_output3.{x}", "backbone.fpn.layer_blocks.0.0.{x}"),
        ("backbone.fpn_output4.{x}", "backbone.fpn.layer_blocks.1.0.{x}"),
        ("backbone.fpn_output5.{x}", "backbone.fpn.layer_blocks.2.0.{x}"),
        # P6 = conv3×3/2(P5), P7 = conv3×3/2(ReLU(P6)) (FCOS' top block; P6 alone in 550)
        ("backbone.top_block.{x}", "backbone.fpn.extra_blocks.{x}"),
        # -- FCOS head: towers are Sequential(conv, GN, ReLU) × n in both, same indices;
        #    the real-time models have a shared tower before cls/box
        ("proposal_generator.fcos_head.share_tower.{x}", "fcos.head.share_tower.{x}"),
        ("proposal_generator.fcos_head.cls_tower.{x}", "fcos.head.cls_tower.{x}"),
        ("proposal_generator.fcos_head.bbox_tower.{x}", "fcos.head.box_tower.{x}"),
        ("proposal_generator.fcos_head.cls_logits.{x}", "fcos.head.cls_logits.{x}"),
        ("proposal_generator.fcos_head.bbox_pred.{x}", "fcos.head.box_reg.{x}"),
        ("proposal_generator.fcos_head.ctrness.{x}", "fcos.head.centerness.{x}"),
        ("proposal_generator.fcos_head.scales.{i}.scale", "fcos.head.scales.{i}.scale"),
        # -- bottom module ("basis module", ProtoNet): refine one conv block per input level
        ("basis_module.refine.0.{x}", "mask_branch.bottom.refine.p3.{x}"),
        ("basis_module.refine.1.{x}", "mask_branch.bottom.refine.p4.{x}"),
        ("basis_module.refine.2.{x}", "mask_branch.bottom.refine.p5.{x}"),
        # AdelaiDet's `tower` = n conv blocks, Upsample ×2 (no weights), a conv block, 1×1 conv
        *[
            (f"basis_module.tower.{k}.{{x}}", f"mask_branch.bottom.tower.{k}.{{x}}")
            for k in range(n)
        ],
        (f"basis_module.tower.{n + 1}.{{x}}", "mask_branch.bottom.after_upsample.{x}"),
        (f"basis_module.tower.{n + 2}.{{x}}", "mask_branch.bottom.to_bases.{x}"),
        # auxiliary semantic head (§4): AdelaiDet's flat Sequential(conv, BN, ReLU, conv, BN,
        # ReLU, conv) = our two conv blocks and a 1×1 conv
        ("basis_module.seg_head.0.{x}", "mask_branch.bottom.seg_head.0.0.{x}"),
        ("basis_module.seg_head.1.{x}", "mask_branch.bottom.seg_head.0.1.{x}"),
        ("basis_module.seg_head.3.{x}", "mask_branch.bottom.seg_head.1.0.{x}"),
        ("basis_module.seg_head.4.{x}", "mask_branch.bottom.seg_head.1.1.{x}"),
        ("basis_module.seg_head.6.{x}", "mask_branch.bottom.seg_head.2.{x}"),
        # -- top layer: one 3×3 conv on the box tower → K·M·M attention numbers (§3.4)
        ("top_layer.{x}", "mask_branch.top.conv.{x}"),
    ]


def _pattern(template: str) -> re.Pattern:
    """'a.{x}' → regex ^a\\.(?P<x>.+)$ ; '{i}' matches digits."""
    parts = re.split(r"(\{[xi]\})", template)
    regex = "".join(
        "(?P<x>.+)" if p == "{x}" else "(?P<i>[0-9]+)" if p == "{i}" else re.escape(p)
        for p in parts
    )
    return re.compile(f"^{regex}$")


def rename(key: str, table: list[tuple[str, str]]) -> str | None:
    """Our name for AdelaiDet's `key` by the first matching row, or None if no row matches."""
    for theirs, ours in table:
        m = _pattern(theirs).match(key)
        if m:
            return ours.format(**m.groupdict())
    return None


def rename_back(key: str, table: list[tuple[str, str]]) -> str | None:
    """AdelaiDet's name for our `key` (the table read right to left), or None."""
    for theirs, ours in table:
        m = _pattern(ours).match(key)
        if m:
            return theirs.format(**m.groupdict())
    return None
