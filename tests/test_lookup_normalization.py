"""uint8 images normalized on a CPU by table lookup give the arithmetic's values, in the input's memory layout."""

from __future__ import annotations

import pytest
import torch

from isegprobe.data.preprocess import normalize_images

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def every_value_in_every_channel(layout: str) -> torch.Tensor:
    """uint8 [2, 3, 20, 30], channels-last or channels-first in memory, every value 0..255 in each channel."""
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (2, 20, 30, 3), dtype=torch.uint8, generator=generator)
    pixels.view(-1, 3)[:256] = torch.arange(256, dtype=torch.uint8)[:, None]
    images = pixels.permute(0, 3, 1, 2)
    return images if layout == "channels-last" else images.contiguous()


def by_arithmetic(images: torch.Tensor) -> torch.Tensor:
    """Float input takes the arithmetic path: the same division by 255 first, then the same steps."""
    return normalize_images(images.to(torch.float32) / 255.0, MEAN, STD)


@pytest.mark.parametrize("layout", ["channels-last", "channels-first"])
@pytest.mark.parametrize("into_out", [False, True])
def test_the_lookup_gives_the_arithmetics_bits_in_the_inputs_layout(layout, into_out):
    images = every_value_in_every_channel(layout)
    out = torch.empty_like(images, dtype=torch.float32) if into_out else None
    normalized = normalize_images(images, MEAN, STD, out)
    expected = by_arithmetic(images)
    assert torch.equal(normalized, expected)
    assert normalized.stride() == images.stride(), "the featurizer's kernels, and so its features, follow the layout"
    if out is not None:
        assert normalized.data_ptr() == out.data_ptr()


def test_a_layout_opencv_cannot_read_in_place_gets_the_same_values():
    images = every_value_in_every_channel("channels-first")[:, :, ::2]
    assert torch.equal(normalize_images(images, MEAN, STD), by_arithmetic(images))


def test_an_empty_batch_gives_an_empty_batch():
    empty = every_value_in_every_channel("channels-last")[:0]
    assert normalize_images(empty, MEAN, STD).shape == (0, 3, 20, 30)
