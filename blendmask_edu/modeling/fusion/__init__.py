"""The fusion zoo: other ways to make masks from the same detector, compared with the blender.

    yolact.py  YOLACT-style weighted sum: one coefficient per prototype     (Bolya et al. 2019)
    fcis.py    FCIS-style assembler: k×k position-sensitive score maps      (Li et al. 2017)
    roi.py     Mask R-CNN-style top-down RoI head on FCOS' boxes            (He et al. 2017)

Each is a `MaskBranch` (see ../mask_branch.py), one constructor argument apart from BlendMask's
(`ModelConfig.mask_branch`), and trains from the same proposals.
"""
