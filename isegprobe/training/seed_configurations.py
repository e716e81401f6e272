"""The configurations the iSegProbe research code (arXiv 2505.02075) ships, in isegprobe's names: its upsamplers,
fusion points and DINO ViTs, and the preset that reproduces each of its SBD models."""

# The research code's `jbu_featup` upsampler is the `.upsampler` of FeatUp's hub model: the JBU stack alone, fed the
# backbone's features without the ChannelNorm the hub model puts in front (isegprobe's `featup_jbu_stack`).
SEED_UPSAMPLERS = {
    "identity": "identity",
    "nearest": "nearest",
    "bilinear": "bilinear",
    "bicubic": "bicubic",
    "jbu_featup": "featup_jbu_stack",
    "lift": "lift",
    "loftup": "loftup",
}

SEED_FUSIONS = {"before_backbone": "before_backbone", "after_backbone": "after_backbone"}

# DINO's torch.hub ViT-S names (the research code's DINOFeaturizer builds a ViT-S whatever the name) -> timm's copy.
DINO_HUB_VITS = {"dino_vits16": "vit_small_patch16_224.dino", "dino_vits8": "vit_small_patch8_224.dino"}

# (backbone, click encoder, upsampler, fusion) of each configuration the research code ships (models/sbd/) -> the
# isegprobe preset and `--set` overrides that reproduce it. sbd_dinov2_patch-embed holds the five DINOv2 patch-embed
# configurations, which differ only in the upsampler. It switches a frozen learned upsampler to training mode as the
# research code does; the flag changes nothing for bilinear and identity, whose imported configs record it off.
_DINOV2_PATCH_EMBED = "sbd_dinov2_patch-embed"
_NO_TRAIN_MODE = "model.upsampler.train_mode_when_frozen=false"
RESEARCH_PRESETS: dict[tuple[str, str, str, str], tuple[str, tuple[str, ...]]] = {
    ("dinov2", "patch_embed", "bilinear", "before_backbone"): (_DINOV2_PATCH_EMBED, (_NO_TRAIN_MODE,)),
    ("dinov2", "patch_embed", "featup_jbu_stack", "before_backbone"): (
        _DINOV2_PATCH_EMBED,
        ("model.upsampler.name=featup_jbu_stack",),
    ),
    ("dinov2", "patch_embed", "lift", "before_backbone"): (_DINOV2_PATCH_EMBED, ("model.upsampler.name=lift",)),
    ("dinov2", "patch_embed", "loftup", "before_backbone"): (_DINOV2_PATCH_EMBED, ("model.upsampler.name=loftup",)),
    ("dinov2", "patch_embed", "identity", "before_backbone"): (
        _DINOV2_PATCH_EMBED,
        ("model.upsampler.name=identity", _NO_TRAIN_MODE),
    ),
    ("dinov2", "simple_vit", "identity", "after_backbone"): ("sbd_dinov2_simple-vit_noup", ()),
    ("mask_clip", "patch_embed", "identity", "before_backbone"): ("sbd_maskclip_patch-embed_noup", ()),
    ("vit", "patch_embed", "identity", "before_backbone"): ("sbd_vit_patch-embed_noup", ()),
}
# A combination the research code does not ship starts from the generic recipe; the overrides set the model.
GENERIC_PRESET = "sbd_224"
