"""`isegprobe cache`: look into a feature store and check it."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import click

from isegprobe.atomic_files import write_output_file
from isegprobe.commands.errors import reports_user_errors
from isegprobe.commands.options import allow_torchscript_option, device_option
from isegprobe.errors import UserError
from isegprobe.locks import shared_locks
from isegprobe.output_files import text_output_file
from isegprobe.weights_files import require_featurizer_weights

if TYPE_CHECKING:
    from cache_tools.recompute import Recomputed


@click.group("cache")
def cache() -> None:
    """Inspect, verify and summarise feature stores written by extract-features.

    \b
        isegprobe cache ls cache/
        isegprobe cache inspect cache/vit_small_patch14_dinov2-grabcut-test-448.zarr
        isegprobe cache verify cache/vit_small_patch14_dinov2-grabcut-test-448.zarr
        isegprobe cache stats cache/vit_small_patch14_dinov2-grabcut-test-448.zarr --out stats.json
    """


@cache.command("inspect")
@click.argument("store", type=click.Path(file_okay=False))
@reports_user_errors
def inspect_command(store: str) -> None:
    """What a store holds: featurizer provenance, dataset, preprocessing, progress, and per array its chunking and
    compression ratio, largest first."""
    from cache_tools import describe_store

    click.echo(describe_store(store))


@cache.command("info")
@click.argument("store", type=click.Path(file_okay=False))
@reports_user_errors
def info_command(store: str) -> None:
    """The same as `inspect`."""
    from cache_tools import describe_store

    click.echo(describe_store(store))


@cache.command("verify")
@click.argument("store", type=click.Path(file_okay=False))
@click.option(
    "--recompute",
    default=0,
    show_default=True,
    type=click.IntRange(min=0),
    metavar="N",
    help="Also featurize every view of N finished items (spread over the store) again with the featurizer the store "
    "records, and compare with the stored features: checksums cannot tell features that other code computed.",
)
@click.option(
    "--weights", default=None, help="With --recompute: weights in place of the recorded ones (hub or a file)."
)
@click.option(
    "--images",
    is_flag=True,
    help="Also compare every finished item's stored pixels with its image in the dataset (at the recorded root, or "
    "--root): checksums cannot tell chunk files copied from another store or swapped between items.",
)
@click.option("--root", default=None, help="With --images: the dataset's folder, where it moved since extraction.")
@device_option
@allow_torchscript_option
@reports_user_errors
def verify_command(
    store: str, recompute: int, weights: str | None, images: bool, root: str | None, device: str
) -> None:
    """Read every finished item and check it against its checksum (written at extraction), for finite features and
    sane boxes; exits 1 and lists the problems if any."""
    from cache_tools import verify_store
    from cache_tools.images import items_of_other_images
    from cache_tools.recompute import recompute_features
    from cache_tools.verify import finished_items, has_checksums

    if root is not None and not images:
        raise UserError("--root: the dataset's folder for --images, which this command was not given; add --images")
    if weights is not None and not recompute:
        raise UserError("--weights: the featurizer's weights for --recompute N, which this command was not given")
    require_featurizer_weights(weights, "--weights")
    with shared_locks(store):
        problems = verify_store(store)
        for problem in problems:
            click.echo(problem, err=True)
        if problems:
            click.echo("the same extract-features command with --repair extracts the broken items again", err=True)
            raise SystemExit(1)
        done, items = finished_items(store)
        read_from, other_images = items_of_other_images(store, root) if images else (None, [])
        _refuse_other_images(other_images)
        recomputed = recompute_features(store, recompute, device, weights) if recompute else None
    if has_checksums(store):
        click.echo(f"{store}: consistent ({done} of {items} items finished, each entry matching its checksum)")
    else:
        click.echo(
            f"{store}: consistent ({done} of {items} items finished), but made before per-entry checksums were "
            "recorded: its bytes were not checked"
        )
    if images:
        click.echo(f"every finished item's pixels are its image under {read_from}")
    if recomputed is not None:
        _report_recomputed(recomputed, device)


def _refuse_other_images(problems: list[str]) -> None:
    """`--images`: exit 1 listing the items whose pixels are not their dataset image."""
    for problem in problems:
        click.echo(problem, err=True)
    if problems:
        click.echo(
            f"{len(problems)} item(s) hold pixels of other images (chunk files copied or swapped, or a dataset that "
            "is not the store's): extract-features --overwrite extracts the store anew",
            err=True,
        )
        raise SystemExit(1)


def _report_recomputed(recomputed: Recomputed, device: str) -> None:
    from cache_tools.recompute import AGREEMENT

    done = f"features of {recomputed.entries} stored images ({recomputed.items} items) computed again on {device}"
    if recomputed.largest_difference == 0:  # a cosine of equal vectors, rounded, read 0.999999
        click.echo(f"{done}: the same values as stored, every one (largest difference 0)")
        return
    said = (
        f"{done}: lowest cosine similarity between a token's stored and recomputed features "
        f"{recomputed.lowest_cosine:.6f} ({recomputed.where}), largest difference {recomputed.largest_difference:.3g}"
    )
    if recomputed.agrees:
        click.echo(said)
        return
    click.echo(
        f"{said}: below {AGREEMENT}, so the stored features are not what the recorded featurizer computes from the "
        "stored pixels (another version of isegprobe or timm, or other weights, wrote them); extract-features "
        "--overwrite extracts the store again",
        err=True,
    )
    raise SystemExit(1)


@cache.command("stats")
@click.argument("store", type=click.Path(file_okay=False))
@click.option("--out", type=click.Path(dir_okay=False), help="Also write every channel's mean and std as JSON here.")
@reports_user_errors
def stats_command(store: str, out: str | None) -> None:
    """Per-channel mean and std and the token norm distribution (high-norm artefact tokens included) of every
    finished item and view, streamed shard by shard."""
    from cache_tools import feature_stats, format_stats
    from isegprobe.cache.store import refuse_output_inside_a_store

    if out is not None:
        text_output_file(out)
        refuse_output_inside_a_store(out)
    with shared_locks(store):
        stats = feature_stats(store)
    click.echo(format_stats(stats))
    if out is not None:
        write_output_file(out, json.dumps(stats.to_json(), indent=1).encode())
        click.echo(f"wrote {out}")


@cache.command("ls")
@click.argument("store_root", type=click.Path(exists=True, file_okay=False))
@reports_user_errors
def ls_command(store_root: str) -> None:
    """Every store under STORE_ROOT (an extract-features --out folder, evaluate's --store-root) as a table:
    featurizer, weights, dataset, size, views, items done, size on disk."""
    from cache_tools import list_stores

    click.echo(list_stores(store_root))
