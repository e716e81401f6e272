"""The learned upsamplers: the authors' layouts and checkpoint files, output shapes, gradients, chunked attention."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import Tensor, nn

from isegprobe.config_loading import load_train_config
from isegprobe.errors import UserError
from isegprobe.featurizers import create_featurizer
from isegprobe.model import ISProbe
from isegprobe.upsamplers import create_upsampler
from isegprobe.upsamplers.anyup import AnyUp
from isegprobe.upsamplers.featup_jbu import JBULearnedRange, JBUStack, adaptive_conv
from isegprobe.upsamplers.jafar import JAFAR, CrossAttention
from isegprobe.upsamplers.learned import LearnedUpsampler
from isegprobe.upsamplers.loftup import CrossAttentionLayer, MinMaxScaler

LEARNED = ["lift", "featup_jbu", "loftup", "anyup", "jafar"]
DIM = 16

# Read off the authors' modules at dim 384: state-dict entries, parameter count, and keys with their shapes as they
# appear in the published files (FeatUp's and LoftUp's Lightning files keep the ChannelNorm as `model.1.norm`).
AUTHORS_LAYOUT = {
    "lift": (
        37,
        1_187_280,
        {
            "up1.up.weight": (416, 208, 2, 2),
            "up1.conv_1.double_conv.0.weight": (192, 240, 3, 3),
            "up1.conv_1.double_conv.4.running_var": (192,),
            "outc.weight": (384, 192, 1, 1),
            "image_convs_1.3.weight": (32, 32, 3, 3),
            "image_convs_2.1.num_batches_tracked": (),
        },
    ),
    "featup_jbu": (
        44,
        173_540,
        {
            "model.1.norm.weight": (384,),
            "upsampler.up1.range_temp": (),
            "upsampler.up2.sigma_spatial": (),
            "upsampler.up3.range_proj.3.weight": (32, 32, 1, 1),
            "upsampler.up4.fixup_proj.0.weight": (49, 52, 1, 1),
            "upsampler.fixup_proj.1.weight": (384, 384, 1, 1),
        },
    ),
    "loftup": (
        54,
        4_303_894,
        {
            "model.1.norm.bias": (384,),
            "upsampler.lr_pe.biases": (2, 2, 5),
            "upsampler.fourier_feat.1.biases": (2, 5, 20),
            "upsampler.first_conv.0.norm.weight": (203,),
            "upsampler.first_conv.4.weight": (404, 404, 3, 3),
            "upsampler.ca_transformer.layers.1.0.attention.in_proj_weight": (1212, 404),
            "upsampler.ca_transformer.layers.0.1.net.4.weight": (404, 384),
            "upsampler.final_conv.1.weight": (384,),
        },
    ),
    "anyup": (
        73,
        878_080,
        {
            "image_encoder.0.weight": (128, 3, 1, 1),
            "image_encoder.2.block.5.weight": (128, 128, 1, 1),
            "key_features_encoder.0.basis": (128, 1, 5, 5),
            "aggregation.0.weight": (128, 256, 3, 3),
            "cross_decode.cross_attn.norm_q.weight": (128,),
            "cross_decode.cross_attn.attention.in_proj_weight": (384, 128),
            "cross_decode.cross_attn.attention.out_proj.weight": (128, 128),
            "cross_decode.conv2d.weight": (128, 128, 3, 3),
            "rope.freqs": (2, 128),
        },
    ),
    "jafar": (
        65,
        628_480,
        {
            "image_encoder.0.weight": (128, 3, 1, 1),
            "image_encoder.2.norm2.weight": (128,),
            "key_features_encoder.0.weight": (128, 384, 1, 1),
            "key_features_encoder.1.conv1.weight": (128, 128, 1, 1),
            "cross_decode.cross_attn.norm_v.weight": (384,),
            "cross_decode.cross_attn.attention.q_proj_weight": (128, 128),
            "cross_decode.cross_attn.attention.v_proj_weight": (128, 384),
            "cross_decode.cross_attn.attention.in_proj_bias": (384,),
            "cross_decode.cross_attn.attention.out_proj.weight": (128, 128),
            "cross_decode.conv2d.weight": (128, 128, 3, 3),
            "sft_key.gamma.weight": (128, 128, 1, 1),
            "rope.freqs": (2, 128),
        },
    ),
}

LIGHTNING_FILES = {"featup_jbu", "loftup"}


def lightning_layout(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """How FeatUp's and LoftUp's training modules save the ChannelNorm: as `model.1` behind the backbone `model.0`."""
    return {key.replace("channelnorm.norm.", "model.1.norm.", 1): value for key, value in state.items()}


class AttributeDict(dict):
    """Stands for Lightning's `AttributeDict`, the dict subclass its files keep their hyperparameters in: pickled by
    its class name, which the reader never imports."""


def lightning_checkpoint(state: dict[str, Tensor]) -> dict:
    """A PyTorch Lightning file: the upsampler's weights among a backbone, training-only modules, loop state and the
    hyperparameters (an AttributeDict holding the run's OmegaConf config, as FeatUp's and LoftUp's hydra runs save)."""
    extras = {
        "model.0.model.cls_token": torch.randn(1, 1, 8),
        "downsampler.attention_net.weight": torch.randn(1, 8, 3, 3),
        "scale_net.net.weight": torch.randn(1, 8, 1, 1),
    }
    return {
        "epoch": 0,
        "global_step": 2000,
        "pytorch-lightning_version": "1.9.5",
        "state_dict": {**lightning_layout(state), **extras},
        "optimizer_states": [{"state": {}, "param_groups": [{"lr": 1e-3, "params": [0, 1]}]}],
        "hyper_parameters": AttributeDict(cfg=OmegaConf.create({"model_type": "dinov2", "dim": DIM}), lr=1e-3),
    }


def randomized(upsampler: nn.Module, seed: int = 1) -> nn.Module:
    """Every float tensor (weights and BatchNorm statistics) set to seeded random values, as a trained file holds."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in upsampler.state_dict().items():
            if tensor.is_floating_point():
                values = torch.rand(tensor.shape, generator=generator) + 0.5
                tensor.copy_(values if "running_var" in name else (values - 1.0) * 0.6)
    return upsampler


def inputs(batch: int = 2, grid: tuple[int, int] = (3, 4), size: tuple[int, int] = (38, 46)) -> tuple[Tensor, Tensor]:
    torch.manual_seed(0)
    return torch.randn(batch, DIM, *grid), torch.randn(batch, 3, *size)


# --- architecture and shapes ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", LEARNED)
def test_dim_384_has_the_authors_parameter_names_shapes_and_count(name: str) -> None:
    upsampler = create_upsampler(name, 384)
    entries, parameters, samples = AUTHORS_LAYOUT[name]
    state = upsampler.state_dict()
    as_published = lightning_layout(state) if name in LIGHTNING_FILES else state
    assert len(state) == entries
    assert sum(parameter.numel() for parameter in upsampler.parameters()) == parameters
    assert {key: tuple(as_published[key].shape) for key in samples} == samples
    assert isinstance(upsampler, LearnedUpsampler) and upsampler.trainable


@pytest.mark.parametrize("name", ["anyup", "jafar"])
def test_the_rope_starts_at_the_authors_frequencies(name: str) -> None:
    freqs = create_upsampler(name, DIM).rope.freqs.detach()
    rates = 2 * torch.pi * 100 ** torch.linspace(0, -1, 32)
    assert torch.equal(freqs[0, :64], torch.cat([rates, rates])) and torch.equal(freqs[1, 64:], freqs[0, :64])
    assert not freqs[0, 64:].any() and not freqs[1, :64].any()


@pytest.mark.parametrize("name", ["bilinear", *LEARNED])
def test_dim_384_maps_32x32_features_and_a_448_image_to_448x448(name: str) -> None:
    """Shape and dtype at full size on the meta device: the real CPU run of the slow methods takes 15-60 s."""
    with torch.device("meta"):
        upsampler = create_upsampler(name, 384)
    features, image = torch.empty(1, 384, 32, 32, device="meta"), torch.empty(1, 3, 448, 448, device="meta")
    out = upsampler(features, image)
    assert out.shape == (1, 384, 448, 448) and out.dtype == torch.float32


def test_lift_runs_at_full_size_on_cpu() -> None:
    upsampler = create_upsampler("lift", 384).eval()
    with torch.no_grad():
        out = upsampler(torch.randn(1, 384, 32, 32), torch.randn(1, 3, 448, 448))
    assert out.shape == (1, 384, 448, 448) and out.dtype == torch.float32 and bool(out.isfinite().all())


@pytest.mark.parametrize(("name", "native"), [("lift", (6, 8)), ("featup_jbu", (48, 64))])
def test_fixed_factor_methods_resize_their_native_output_bilinearly(name: str, native: tuple[int, int]) -> None:
    features, image = inputs()
    upsampler = create_upsampler(name, DIM).eval()
    with torch.no_grad():
        own = upsampler.forward_native(features, image)
        resized = upsampler(features, image)
    assert own.shape[-2:] == native
    assert torch.equal(resized, F.interpolate(own, size=(38, 46), mode="bilinear", align_corners=False))


# Outputs of the authors' own modules (their code, run once with these weights and inputs): mean, mean |x|, and the
# last pixel's first three channels of image 1, for features on a 10x12 grid (AnyUp's windows then hold several
# cells). Our modules must reproduce them.
AUTHORS_OUTPUTS = {
    "lift": [0.051494, 0.157743, -0.191869, -0.200094, 0.160486],
    "featup_jbu": [0.041092, 0.210231, -0.233309, -0.374603, 0.598496],
    "loftup": [-0.053801, 0.202965, -0.047415, 0.230123, -0.426633],
    "anyup": [-0.003123, 0.273551, 0.222652, 0.820503, -0.413455],
    "jafar": [-0.001438, 0.073429, -0.029211, -0.007293, -0.067095],
}
# JAFAR's module also takes the output size: the authors' outputs at sizes other than the guidance image's (38x46).
JAFAR_AUTHORS_OUTPUTS_AT = {
    (7, 5): [-0.001352, 0.073119, -0.031992, -0.009243, -0.072391],
    (20, 31): [-0.00133, 0.073311, -0.030363, -0.010318, -0.06967],
    (97, 60): [-0.001374, 0.073364, -0.034592, -0.005576, -0.071003],
}


def with_batch_pooled_min_max(upsampler: nn.Module) -> nn.Module:
    """LoftUp's min-max scaling as its authors' module always runs it, over the whole batch (isegprobe does so in
    training mode only); the rest stays in eval mode."""
    for module in upsampler.modules():
        if isinstance(module, MinMaxScaler):
            module.train()
    return upsampler


@pytest.mark.parametrize("name", LEARNED)
def test_the_output_is_the_authors_output_for_the_same_weights(name: str) -> None:
    upsampler = with_batch_pooled_min_max(randomized(create_upsampler(name, DIM)).eval())
    features, image = inputs(grid=(10, 12))
    with torch.no_grad():
        out = upsampler.forward_native(features, image) if upsampler.scale else upsampler(features, image)
    summary = [out.mean().item(), out.abs().mean().item(), *out[1, :3, -1, -1].tolist()]
    assert summary == pytest.approx(AUTHORS_OUTPUTS[name], abs=1e-5)


@pytest.mark.parametrize("size", list(JAFAR_AUTHORS_OUTPUTS_AT))
def test_jafar_at_any_output_size_is_the_authors_output(size: tuple[int, int]) -> None:
    upsampler = randomized(create_upsampler("jafar", DIM)).eval()
    features, image = inputs(grid=(10, 12))
    with torch.no_grad():
        out = upsampler(features, image, size)
    summary = [out.mean().item(), out.abs().mean().item(), *out[1, :3, -1, -1].tolist()]
    assert out.shape == (2, DIM, *size)
    assert summary == pytest.approx(JAFAR_AUTHORS_OUTPUTS_AT[size], abs=1e-5)


# --- the authors' checkpoint files ------------------------------------------------------------------------------

FILES = [
    ("lift", "lift.pth", "ddp"),
    ("featup_jbu", "dinov2_jbu_stack_cocostuff.ckpt", "lightning"),
    ("loftup", "pytorch_model.bin", "bare"),
    ("loftup", "loftup_dinov2s.ckpt", "lightning"),
    ("anyup", "anyup_paper.pth", "bare"),
    ("jafar", "vit_small_patch14_dinov2.lvd142m.pth", "jafar"),
    ("jafar", "model_100000steps.pth", "jafar_training"),
]


def jafar_training_checkpoint(state: dict[str, Tensor]) -> dict:
    """What JAFAR's train.py saves: the weights beside the optimizer state, the epoch and the run's OmegaConf config
    (a pickled DictConfig, which torch's weights-only unpickler refuses)."""
    cfg = OmegaConf.create({"model": {"_target_": "src.upsampler.JAFAR", "v_dim": DIM}, "max_steps": 100000})
    optimizer = {"state": {}, "param_groups": [{"lr": 2e-4, "params": [0, 1]}]}
    return {"optimizer_jafar": optimizer, "epoch": 3, "cfg": cfg, "jafar": state}


def write_authors_file(name: str, filename: str, layout: str, directory: Path) -> tuple[Path, nn.Module]:
    source = randomized(create_upsampler(name, DIM)).eval()
    state = source.state_dict()
    if layout == "lightning":
        content: dict = lightning_checkpoint(state)
    elif layout == "jafar":
        content = {"jafar": state}
    elif layout == "jafar_training":
        content = jafar_training_checkpoint(state)
    elif layout == "ddp":
        content = {f"module.{key}": value for key, value in state.items()}
    else:
        content = state
    path = directory / filename
    torch.save(content, path)
    return path, source


@pytest.mark.parametrize(("name", "filename", "layout"), FILES)
def test_the_authors_file_loads_strictly_and_gives_its_weights_outputs(
    name: str, filename: str, layout: str, tmp_path: Path
) -> None:
    path, source = write_authors_file(name, filename, layout, tmp_path)
    loaded = create_upsampler(name, DIM, weights=str(path))
    assert not loaded.training
    expected = source.state_dict()
    assert all(torch.equal(value, expected[key]) for key, value in loaded.state_dict().items())
    features, image = inputs()
    with torch.no_grad():
        assert torch.equal(loaded(features, image), source(features, image))


@pytest.mark.parametrize(("name", "filename", "layout"), FILES)
def test_a_file_for_another_feature_dim_names_its_misshaped_keys(
    name: str, filename: str, layout: str, tmp_path: Path
) -> None:
    if name == "anyup":
        pytest.skip("AnyUp's weights do not depend on the feature dim")
    path, _ = write_authors_file(name, filename, layout, tmp_path)
    with pytest.raises(UserError, match="misshaped"):
        create_upsampler(name, 2 * DIM, weights=str(path))


def test_an_upsampler_file_with_nan_weights_is_refused_by_key(tmp_path: Path) -> None:
    # Trained on, they made the loss NaN at the first step, and the message blamed the learning rate.
    state = create_upsampler("lift", DIM).state_dict()
    key = next(key for key, value in state.items() if value.is_floating_point())
    state[key] = torch.full_like(state[key], float("nan"))
    torch.save(state, tmp_path / "lift_nan.pth")
    with pytest.raises(UserError, match=f"lift_nan.pth is not a LiFT checkpoint .*NaN or infinite values in: {key}"):
        create_upsampler("lift", DIM, weights=str(tmp_path / "lift_nan.pth"))


def test_a_folder_given_as_weights_is_called_a_folder(tmp_path: Path) -> None:
    """It was "does not exist", of a folder that does."""
    with pytest.raises(UserError, match=f"weights file {tmp_path} is a folder, not a weights file"):
        create_upsampler("lift", DIM, weights=str(tmp_path))
    with pytest.raises(UserError, match=f"weights file {tmp_path} is a folder"):
        create_featurizer("vit_small_patch14_dinov2", weights=str(tmp_path))


def test_a_lightning_file_without_the_upsampler_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "backbone_only.ckpt"
    torch.save({"state_dict": {"model.0.model.cls_token": torch.randn(1, 1, 8)}}, path)
    with pytest.raises(UserError, match="missing: channelnorm.norm.weight"):
        create_upsampler("loftup", DIM, weights=str(path))


def test_a_file_that_is_not_a_state_dict_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "anyup.pth"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="could not read"):
        create_upsampler("anyup", DIM, weights=str(path))
    with pytest.raises(UserError, match="does not exist"):
        create_upsampler("anyup", DIM, weights=str(tmp_path / "missing.pth"))


def test_a_training_file_in_torchs_legacy_format_names_the_class_it_cannot_read(tmp_path: Path) -> None:
    """torch lists the classes a file pickles for zip archives only: a legacy-format file with a config beside the
    weights is refused, naming the config's class."""
    state = create_upsampler("jafar", DIM).state_dict()
    path = tmp_path / "model_100000steps.pth"
    torch.save(jafar_training_checkpoint(state), path, _use_new_zipfile_serialization=False)
    with pytest.raises(UserError, match="it names omegaconf.dictconfig.DictConfig, which is not a tensor"):
        create_upsampler("jafar", DIM, weights=str(path))


# --- trainable or frozen ----------------------------------------------------------------------------------------

# AnyUp and JAFAR use only nn.MultiheadAttention's head-averaged weights: its output projection (and JAFAR's value
# norm and projection) are in the files but unused.
UNUSED = {
    "anyup": {"cross_decode.cross_attn.attention.out_proj.weight", "cross_decode.cross_attn.attention.out_proj.bias"},
    "jafar": {
        "cross_decode.cross_attn.norm_v.weight",
        "cross_decode.cross_attn.attention.v_proj_weight",
        "cross_decode.cross_attn.attention.out_proj.weight",
        "cross_decode.cross_attn.attention.out_proj.bias",
    },
}


@pytest.mark.parametrize("name", LEARNED)
def test_a_trainable_upsampler_gets_gradients_in_every_used_parameter(name: str) -> None:
    upsampler = create_upsampler(name, DIM).train()
    features, image = inputs(size=(30, 34))
    upsampler(features, image).square().mean().backward()
    without = {key for key, parameter in upsampler.named_parameters() if parameter.grad is None}
    assert without == UNUSED.get(name, set())
    assert upsampler.training


@pytest.mark.parametrize("name", LEARNED)
def test_a_frozen_upsampler_gets_no_gradients_but_passes_them_to_the_features(name: str) -> None:
    upsampler = create_upsampler(name, DIM).requires_grad_(False)
    upsampler.train()
    assert not any(module.training for module in upsampler.modules())
    features, image = inputs(size=(30, 34))
    features.requires_grad_(True)
    upsampler(features, image).square().mean().backward()
    assert all(parameter.grad is None for parameter in upsampler.parameters())
    assert features.grad is not None and bool(features.grad.abs().sum() > 0)


# --- the attention and convolution kernels match their references --------------------------------------------


def test_loftup_query_chunks_give_the_unchunked_output() -> None:
    upsampler = randomized(create_upsampler("loftup", DIM)).eval()
    features, image = inputs(size=(30, 41))
    with torch.no_grad():
        upsampler.query_chunk_size = None
        whole = upsampler(features, image)
        upsampler.query_chunk_size = 97
        chunked = upsampler(features, image)
    torch.testing.assert_close(chunked, whole, rtol=1e-5, atol=1e-5)


def test_loftup_attention_is_nn_multiheadattention_with_the_same_weights() -> None:
    torch.manual_seed(0)
    layer = CrossAttentionLayer(64, heads=4).requires_grad_(False)  # frozen, as the research code loads LoftUp
    reference = nn.MultiheadAttention(64, 4).requires_grad_(False)
    reference.load_state_dict(layer.attention.state_dict())
    queries, memory = torch.randn(2, 50, 64), torch.randn(2, 12, 64)
    keys, values = layer.keys_values(memory)
    normed = layer.norm_kv(memory).transpose(0, 1)
    expected, _ = reference(layer.norm_q(queries).transpose(0, 1), normed, normed)
    torch.testing.assert_close(layer(queries, keys, values), expected.transpose(0, 1), rtol=1e-5, atol=1e-6)
    # As the authors' layer calls it (sequence first, keys and values normed apart, its weights asked for), to the
    # bit: a linear layer over the sequence-first view adds its bias apart from the product, and rounds otherwise.
    with torch.no_grad():
        key, value = (layer.norm_kv(memory).transpose(0, 1) for _ in range(2))
        authors, _ = reference(layer.norm_q(queries).transpose(0, 1), key, value)
        fused = layer(queries, keys, values)
        layer.research_precision = True
        written_out = layer(queries, *layer.keys_values(memory))
    assert torch.equal(written_out, authors.transpose(0, 1))
    assert not torch.equal(fused, written_out)


def authors_loftup(upsampler: nn.Module, features: Tensor, image: Tensor) -> Tensor:
    """The authors' LoftUp forward on the same weights, written against PyTorch's own modules: all queries at once,
    nn.MultiheadAttention (sequence first) in every block, the 1x1 conv on the map and their LayerNorm written out."""
    network = upsampler.upsampler
    stem = network.first_conv(network.fourier_feat(image))
    batch, width, height, breadth = stem.shape
    features = upsampler.channelnorm(features)
    memory = torch.cat([features, network.lr_pe(features)], dim=1).flatten(2).permute(0, 2, 1)
    query = stem.flatten(2).permute(0, 2, 1)
    for attention, feed_forward in network.ca_transformer.layers:
        reference = nn.MultiheadAttention(width, attention.attention.num_heads).requires_grad_(False)
        reference.load_state_dict(attention.attention.state_dict())
        key, value = (attention.norm_kv(memory).permute(1, 0, 2) for _ in range(2))
        attended, _ = reference(attention.norm_q(query).permute(1, 0, 2), key, value)
        query = attended.permute(1, 0, 2) + query
        query = feed_forward(query) + query
    x = network.ca_transformer.norm(query).permute(0, 2, 1).reshape(batch, width, height, breadth)
    conv, norm = network.final_conv
    x = conv(x)
    mean = x.mean(1, keepdim=True)
    x = (x - mean) / torch.sqrt((x - mean).pow(2).mean(1, keepdim=True) + 1e-6)
    return norm.weight[:, None, None] * x + norm.bias[:, None, None]


def test_loftup_in_research_precision_is_the_authors_forward_to_the_bit() -> None:
    upsampler = randomized(create_upsampler("loftup", DIM)).eval().requires_grad_(False)
    features, image = inputs(size=(30, 41))
    with torch.no_grad():
        expected = authors_loftup(upsampler, features, image)
        own = upsampler(features, image)
        for module in upsampler.modules():
            if hasattr(module, "research_precision"):
                module.research_precision = True
        research = upsampler(features, image)
    assert torch.equal(research, expected)
    torch.testing.assert_close(own, expected, rtol=1e-5, atol=1e-5)
    assert not torch.equal(own, expected)  # the same function, rounded otherwise


def authors_window_mask(out_size: tuple[int, int], grid: tuple[int, int], ratio: float) -> Tensor:
    """AnyUp's rule, per output pixel centre: feature cells within `ratio` of the image each way (True = masked)."""
    (height, width), (rows, cols) = out_size, grid
    centre_y = ((torch.arange(height) + 0.5) / height).repeat_interleave(width)[:, None]
    centre_x = ((torch.arange(width) + 0.5) / width).repeat(height)[:, None]
    cell_y, cell_x = torch.arange(rows).repeat_interleave(cols), torch.arange(cols).repeat(rows)
    inside_y = (cell_y >= ((centre_y - ratio).clamp(0, 1) * rows).floor()) & (
        cell_y < ((centre_y + ratio).clamp(0, 1) * rows).ceil()
    )
    inside_x = (cell_x >= ((centre_x - ratio).clamp(0, 1) * cols).floor()) & (
        cell_x < ((centre_x + ratio).clamp(0, 1) * cols).ceil()
    )
    return ~(inside_y & inside_x)


@pytest.mark.parametrize("rows_per_band", [1, 5, None])
def test_anyup_banded_window_attention_is_the_masked_multiheadattention(rows_per_band: int | None) -> None:
    block = randomized(AnyUp()).cross_decode
    torch.manual_seed(0)
    queries, keys, values = torch.randn(2, 128, 23, 31), torch.randn(2, 128, 6, 9), torch.randn(2, DIM, 6, 9)
    reference = nn.MultiheadAttention(128, 4, batch_first=True)
    reference.load_state_dict(block.cross_attn.attention.state_dict())
    query_tokens = block.cross_attn.norm_q(block.conv2d(queries).flatten(2).transpose(1, 2))
    key_tokens = block.cross_attn.norm_k(keys.flatten(2).transpose(1, 2))
    mask = authors_window_mask((23, 31), (6, 9), block.window_ratio)
    _, weights = reference(query_tokens, key_tokens, key_tokens, attn_mask=mask, average_attn_weights=True)
    expected = (weights @ values.flatten(2).transpose(1, 2)).transpose(1, 2).reshape(2, DIM, 23, 31)
    with torch.no_grad():
        torch.testing.assert_close(block(queries, keys, values, rows_per_band), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("rows_per_band", [1, 7])
def test_jafar_row_bands_give_the_one_band_output(rows_per_band: int) -> None:
    upsampler = randomized(JAFAR(DIM)).eval()
    features, image = inputs(grid=(10, 12))
    with torch.no_grad():
        for size in [(38, 46), (23, 9)]:
            upsampler.rows_per_band = size[0]
            whole = upsampler(features, image, size)
            upsampler.rows_per_band = rows_per_band
            torch.testing.assert_close(upsampler(features, image, size), whole, rtol=1e-5, atol=1e-6)


def test_jafar_bands_fit_the_attention_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    """With the default band height, no band holds more attention logits than ATTENTION_BUDGET."""
    monkeypatch.setattr("isegprobe.upsamplers.jafar.ATTENTION_BUDGET", 4 * 46 * 120 * 5)
    upsampler = randomized(JAFAR(DIM)).eval()
    features, image = inputs(grid=(10, 12))
    bands = []
    original = CrossAttention.weights

    def counted(self: CrossAttention, queries: Tensor, keys: Tensor) -> Tensor:
        bands.append(queries.shape[1])
        return original(self, queries, keys)

    monkeypatch.setattr(CrossAttention, "weights", counted)
    with torch.no_grad():
        upsampler(features, image)
    assert bands == [5 * 46] * 7 + [3 * 46]


@pytest.mark.parametrize("dim", [DIM, 128, 384])
def test_jafar_attention_is_nn_multiheadattention_with_values_of_the_feature_width(dim: int) -> None:
    """The authors' layer: nn.MultiheadAttention(128, 4, vdim=dim), whose head-averaged weights average the raw
    values. At dim 128 it packs its projections into `in_proj_weight`; at any other dim they are separate."""
    torch.manual_seed(0)
    layer = CrossAttention(128, dim, 4)
    reference = nn.MultiheadAttention(128, 4, vdim=dim, batch_first=True)
    reference.load_state_dict(layer.attention.state_dict(), strict=True)
    queries, keys, values = torch.randn(2, 50, 128), torch.randn(2, 12, 128), torch.randn(2, 12, dim)
    key_heads = layer.attention.heads(layer.norm_k(keys), 1)
    with torch.no_grad():
        _, expected = reference(layer.norm_q(queries), layer.norm_k(keys), layer.norm_v(values))
        torch.testing.assert_close(layer.weights(queries, key_heads), expected, rtol=1e-5, atol=1e-6)


def test_jbu_adaptive_conv_is_featups_per_pixel_7x7_sum_with_the_same_gradients() -> None:
    torch.manual_seed(0)
    source = torch.randn(2, 5, 9 + 6, 11 + 6, requires_grad=True)
    kernel = torch.randn(2, 49, 9, 11, requires_grad=True)
    patches = F.unfold(source, 7).reshape(2, 5, 49, 9, 11)
    expected = torch.einsum("bckhw,bkhw->bchw", patches, kernel)
    out = adaptive_conv(source, kernel)
    torch.testing.assert_close(out, expected)
    weights = torch.randn_like(out)
    grads = torch.autograd.grad((out * weights).sum(), (source, kernel))
    expected_grads = torch.autograd.grad((expected * weights).sum(), (source, kernel))
    for grad, expected_grad in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(grad, expected_grad)


# --- as the iSegProbe research code runs them -------------------------------------------------------------------


def test_loftup_in_eval_mode_scales_each_image_by_its_own_range() -> None:
    """An image's output does not depend on the images beside it in the batch; the research code's batch (an image
    and its mirror, which has the same range) gives the same output as the image alone."""
    upsampler = randomized(create_upsampler("loftup", DIM)).eval()
    features, image = inputs(batch=3)
    image[1] = image[1] * 4 + 2  # another range than its neighbours
    with torch.no_grad():
        together = upsampler(features, image)
        alone = torch.cat([upsampler(features[i : i + 1], image[i : i + 1]) for i in range(3)])
        with_mirror = upsampler(
            torch.stack([features[1], features[1].flip(-1)]), torch.stack([image[1], image[1].flip(-1)])
        )[:1]
        pooled = with_batch_pooled_min_max(upsampler)(features, image)
    torch.testing.assert_close(together, alone, rtol=0, atol=1e-5)
    torch.testing.assert_close(with_mirror, alone[1:2], rtol=0, atol=1e-5)
    assert (pooled - alone).abs().max() > 1e-2, "pooling over the batch would mix the images"


def test_featup_jbu_stack_is_the_hub_models_upsampler_without_its_channel_norm(tmp_path: Path) -> None:
    """The research code's JBUFeatUp takes FeatUp's hub model's `.upsampler` only: the same file's JBU stack, fed the
    features without the ChannelNorm that `featup_jbu` (the whole hub model) puts in front."""
    path, source = write_authors_file("featup_jbu", "dinov2_jbu_stack_cocostuff.ckpt", "lightning", tmp_path)
    stack = create_upsampler("featup_jbu_stack", DIM, weights=str(path))
    assert {key.removeprefix("upsampler.") for key in stack.state_dict()} == {
        key.removeprefix("upsampler.") for key in source.state_dict() if key.startswith("upsampler.")
    }
    features, image = inputs()
    with torch.no_grad():
        expected = source.upsampler(features, image)  # the JBU stack alone, at 16x
        torch.testing.assert_close(stack.forward_native(features, image), expected, rtol=0, atol=1e-6)
        assert (
            stack(features, image) - create_upsampler("featup_jbu", DIM, str(path))(features, image)
        ).abs().max() > 1e-3


def test_a_featup_no_norm_checkpoint_loads_as_the_stack_and_featup_jbu_says_so(tmp_path: Path) -> None:
    """FeatUp's `no_norm/` files (MaskCLIP's is only one) hold the JBU stack without a ChannelNorm: `featup_jbu`
    spoke of a feature dim and two missing keys; it now names the upsampler that takes the file."""
    source = randomized(create_upsampler("featup_jbu", DIM)).eval()
    stack_only = {key: value for key, value in source.state_dict().items() if key.startswith("upsampler.")}
    path = tmp_path / "maskclip_jbu_stack_cocostuff.ckpt"
    torch.save(lightning_checkpoint(stack_only), path)
    expected = r"without its ChannelNorm.*model\.upsampler\.name=featup_jbu_stack .*--upsamplers featup_jbu_stack"
    with pytest.raises(UserError, match=expected):
        create_upsampler("featup_jbu", DIM, weights=str(path))
    stack = create_upsampler("featup_jbu_stack", DIM, weights=str(path))
    features, image = inputs()
    with torch.no_grad():
        torch.testing.assert_close(stack.forward_native(features, image), source.upsampler(features, image))


def featup_jbu_step(step: JBULearnedRange, source: Tensor, guidance: Tensor) -> Tensor:
    """FeatUp's `JBULearnedRange.forward` (featup/upsamplers.py), formula for formula, with its adaptive convolution
    as its CUDA kernel computes it, which the research code ran: per output value, from zero, one fused multiply-add
    per tap, row-major over the window (emulated in float64: the product is exact there, the sum rounded once more),
    into the NCHW tensor the extension allocates."""
    batch, _, height, width = guidance.shape
    keys = step.range_proj(guidance)
    queries = nn.Unfold(7)(F.pad(keys, [3] * 4, mode="reflect")).reshape(batch, 32, 49, height, width)
    temperature = step.range_temp.exp().clamp_min(1e-4).clamp_max(1e4)
    similarity = torch.einsum("bchwp,bchw->bphw", queries.permute(0, 1, 3, 4, 2), keys)
    range_kernel = F.softmax(temperature * similarity, dim=1)
    offsets = torch.linspace(-1, 1, 7)
    patch = torch.stack(torch.meshgrid(offsets, offsets, indexing="ij"))
    spatial_kernel = torch.exp(-patch.square().sum(0) / (2 * step.sigma_spatial**2)).reshape(1, 49, 1, 1)
    kernel = range_kernel * spatial_kernel
    kernel /= kernel.sum(1, keepdim=True).clamp(1e-7)
    kernel += 0.1 * step.fixup_proj(torch.cat([kernel, guidance], dim=1))
    upsampled = F.pad(nn.Upsample((height, width), mode="bicubic")(source), [3] * 4, mode="reflect")
    out = torch.zeros(batch, source.shape[1], height, width, dtype=torch.float64)  # NCHW, as the extension makes it
    for tap in range(49):
        window = upsampled[..., tap // 7 : tap // 7 + height, tap % 7 : tap % 7 + width]
        out.copy_((kernel[:, tap : tap + 1].double() * window.double() + out).float())
    return out.float()


def featup_jbu_stack(stack: JBUStack, source: Tensor, guidance: Tensor) -> Tensor:
    """FeatUp's `JBUStack.forward`: four steps, each guided by the image pooled to its output grid, then the fixup."""
    for step in (stack.up1, stack.up2, stack.up3, stack.up4):
        pooled = F.adaptive_avg_pool2d(guidance, [2 * size for size in source.shape[-2:]])
        source = featup_jbu_step(step, source, pooled)
    return stack.fixup_proj(source) * 0.1 + source


def test_featup_jbu_in_research_precision_is_featups_forward_to_the_bit() -> None:
    """Under research precision the range kernel's similarity is FeatUp's unfold and einsum (a batched matrix
    product), not a sum over the key channels, and each step returns NCHW as FeatUp's extension does; the adaptive
    convolution is its CUDA kernel's chain of fused multiply-adds either way."""
    upsampler = randomized(create_upsampler("featup_jbu_stack", DIM)).eval()
    features, image = inputs(size=(48, 64))
    features = features.contiguous(memory_format=torch.channels_last)  # as the featurizers hand them over
    with torch.no_grad():
        expected = featup_jbu_stack(upsampler.upsampler, features, image)
        own = upsampler.forward_native(features, image)
        for module in upsampler.modules():
            if hasattr(module, "research_precision"):
                module.research_precision = True
        research = upsampler.forward_native(features, image)
    assert torch.equal(research, expected)
    assert research.stride() == expected.stride(), "FeatUp's extension returns NCHW, which the layers after round by"
    torch.testing.assert_close(own, expected, rtol=1e-5, atol=1e-5)
    assert not torch.equal(own, expected)  # the same function, rounded otherwise


def test_a_training_config_takes_jafar_and_its_authors_file_by_name(tmp_path: Path) -> None:
    path, source = write_authors_file("jafar", "vit_small_patch14_dinov2.lvd142m.pth", "jafar", tmp_path)
    config = load_train_config(
        "fast_cpu", ["model.upsampler.name=jafar", f"model.upsampler.weights={path}", "model.upsampler.fine_tune=false"]
    )
    probe = ISProbe(config.model, DIM, 8)
    assert isinstance(probe.upsampler, JAFAR) and not probe.upsampler_frozen_at_random
    features, image = inputs()
    with torch.no_grad():
        torch.testing.assert_close(probe.upsampler(features, image), source(features, image), rtol=0, atol=0)


@pytest.mark.parametrize("follow", [False, True])
def test_a_frozen_upsampler_follows_the_probes_train_mode_only_when_asked(follow: bool, tmp_path: Path) -> None:
    """With `train_mode_when_frozen` (the research presets) a frozen LiFT trains on batch statistics and moves its
    running statistics, as the research code's `net.train()` runs it, so that the eval-mode passes of the iterative
    clicks use the moved ones, as the research code's do; the authors' are saved beside them, and a probe loaded for
    evaluation uses those, as the research code reloads the authors' file."""
    path, source = write_authors_file("lift", "lift.pth", "bare", tmp_path)
    config = load_train_config(
        "fast_cpu",
        [
            "model.upsampler.name=lift",
            f"model.upsampler.weights={path}",
            f"model.upsampler.train_mode_when_frozen={str(follow).lower()}",
        ],
    )
    probe = ISProbe(config.model, DIM, 8).train()
    features, image = inputs()
    research = copy.deepcopy(source).train()
    with torch.no_grad():
        in_training = probe.upsampler(features, image)
        by_authors_stats = source.eval()(features, image)
        by_batch_stats = research(features, image)
        by_moved_stats = research.eval()(features, image)
    assert probe.upsampler.training is follow
    torch.testing.assert_close(in_training, by_batch_stats if follow else by_authors_stats)
    assert not any(parameter.requires_grad for parameter in probe.upsampler.parameters())
    probe.eval()
    with torch.no_grad():
        torch.testing.assert_close(probe.upsampler(features, image), by_moved_stats if follow else by_authors_stats)
    authors = source.state_dict()
    saved = {key.removeprefix("upsampler."): value for key, value in probe.state_dict().items()}
    moved = research.state_dict()
    for key, value in authors.items():
        assert torch.equal(saved[key], moved[key] if follow else value), key
        if follow and key.endswith(("running_mean", "running_var", "num_batches_tracked")):
            where, statistic = key.rsplit(".", 1)
            assert torch.equal(saved[f"{where}.authors_{statistic}"], value), key
    key = "image_convs_1.1.running_mean"
    assert not torch.equal(moved[key], authors[key]), "a training-mode pass moves the running statistics"


def test_a_probe_saved_before_the_authors_statistics_were_kept_loads_with_its_running_ones_as_theirs(
    tmp_path: Path,
) -> None:
    """Such a probe's training did not move its statistics, so its running ones are the authors'."""
    path, source = write_authors_file("lift", "lift.pth", "bare", tmp_path)
    overrides = ["model.upsampler.name=lift", f"model.upsampler.weights={path}"]
    config = load_train_config("fast_cpu", [*overrides, "model.upsampler.train_mode_when_frozen=true"])
    older = {key: value for key, value in ISProbe(config.model, DIM, 8).state_dict().items() if ".authors_" not in key}
    probe = ISProbe(config.model, DIM, 8)
    for module in probe.upsampler.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.authors_running_mean.fill_(7.0)
    probe.load_state_dict(older)
    probe.upsampler.use_authors_statistics()
    assert all(
        torch.equal(value, source.state_dict()[key])
        for key, value in probe.upsampler.state_dict().items()
        if ".authors_" not in key
    )
