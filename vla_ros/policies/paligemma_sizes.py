"""Vision-tower sizes shared by the PaliGemma-based families (pi0-style, RT-2-style)."""

# SigLIP-So400m/14, PaliGemma-3B's image encoder (published sizes).
SIGLIP_SO400M_14 = dict(patch_size=14, vision_width=1152, vision_depth=27,
                        vision_mlp_dim=4304, vision_heads=16)
# The tiny test tower: one 32-px patch grid, two layers.
SIGLIP_TINY = dict(patch_size=32, vision_width=32, vision_depth=2, vision_mlp_dim=64,
                   vision_heads=2)
