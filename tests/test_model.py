"""The probe's parts: click disks, click encoders, fusion points, head widths, upsamplers."""

from __future__ import annotations

import dataclasses
import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from stand_ins import StandInFeaturizer
from torch import nn

from isegprobe.config import ClickEncoderConfig, HeadConfig, ModelConfig, UpsamplerConfig
from isegprobe.errors import UserError
from isegprobe.model import ISProbe, as_click_tensor, click_inputs, click_maps
from isegprobe.model.click_encoders import create_click_encoder, sincos_positions
from isegprobe.upsamplers import Upsampler, create_upsampler

SIZE = 56
PATCH = 8
DIM = 32


def tiny_vit() -> ClickEncoderConfig:
    return ClickEncoderConfig(name="simple_vit", depth=1, heads=8, mlp_dim=64)


def model_config(
    encoder: ClickEncoderConfig, fusion: str, width: int | None, upsampler: str = "bilinear"
) -> ModelConfig:
    return ModelConfig(
        click_encoder=encoder, fusion=fusion, upsampler=UpsamplerConfig(name=upsampler), head=HeadConfig(width=width)
    )


def inputs(batch: int = 2) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    features = torch.randn(batch, DIM, SIZE // PATCH, SIZE // PATCH)
    image = torch.randn(batch, 3, SIZE, SIZE)
    clicks = torch.tensor([[[10, 12, 1], [40, 30, 0], [-1, -1, 0]], [[28, 28, 1], [-1, -1, 0], [-1, -1, 0]]])[:batch]
    prev_mask = torch.zeros(batch, 1, SIZE, SIZE)
    return features, image, clicks, prev_mask


def hand_disk(size: int, y: int, x: int, radius: int) -> torch.Tensor:
    disk = torch.zeros(size, size)
    for row in range(size):
        for col in range(size):
            if (row - y) ** 2 + (col - x) ** 2 <= radius**2:
                disk[row, col] = 1
    return disk


# --- click maps -------------------------------------------------------------------------------------------------


def test_radius_5_disk_has_81_pixels_as_counted_by_hand() -> None:
    # rows dy = 0, +-1, +-2, +-3, +-4, +-5 hold 11, 9, 9, 9, 7, 1 pixels with dy^2 + dx^2 <= 25
    by_hand = 11 + 2 * (9 + 9 + 9 + 7 + 1)
    maps = click_maps(torch.tensor([[[20, 30, 1]]]), (SIZE, SIZE), radius=5)
    assert by_hand == 81
    assert maps[0, 0].sum().item() == by_hand
    assert maps[0, 1].sum().item() == 0
    assert torch.equal(maps[0, 0], hand_disk(SIZE, 20, 30, 5))


def test_disks_clip_at_the_border_and_negatives_go_to_their_own_channel() -> None:
    # a click in the corner keeps the quarter disk with dy, dx >= 0: 6 + 5 + 5 + 5 + 4 + 1 pixels
    maps = click_maps(torch.tensor([[[0, 0, 0], [-1, -1, 1]]]), (SIZE, SIZE), radius=5)
    assert maps[0, 1].sum().item() == 26
    assert maps[0, 0].sum().item() == 0, "a padding row (y = -1) must draw nothing"
    assert torch.equal(maps[0, 1], hand_disk(SIZE, 0, 0, 5))


def test_a_click_between_pixels_stamps_ritms_disk_around_its_unrounded_centre() -> None:
    """Clicks mapped into a zoom-in crop fall between pixels; RITM's DistMaps draws each disk around the exact centre
    (squared distance <= radius**2 in float32), which no rounded centre reproduces."""
    centre = (20.6, 30.4)
    maps = click_maps(torch.tensor([[[*centre, 1.0]]]), (SIZE, SIZE), radius=5)
    rows, cols = torch.meshgrid(torch.arange(SIZE).float(), torch.arange(SIZE).float(), indexing="ij")
    ritm = ((rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 <= 25).float()
    assert torch.equal(maps[0, 0], ritm)
    assert not torch.equal(maps[0, 0], hand_disk(SIZE, 21, 30, 5)), "the rounded centre's disk differs"


def test_click_inputs_stack_positive_negative_and_previous_mask() -> None:
    prev_mask = torch.rand(1, 1, SIZE, SIZE)
    stacked = click_inputs(torch.tensor([[[5, 5, 1], [50, 50, 0]]]), prev_mask, radius=5)
    assert stacked.shape == (1, 3, SIZE, SIZE)
    assert stacked[0, 0, 5, 5] == 1 and stacked[0, 1, 50, 50] == 1 and stacked[0, 0, 50, 50] == 0
    assert torch.equal(stacked[:, 2:], prev_mask)


def test_click_lists_become_a_padded_tensor() -> None:
    @dataclasses.dataclass
    class Click:
        y: int
        x: int
        is_positive: bool

    clicks = as_click_tensor([[(3, 4, True), Click(5, 6, False)], []])
    assert clicks.tolist() == [[[3, 4, 1], [5, 6, 0]], [[-1, -1, 0], [-1, -1, 0]]]


# --- the probe --------------------------------------------------------------------------------------------------

PATCH_GRID_CASES = [
    (encoder, fusion, width)
    for encoder in (ClickEncoderConfig(name="patch_embed"), tiny_vit())
    for fusion in ("after_backbone", "before_backbone")
    for width in (None, 8)
]


@pytest.mark.parametrize(("encoder", "fusion", "width"), PATCH_GRID_CASES)
def test_probe_gives_one_logit_per_input_pixel(encoder: ClickEncoderConfig, fusion: str, width: int | None) -> None:
    features, image, clicks, prev_mask = inputs()
    featurizer = StandInFeaturizer(patch_size=PATCH) if fusion == "before_backbone" else None
    probe = ISProbe(
        model_config(encoder, fusion, width), DIM, PATCH, token_dim=24 if featurizer else None, featurizer=featurizer
    )
    logits = probe(None if featurizer else features, image, clicks, prev_mask)
    assert logits.shape == (2, 1, SIZE, SIZE)
    assert logits.dtype == torch.float32
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("upsampler", ["bilinear", "identity"])
@pytest.mark.parametrize("width", [None, 8])
def test_after_upsampler_fusion_encodes_clicks_at_the_upsampled_grid(upsampler: str, width: int | None) -> None:
    features, image, clicks, prev_mask = inputs()
    probe = ISProbe(model_config(ClickEncoderConfig(name="conv"), "after_upsampler", width, upsampler), DIM, PATCH)
    assert probe(features, image, clicks, prev_mask).shape == (2, 1, SIZE, SIZE)


def test_identity_upsampler_runs_the_head_on_the_feature_grid() -> None:
    features, image, clicks, prev_mask = inputs()
    probe = ISProbe(model_config(ClickEncoderConfig(), "after_backbone", 8, "identity"), DIM, PATCH)
    seen = []
    probe.head.logit.register_forward_hook(lambda module, args, output: seen.append(tuple(output.shape[-2:])))
    assert probe(features, image, clicks, prev_mask).shape == (2, 1, SIZE, SIZE)
    assert seen == [(SIZE // PATCH, SIZE // PATCH)]


def test_clicks_change_the_prediction() -> None:
    features, image, clicks, prev_mask = inputs(batch=1)
    probe = ISProbe(model_config(ClickEncoderConfig(), "after_backbone", 8), DIM, PATCH)
    moved = clicks.clone()
    moved[0, 0, :2] = torch.tensor([45, 45])
    assert not torch.allclose(probe(features, image, clicks, prev_mask), probe(features, image, moved, prev_mask))


def test_head_width_adds_a_1x1_reduction() -> None:
    full = ISProbe(model_config(ClickEncoderConfig(), "after_backbone", None), DIM, PATCH).head
    light = ISProbe(model_config(ClickEncoderConfig(), "after_backbone", 8), DIM, PATCH).head
    assert isinstance(full.reduce, nn.Identity) and full.body[0].in_channels == DIM
    assert light.reduce.kernel_size == (1, 1) and light.body[0].in_channels == 8
    assert sum(p.numel() for p in light.parameters()) < sum(p.numel() for p in full.parameters())


@pytest.mark.parametrize("width", [None, 64])
def test_head_convs_start_as_the_research_heads_conv_modules(width: int | None) -> None:
    """mmcv's ConvModule, which iSegProbe's ConvSegHead is made of, re-initialises its conv with He normal over the
    fan-out (3 * 3 * C) and zero bias; PyTorch's default would give a third of that spread and nonzero biases."""
    torch.manual_seed(0)
    head = ISProbe(model_config(ClickEncoderConfig(), "after_backbone", width), 384, PATCH).head
    channels = 384 if width is None else width
    expected = math.sqrt(2.0 / (channels * 9))
    for conv in (head.body[0], head.body[2]):
        assert torch.count_nonzero(conv.bias) == 0
        assert abs(conv.weight.std().item() / expected - 1) < 0.05
        assert abs(conv.weight.mean().item()) < 0.05 * expected


@pytest.mark.parametrize("upsampler", ["nearest", "bilinear", "bicubic", "identity"])
def test_reducing_before_a_channelwise_upsampler_computes_the_seed_order(upsampler: str) -> None:
    features, image, clicks, prev_mask = inputs()
    probe = ISProbe(model_config(ClickEncoderConfig(), "after_backbone", 8, upsampler), DIM, PATCH)
    assert probe.reduces_before_upsampling
    fused = features + probe.click_encoder(click_inputs(clicks, prev_mask), (SIZE // PATCH, SIZE // PATCH))
    seed_order = F.interpolate(probe.head(probe.upsampler(fused, image)), size=(SIZE, SIZE), mode="bilinear")
    torch.testing.assert_close(probe(features, image, clicks, prev_mask), seed_order, rtol=1e-5, atol=1e-5)
    full_head = ISProbe(model_config(ClickEncoderConfig(), "after_backbone", None, upsampler), DIM, PATCH)
    assert not full_head.reduces_before_upsampling


def test_encoders_that_do_not_fit_the_fusion_point_are_refused() -> None:
    with pytest.raises(UserError, match="click_encoder.name=conv"):
        ISProbe(model_config(ClickEncoderConfig(name="patch_embed"), "after_upsampler", None), DIM, PATCH)
    with pytest.raises(UserError, match="patch grid"):
        ISProbe(model_config(ClickEncoderConfig(name="conv"), "after_backbone", None), DIM, PATCH)
    with pytest.raises(UserError, match="fusion"):
        ISProbe(model_config(ClickEncoderConfig(), "sideways", None), DIM, PATCH)
    with pytest.raises(UserError, match="divisible by 4"):
        ISProbe(model_config(ClickEncoderConfig(name="simple_vit"), "after_backbone", None), 30, PATCH)


def test_early_fusion_keeps_the_featurizer_out_of_the_state_dict_and_frozen() -> None:
    featurizer = StandInFeaturizer(patch_size=PATCH)
    probe = ISProbe(
        model_config(ClickEncoderConfig(), "before_backbone", 8), DIM, PATCH, token_dim=24, featurizer=featurizer
    )
    assert all(key.split(".")[0] in {"click_encoder", "upsampler", "head"} for key in probe.state_dict())
    assert not any(parameter is own for parameter in probe.parameters() for own in featurizer.parameters())
    _, image, clicks, prev_mask = inputs()
    probe(None, image, clicks, prev_mask).sum().backward()
    assert probe.click_encoder.proj.weight.grad is not None and probe.click_encoder.proj.weight.grad.abs().sum() > 0
    assert all(parameter.grad is None for parameter in featurizer.parameters())


def test_early_fusion_without_a_featurizer_says_what_is_missing() -> None:
    _, image, clicks, prev_mask = inputs()
    probe = ISProbe(model_config(ClickEncoderConfig(), "before_backbone", 8), DIM, PATCH, token_dim=24)
    with pytest.raises(UserError, match="attach"):
        probe(None, image, clicks, prev_mask)
    with pytest.raises(UserError, match="embed_dim"):
        probe.attach_featurizer(StandInFeaturizer(embed_dim=16, patch_size=PATCH))


def test_sincos_positions_are_distinct_per_grid_cell() -> None:
    positions = sincos_positions(4, 5, 16)
    assert positions.shape == (20, 16)
    assert torch.cdist(positions, positions).add(torch.eye(20)).min() > 0


def test_sincos_positions_are_simplevits() -> None:
    # Cell (y=2, x=3) of a 4 x 5 grid, 16 channels: 4 frequencies 10000**-(i/3), x.sin, x.cos, y.sin, y.cos.
    frequencies = [10000 ** -(i / 3) for i in range(4)]
    expected = [
        *(math.sin(3 * f) for f in frequencies),
        *(math.cos(3 * f) for f in frequencies),
        *(math.sin(2 * f) for f in frequencies),
        *(math.cos(2 * f) for f in frequencies),
    ]
    assert sincos_positions(4, 5, 16)[2 * 5 + 3].tolist() == pytest.approx(expected, abs=1e-6)


def simple_vit_by_hand(encoder: nn.Module, maps: torch.Tensor, patch: int, heads: int) -> torch.Tensor:
    """SimpleViT's forward written out with the encoder's own parameters: [B, 3, H, W] -> tokens [B, N, dim]."""
    state = encoder.state_dict()
    unfolded = F.unfold(maps, patch, stride=patch)  # [B, C*p*p, N], channel-major
    batch, _, count = unfolded.shape
    tokens = unfolded.reshape(batch, 3, patch * patch, count).permute(0, 3, 2, 1).reshape(batch, count, -1)

    def norm(x, key):
        return F.layer_norm(x, x.shape[-1:], state[f"{key}.weight"], state[f"{key}.bias"])

    def linear(x, key):
        return F.linear(x, state[f"{key}.weight"], state.get(f"{key}.bias"))

    tokens = norm(tokens, "to_patch_embedding.1")
    tokens = linear(tokens, "to_patch_embedding.2")
    tokens = norm(tokens, "to_patch_embedding.3")
    grid = (maps.shape[-2] // patch, maps.shape[-1] // patch)
    tokens = tokens + sincos_positions(*grid, tokens.shape[-1])
    layer = 0
    while f"transformer.layers.{layer}.0.to_qkv.weight" in state:
        prefix = f"transformer.layers.{layer}"
        q, k, v = linear(norm(tokens, f"{prefix}.0.norm"), f"{prefix}.0.to_qkv").chunk(3, dim=-1)
        q, k, v = (t.reshape(batch, count, heads, -1).transpose(1, 2) for t in (q, k, v))
        weights = torch.softmax(q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5, dim=-1)
        attended = (weights @ v).transpose(1, 2).reshape(batch, count, -1)
        tokens = tokens + linear(attended, f"{prefix}.0.to_out")
        hidden = linear(norm(tokens, f"{prefix}.1.net.0"), f"{prefix}.1.net.1")
        tokens = tokens + linear(F.gelu(hidden), f"{prefix}.1.net.3")
        layer += 1
    return norm(tokens, "transformer.norm")


def test_simple_vit_click_encoder_is_the_seeds_simplevit_layer_for_layer() -> None:
    torch.manual_seed(0)
    config = ClickEncoderConfig(name="simple_vit", depth=2, heads=4, mlp_dim=48, dim_head=16)
    encoder = create_click_encoder(config, DIM, PATCH)
    for parameter in encoder.parameters():
        torch.nn.init.normal_(parameter, std=0.3)  # LayerNorms away from (1, 0), so their use is tested
    assert encoder.transformer.layers[0][0].to_qkv.weight.shape == (3 * 4 * 16, DIM)
    assert {
        "to_patch_embedding.1.weight",
        "transformer.layers.0.0.norm.weight",
        "transformer.layers.1.1.net.3.bias",
        "transformer.norm.weight",
    } <= set(encoder.state_dict()), "the seed's parameter names"
    assert not any(key.endswith(("to_qkv.bias", "to_out.bias")) for key in encoder.state_dict())
    maps = (torch.rand(2, 3, 3 * PATCH, 5 * PATCH) > 0.7).float()
    with torch.no_grad():
        tokens = simple_vit_by_hand(encoder, maps, PATCH, heads=4)
        grid = encoder(maps, (3, 5))
    torch.testing.assert_close(grid, tokens.transpose(1, 2).reshape(2, DIM, 3, 5), rtol=1e-4, atol=1e-5)
    for module in encoder.modules():  # what ISProbe.use_research_precision switches
        if hasattr(module, "research_precision"):
            module.research_precision = True
    with torch.no_grad():
        written_out = encoder(maps, (3, 5))
    # The attention as SimpleViT writes it (product, softmax, product) rounds as the research code's does.
    assert torch.equal(written_out, tokens.transpose(1, 2).reshape(2, DIM, 3, 5))
    assert not torch.equal(written_out, grid)


@pytest.mark.parametrize("upsampler", ["bilinear", "identity"])
def test_align_corners_gives_the_seeds_resize_geometry(upsampler: str) -> None:
    # The seed resizes features (bilinear upsampler) and logits (to the image) with align_corners=True.
    features, image, clicks, prev_mask = inputs()
    config = dataclasses.replace(
        model_config(ClickEncoderConfig(), "after_backbone", None, upsampler), align_corners=True
    )
    probe = ISProbe(config, DIM, PATCH)
    fused = features + probe.click_encoder(click_inputs(clicks, prev_mask), (SIZE // PATCH, SIZE // PATCH))
    if upsampler == "bilinear":
        fused = F.interpolate(fused, size=(SIZE, SIZE), mode="bilinear", align_corners=True)
    seed = F.interpolate(probe.head(fused), size=(SIZE, SIZE), mode="bilinear", align_corners=True)
    torch.testing.assert_close(probe(features, image, clicks, prev_mask), seed, rtol=1e-5, atol=1e-5)
    centred = ISProbe(dataclasses.replace(config, align_corners=False), DIM, PATCH)
    centred.load_state_dict(probe.state_dict())
    assert not torch.allclose(centred(features, image, clicks, prev_mask), seed, atol=1e-3)


# --- upsamplers -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["nearest", "bilinear", "bicubic"])
def test_interpolation_upsamplers_are_plain_interpolation_to_the_guidance_size(mode: str) -> None:
    upsampler = create_upsampler(mode, DIM)
    features, image = torch.randn(2, DIM, 7, 7), torch.randn(2, 3, SIZE, SIZE)
    expected = F.interpolate(features, size=(SIZE, SIZE), mode=mode)
    assert torch.equal(upsampler(features, image), expected)
    assert isinstance(upsampler, Upsampler) and upsampler.trainable is False
    upsampler.align_corners = True  # only bilinear takes the seed's corner geometry; its bicubic never did
    if mode == "bicubic":
        assert torch.equal(upsampler(features, image), expected)


@pytest.mark.parametrize("name", ["lift", "featup_jbu"])
def test_fixed_factor_upsamplers_resize_to_the_image_with_the_probes_geometry(name: str) -> None:
    features, image = torch.randn(1, DIM, 7, 7), torch.randn(1, 3, SIZE, SIZE)
    config = dataclasses.replace(model_config(ClickEncoderConfig(), "after_backbone", None, name), align_corners=True)
    upsampler = ISProbe(config, DIM, PATCH).upsampler.eval()
    with torch.no_grad():
        native = upsampler.forward_native(features, image)
        expected = F.interpolate(native, size=(SIZE, SIZE), mode="bilinear", align_corners=True)
        torch.testing.assert_close(upsampler(features, image), expected)


def test_identity_upsampler_returns_the_features_and_fixed_methods_take_no_weights() -> None:
    features = torch.randn(1, DIM, 7, 7)
    assert create_upsampler("identity", DIM)(features, torch.randn(1, 3, SIZE, SIZE)) is features
    with pytest.raises(UserError, match="no weights"):
        create_upsampler("bilinear", DIM, weights="some.pth")


def test_a_click_just_outside_the_image_stamps_the_part_of_its_disk_inside():
    maps = click_maps(torch.tensor([[[-3, 10, 0], [-1, -1, 0]]]), (20, 20), radius=5)
    assert maps[0, 0].sum() == 0
    # rows 0..2 of a radius-5 disk centred 3 px above the image: dy = 3, 4, 5 -> half-widths 4, 3, 0
    assert maps[0, 1].sum() == (2 * 4 + 1) + (2 * 3 + 1) + 1


def test_whole_pixel_clicks_stamp_the_same_disks_as_integers_or_as_floats() -> None:
    """Training's integer clicks take a fixed stencil, evaluation's float ones test a window by distance: on whole
    pixels both give each image's disks, clipped at every edge, in every channel order, padding rows left out."""
    generator = torch.Generator().manual_seed(3)
    height, width, radius = 23, 31, 4
    for _ in range(20):
        clicks = torch.cat(
            (
                torch.randint(-radius - 2, max(height, width) + radius + 2, (3, 6, 2), generator=generator),
                torch.randint(0, 2, (3, 6, 1), generator=generator),
            ),
            dim=-1,
        )
        clicks[torch.rand(3, 6, generator=generator) < 0.3] = torch.tensor([-1, -1, 0])
        prev_mask = torch.rand(3, 1, height, width, generator=generator)
        for research_order in (False, True):
            as_integers = click_inputs(clicks, prev_mask, radius, research_order)
            assert torch.equal(as_integers, click_inputs(clicks.float(), prev_mask, radius, research_order))
        by_hand = torch.zeros(3, 2, height, width)
        for image, row in itertools.product(range(3), range(6)):
            y, x, positive = clicks[image, row].tolist()
            if y >= 0 or x >= 0:
                by_hand[image, 1 - positive] += hand_disk(max(height, width), y, x, radius)[:height, :width]
        assert torch.equal(click_maps(clicks, (height, width), radius), (by_hand > 0).float())


def test_the_probe_trains_in_float32_unless_the_config_asks_for_bf16() -> None:
    """The research code trains in float32; `model.mixed_precision` is the faster choice on a GPU."""
    default = ISProbe(model_config(ClickEncoderConfig(), "after_backbone", 8), DIM, PATCH)
    mixed = ISProbe(
        dataclasses.replace(model_config(ClickEncoderConfig(), "after_backbone", 8), mixed_precision=True), DIM, PATCH
    )
    assert (default.mixed_precision, mixed.mixed_precision) == (False, True)
