"""`isegprobe extract-features`: stage one."""

from __future__ import annotations

import click

from isegprobe.cache.schema import COMPRESSORS, DEFAULT_CODEC, DEFAULT_ITEMS_PER_SHARD
from isegprobe.commands.errors import reports_user_errors
from isegprobe.commands.limits import WORKING_SIZE, max_pixels_option
from isegprobe.commands.options import allow_torchscript_option, device_option
from isegprobe.data import list_datasets
from isegprobe.featurizers.catalog import catalog_help
from isegprobe.featurizers.normalization import DEFAULT_NORMALIZATION, NORMALIZATIONS
from isegprobe.interrupts import exit_status, how_stopped
from isegprobe.loader_workers import MAX_DEFAULT_WORKERS, default_loader_workers
from isegprobe.torchrun_env import current_rank
from isegprobe.units import human_bytes


@click.command("extract-features", epilog=catalog_help())
@click.option(
    "--featurizer",
    required=True,
    help="A timm model name (its last block's features), NAME:keys (a ViT's last attention keys), maskclip, "
    "a DINOv2 torch.hub name (the official model) or NAME@BLOCK (another block); the families, one example each, "
    "are listed below.",
)
@click.option(
    "--weights",
    default="hub",
    show_default=True,
    help="hub (timm's pretrained weights, needs the internet), random (meaningless numbers, for tests), "
    "or a checkpoint file: timm/HF safetensors or state dict, or the authors' own file for DINOv2, DINOv3, OpenAI "
    "CLIP (.pt, with --allow-torchscript), SAM, RADIO or ConvNeXt.",
)
@click.option(
    "--normalization",
    type=click.Choice(NORMALIZATIONS),
    default=DEFAULT_NORMALIZATION,
    show_default=True,
    help="Input statistics: the model's own (model), or ImageNet mean/std for every model (imagenet), as the "
    "iSegProbe research code normalizes; recorded in the store, which is never mixed with the other kind.",
)
@click.option("--dataset", required=True, help=f"Dataset family; one of: {', '.join(list_datasets())}.")
@click.option(
    "--root",
    default=None,
    help="Folder of the dataset in its usual layout; default: its configured root (see `datasets list`); builtin "
    "has none.",
)
@click.option("--split", default="test", show_default=True, help="Dataset split.")
@click.option(
    "--size",
    default=448,
    show_default=True,
    type=WORKING_SIZE,
    help="Working size in pixels (square); a multiple of the patch size (a CNN's stride at the chosen stage).",
)
@click.option(
    "--views",
    default="identity,hflip",
    show_default=True,
    help="Comma-separated views to cache: identity, hflip, vflip, rot90, rot180, rot270, scale<f> (a zoomed-in "
    "crop, e.g. scale1.5), crop<k> (iSegProbe's training crop: a working-size window at 0.75-1.25 scale; "
    "crop1,crop2,... for several), rcrop<k> (that crop, randomly flipped and turned as iSegProbe's training draws "
    "it). identity is required and comes first. Stage two trains on one view per image and epoch, drawn at random "
    "(data.views: among which).",
)
@click.option(
    "--resize",
    type=click.Choice(["stretch", "letterbox"]),
    default="stretch",
    show_default=True,
    help="stretch the image to size x size (iSegProbe's and RITM's rule), or letterbox (keep aspect, pad).",
)
@click.option(
    "--batch-size", default=8, show_default=True, type=click.IntRange(min=1), help="Images per featurizer forward."
)
@device_option
@click.option(
    "--workers",
    default=default_loader_workers(),
    show_default=True,
    type=click.IntRange(min=0),
    help=f"DataLoader processes decoding and resizing images (default: this machine's cores, shared among torchrun "
    f"ranks, at most {MAX_DEFAULT_WORKERS}).",
)
@click.option(
    "--items-per-shard",
    type=click.IntRange(min=1),
    help=f"Items per shard file of a new store, the unit of atomic writes and of resuming (default "
    f"{DEFAULT_ITEMS_PER_SHARD}, at most the dataset's items); a resumed store keeps its own.",
)
@click.option(
    "--codec",
    type=click.Choice(sorted(COMPRESSORS)),
    help=f"Blosc codec of a new store (default {DEFAULT_CODEC}): zstd (level 1, bit shuffle) is smaller, lz4 (byte "
    "shuffle) reads about 2.6x faster; a resumed store keeps its own.",
)
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False),
    help=(
        "Folder for the store; it is created as OUT/<featurizer>-<dataset>-<split>-<size>.zarr, the featurizer's "
        "characters other than letters, digits, . and _ written as _ (NAME:keys: NAME_keys); --normalization "
        "imagenet adds -imagenet_norm after the featurizer (<featurizer>-imagenet_norm-<dataset>-<split>-<size>.zarr)."
    ),
)
@click.option(
    "--overwrite",
    is_flag=True,
    help="Replace an existing store instead of resuming it; it stays whole until its replacement has every item.",
)
@max_pixels_option
@click.option(
    "--repair",
    is_flag=True,
    help="First check every finished item as `isegprobe cache verify` does, and extract the broken ones again.",
)
@allow_torchscript_option
@reports_user_errors
def extract_features(**options) -> None:
    """Run a frozen featurizer once over a dataset and cache its features in a Zarr v3 store.

    Running the same command again resumes: finished items are skipped. A store made with another featurizer,
    other weights or other preprocessing is never mixed with: the command refuses unless --overwrite is given.
    Under torchrun, each rank extracts its own shards of the same store. On CUDA the featurizer runs under bf16 (fp16
    where bf16 is missing) autocast, on a CPU in float32.
    """
    from isegprobe.cache.extract import ExtractionRequest, extract

    try:
        result = extract(ExtractionRequest(**options))
    except KeyboardInterrupt as interrupt:
        click.echo(
            f"extract-features: {how_stopped(interrupt)}; the items finished before it are kept in the store, and "
            "the same command goes on from there",
            err=True,
        )
        raise SystemExit(exit_status(interrupt)) from None
    if current_rank() != 0:  # under torchrun, rank 0 reports for all
        return
    for problem in result.repaired:
        click.echo(f"repairing {problem}")
    if result.items_extracted == 0:
        click.echo(f"nothing to do: all {result.items_total} items are already in the store")
    else:
        rate = result.items_extracted / result.seconds
        click.echo(
            f"extracted {result.items_extracted} of {result.items_total} items "
            f"in {result.seconds:.1f} s ({rate:.2f} items/s)"
        )
        if result.loop is not None:  # None where the items were other ranks'
            click.echo(f"extraction loop: {result.loop.summary()}")
    click.echo(f"store: {result.path} ({human_bytes(result.nbytes)})")
