"""Options that bound a number, shared so that they read and refuse the same way everywhere: a float range that
refuses NaN, the mask threshold, and the pixel limit of decoded images. Light imports only: `isegprobe datasets`
uses them and starts without torch."""

from __future__ import annotations

import math
from typing import Any

import click

from isegprobe.config import MAX_WORKING_SIZE
from isegprobe.data.image_io import DEFAULT_MAX_PIXELS, MAX_PIXELS_ENV, set_max_pixels


class FiniteFloatRange(click.FloatRange):
    """click's FloatRange, refusing NaN too (every comparison with NaN is false, so the range alone lets it in)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{number} is not a finite number in the range {self._describe_range()}.", param, ctx)
        return number


WORKING_SIZE = click.IntRange(min=1, max=MAX_WORKING_SIZE)

threshold_option = click.option(
    "--threshold",
    default=0.5,
    show_default=True,
    type=FiniteFloatRange(0, 1, min_open=True, max_open=True),
    help="Probability threshold of the mask, between 0 and 1.",
)


def _set_max_pixels(ctx: click.Context, param: click.Parameter, value: int | None) -> None:
    if value is not None:
        set_max_pixels(value)


# For every command that decodes images: the limit goes to this process and the loader workers it starts.
max_pixels_option = click.option(
    "--max-pixels",
    type=click.IntRange(min=1),
    default=None,
    expose_value=False,
    callback=_set_max_pixels,
    help=f"Refuse images and masks of more pixels (width x height) than this, read from the file's header before "
    f"decoding. Default: ${MAX_PIXELS_ENV}, else {DEFAULT_MAX_PIXELS}.",
)
