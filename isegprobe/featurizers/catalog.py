"""The model families isegprobe builds, one example featurizer name each, with what a user needs before choosing one:
the isegprobe family that builds it, whether clicks can enter its patch embedding (early fusion), which attention
kernel it runs, and the authors' own checkpoint file that `--weights FILE` reads.

`extract-features --help` and the README's table are both rendered from this one list, and
tests/test_featurizer_catalog.py checks each entry's name, family, early fusion and attention kernel against the code,
so that help, README and code agree.
Plain data only: --help must not import timm.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass

# timm's plain `Attention`, which attention.py switches to xformers' kernel on CUDA when xformers is installed.
XFORMERS = "xformers"
# An attention class of the model's own (RoPE, relative positions): timm runs it through PyTorch's SDPA.
SDPA = "SDPA"
# A CNN.
NO_ATTENTION = "none"

ATTENTION_LEGEND = (
    f"attention kernel: {XFORMERS} = xformers' memory-efficient kernel on CUDA when xformers is installed, "
    f"PyTorch SDPA otherwise; {SDPA} = the model's own attention (RoPE, relative positions) through PyTorch SDPA; "
    f"{NO_ATTENTION} = a CNN."
)
EARLY_FUSION_LEGEND = (
    "early fusion: clicks can enter the patch embedding (fusion before_backbone); late fusion works with all."
)


@dataclass(frozen=True)
class CatalogEntry:
    """One model family: `example` is a name `--featurizer` takes; `official_file` (Markdown) the authors' own
    checkpoint that `--weights FILE` converts, beside timm / Hugging Face files, which every entry loads."""

    model: str
    example: str
    family: str
    early_fusion: bool
    attention: str
    official_file: str = ""


CATALOG: tuple[CatalogEntry, ...] = (
    CatalogEntry("DINOv2", "vit_small_patch14_dinov2", "timm_vit", True, XFORMERS, "`dinov2_vits14_pretrain.pth`"),
    CatalogEntry("DINOv2 hub", "dinov2_vits14", "dinov2_hub", True, XFORMERS, "`dinov2_vits14_pretrain.pth`"),
    CatalogEntry(
        "DINOv3 ViT-S/16",
        "vit_small_patch16_dinov3",
        "timm_dense",
        True,
        SDPA,
        "`dinov3_vits16_pretrain_lvd1689m-08c60483.pth`",
    ),
    CatalogEntry(
        "DINOv3 ViT-B/16",
        "vit_base_patch16_dinov3",
        "timm_dense",
        True,
        SDPA,
        "`dinov3_vitb16_pretrain_lvd1689m-73cec8be.pth`",
    ),
    CatalogEntry(
        "DINOv3 ViT-L/16",
        "vit_large_patch16_dinov3",
        "timm_dense",
        True,
        SDPA,
        "`dinov3_vitl16_pretrain_lvd1689m-8aa4cbdd.pth`",
    ),
    CatalogEntry(
        "DINOv3 ConvNeXt",
        "convnext_tiny.dinov3_lvd1689m",
        "timm_dense",
        False,
        NO_ATTENTION,
        "`dinov3_convnext_tiny_pretrain_lvd1689m-21b726bb.pth`",
    ),
    CatalogEntry("EVA02", "eva02_base_patch14_224.mim_in22k", "timm_dense", True, SDPA),
    # OpenAI's CLIP was trained with QuickGELU; timm's `vit_base_patch16_clip_224.openai` runs its weights with GELU.
    CatalogEntry(
        "CLIP",
        "vit_base_patch16_clip_quickgelu_224.openai",
        "timm_vit",
        True,
        XFORMERS,
        "OpenAI's `ViT-B-16.pt` (TorchScript: `--allow-torchscript`)",
    ),
    CatalogEntry(
        "MaskCLIP",
        "maskclip",
        "maskclip",
        True,
        XFORMERS,
        "OpenAI's `ViT-B-16.pt` (TorchScript: `--allow-torchscript`)",
    ),
    # The untagged name is SigLIP2: timm's default tag for it is v2_webli.
    CatalogEntry("SigLIP", "vit_base_patch16_siglip_224.webli", "timm_vit", True, XFORMERS),
    CatalogEntry("SigLIP2", "vit_base_patch16_siglip_224.v2_webli", "timm_vit", True, XFORMERS),
    CatalogEntry("SAM ViT-B", "samvit_base_patch16", "timm_dense", True, SDPA, "`sam_vit_b_01ec64.pth`"),
    CatalogEntry(
        "SAM2 Hiera-T",
        "sam2_hiera_tiny",
        "timm_dense",
        False,
        SDPA,
        "`sam2.1_hiera_tiny.pt` (its image encoder's trunk)",
    ),
    CatalogEntry(
        "RADIO v3",
        "naflexvit_base_patch16_radio_v3",
        "timm_dense",
        True,
        XFORMERS,
        "`model.safetensors` of nvidia/C-RADIOv3-B",
    ),
    CatalogEntry(
        "RADIO v4",
        "naflexvit_so400m_patch16_radio_v4",
        "timm_dense",
        True,
        XFORMERS,
        "`model.safetensors` of nvidia/C-RADIOv4-SO400M",
    ),
    CatalogEntry("AIMv2", "aimv2_large_patch14_224", "timm_vit", True, XFORMERS),
    CatalogEntry("ConvNeXt", "convnext_base", "timm_dense", False, NO_ATTENTION, "FB's `convnext_base_1k_224_ema.pth`"),
    CatalogEntry(
        "attention keys",
        "vit_small_patch14_dinov2:keys",
        "timm_vit_keys",
        True,
        XFORMERS,
        "as its model's (`dinov2_vits14_pretrain.pth`)",
    ),
    CatalogEntry(
        "any block",
        "vit_small_patch16_dinov3@-4",
        "timm_dense",
        True,
        SDPA,
        "as its model's (`dinov3_vits16_pretrain_lvd1689m-08c60483.pth`)",
    ),
)

_HELP_COLUMNS = ("model", "example", "early", "kernel")
_MARKDOWN_COLUMNS = ("model", "`--featurizer` example", "family", "early fusion", "attention kernel", "authors' file")


def catalog_help() -> str:
    """The list for `--help`: one aligned line per entry in a click `\\b` block (which click does not rewrap), then
    the legends, which it may."""
    rows = [_HELP_COLUMNS] + [
        (entry.model, entry.example, _yes_no(entry.early_fusion), entry.attention) for entry in CATALOG
    ]
    widths = [max(len(row[column]) for row in rows) for column in range(len(_HELP_COLUMNS) - 1)]
    lines = [
        "  ".join([*(cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=True)), row[-1]]) for row in rows
    ]
    return "\n\n".join(
        (
            "Featurizers, one example each (other timm names work too; NAME@BLOCK takes another block, negative from "
            "the end):",
            "\b\n" + "\n".join(lines),
            f"{EARLY_FUSION_LEGEND} {ATTENTION_LEGEND} The authors' checkpoint files --weights reads: the README's "
            "featurizer table.",
        )
    )


def catalog_markdown() -> str:
    """The README's table, with the legends under it."""
    rows = [
        (
            entry.model,
            f"`{entry.example}`",
            f"`{entry.family}`",
            _yes_no(entry.early_fusion),
            entry.attention,
            entry.official_file or "timm / Hugging Face only",
        )
        for entry in CATALOG
    ]
    table = [_markdown_row(_MARKDOWN_COLUMNS), _markdown_row(("---",) * len(_MARKDOWN_COLUMNS))]
    table += [_markdown_row(row) for row in rows]
    legend = textwrap.fill(f"{EARLY_FUSION_LEGEND} {ATTENTION_LEGEND}", width=120)
    return "\n".join(table) + f"\n\n{legend}\n"


def _markdown_row(cells: tuple[str, ...]) -> str:
    return "| " + " | ".join(cells) + " |"


def _yes_no(flag: bool) -> str:
    return "yes" if flag else "no"
