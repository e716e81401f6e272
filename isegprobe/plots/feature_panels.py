"""The picture behind `isegprobe plot features`: one cached image, its low-resolution features, and what each
upsampler makes of them, all through the one PCA colour map fitted on the low-resolution features."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from isegprobe.cache import CachedDataset, FeatureStore
from isegprobe.data.preprocess import normalize_images
from isegprobe.errors import UserError
from isegprobe.plots.feature_pca import PcaColours
from isegprobe.plots.figures import new_figure, save_figure
from isegprobe.training.checkpoint import load_probe
from isegprobe.training.store_checks import check_store_matches
from isegprobe.upsamplers import create_upsampler

PANEL_FORMATS = ("png",)
PCA_TOKENS = 3  # three colours are three principal directions, which take at least three tokens


@dataclass
class FeaturePanels:
    """The image and one RGB picture per feature map, each cropped to the image's valid (unpadded) region."""

    title: str
    image: np.ndarray  # uint8 [H, W, 3]
    pictures: list[tuple[str, np.ndarray]]  # (caption, uint8 [h, w, 3])


def open_item(store_path: str | Path, item: int, view: str) -> CachedDataset:
    """The store opened on the one entry to draw, with a clear error for an item it does not have."""
    count = FeatureStore.open(store_path).num_items
    if not 0 <= item < count:
        raise UserError(f"{store_path}: --item {item} is not in the store, which has items 0..{count - 1}")
    return CachedDataset(store_path, views=[view], items=[item])


def named_upsamplers(names: Sequence[str], weights: Mapping[str, str], dim: int) -> list[tuple[str, nn.Module]]:
    """Build each upsampler by name; a learned one needs its authors' weights, since at its random initialisation
    its picture would say nothing about the method."""
    unused = sorted(set(weights) - set(names))
    if unused:
        raise UserError(f"--weights given for {', '.join(unused)}, which --upsamplers does not list")
    built = []
    for name in names:
        upsampler = create_upsampler(name, dim, weights.get(name))
        if upsampler.trainable and name not in weights:
            raise UserError(
                f"upsampler {name!r} is learned and has no weights: pass its authors' checkpoint with "
                f"--weights {name}=PATH, or show a trained probe's own upsampler with --checkpoint"
            )
        built.append((name, upsampler))
    return built


def probe_upsampler(checkpoint: str | Path, store: CachedDataset) -> tuple[str, nn.Module]:
    """A trained probe's upsampler (trained along, or frozen from its authors' file), checked as `evaluate` checks a
    store for a probe: of its featurizer, at its working size and resize rule, which the upsampler learnt to draw."""
    probe, metadata = load_probe(checkpoint)
    check_store_matches(store.store, metadata)
    return f"probe's {metadata['config']['model']['upsampler']['name']}", probe.upsampler


@torch.inference_mode()
def feature_panels(
    store: CachedDataset, upsamplers: Sequence[tuple[str, nn.Module]], device: torch.device, shared: bool = True
) -> FeaturePanels:
    """Panels for the store's first entry (`open_item` opens a store on the one entry to draw); `shared`: every
    panel through the low-res features' PCA colours, else each through its own."""
    entry = store[0]
    features = entry["features"].float()
    image = entry["image"]
    y0, x0, y1, x1 = (int(value) for value in entry["valid_box"])
    size = image.shape[-1]
    grid_h, grid_w = features.shape[-2:]
    tokens = features[
        :, y0 * grid_h // size : math.ceil(y1 * grid_h / size), x0 * grid_w // size : math.ceil(x1 * grid_w / size)
    ]
    _check_drawable(store, features, tokens)
    colours = PcaColours.fit(tokens)
    guidance = normalize_images(image[None].to(device), store.preprocessing["mean"], store.preprocessing["std"])
    pictures = [(f"low-res {grid_h}x{grid_w}", colours.rgb(tokens))]
    for caption, upsampler in upsamplers:
        upsampled = upsampler.to(device).eval()(features[None].to(device), guidance)[0].cpu()[:, y0:y1, x0:x1]
        pictures.append((caption, (colours if shared else PcaColours.fit(upsampled)).rgb(upsampled)))
    view = store.store.attrs["views"][store.view_indices[0]]
    title = f"{store.provenance.get('name')}: {store.item_ids[store.items[0]]} ({view} view)"
    return FeaturePanels(title, image[:, y0:y1, x0:x1].permute(1, 2, 0).numpy(), pictures)


def _check_drawable(store: CachedDataset, features: torch.Tensor, tokens: torch.Tensor) -> None:
    """Features the PCA cannot colour are refused by the item and the store, before the SVD fails on them."""
    item = f"{store.path}: item {store.items[0]}"
    if not torch.isfinite(features).all():
        raise UserError(
            f"{item} has non-finite features (NaN or inf): the store is damaged; `isegprobe cache verify "
            f"{store.path}` finds every such item"
        )
    grid_h, grid_w = features.shape[-2:]
    if tokens.shape[-2] * tokens.shape[-1] < PCA_TOKENS:
        raise UserError(
            f"{item}: its image covers {tokens.shape[-2]}x{tokens.shape[-1]} tokens of the store's {grid_h}x{grid_w} "
            f"feature grid, and three PCA colours need at least {PCA_TOKENS}; extract the store at a larger --size"
        )


def plot_feature_panels(panels: FeaturePanels, out: str | Path) -> list[Path]:
    """Image, low-resolution features and upsampled features side by side, as PNG."""
    figure, axes = new_figure(1 + len(panels.pictures), panel_size=(3.2, 3.4))
    for axis, (caption, picture) in zip(axes, [("image", panels.image), *panels.pictures], strict=True):
        axis.imshow(picture, interpolation="nearest")
        axis.set_title(caption, fontsize=9, parse_math=False)
        axis.set_axis_off()
    figure.suptitle(panels.title, fontsize=10, parse_math=False)
    return save_figure(figure, out, formats=PANEL_FORMATS, dpi=200)
