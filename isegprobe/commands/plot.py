"""`isegprobe plot`: mIoU against clicks for evaluations side by side, features before and after upsampling, and one
object's masks click by click."""

from __future__ import annotations

from pathlib import Path

import click

from isegprobe.commands.errors import reports_user_errors
from isegprobe.commands.limits import max_pixels_option
from isegprobe.commands.options import (
    allow_torchscript_option,
    device_option,
    labels_option,
    renamed_option,
    results_and_labels,
    results_argument,
)
from isegprobe.errors import UserError
from isegprobe.locks import lock_holder, shared_locks
from isegprobe.weights_files import require_weights_file

# IoU differences between a replay and the evaluation beyond float noise (batches of other sizes) mean that
# something changed since.
REPLAY_TOLERANCE = 1e-3


@click.group("plot")
def plot() -> None:
    """Pictures of what the features and the probes do."""


@plot.command("iou-vs-clicks")
@results_argument
@labels_option
@click.option("--title", default="", help="Figure title.")
@click.option(
    "--out",
    default="iou_vs_clicks.png",
    show_default=True,
    type=click.Path(dir_okay=False),
    help="Output path, ending in .png, .svg or no suffix; written as .png and as .svg (text kept editable).",
)
@reports_user_errors
def iou_vs_clicks(results: tuple[str, ...], labels: str | None, title: str, out: str) -> None:
    """mIoU after each click, one curve per evaluation (RESULTS: folders written by `isegprobe evaluate --out`) and
    one panel per dataset; the legend gives each curve's NoC@85 and NoC@90, dotted lines mark 85 and 90 % IoU."""
    from isegprobe.inference.report import object_count_notes
    from isegprobe.inference.result_labels import refuse_repeated_labels
    from isegprobe.plots.figures import figure_paths
    from isegprobe.plots.iou_vs_clicks import CURVE_FORMATS, evaluation_curves, plot_iou_vs_clicks

    figure_paths(out, CURVE_FORMATS)
    labelled = results_and_labels(results, labels)
    if labels is not None:
        refuse_repeated_labels([label for label, _ in labelled])
    empty = [folder for folder, (_, document) in zip(results, labelled, strict=True) if not document["datasets"]]
    if empty:
        raise UserError(f"{', '.join(empty)}: results.json holds no dataset's results (no object was evaluated)")
    evaluations = [
        evaluation_curves(document, label, lock_holder(Path(folder)))
        for folder, (label, document) in zip(results, labelled, strict=True)
    ]
    for path in plot_iou_vs_clicks(evaluations, out, title):
        click.echo(f"wrote {path}")
    for note in object_count_notes([(curves.label, curves.num_instances) for curves in evaluations], "curves"):
        click.echo(f"note: {note}", err=True)


@plot.command("features")
@renamed_option(
    "--store",
    "store_path",
    ["--cache"],
    required=True,
    type=click.Path(exists=True, file_okay=False),
    help="A feature store (extract-features' output).",
)
@click.option("--item", default=0, show_default=True, type=click.IntRange(min=0), help="Item index in the store.")
@click.option("--view", default="identity", show_default=True, help="Which cached view of the item.")
@click.option(
    "--upsamplers",
    default="bilinear",
    show_default=True,
    help="Comma-separated upsamplers to draw beside the low-res features: the names model.upsampler.name takes "
    "(bilinear, lift, featup_jbu, loftup, jafar, anyup, ...; docs/upsamplers.md lists them all, and an unknown name "
    "is refused with the list), or '' for none: with --checkpoint, its upsampler alone.",
)
@click.option(
    "--weights",
    multiple=True,
    metavar="NAME=PATH",
    help="The authors' checkpoint of a learned upsampler in --upsamplers; repeatable.",
)
@click.option(
    "--checkpoint",
    type=click.Path(exists=True),
    help="A trained probe (RUN_DIR or RUN/last.safetensors): also draw its own upsampler's output.",
)
@click.option(
    "--colours",
    type=click.Choice(["shared", "own"]),
    default="shared",
    show_default=True,
    help="shared: every panel through the low-res features' PCA (colours compare across panels); own: each panel "
    "through its own PCA (shows the structure of outputs far from the featurizer's feature space).",
)
@device_option
@click.option(
    "--out",
    default="features.png",
    show_default=True,
    type=click.Path(dir_okay=False),
    help="PNG path (.png added where it has no suffix).",
)
@allow_torchscript_option
@reports_user_errors
def features(
    store_path: str,
    item: int,
    view: str,
    upsamplers: str,
    weights: tuple[str, ...],
    checkpoint: str | None,
    colours: str,
    device: str,
    out: str,
) -> None:
    """The image, a PCA-to-RGB picture of its cached low-res features, and the same PCA (fitted once, on the
    low-res features) of each upsampler's output: the same colour means the same feature in every panel."""
    import torch

    from isegprobe.plots.feature_panels import (
        PANEL_FORMATS,
        feature_panels,
        named_upsamplers,
        open_item,
        plot_feature_panels,
        probe_upsampler,
    )
    from isegprobe.plots.figures import figure_paths

    figure_paths(out, PANEL_FORMATS)
    names = _upsampler_names(upsamplers)
    weights_by_name = _weights_by_name(weights)
    for name in set(names) & set(weights_by_name):  # one for an upsampler not drawn is refused as such
        require_weights_file(weights_by_name[name], f"--weights {name}")
    with shared_locks(store_path):
        store = open_item(store_path, item, view)
        built = named_upsamplers(names, weights_by_name, int(store.provenance["dim"]))
        if checkpoint is not None:
            built.append(probe_upsampler(checkpoint, store))
        panels = feature_panels(store, built, device=torch.device(device), shared=colours == "shared")
    for path in plot_feature_panels(panels, out):
        click.echo(f"wrote {path}")


@plot.command("predictions")
@click.argument("results", type=click.Path(exists=True, file_okay=False))
@click.option("--object", "object_id", required=True, help="Object id, as in ious.npz and the --vis-preds files.")
@click.option("--dataset", default=None, help="Which dataset of the evaluation (needed when it has several).")
@click.option("--root", default=None, help="Dataset root, when it moved since the evaluation.")
@click.option(
    "--weights",
    "featurizer_weights",
    default=None,
    help="The featurizer's weights file, when the one the evaluation read moved since (another machine): the same "
    "file, its sha256 is checked. Read only where the evaluation ran the featurizer (--online, --zoom-in, early "
    "fusion, --protocol iSegProbe).",
)
@max_pixels_option
@device_option
@click.option(
    "--out",
    default=None,
    type=click.Path(dir_okay=False),
    help="Picture path (.png or .jpg). Default: RESULTS/predictions/<dataset>_<object>.png.",
)
@allow_torchscript_option
@reports_user_errors
def predictions(
    results: str,
    object_id: str,
    dataset: str | None,
    root: str | None,
    featurizer_weights: str | None,
    device: str,
    out: str | None,
) -> None:
    """One object of an evaluation (RESULTS: a folder written by `isegprobe evaluate --out`) evaluated again with
    the same checkpoint, store and settings: its mask after 1, 3, 5, 10 clicks and the last, side by side, clicks
    drawn (positive green, negative red) and the IoU above each. The replayed IoU curve is compared with the
    recorded one."""
    from isegprobe.plots.predictions import plot_predictions

    if featurizer_weights is not None:
        require_weights_file(featurizer_weights, "--weights")
    replayed = plot_predictions(results, object_id, dataset, out, root, device, featurizer_weights)
    click.echo(f"wrote {replayed.path}")
    click.echo(
        f"IoU after the last click: {replayed.ious[-1]:.3f} now, {replayed.recorded[-1]:.3f} recorded; largest "
        f"difference over the {len(replayed.ious)} clicks {replayed.largest_difference:.2g}"
    )
    if replayed.largest_difference > REPLAY_TOLERANCE:
        click.echo(
            f"warning: the replayed curve differs from the recorded one by more than {REPLAY_TOLERANCE}: the store "
            "or the dataset changed since the evaluation, the settings in its results.json (threshold, flip, zoom-in) "
            "were edited, or it ran on another device; the picture shows the replay",
            err=True,
        )


def _upsampler_names(listed: str) -> list[str]:
    """--upsamplers as names ('' for none, as with --checkpoint alone): `,,` drew no panel and `bilinear,bilinear`
    one panel twice, both without a word."""
    if not listed.strip():
        return []
    names = [name.strip() for name in listed.split(",")]
    if not all(names):
        raise UserError(f"--upsamplers {listed!r}: an empty name between commas; list names as bilinear,lift")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise UserError(f"--upsamplers {listed!r}: {', '.join(repeated)} listed twice; each draws one panel")
    return names


def _weights_by_name(pairs: tuple[str, ...]) -> dict[str, str]:
    by_name = {}
    for pair in pairs:
        name, separator, path = pair.partition("=")
        if not separator or not name or not path:
            raise UserError(f"--weights {pair!r}: expected NAME=PATH, e.g. lift=lift.pth")
        upsampler = name.strip()
        if upsampler in by_name:
            raise UserError(f"--weights: {upsampler} is given twice ({by_name[upsampler]} and {path}); keep one")
        by_name[upsampler] = path
    return by_name
