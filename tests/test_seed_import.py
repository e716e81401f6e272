"""Probes trained by the iSegProbe research code (the seed), imported from checkpoints written in its format.

The checkpoints are written here as the seed's `save_checkpoint` writes them: `torch.save` of its state dict and
its serialized model config, whose values are EasyDicts, OmegaConf nodes and an instance of its ModelBuilder.
"""

from __future__ import annotations

import os
import re
import sys
import types
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from launch import run_cli
from stores import builtin_store

from isegprobe.cache import CachedDataset
from isegprobe.cli import main
from isegprobe.config import ClickEncoderConfig
from isegprobe.config_loading import load_train_config
from isegprobe.errors import UserError
from isegprobe.featurizers import RandomWeightsWarning, recreate_featurizer
from isegprobe.model import click_inputs, click_maps, create_click_encoder
from isegprobe.model.clicks import RESEARCH_CHANNEL_OF
from isegprobe.training import load_probe, seed_import
from isegprobe.training.checkpoint import read_metadata
from isegprobe.training.seed_checkpoints import SeedProbe, read_seed_checkpoint, seed_probe
from isegprobe.training.seed_import import import_seed_probe
from isegprobe.upsamplers import create_upsampler

easydict = pytest.importorskip("easydict", reason="easydict (a test extra) writes the seed's config objects")
omegaconf = pytest.importorskip("omegaconf", reason="omegaconf (a test extra) writes the seed's config objects")

SIZE, DIM, PATCH = 56, 384, 14


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return builtin_store(
        tmp_path_factory.mktemp("cache"), size=SIZE, featurizer="dinov2_vits14", normalization="imagenet"
    )


@contextmanager
def seed_model_builder() -> Iterator[type]:
    """The seed's ModelBuilder class under its module path, so that pickling names it as the seed's file does."""
    modules = {name: types.ModuleType(name) for name in ("core", "core.utils", "core.utils.model_builder")}
    model_builder_class = type("ModelBuilder", (), {"__module__": "core.utils.model_builder"})
    modules["core.utils.model_builder"].ModelBuilder = model_builder_class
    sys.modules.update(modules)
    try:
        yield model_builder_class
    finally:
        for name in modules:
            del sys.modules[name]


def write_seed_checkpoint(
    path: Path,
    weights: dict[str, torch.Tensor],
    injection: str = "after_backbone",
    encoder: str = "patchEmbed",
    upsampler: str = "identity",
    backbone: dict | None = None,
    head: str = "convhead",
    size: int = SIZE,
    patch: int = PATCH,
    edit: Callable[[dict], None] | None = None,
) -> Path:
    hydra_cfg = omegaconf.OmegaConf.create({"training_params": {"crop_size": [size, size]}})
    encoder_params = {"img_size": hydra_cfg.training_params.crop_size, "patch_size": (patch, patch), "embed_dim": DIM}
    if encoder == "simple_vit":
        encoder_params.update(depth=2, heads=2, mlp_dim=64, channels=3, dim_head=16)
    modules = easydict.EasyDict(
        {
            "backbone": backbone or {"type": "dinov2", "params": {"feats_injection_mode": injection}},
            "upsampler": {"type": upsampler, "params": {}},
            "head": {"type": head, "params": {"in_channels": DIM, "num_layers": 2, "num_classes": 1}},
            "embed_coords": {"type": encoder, "params": encoder_params},
            "save": {"embed_coords": True, "backbone": False, "upsampler": False, "head": True},
            "architecture": "backbone_upsampler_head",
        }
    )
    with seed_model_builder() as model_builder_class:
        params = {
            "backbone_cfg": modules.backbone,
            "head_cfg": modules.head,
            "embed_coords_cfg": modules.embed_coords,
            "neck_cfg": None,
            "upsampler_cfg": modules.upsampler,
            "save_cfg": modules.save,
            "architecture": modules.architecture,
            "model_builder": model_builder_class(),
            "use_disks": True,
            "norm_radius": 5,
            "with_prev_mask": True,
        }
        config = {
            "class": "core.model.iseg_probe_model.iSegProbeModel",
            "params": {name: {"type": "builtin", "value": value, "specified": True} for name, value in params.items()},
        }
        checkpoint = {"state_dict": weights, "config": config}
        if edit is not None:
            edit(checkpoint)
        torch.save(checkpoint, path)
    return path


def seed_head_weights(generator: torch.Generator) -> dict[str, torch.Tensor]:
    weights = {}
    for index in range(2):
        weights[f"head.convs.{index}.conv.weight"] = torch.randn(DIM, DIM, 3, 3, generator=generator) * 0.02
        weights[f"head.convs.{index}.conv.bias"] = torch.randn(DIM, generator=generator) * 0.02
    weights["head.classifier.weight"] = torch.randn(1, DIM, 1, 1, generator=generator) * 0.05
    weights["head.classifier.bias"] = torch.randn(1, generator=generator)
    return weights


def seed_head(weights: dict[str, torch.Tensor], features: torch.Tensor, size: int = SIZE) -> torch.Tensor:
    """The seed's ConvSegHead written out: two 3x3 conv + ReLU, a 1x1 classifier; then its resize to the image."""
    for index in range(2):
        conv = f"head.convs.{index}.conv"
        features = F.relu(F.conv2d(features, weights[f"{conv}.weight"], weights[f"{conv}.bias"], padding=1))
    logits = F.conv2d(features, weights["head.classifier.weight"], weights["head.classifier.bias"])
    return F.interpolate(logits, size=(size, size), mode="bilinear", align_corners=True)


def seed_click_maps(clicks: torch.Tensor, prev_mask: torch.Tensor) -> torch.Tensor:
    """The seed's click input: the previous mask first, then the positive and negative disks."""
    return torch.cat((prev_mask, click_maps(clicks, tuple(prev_mask.shape[-2:]))), dim=1)


def probe_inputs(store: Path) -> tuple[torch.Tensor, ...]:
    entry = CachedDataset(store)[0]
    features = entry["features"].float()[None]
    image = torch.zeros(1, 3, SIZE, SIZE)
    clicks = torch.tensor([[[20, 30, 1], [40, 10, 0], [5, 50, 1]]])
    prev_mask = (torch.rand(1, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(3)) > 0.5).float()
    return features, image, clicks, prev_mask


def test_a_seed_patch_embed_probe_gives_the_seeds_outputs(store: Path, tmp_path: Path) -> None:
    generator = torch.Generator().manual_seed(0)
    weights = {
        "embed_coords.proj.weight": torch.randn(DIM, 3, PATCH, PATCH, generator=generator) * 0.05,
        "embed_coords.proj.bias": torch.randn(DIM, generator=generator) * 0.05,
        **seed_head_weights(generator),
    }
    checkpoint = write_seed_checkpoint(tmp_path / "last_checkpoint.pth", weights)
    metadata = import_seed_probe(checkpoint, tmp_path / "run", store_path=store)
    probe, _ = load_probe(tmp_path / "run")
    features, image, clicks, prev_mask = probe_inputs(store)

    tokens = F.conv2d(
        seed_click_maps(clicks, prev_mask),
        weights["embed_coords.proj.weight"],
        weights["embed_coords.proj.bias"],
        stride=PATCH,
    )
    expected = seed_head(weights, features + tokens)
    with torch.no_grad():
        assert torch.allclose(probe(features, image, clicks, prev_mask), expected, atol=1e-5)
    assert metadata["config"]["model"]["fusion"] == "after_backbone"
    assert metadata["featurizer_provenance"]["name"] == "dinov2_vits14"
    assert len(metadata["imported_from"]["sha256"]) == 64


def test_a_seed_simple_vit_probe_gives_the_seeds_outputs(store: Path, tmp_path: Path) -> None:
    torch.manual_seed(1)
    seed_encoder = create_click_encoder(
        ClickEncoderConfig(name="simple_vit", depth=2, heads=2, mlp_dim=64, dim_head=16), DIM, PATCH
    ).eval()
    weights = {f"embed_coords.{key}": value for key, value in seed_encoder.state_dict().items()}
    weights.update(seed_head_weights(torch.Generator().manual_seed(2)))
    checkpoint = write_seed_checkpoint(tmp_path / "010.pth", weights, encoder="simple_vit")
    import_seed_probe(checkpoint, tmp_path / "run", store_path=store)
    probe, metadata = load_probe(tmp_path / "run")
    features, image, clicks, prev_mask = probe_inputs(store)

    with torch.no_grad():
        tokens = seed_encoder(seed_click_maps(clicks, prev_mask), (SIZE // PATCH, SIZE // PATCH))
        expected = seed_head(weights, features + tokens)
        assert torch.allclose(probe(features, image, clicks, prev_mask), expected, atol=1e-5)
    encoder = metadata["config"]["model"]["click_encoder"]
    assert (encoder["name"], encoder["depth"], encoder["heads"], encoder["dim_head"]) == ("simple_vit", 2, 2, 16)


@pytest.mark.parametrize(("encoder", "seed_name"), [("patch_embed", "patchEmbed"), ("simple_vit", "simple_vit")])
def test_in_research_precision_a_seed_probes_click_tokens_are_the_seeds_to_the_bit(
    store: Path, tmp_path: Path, encoder: str, seed_name: str
) -> None:
    """The seed stacks its click maps [previous mask, positive, negative]; the import reorders the encoder's weights
    to isegprobe's order, which computes the same function but sums the channels in another order. In research
    precision the probe stacks them as the seed does and reads its weights in that order: the seed's rounding."""
    torch.manual_seed(5)
    config = ClickEncoderConfig(name=encoder, depth=2, heads=2, mlp_dim=64, dim_head=16)
    seed_encoder = create_click_encoder(config, DIM, PATCH).eval()
    for module in seed_encoder.modules():
        if hasattr(module, "research_precision"):
            module.research_precision = True  # SimpleViT's attention written out, as the seed's copy writes it
    weights = {f"embed_coords.{key}": value for key, value in seed_encoder.state_dict().items()}
    weights.update(seed_head_weights(torch.Generator().manual_seed(6)))
    checkpoint = write_seed_checkpoint(tmp_path / "seed.pth", weights, encoder=seed_name)
    import_seed_probe(checkpoint, tmp_path / "run", store_path=store)
    probe, _ = load_probe(tmp_path / "run")
    features, image, clicks, _ = probe_inputs(store)
    prev_probs = torch.rand(1, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(7))
    tokens: list[torch.Tensor] = []
    probe.click_encoder.register_forward_hook(lambda module, args, output: tokens.append(output))

    with torch.no_grad():
        expected = seed_encoder(seed_click_maps(clicks, prev_probs), (SIZE // PATCH, SIZE // PATCH))
        for research_precision in (False, True):
            probe.use_research_precision(research_precision)
            probe(features, image, clicks, prev_probs)
    isegprobe_order, research_order = tokens
    assert torch.equal(research_order, expected)
    torch.testing.assert_close(isegprobe_order, expected)
    assert not torch.equal(isegprobe_order, expected)  # the same function, rounded otherwise


def test_click_inputs_in_the_research_order_are_the_same_maps_stacked_as_the_seed_stacks_them() -> None:
    clicks = torch.tensor([[[20.5, 30.25, 1], [40, 10, 0], [-1, -1, 0]], [[3, 4, 0], [50, 52, 1], [0, 55, 0]]])
    prev_probs = torch.rand(2, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(8))
    research_order = click_inputs(clicks, prev_probs, research_order=True)
    assert torch.equal(research_order, seed_click_maps(clicks, prev_probs))
    assert torch.equal(research_order[:, list(RESEARCH_CHANNEL_OF)], click_inputs(clicks, prev_probs))


def patch_embed_weights() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(4)
    return {
        "embed_coords.proj.weight": torch.randn(DIM, 3, PATCH, PATCH, generator=generator),
        "embed_coords.proj.bias": torch.zeros(DIM),
        **seed_head_weights(generator),
    }


def test_an_early_fusion_seed_probe_imports_for_online_evaluation(store: Path, tmp_path: Path) -> None:
    checkpoint = write_seed_checkpoint(tmp_path / "seed.pth", patch_embed_weights(), injection="before_backbone")
    metadata = import_seed_probe(checkpoint, tmp_path / "run", store_path=store)
    probe, _ = load_probe(tmp_path / "run")
    assert probe.needs_featurizer and metadata["online"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"backbone": {"type": "vit", "params": {"arch": "dino_vitb16", "feats_injection_mode": "after_backbone"}}},
            "DINO hub ViT-S names",
        ),
        (
            {"backbone": {"type": "vit", "params": {"arch": "vit_small_patch16_224", "feat_type": "cls"}}},
            "feat_type 'cls'",
        ),
        (
            {"backbone": {"type": "vit", "params": {"arch": "maskclip", "feats_injection_mode": "after_backbone"}}},
            r"seed\.pth: isegprobe cannot rebuild this probe: ViT arch 'maskclip' \(the research code builds it by",
        ),
        ({"upsampler": "lift"}, "--upsampler-weights"),
        ({"upsampler": "magic"}, "upsampler 'magic'"),
        ({"head": "linear"}, "head 'linear'"),
    ],
)
def test_seed_probes_isegprobe_cannot_rebuild_are_refused(store: Path, tmp_path: Path, options, message) -> None:
    checkpoint = write_seed_checkpoint(tmp_path / "seed.pth", patch_embed_weights(), **options)
    with pytest.raises(UserError, match=message):
        import_seed_probe(checkpoint, tmp_path / "run", store_path=store)
    assert not (tmp_path / "run" / "last.json").exists()


class _RunsACommand:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_checkpoint_that_would_run_code_is_read_without_running_it(store: Path, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    checkpoint = tmp_path / "hostile.pth"
    hostile = {"state_dict": patch_embed_weights(), "config": {"params": {}}, "payload": _RunsACommand(marker)}
    torch.save(hostile, checkpoint)
    with pytest.raises(UserError, match="posix.system"):
        import_seed_probe(checkpoint, tmp_path / "run", store_path=store)
    assert not marker.exists()

    torch.save({"state_dict": patch_embed_weights(), "config": {"params": {}}}, tmp_path / "no_config.pth")
    with pytest.raises(UserError, match="has no backbone_cfg"):
        import_seed_probe(tmp_path / "no_config.pth", tmp_path / "run", store_path=store)

    torch.save(torch.zeros(3), tmp_path / "tensor.pth")
    with pytest.raises(UserError, match="'state_dict' and 'config'"):
        import_seed_probe(tmp_path / "tensor.pth", tmp_path / "run", store_path=store)


def test_import_seed_command_writes_a_run_that_evaluate_reads(store: Path, tmp_path: Path) -> None:
    checkpoint = write_seed_checkpoint(tmp_path / "last_checkpoint.pth", patch_embed_weights())
    imported = run_cli("import-seed", str(checkpoint), "--store", str(store), "--out", str(tmp_path / "run"))
    assert imported.returncode == 0, imported.stderr
    assert "fusion after_backbone, click encoder patch_embed, upsampler identity" in imported.stdout
    evaluated = run_cli(
        "evaluate", "--checkpoint", str(tmp_path / "run"), "--store", str(store), "--max-clicks", "2",
        "--out", str(tmp_path / "results"),
    )  # fmt: skip
    assert evaluated.returncode == 0, evaluated.stderr
    assert (tmp_path / "results" / "results.json").is_file()


def test_a_seed_probe_from_another_patch_size_does_not_fit_its_featurizer(store: Path, tmp_path: Path) -> None:
    weights = {**patch_embed_weights(), "embed_coords.proj.weight": torch.zeros(DIM, 3, 16, 16)}
    checkpoint = write_seed_checkpoint(tmp_path / "seed.pth", weights)
    with pytest.raises(UserError, match=r"do not fit a probe on dinov2_vits14.*embed_coords.proj.weight"):
        import_seed_probe(checkpoint, tmp_path / "run", store_path=store)
    fitting = write_seed_checkpoint(tmp_path / "ok.pth", patch_embed_weights())
    import_seed_probe(fitting, tmp_path / "ok", store_path=store)
    with pytest.raises(UserError, match="already holds a run"):
        import_seed_probe(fitting, tmp_path / "ok", store_path=store)


@pytest.mark.parametrize("names", [("best.safetensors", "best.json"), ("last.safetensors",)])
def test_an_import_beside_any_file_of_another_run_is_refused(store: Path, tmp_path: Path, names) -> None:
    """Beside another run's best.* the imported probe was written, and evaluation and the demo loaded the other
    probe (a folder's best checkpoint comes first); a lone last.safetensors was replaced without a word."""
    checkpoint = write_seed_checkpoint(tmp_path / "seed.pth", patch_embed_weights())
    run = tmp_path / "mixed"
    run.mkdir()
    for name in names:
        (run / name).write_text("another run's")
    with pytest.raises(UserError, match=rf"mixed already holds a run \({', '.join(names)}\)"):
        import_seed_probe(checkpoint, run, store_path=store)
    assert sorted(path.name for path in run.iterdir()) == sorted(names)


def test_two_imports_into_one_folder_at_once_leave_the_first_and_refuse_the_second(
    store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both imports passed the folder's check before either held its lock: both said they imported, the second's
    weights replaced the first's. The check is made again under the lock."""
    first = write_seed_checkpoint(tmp_path / "first.pth", patch_embed_weights())
    second = write_seed_checkpoint(tmp_path / "second.pth", {k: v + 1 for k, v in patch_embed_weights().items()})
    read_seed = seed_import.seed_probe

    def first_finishes_meanwhile(*args: object) -> object:
        monkeypatch.setattr(seed_import, "seed_probe", read_seed)
        import_seed_probe(first, tmp_path / "run", store_path=store)
        return read_seed(*args)

    monkeypatch.setattr(seed_import, "seed_probe", first_finishes_meanwhile)
    with pytest.raises(UserError, match="already holds a run"):
        import_seed_probe(second, tmp_path / "run", store_path=store)
    assert read_metadata(tmp_path / "run" / "last.json")["imported_from"]["path"] == str(first.resolve())


@pytest.mark.parametrize("given", ["/dev/null", "folder"])
def test_a_checkpoint_path_that_is_no_regular_file_is_said_to_be_one(tmp_path: Path, given: str) -> None:
    """It was "no such iSegProbe checkpoint file", of a path that is there."""
    path = Path(given) if given.startswith("/") else tmp_path / given
    if not path.exists():
        path.mkdir()
    with pytest.raises(UserError, match=rf"^{path}: not a regular file \(a folder, a device or a pipe\)"):
        import_seed_probe(path, tmp_path / "run", weights="random")


def test_an_import_into_a_store_is_refused(store: Path, tmp_path: Path) -> None:
    checkpoint = write_seed_checkpoint(tmp_path / "seed.pth", patch_embed_weights())
    with pytest.raises(UserError, match="inside the feature store"):
        import_seed_probe(checkpoint, store / "run", store_path=store)
    assert not (store / "run").exists()


def setting(*path: str, to: object) -> Callable[[dict], None]:
    """An edit of a seed checkpoint's dictionary: the item at `path` (keys from the top) set `to` a value."""

    def edit(checkpoint: dict) -> None:
        *parents, last = path
        for key in parents:
            checkpoint = checkpoint[key]
        checkpoint[last] = to

    return edit


def param(*path: str, to: object) -> Callable[[dict], None]:
    """An edit of the value of one of the seed model's config entries (config.params.NAME.value...)."""
    name, *inside = path
    return setting("config", "params", name, "value", *inside, to=to)


MALFORMED_SEED_CHECKPOINTS = [
    pytest.param(
        param("embed_coords_cfg", "params", "img_size", to="77"), "img_size '77' is not a crop size", id="img_size text"
    ),
    pytest.param(
        param("embed_coords_cfg", "params", "img_size", to=0), "img_size is 0, expected a value >= 1", id="img_size 0"
    ),
    pytest.param(
        param("embed_coords_cfg", "params", "img_size", to=10**30),
        "img_size is 1000000000000000000000000000000, expected a value >= 1 and <= 4096",
        id="img_size huge",
    ),
    pytest.param(setting("state_dict", to=[1, 2]), "its state_dict is [1, 2], expected a dict", id="state_dict list"),
    pytest.param(setting("config", to="abc"), "its config is 'abc', expected a dict", id="config text"),
    pytest.param(setting("config", "params", to=[1]), "its config's params is [1], expected a dict", id="params list"),
    pytest.param(
        setting("config", "params", "norm_radius", to="5"),
        "params entry 'norm_radius' is '5', expected a dict with a 'value'",
        id="params entry text",
    ),
    pytest.param(
        param("backbone_cfg", "params", to="abc"),
        "backbone_cfg.params is 'abc', expected a dict",
        id="backbone params text",
    ),
    pytest.param(
        param("upsampler_cfg", to="abc"), "its upsampler_cfg is 'abc', expected a dict", id="upsampler_cfg text"
    ),
    pytest.param(
        param("upsampler_cfg", "type", to=["identity"]),
        "upsampler_cfg.type is ['identity'], expected a name",
        id="upsampler type list",
    ),
    pytest.param(param("norm_radius", to="abc"), "its norm_radius is 'abc', expected a whole number", id="radius text"),
    pytest.param(
        param("norm_radius", to=float("nan")), "its norm_radius is nan, expected a whole number", id="radius NaN"
    ),
    pytest.param(param("norm_radius", to=-5), "its norm_radius is -5, expected a value >= 1", id="radius -5"),
    pytest.param(
        param("embed_coords_cfg", "type", to="simple_vit"),
        "simple_vit click encoder's depth is missing, expected a whole number",
        id="simple_vit without depth",
    ),
    pytest.param(
        setting("state_dict", "head.convs.0", to=torch.zeros(1)),
        "state_dict key 'head.convs.0' is not head.convs.<layer>.conv.<parameter>",
        id="head key without parameter",
    ),
    pytest.param(
        setting("state_dict", "head.convs.x.conv.weight", to=torch.zeros(1)),
        "state_dict key 'head.convs.x.conv.weight' is not head.convs.<layer>",
        id="head key without layer",
    ),
    pytest.param(
        setting("state_dict", "embed_coords.proj.weight", to=[1.0]),
        "state_dict entry 'embed_coords.proj.weight' is [1.0], expected a tensor",
        id="click weight list",
    ),
    pytest.param(
        setting("state_dict", "embed_coords.proj.weight", to=torch.zeros(3)),
        "embed_coords.proj.weight has shape (3,), expected 3 click channels",
        id="click weight 1-D",
    ),
    pytest.param(
        setting("state_dict", "embed_coords.proj.weight", to=torch.zeros(DIM, 4, PATCH, PATCH)),
        f"embed_coords.proj.weight has shape ({DIM}, 4, {PATCH}, {PATCH}), expected 3 click channels",
        id="click weight of 4 channels",
    ),
    pytest.param(
        setting("state_dict", 3, to=torch.zeros(1)), "its state_dict key 3 is not a name (a string)", id="int key"
    ),
    pytest.param(
        setting("config", "class", to="isegm.model.is_hrnet_model.HRNetModel"),
        "its config's class is 'isegm.model.is_hrnet_model.HRNetModel', not the research code's iSegProbeModel",
        id="RITM model class",
    ),
    pytest.param(
        setting("config", "params", "use_rgb_conv", to={"value": True}),
        "RITM's convolutional transform of the click maps (use_rgb_conv)",
        id="use_rgb_conv",
    ),
    pytest.param(
        setting("config", "params", "norm_mean_std", to={"value": ([0.5, 0.5, 0.5], [0.5, 0.5, 0.5])}),
        "images normalized with norm_mean_std [[0.5, 0.5, 0.5], [0.5, 0.5, 0.5]] (only ImageNet's)",
        id="other normalization",
    ),
    pytest.param(
        param("head_cfg", "params", "num_layers", to=torch.zeros(2)),
        "not an iSegProbe checkpoint as the research code writes it",
        id="num_layers tensor",
    ),
]


@pytest.mark.parametrize(("edit", "message"), MALFORMED_SEED_CHECKPOINTS)
def test_a_malformed_seed_checkpoint_is_refused_in_one_line_that_names_the_file_and_the_field(
    tmp_path: Path, edit: Callable[[dict], None], message: str
) -> None:
    checkpoint = write_seed_checkpoint(tmp_path / "seed.pth", patch_embed_weights(), edit=edit)
    result = CliRunner().invoke(main, ["import-seed", str(checkpoint), "--out", str(tmp_path / "run")])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert result.output.startswith(f"Error: {checkpoint}: ") and result.output.count("\n") == 1, result.output
    assert message in result.output
    assert "config key" not in result.output, "a value from the checkpoint is named as a config key the user set"
    assert not (tmp_path / "run").exists()


def test_a_seed_checkpoint_in_torch_saves_old_format_is_told_to_be_saved_again(tmp_path: Path) -> None:
    checkpoint = tmp_path / "seed.pth"
    torch.save({"state_dict": patch_embed_weights(), "config": {}}, checkpoint, _use_new_zipfile_serialization=False)
    with pytest.raises(UserError, match=r"torch\.save's old format .*save it again with a current torch") as refused:
        import_seed_probe(checkpoint, tmp_path / "run")
    assert str(refused.value).startswith(f"{checkpoint}: ")
    assert not (tmp_path / "run").exists()


# --- the research code's backbones, presets and channel orders ---------------------------------------------------

VIT_SIZE, VIT_PATCH = 64, 16


def imported_vit_probe(tmp_path: Path) -> tuple[dict[str, torch.Tensor], dict, torch.nn.Module, torch.nn.Module]:
    """A research `vit` probe (patch-embed, early fusion) written and imported: its weights, the import's metadata,
    the featurizer and the probe."""
    generator = torch.Generator().manual_seed(6)
    weights = {
        "embed_coords.proj.weight": torch.randn(DIM, 3, VIT_PATCH, VIT_PATCH, generator=generator) * 0.05,
        "embed_coords.proj.bias": torch.randn(DIM, generator=generator) * 0.05,
        **seed_head_weights(generator),
    }
    backbone = {
        "type": "vit",
        "params": {"arch": "vit_small_patch16_224", "patch_size": 16, "feats_injection_mode": "before_backbone"},
    }
    checkpoint = write_seed_checkpoint(tmp_path / "vit.pth", weights, backbone=backbone, size=VIT_SIZE, patch=VIT_PATCH)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        metadata = import_seed_probe(checkpoint, tmp_path / "run", weights="random")
        featurizer = recreate_featurizer(metadata["featurizer_provenance"])
    probe, _ = load_probe(tmp_path / "run", featurizer=featurizer)
    return weights, metadata, featurizer, probe


def vit_probe_inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(9)
    image = torch.randn(1, 3, VIT_SIZE, VIT_SIZE, generator=generator)
    clicks = torch.tensor([[[20, 30, 1], [40, 10, 0]]])
    return image, clicks, torch.rand(1, 1, VIT_SIZE, VIT_SIZE, generator=generator)


def research_vit_keys(
    weights: dict[str, torch.Tensor],
    featurizer: torch.nn.Module,
    image: torch.Tensor,
    clicks: torch.Tensor,
    prev_mask: torch.Tensor,
) -> torch.Tensor:
    """The keys as the research code's ViT hands them to its head: its click tokens added to the patch tokens,
    channel d * 6 + h (head minor), laid out channels-last."""
    tokens = F.conv2d(
        seed_click_maps(clicks, prev_mask),
        weights["embed_coords.proj.weight"],
        weights["embed_coords.proj.bias"],
        stride=VIT_PATCH,
    )
    keys = featurizer(image, token_bias=tokens).permute(0, 2, 3, 1)  # isegprobe's layout: channel h * 64 + d
    grid = VIT_SIZE // VIT_PATCH
    return keys.reshape(1, grid, grid, 6, 64).transpose(3, 4).reshape(1, grid, grid, DIM).permute(0, 3, 1, 2)


def test_a_vit_seed_probe_reads_the_keys_in_the_research_codes_channel_order(tmp_path: Path) -> None:
    """The research code's `vit` backbone gives the last block's keys unless feat_type says otherwise, laid out head
    minor (channel d * 6 + h) where isegprobe's keys featurizer is head major (h * 64 + d): the imported head reads
    isegprobe's keys as the research head read its own. Its ViT is timm's vit_small_patch16_224 (AugReg weights,
    not DINO's), its inputs normalized with ImageNet's statistics."""
    weights, metadata, featurizer, probe = imported_vit_probe(tmp_path)
    provenance = metadata["featurizer_provenance"]
    assert (provenance["name"], provenance["normalization"]) == ("vit_small_patch16_224:keys", "imagenet")
    assert metadata["preprocessing"]["mean"] == pytest.approx([0.485, 0.456, 0.406])
    assert metadata["imported_from"]["preset"] == "sbd_vit_patch-embed_noup"

    image, clicks, prev_mask = vit_probe_inputs()
    with torch.no_grad():
        expected = seed_head(weights, research_vit_keys(weights, featurizer, image, clicks, prev_mask), VIT_SIZE)
        torch.testing.assert_close(probe(None, image, clicks, prev_mask), expected, rtol=0, atol=1e-5)


def test_in_research_precision_a_vit_seed_probes_head_reads_the_keys_in_the_research_codes_order_to_the_bit(
    tmp_path: Path,
) -> None:
    """The head's first conv sums the key channels in the order they come: in research precision it reads them in
    the research code's (head minor, channels-last as its featurizer hands them over), with its weights taken alike,
    and rounds as the research head does."""
    weights, _, featurizer, probe = imported_vit_probe(tmp_path)
    image, clicks, prev_mask = vit_probe_inputs()
    probe.use_research_precision(True)
    with torch.no_grad():
        expected = seed_head(weights, research_vit_keys(weights, featurizer, image, clicks, prev_mask), VIT_SIZE)
        assert torch.equal(probe(None, image, clicks, prev_mask), expected)
        probe.feature_order = None  # isegprobe's own order: the same function, rounded otherwise
        isegprobe_order = probe(None, image, clicks, prev_mask)
    torch.testing.assert_close(isegprobe_order, expected)
    assert not torch.equal(isegprobe_order, expected)


@pytest.mark.parametrize(
    ("key", "weight", "misfit"),
    [
        ("head.convs.0.conv.weight", None, "missing: head.convs.0.conv.weight"),
        ("head.convs.0.conv.weight", torch.zeros(DIM, 10, 3, 3), "misshaped: head.convs.0.conv.weight"),
        ("embed_coords.proj.weight", torch.zeros(6, 3, VIT_PATCH, VIT_PATCH), "misshaped: embed_coords.proj.weight"),
        ("head.convs.0.bn.weight", torch.ones(DIM), "unexpected: head.convs.0.bn.weight"),
        ("head.classifier.weight", torch.zeros(2, DIM, 1, 1), r"misshaped: head.classifier.weight \(file \(2,"),
    ],
)
def test_a_seed_probe_on_keys_whose_weights_do_not_fit_is_refused_before_the_reordering(
    tmp_path: Path, key: str, weight: torch.Tensor | None, misfit: str
) -> None:
    weights = {**patch_embed_weights(), "embed_coords.proj.weight": torch.zeros(DIM, 3, VIT_PATCH, VIT_PATCH)}
    if weight is None:
        del weights[key]
    else:
        weights[key] = weight
    backbone = {"type": "vit", "params": {"arch": "vit_small_patch16_224", "feats_injection_mode": "after_backbone"}}
    checkpoint = write_seed_checkpoint(tmp_path / "vit.pth", weights, backbone=backbone, size=VIT_SIZE, patch=VIT_PATCH)
    with warnings.catch_warnings(), pytest.raises(UserError, match=f"do not fit a probe on .*{misfit}"):
        warnings.simplefilter("ignore", RandomWeightsWarning)
        import_seed_probe(checkpoint, tmp_path / "run", weights="random")
    assert not (tmp_path / "run").exists()


def translated(tmp_path: Path, **options) -> SeedProbe:
    """What isegprobe reads from a seed checkpoint with these options, without building anything."""
    weights = patch_embed_weights()
    if options.get("encoder") == "simple_vit":
        encoder = create_click_encoder(
            ClickEncoderConfig(name="simple_vit", depth=2, heads=2, mlp_dim=64, dim_head=16), DIM, PATCH
        )
        weights = {f"embed_coords.{key}": value for key, value in encoder.state_dict().items()}
        weights.update(seed_head_weights(torch.Generator().manual_seed(2)))
    checkpoint = write_seed_checkpoint(tmp_path / "seed.pth", weights, **options)
    return seed_probe(read_seed_checkpoint(checkpoint), str(checkpoint))


@pytest.mark.parametrize(
    ("arch", "feat_type", "featurizer"),
    [
        ("vit_small_patch16_224", None, "vit_small_patch16_224:keys"),
        ("vit_small_patch16_224", "token", "vit_small_patch16_224"),
        ("dino_vits16", "key", "vit_small_patch16_224.dino:keys"),
    ],
)
def test_the_research_codes_vit_names_become_the_same_timm_weights(
    tmp_path: Path, arch: str, feat_type: str | None, featurizer: str
) -> None:
    params = {"arch": arch, "feats_injection_mode": "before_backbone"}
    if feat_type is not None:
        params["feat_type"] = feat_type
    assert translated(tmp_path, backbone={"type": "vit", "params": params}).featurizer == featurizer


RESEARCH_CONFIGS = [
    # (models/sbd file, backbone type, click encoder, upsampler, injection) -> preset
    ("dinov2/patch-embed_bilinear.py", "dinov2", "patchEmbed", "bilinear", "before_backbone"),
    ("dinov2/patch-embed_jbu.py", "dinov2", "patchEmbed", "jbu_featup", "before_backbone"),
    ("dinov2/patch-embed_lift.py", "dinov2", "patchEmbed", "lift", "before_backbone"),
    ("dinov2/patch-embed_loftup.py", "dinov2", "patchEmbed", "loftup", "before_backbone"),
    ("dinov2/patch-embed_noup.py", "dinov2", "patchEmbed", "identity", "before_backbone"),
    ("dinov2/simple-vit_noup.py", "dinov2", "simple_vit", "identity", "after_backbone"),
    ("maskclip/patch-embed_noup.py", "mask_clip", "patchEmbed", "identity", "before_backbone"),
    ("vit/patch-embed_noup.py", "vit", "patchEmbed", "identity", "before_backbone"),
]


@pytest.mark.parametrize(("research_file", "backbone", "encoder", "upsampler", "injection"), RESEARCH_CONFIGS)
def test_every_research_configuration_has_its_preset_and_imports_to_it(
    tmp_path: Path, research_file: str, backbone: str, encoder: str, upsampler: str, injection: str
) -> None:
    backbone_params = {"feats_injection_mode": injection}
    if backbone == "vit":
        backbone_params.update(arch="vit_small_patch16_224", patch_size=16, feat_type="key")
    if backbone == "mask_clip":
        backbone_params["model_name"] = "ViT-B/16"
    seed = translated(
        tmp_path,
        size=224,  # the research code's crop size
        backbone={"type": backbone, "params": backbone_params},
        encoder=encoder,
        upsampler=upsampler,
        injection=injection,
    )
    folder, name = research_file.removesuffix(".py").split("/")
    assert f"sbd_{folder}_{name}".startswith(seed.preset), "the file's preset, or its family's (upsampler by --set)"
    preset = load_train_config(seed.preset, seed.preset_overrides)
    imported = load_train_config(seed.preset, [*seed.preset_overrides, *seed.overrides])
    assert (imported.model.fusion, imported.model.upsampler.name) == (preset.model.fusion, preset.model.upsampler.name)
    assert imported.model.click_encoder.name == preset.model.click_encoder.name
    assert preset.model.align_corners and preset.data.size == seed.size
    assert (preset.data.featurizer, preset.data.normalization) == (seed.featurizer, "imagenet")
    frozen_learned = upsampler in ("lift", "jbu_featup", "loftup")
    assert preset.model.upsampler.train_mode_when_frozen is frozen_learned
    assert preset.data.keep_background_prob == 0.01 and preset.data.augment.photometric


def test_featup_jbu_imports_as_the_stack_without_channel_norm(tmp_path: Path) -> None:
    seed = translated(tmp_path, upsampler="jbu_featup", injection="before_backbone")
    assert "model.upsampler.name=featup_jbu_stack" in seed.overrides


@pytest.mark.parametrize("kept", [5_000, 20_000, 40_000])
def test_a_checkpoint_cut_short_is_refused_in_one_line(tmp_path: Path, kept: int) -> None:
    """An interrupted copy cut within its zip's records made torch raise OSError, shown as a traceback."""
    whole = write_seed_checkpoint(tmp_path / "whole.pth", patch_embed_weights()).read_bytes()
    cut = tmp_path / "cut.pth"
    cut.write_bytes(whole[:kept])
    with pytest.raises(UserError, match=rf"{cut}: not a readable iSegProbe checkpoint \("):
        import_seed_probe(cut, tmp_path / "run", weights="random")
    assert not (tmp_path / "run").exists()


def test_crops_the_featurizers_patch_does_not_divide_are_refused_at_import(tmp_path: Path) -> None:
    """A probe of 50 px crops on a ViT of 14 px patches was imported, and evaluate then stopped in a traceback."""
    checkpoint = write_seed_checkpoint(tmp_path / "seed.pth", patch_embed_weights(), size=50)
    with pytest.raises(UserError) as refused:
        import_seed_probe(checkpoint, tmp_path / "run", weights="random")
    assert str(refused.value) == (
        f"{checkpoint}: trained on 50 px crops, which dinov2_vits14's patch size 14 does not divide: its featurizer "
        "cannot run at that size"
    )
    assert not (tmp_path / "run").exists()


def test_weights_beside_a_store_are_refused_rather_than_left_unread(store: Path, tmp_path: Path) -> None:
    checkpoint = write_seed_checkpoint(tmp_path / "seed.pth", patch_embed_weights())
    arguments = [
        str(checkpoint),
        "--store",
        str(store),
        "--weights",
        "/no/such/dinov2.pth",
        "--out",
        str(tmp_path / "r"),
    ]
    refused = run_cli("import-seed", *arguments)
    assert refused.returncode == 1
    assert "--weights /no/such/dinov2.pth and --store" in refused.stderr and "give one of them" in refused.stderr
    assert not (tmp_path / "r").exists()


def test_the_research_codes_own_normalization_entry_imports(tmp_path: Path) -> None:
    """The research model's config records its default norm_mean_std, ImageNet's, as a tuple of lists."""
    edit = setting("config", "params", "norm_mean_std", to={"value": ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])})
    checkpoint = write_seed_checkpoint(tmp_path / "seed.pth", patch_embed_weights(), edit=edit)
    assert seed_probe(read_seed_checkpoint(checkpoint), str(checkpoint)).featurizer == "dinov2_vits14"


@pytest.mark.parametrize(
    ("content", "held"),
    [
        (b"", "not a readable iSegProbe checkpoint (an empty file)"),
        (
            b"hello world\n",
            "not a readable iSegProbe checkpoint (not a zip archive, as torch.save writes, nor a pickle",
        ),
    ],
)
def test_a_file_that_is_no_checkpoint_is_said_to_be_what_it_is(tmp_path: Path, content: bytes, held: str) -> None:
    """torch's complaint was "Expected input to be a checkpoint returned by torch.save", of an empty file too."""
    path = tmp_path / "seed.pth"
    path.write_bytes(content)
    with pytest.raises(UserError, match=re.escape(f"{path}: {held}")):
        read_seed_checkpoint(path)


def test_a_bare_state_dict_is_said_to_lack_its_config(tmp_path: Path) -> None:
    torch.save(patch_embed_weights(), tmp_path / "weights.pth")
    with pytest.raises(UserError, match=r"this file holds a bare state dict of 8 tensors \('embed_coords.proj.weight'"):
        read_seed_checkpoint(tmp_path / "weights.pth")


def test_a_probe_saved_under_data_parallel_imports_as_without_it(store: Path, tmp_path: Path) -> None:
    """Every key of a model saved while wrapped in DataParallel starts with `module.`: they were refused as weights
    of a trained backbone or upsampler."""
    weights = patch_embed_weights()
    wrapped = write_seed_checkpoint(tmp_path / "wrapped.pth", {f"module.{k}": v for k, v in weights.items()})
    plain = write_seed_checkpoint(tmp_path / "plain.pth", weights)
    import_seed_probe(wrapped, tmp_path / "wrapped", store_path=store)
    import_seed_probe(plain, tmp_path / "plain", store_path=store)
    wrapped_state = load_probe(tmp_path / "wrapped")[0].state_dict()
    plain_state = load_probe(tmp_path / "plain")[0].state_dict()
    assert all(torch.equal(wrapped_state[key], value) for key, value in plain_state.items())


def test_upsampler_weights_are_a_path_whatever_their_name(
    store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The path went into the config as YAML: a file named null became no weights, and the import was refused as
    if --upsampler-weights had not been given."""
    monkeypatch.chdir(tmp_path)
    torch.save(create_upsampler("lift", DIM).state_dict(), "null")
    checkpoint = write_seed_checkpoint(tmp_path / "seed.pth", patch_embed_weights(), upsampler="lift")
    metadata = import_seed_probe(checkpoint, tmp_path / "run", store_path=store, upsampler_weights="null")
    assert metadata["config"]["model"]["upsampler"]["weights"] == "null"


@pytest.mark.parametrize("option", ["--out", "--weights", "--upsampler-weights"])
def test_an_empty_path_is_a_usage_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, option: str) -> None:
    """`--out ""` wrote the run into the current folder; `--weights ""` took the hub's weights."""
    checkpoint = write_seed_checkpoint(tmp_path / "seed.pth", patch_embed_weights())
    monkeypatch.chdir(tmp_path)
    given = {"--out": "run", "--weights": "random", option: ""}
    arguments = [item for pair in given.items() for item in pair]
    result = CliRunner().invoke(main, ["import-seed", str(checkpoint), *arguments])
    assert result.exit_code == 2, result.output
    assert f"Invalid value for '{option}': an empty path (an unset shell variable?)" in result.output
    assert sorted(path.name for path in tmp_path.iterdir()) == ["seed.pth"]
