"""The registries: timm's pattern (decorator, create, list, a warning for a name registered twice, a clear error for
an unknown one), and every name each registry lists builds and keeps its family's contract. Featurizer families are
built in test_featurizers.py, beside the helpers that keep those builds cheap."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from dataset_trees import use_dataset_config

from isegprobe.config import ClickEncoderConfig
from isegprobe.data import create_dataset, list_datasets
from isegprobe.errors import UserError
from isegprobe.model import create_click_encoder, list_click_encoders
from isegprobe.model.click_encoders import ClickEncoder, patch_grid_encoders
from isegprobe.registry import Registry, RegistryWarning
from isegprobe.upsamplers import Upsampler, create_upsampler, list_upsamplers

DIM = 16
PATCH = 8

# --- the pattern ------------------------------------------------------------------------------------------------


def entry_from(module: str) -> Callable[[], None]:
    def entry() -> None:
        return None

    entry.__module__ = module
    return entry


def test_a_name_registered_twice_warns_naming_both_modules_and_the_later_entry_wins() -> None:
    registry: Registry[Callable[[], None]] = Registry("widget")
    first, second = entry_from("isegprobe.widgets"), entry_from("my_lab.widgets")
    assert registry.register("box")(first) is first
    again = r"widget 'Box' is registered again by my_lab\.widgets; isegprobe\.widgets registered it first"
    with pytest.warns(RegistryWarning, match=again):
        registry.register("Box")(second)
    assert registry.get("BOX") is second and registry.names() == ["box"]


def test_an_unknown_name_lists_the_known_ones_and_the_closest() -> None:
    registry: Registry[Callable[[], None]] = Registry("widget", where="--widget")
    for name in ("box", "sphere", "cone"):
        registry.register(name)(entry_from("isegprobe.widgets"))
    with pytest.raises(UserError, match=r"^--widget: unknown widget 'spere'; known: box, cone, sphere; did you mean"):
        registry.get("spere")
    with pytest.raises(UserError) as error:
        registry.get("pyramid")
    assert str(error.value) == "--widget: unknown widget 'pyramid'; known: box, cone, sphere"


@pytest.mark.parametrize(
    ("create", "names", "message"),
    [
        (lambda: create_dataset("grabcat"), list_datasets, "--dataset: unknown dataset 'grabcat'"),
        (lambda: create_upsampler("bilinaer", DIM), list_upsamplers, "unknown upsampler 'bilinaer'"),
        (
            lambda: create_click_encoder(ClickEncoderConfig(name="patch_embd"), DIM, PATCH),
            list_click_encoders,
            "model.click_encoder.name: unknown click encoder 'patch_embd'",
        ),
    ],
    ids=["dataset", "upsampler", "click encoder"],
)
def test_each_family_names_an_unknown_name_with_every_known_one(
    create: Callable[[], object], names: Callable[[], list[str]], message: str
) -> None:
    with pytest.raises(UserError) as error:
        create()
    text = str(error.value)
    assert text.startswith(message) and f"known: {', '.join(names())};" in text and "did you mean" in text


# --- every upsampler --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list_upsamplers())
def test_every_upsampler_builds_and_maps_features_to_the_guidance_grid(name: str) -> None:
    """[B, C, h, w] with guidance [B, 3, H, W] -> [B, C, H, W]; `identity` keeps the feature grid (the probe then
    resizes its logits instead). Random weights, features on a 3x4 grid, a 38x46 image."""
    torch.manual_seed(0)
    features, guidance = torch.randn(2, DIM, 3, 4), torch.randn(2, 3, 38, 46)
    upsampler = create_upsampler(name, DIM).eval()
    with torch.no_grad():
        out = upsampler(features, guidance)
    grid = (3, 4) if name == "identity" else (38, 46)
    assert isinstance(upsampler, Upsampler)
    assert out.shape == (2, DIM, *grid) and out.dtype == torch.float32 and bool(out.isfinite().all())


def test_the_upsamplers_page_has_a_row_for_every_upsampler_and_none_other() -> None:
    """docs/upsamplers.md's table is where a user learns what each name is and which file it loads; its section on
    adding an upsampler says this test asks for the new one's row."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "upsamplers.md").read_text(encoding="utf-8")
    header = text.index("| name | method |")
    rows = text[header : text.index("\n\n", header)].splitlines()[2:]
    documented = [name for row in rows for name in re.findall(r"`([a-z_]+)`", row.split(" | ")[0])]
    assert sorted(documented) == list_upsamplers()


# --- every click encoder ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list_click_encoders())
def test_every_click_encoder_builds_and_maps_clicks_to_its_grid_with_gradients(name: str) -> None:
    """Patch-grid encoders give one token per patch; the others encode at the resolution they are asked for."""
    torch.manual_seed(0)
    config = ClickEncoderConfig(name=name, depth=1, heads=2, mlp_dim=32, dim_head=8)
    encoder = create_click_encoder(config, DIM, PATCH)
    click_input = (torch.rand(2, 3, 7 * PATCH, 5 * PATCH) > 0.9).float()
    grid = (7, 5) if name in patch_grid_encoders() else (7 * PATCH, 5 * PATCH)
    out = encoder(click_input, grid)
    assert isinstance(encoder, ClickEncoder)
    assert out.shape == (2, DIM, *grid) and bool(out.isfinite().all())
    out.square().sum().backward()
    assert all(parameter.grad is not None for parameter in encoder.parameters())


# --- every dataset ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list_datasets())
def test_every_dataset_refuses_a_missing_root_and_says_which(name: str, tmp_path: Path, monkeypatch) -> None:
    if name == "builtin":
        pytest.skip("builtin renders its scenes in memory: it has no root to miss")
    use_dataset_config(monkeypatch, tmp_path)  # no roots configured
    with pytest.raises(UserError, match="--root"):
        create_dataset(name, None)
    absent = tmp_path / "absent"
    with pytest.raises(UserError) as error:
        create_dataset(name, absent)
    assert str(absent) in str(error.value)
