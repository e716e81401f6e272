"""`isegprobe evaluate`: the standard click protocol for a trained probe, from the cache or online."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import click

from isegprobe.commands.errors import reports_user_errors
from isegprobe.commands.limits import max_pixels_option, threshold_option
from isegprobe.commands.options import allow_torchscript_option, checkpoint_option, device_option, renamed_option
from isegprobe.errors import UserError
from isegprobe.inference.clicker import CLICKERS
from isegprobe.inference.metrics import curve_warnings, format_miou_curves, format_table
from isegprobe.inference.protocols import DEFAULT_PROTOCOL, PROTOCOLS, conflicts, get_protocol
from isegprobe.interrupts import exit_status, how_stopped
from isegprobe.output_files import run_markers_in
from isegprobe.weights_files import require_weights_file


def dataset_names(datasets: str) -> list[str]:
    """--datasets as a list, in the lower case every store and loader names them by (`GrabCut` looked for a store
    `...-GrabCut-test-224.zarr` and keyed online results apart from `grabcut`'s); an empty or repeated name is
    refused (`,grabcut` looked for a store named `--test`)."""
    names = datasets.lower().split(",")
    if "" in names or len(set(names)) < len(names):
        raise UserError(f"--datasets {datasets!r}: expected dataset names separated by commas, each once")
    return names


def refuse_stores_of_other_data(stores: tuple[str, ...], datasets: list[str], split: str) -> None:
    """With --store, each store says what is evaluated; --datasets or --split given beside it must agree, or the
    evaluation would run on other data than asked (`--datasets grabcut --store <builtin train>` evaluated the
    training images, under the name builtin, and said nothing)."""
    from isegprobe.cache import FeatureStore

    for path in stores:
        if not (Path(path) / "zarr.json").is_file():
            continue  # not a store: the run names it
        dataset = FeatureStore.open(path).attrs.get("dataset", {})
        held = f"{dataset.get('name')} {dataset.get('split')}"
        if dataset.get("name") not in datasets or dataset.get("split") != split:
            raise UserError(
                f"--store {path} holds {held}, but --datasets {','.join(datasets)} --split {split} ask for other "
                "data; with --store, leave --datasets and --split out (the store says what it holds), or give the "
                "store of that data"
            )


def refuse_a_run_folder(out_dir: Path) -> None:
    """A run's folder holds its checkpoints; results written beside them were read by `report RUN` as the run's,
    and `report --out` refuses the files of a run, so evaluation must not write there either."""
    held = run_markers_in(out_dir)
    if held:
        raise UserError(
            f"--out {out_dir}: the folder of a training run ({', '.join(held)}); give the evaluation a folder of its "
            f"own, such as {out_dir / 'results'}"
        )


def interruption_note(out_dir: str, how: str = "interrupted") -> str:
    """What an evaluation stopped by Ctrl-C or SIGTERM (`how` says which) leaves in `out_dir`, as the folder says."""
    from isegprobe.inference.results import objects_written

    if objects_written(out_dir) == 0:
        return (
            f"evaluate: {how} before its first batch was written: {out_dir} holds no object's results yet, "
            "and the same command starts again"
        )
    return (
        f"evaluate: {how}; the objects of the batches finished before it are kept in {out_dir} "
        "(results.json, results.csv, ious.npz), and the same command goes on from there"
    )


@click.command("evaluate")
@checkpoint_option
@click.option(
    "--protocol",
    type=click.Choice(list(PROTOCOLS), case_sensitive=False),
    metavar=f"[{'|'.join(PROTOCOLS)}]",  # click would list the names lower-cased
    default=DEFAULT_PROTOCOL,
    show_default=True,
    help="cache: isegprobe's own (the store's cached view; the flags below decide zoom-in, flip, threshold, clicks; a "
    "run folder gives its best checkpoint). iSegProbe: the research code's evaluate.py exactly (RITM's zoom-in to "
    "the working size in its geometry, flip-averaged logits, threshold 0.5, 20 clicks, float32 (MaskCLIP float16 "
    "on a GPU, as its clip.load leaves it) and deterministic kernels, one object per forward, the run's last "
    "checkpoint; online on --datasets), so that its numbers compare with the paper's.",
)
@click.option("--datasets", default="grabcut", show_default=True, help="Comma-separated dataset names.")
@click.option("--split", default="test", show_default=True, help="Split of every dataset.")
@renamed_option(
    "--store-root",
    "store_root",
    ["--cache-root"],
    type=click.Path(file_okay=False),
    help="Folder of stores (extract-features --out): each dataset's store of the probe's featurizer and size.",
)
@click.option(
    "--store", "stores", multiple=True, type=click.Path(file_okay=False), help="An explicit store; repeatable."
)
@click.option("--online", is_flag=True, help="Run the featurizer on the images instead of reading stores.")
@click.option("--root", default=None, help="Dataset root, when the store's recorded root moved, or with --online.")
@click.option(
    "--weights",
    "featurizer_weights",
    default=None,
    help="The featurizer's weights file, when the one the checkpoint records moved (another machine): the same file, "
    "its sha256 is checked. Read only where the featurizer runs (--online, --zoom-in, early fusion, --protocol "
    "iSegProbe).",
)
@click.option("--max-clicks", default=20, show_default=True, type=click.IntRange(1, 100), help="Clicks per object.")
@click.option(
    "--flip",
    is_flag=True,
    help="Average with the horizontally flipped view (the store's hflip view; with --zoom-in, the mirrored crop).",
)
@click.option(
    "--zoom-in",
    is_flag=True,
    help="RITM's zoom-in: from the 2nd click on, predict on a crop around the object (its box x1.4, at least 200 px, "
    "resized to the working size). Loads the featurizer, since crops have no cached features. To compare with "
    "the iSegProbe paper, use --protocol iSegProbe, which also zooms in and flips, in the research code's geometry.",
)
@threshold_option
@click.option(
    "--batch-size", default=8, show_default=True, type=click.IntRange(min=1), help="Objects per probe forward."
)
@device_option
@click.option(
    "--clicker",
    type=click.Choice(CLICKERS),
    default="auto",
    show_default=True,
    help="Where RITM's simulated user makes its clicks; the clicks and IoUs are the same either way. opencv: per "
    "object on CPU threads, the masks copied to the host at every click. tensor: the whole batch at once in tensor "
    "operations on --device, only the clicks copied. auto: tensor on a GPU, opencv on a CPU.",
)
@click.option(
    "--max-objects",
    type=click.IntRange(min=1),
    default=None,
    help="Stop each dataset after N objects (those an earlier run of this evaluation in --out finished count), as "
    "an interrupted run stops: a quick look at a slow probe. The results say the dataset is unfinished (report "
    "marks it), and the same command without it evaluates the rest.",
)
@click.option(
    "--vis-preds",
    default=0,
    show_default=True,
    type=click.IntRange(min=0),
    help="Save overlays (clicks drawn) of the first N objects per dataset; those an earlier run of this "
    "evaluation in --out finished undrawn are evaluated again to draw them.",
)
@click.option(
    "--save-feats",
    default=0,
    show_default=True,
    type=click.IntRange(min=0),
    help="Save the low-res and upsampled features of the first N objects per dataset to OUT/feats/<dataset>/ "
    "(float16 .npz; the upsampled map alone is C x S x S, 154 MB for 384 channels at 448 px), those an earlier "
    "run of this evaluation in --out finished without them included.",
)
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Folder for the results. If it holds an unfinished run of the same evaluation, that run is resumed.",
)
@click.option(
    "--overwrite",
    is_flag=True,
    help="Replace the results already in --out (and their vis/ and feats/) instead of resuming them.",
)
@max_pixels_option
@click.option(
    "--wandb", "use_wandb", is_flag=True, help="Also log the results to Weights & Biases (WANDB_MODE=offline works)."
)
@allow_torchscript_option
@reports_user_errors
def evaluate(datasets: str, stores: tuple[str, ...], use_wandb: bool, **options) -> None:
    """Simulate RITM's clicker on every object: NoC@80/85/90, NoF@85/90, IoU@1, the mIoU curve, seconds per click.

    \b
    From the cache (the featurizer is loaded only for --zoom-in and early-fusion probes; --online and
    --protocol iSegProbe run it on the images):
        isegprobe evaluate --checkpoint runs/probe --datasets grabcut,berkeley --store-root cache/ --out results/
    Writes results.json, results.csv and ious.npz (one IoU curve per object) into --out, after every batch,
    so an interrupted run (Ctrl-C, SIGTERM) keeps the objects it finished, and the same command again evaluates only the
    objects it did not finish. Results of another evaluation in --out are never replaced without --overwrite.
    """
    from isegprobe.cache.store import refuse_output_inside_a_store
    from isegprobe.inference.runner import EvaluationRequest, run_evaluation
    from isegprobe.inference.wandb_results import log_results
    from isegprobe.training.run_logger import start_wandb

    protocol = get_protocol(options["protocol"])
    context = click.get_current_context()
    given = {
        name: value
        for name, value in options.items()
        if context.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT
    }
    clashes = conflicts(protocol, given)
    if clashes:
        raise UserError(f"--protocol {protocol.name} fixes what these flags change: {'; '.join(clashes)}")
    names = dataset_names(datasets)
    if options["featurizer_weights"] is not None:
        require_weights_file(options["featurizer_weights"], "--weights")
    if stores and options["store_root"]:
        raise UserError(
            f"--store and --store-root {options['store_root']}: --store names the stores to read, --store-root finds "
            "them by --datasets; give one (the folder was not read)"
        )
    if stores and (
        context.get_parameter_source("datasets") is not click.core.ParameterSource.DEFAULT or "split" in given
    ):
        refuse_stores_of_other_data(stores, names, options["split"])
    request = EvaluationRequest(datasets=names, stores=list(stores), **options)
    refuse_output_inside_a_store(request.out_dir)
    refuse_a_run_folder(Path(request.out_dir))
    run = start_wandb(Path(request.out_dir), asdict(request), "isegprobe", job_type="evaluate") if use_wandb else None
    try:
        summaries = run_evaluation(request)
    except KeyboardInterrupt as interrupt:
        click.echo(interruption_note(request.out_dir, how_stopped(interrupt)), err=True)
        raise SystemExit(exit_status(interrupt)) from None
    if run is not None:
        log_results(run, summaries)
    click.echo(format_table(summaries))
    click.echo(format_miou_curves(summaries))
    for warning in curve_warnings(summaries):
        click.echo(warning, err=True)
    click.echo(f"results: {Path(request.out_dir).resolve()} (results.json, results.csv, ious.npz)")
