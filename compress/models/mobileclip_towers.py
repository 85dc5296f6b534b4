"""MobileCLIP's image towers as our architecture keys: timm's MCi hybrids (MobileCLIP and
MobileCLIP2) and MobileCLIP-B's ViT with a convolutional stem, shared by the open_clip loader
(:mod:`compress.models.loaders`) and Apple's files (:mod:`compress.models.apple`)."""

# timm MCi image towers (MobileCLIP / MobileCLIP2) as our HybridVisionTower: MCi0–2 have four
# stages, MCi3/4 five, with layer norms in their attention blocks and no 1×1 branch in the stem.
_MCI_SMALL = {
    "mixers": ["repmixer", "repmixer", "repmixer", "attention"],
    "mlp_ratio": 3,
    "se_downsample": [False, False, True, True],
    "pos_embed": [False, False, False, True],
}


_MCI_LARGE = {
    "mixers": ["repmixer", "repmixer", "repmixer", "attention", "attention"],
    "mlp_ratio": 4,
    "se_downsample": [False] * 5,
    "pos_embed": [False, False, False, True, True],
    "attention_norm": "layer",
    "stem_scale_branch": False,
}


MCI = {
    "fastvit_mci0": {"layers": [2, 6, 10, 2], "widths": [64, 128, 256, 512], **_MCI_SMALL},
    "fastvit_mci1": {"layers": [4, 12, 20, 4], "widths": [64, 128, 256, 512], **_MCI_SMALL},
    "fastvit_mci2": {"layers": [4, 12, 24, 4], "widths": [80, 160, 320, 640], **_MCI_SMALL},
    "fastvit_mci3": {
        "layers": [2, 12, 24, 4, 2],
        "widths": [96, 192, 384, 768, 1536],
        **_MCI_LARGE,
    },
    "fastvit_mci4": {
        "layers": [2, 12, 24, 4, 4],
        "widths": [128, 256, 512, 1024, 2048],
        **_MCI_LARGE,
    },
}


# MobileCLIP-B's image tower: a ViT-B/16 whose patches come from a 4×4/4, 2×2/2, 2×2/2 conv stem;
# timm's ViT has no pre-norm, layer norms with eps 1e-6 and a biased head.
MCI_VIT_B = {
    "family": "vit",
    "patch_size": 16,
    "width": 768,
    "layers": 12,
    "heads": 12,
    "mlp_ratio": 4.0,
    "act": "gelu",
    "stem": "conv",
    "stem_channels": [192, 192],
    "stem_kernels": [4, 2, 2],
    "stem_strides": [4, 2, 2],
    "stem_padding": [0, 0, 0],
    "stem_act": "gelu",
    "ln_pre": False,
    "ln_eps": 1e-6,
    "proj_bias": True,
}
