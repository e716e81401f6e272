"""The featurizer catalog against the code: each example is a real timm name that resolves to the family the catalog
names, and each model, built on the meta device (nothing allocated, so even ViT-L takes a second), has the attention
kernel and the early fusion the catalog claims; `--help` and the README render the same list."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from click.testing import CliRunner
from timm.models import split_model_name_tag
from torch import nn

from isegprobe.cli import main
from isegprobe.featurizers import attention as attention_module
from isegprobe.featurizers.attention import use_memory_efficient_attention
from isegprobe.featurizers.catalog import CATALOG, NO_ATTENTION, SDPA, XFORMERS, CatalogEntry, catalog_markdown
from isegprobe.featurizers.factory import parse_featurizer_name
from isegprobe.featurizers.normalization import DEFAULT_NORMALIZATION
from isegprobe.featurizers.patch_tokens import find_patch_embedding
from isegprobe.featurizers.registry import FEATURIZERS
from isegprobe.featurizers.weights import WeightsSource

README = Path(__file__).resolve().parents[1] / "README.md"
EXTRACTION_PAGE = Path(__file__).resolve().parents[1] / "docs" / "extraction.md"
README_START = "<!-- featurizer catalog:"
README_END = "<!-- end of featurizer catalog -->"

ENTRIES = pytest.mark.parametrize("entry", CATALOG, ids=[entry.example for entry in CATALOG])


def meta_model(entry: CatalogEntry) -> nn.Module:
    """The timm model the example's family builds, with the family's arguments, on the meta device."""
    arch, featurizer_class = parse_featurizer_name(entry.example)
    with torch.device("meta"):
        return timm.create_model(arch, pretrained=False, **featurizer_class.timm_kwargs(arch))


def attention_modules(model: nn.Module) -> list[nn.Module]:
    return [module for module in model.modules() if type(module).__name__.endswith("Attention")]


@ENTRIES
def test_the_example_is_a_timm_name_with_weights_of_the_family_the_catalog_names(entry):
    arch, featurizer_class = parse_featurizer_name(entry.example)
    families = {FEATURIZERS.get(family): family for family in FEATURIZERS.names()}
    assert families[featurizer_class] == entry.family
    base, tag = split_model_name_tag(arch)
    assert timm.is_model(base)
    assert (arch in timm.list_pretrained()) if tag else timm.list_pretrained(f"{base}.*")


@ENTRIES
def test_the_model_has_the_attention_kernel_and_early_fusion_the_catalog_names(entry, monkeypatch):
    model = meta_model(entry)
    attentions = attention_modules(model)
    assert bool(attentions) == (entry.attention != NO_ATTENTION)
    if entry.attention == SDPA:  # timm's own attention classes, each on its fused (SDPA) path
        assert all(getattr(module, "fused_attn", False) for module in attentions)
    monkeypatch.setattr(attention_module, "xformers_kernel", lambda: object())
    assert (use_memory_efficient_attention(model) > 0) == (entry.attention == XFORMERS)

    arch, featurizer_class = parse_featurizer_name(entry.example)
    featurizer = featurizer_class(entry.example, model, WeightsSource("random"), DEFAULT_NORMALIZATION)
    assert (featurizer.early_fusion_refusal is None) == entry.early_fusion
    if entry.early_fusion:  # clicks enter through the patch embedding (SAM2's Hiera has one, off the features' grid)
        assert find_patch_embedding(model) is not None


def test_help_lists_every_example_with_its_facts():
    result = CliRunner().invoke(main, ["extract-features", "--help"], terminal_width=80)
    assert result.exit_code == 0
    lines = result.output.splitlines()
    for entry in CATALOG:
        rows = [line.split() for line in lines if entry.example in line.split()]
        assert [row[-2:] for row in rows] == [["yes" if entry.early_fusion else "no", entry.attention]]
    assert max(len(line) for line in lines) <= 80


def test_the_readme_table_is_the_rendered_catalog():
    text = README.read_text(encoding="utf-8")
    start = text.index("\n", text.index(README_START)) + 1
    assert text[start : text.index(README_END)] == catalog_markdown()


def test_the_extraction_page_says_what_every_family_computes():
    """The `--featurizer` row of docs/extraction.md names each family beside what it computes; its section on adding
    a featurizer says this test asks for a new family there."""
    row = next(
        line
        for line in EXTRACTION_PAGE.read_text(encoding="utf-8").splitlines()
        if line.startswith("| `--featurizer` |")
    )
    assert [family for family in FEATURIZERS.names() if f"`{family}`" not in row] == []
