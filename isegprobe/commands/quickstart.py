"""`isegprobe quickstart`: the whole pipeline on the built-in data, on CPU, with nothing to download."""

from __future__ import annotations

from pathlib import Path

import click

from isegprobe.cache.extract import ExtractionRequest, extract
from isegprobe.commands.errors import reports_user_errors
from isegprobe.commands.extract import human_bytes

QUICKSTART_FEATURIZER = "vit_small_patch14_dinov2"
QUICKSTART_SIZE = 224


@click.command("quickstart")
@click.option(
    "--out",
    default="quickstart",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Folder for the stores and runs.",
)
@click.option(
    "--weights",
    default="random",
    show_default=True,
    help="Featurizer weights: random (works offline; the numbers then mean nothing), hub, or a checkpoint file.",
)
@reports_user_errors
def quickstart(out: str, weights: str) -> None:
    """Extract features of the built-in scenes with a ViT-S/14 (DINOv2 architecture) at 224 px.

    Writes one store per split under OUT/cache and prints what each stage did.
    """
    cache_dir = Path(out) / "cache"
    for split in ("train", "test"):
        click.echo(
            f"[stage one] extracting {QUICKSTART_FEATURIZER} features of builtin/{split} at {QUICKSTART_SIZE} px"
        )
        result = extract(
            ExtractionRequest(
                featurizer=QUICKSTART_FEATURIZER,
                weights=weights,
                dataset="builtin",
                root=None,
                split=split,
                size=QUICKSTART_SIZE,
                views="identity,hflip",
                device="cpu",
                out=str(cache_dir),
                workers=0,
            )
        )
        click.echo(
            f"  {result.items_extracted} new items, {result.items_total} in {result.path} "
            f"({human_bytes(result.nbytes)})"
        )
